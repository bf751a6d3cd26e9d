"""`mpiclip reproduce async`: a tiny cut of the least-squares straggler sweeps run through the real machinery
(plan, sweep files, run_sweep, write_pages), the page it writes checked against the traces; the laptop
preset's cuts; absent sweeps and a variant without its baseline."""

import math
import os

import numpy as np
import pytest
from helpers import checked_tables, markdown_tables

from mpiclip import reproduce
from mpiclip.comm.serial import SerialComm
from mpiclip.reproduce import Cut, Family, asynchronous
from mpiclip.reproduce.page import Page
from mpiclip.sweep_run import run_sweep
from mpiclip.trace import load_trace

# async-lsq at s = 1 and 100: ASGD at its best γ and at one that diverges, Clipped ASGD at one (γ, τ); and the
# random-assignment variant at ASGD's γ = 1 (its baseline: async-lsq's γ = 1 runs). A short time budget, a
# smaller problem.
SHORT = {"async.max_time": 25.0, "run.eval_every": 10, "data.n_samples": 2000, "data.n_features": 100}
TINY = Family(
    name="async", title="Stragglers, tiny", page="RESULTS.md", write=asynchronous.write,
    sweeps=("async-lsq", "async-lsq-assignment"),
    laptop={"async-lsq": Cut(grids=({"method.name": ["asgd"], "async.slow_factor": [1.0, 100.0],
                                     "stepsize.value": [1.0, 2.0]},
                                    {"async.slow_factor": [1.0, 100.0], "method.tau": [0.003], "stepsize.value": [8.0]},
                                    None), set=SHORT),
            "async-lsq-assignment": Cut(grids=({"async.slow_factor": [1.0, 100.0], "stepsize.value": [1.0]}, None),
                                        set=SHORT)},
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce-async")
    planned = reproduce.plan(TINY, "laptop", str(root / "traces"))
    reproduce.write_sweep_files(planned)
    runs = [run for p in planned for run in p.sweep.runs]
    summary, stopped = run_sweep(runs, SerialComm(), 1, False, "test", say=lambda *a: None)
    assert stopped is None and summary["completed"] + summary["failed"] == len(runs) == 8
    written, problems = reproduce.write_pages(planned, "laptop", str(root / "page"), "mpiclip reproduce async")
    assert written == [str(root / "page" / "RESULTS.md")]
    page = (root / "page" / "RESULTS.md").read_text()
    return root, planned, page, problems


def traces_of(root, sweep: str) -> list:
    return [load_trace(str(p)) for p in sorted((root / "traces" / sweep).glob("*.h5"))]


def test_the_page_names_every_table_and_figure_and_they_exist(tiny):
    root, _, page, problems = tiny
    assert problems == []
    assert page.startswith("# Stragglers, tiny\n\nMade by `mpiclip reproduce async` (laptop preset)")
    tables = checked_tables(root / "page", page)
    assert set(tables) == {"runs", "lsq-best", "lsq-tail", "lsq-gamma-asgd", "lsq-gamma-clipped",
                           "async-lsq-assignment-best", "async-lsq-assignment-gamma"}
    assert tables["runs"][1:] == [["async-lsq", "6", "6", "0", "0", "0"],
                                      ["async-lsq-assignment", "2", "2", "0", "0", "0"]]
    figures = ("lsq-time", "lsq-work", "lsq-delays", "lsq-workers", "async-lsq-assignment")
    for name in figures:
        assert f"({name}.png)" in page and f"[{name}.pdf]({name}.pdf)" in page
        png, pdf = (root / "page" / f"{name}.png").read_bytes(), (root / "page" / f"{name}.pdf").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"/Type3" not in pdf and b"/FontFile2" in pdf, name
    assert "```" not in page
    # the sweeps of the family that the preset leaves out are named, not reported
    assert "async-mushrooms, async-a9a, async-lsq-homogeneous, async-lsq-noise, async-lsq-x0, async-lsq-long, async-lsq-stragglers: " \
           "`mpiclip reproduce async --full` runs them." in page
    assert "Straggler's share of ASGD's updates: s = 1: worker 39 made" in page


def gap(tr) -> np.ndarray:
    return tr.loss - tr.attrs["f_star"]


def test_the_best_runs_and_their_values_are_those_of_the_traces(tiny):
    """Recomputed from the traces: per (method, s) the γ (τ) with the smallest final f − f* among the runs
    that completed without blowing up, its value, its ratio to s = 1, and the tail median of the runs."""
    root, _, page, _ = tiny
    traces = traces_of(root, "async-lsq")
    table = markdown_tables(page)["lsq-best"]
    assert table[0][:7] == ["method", "s", "best γ", "τ", "final f − f*", "final(s)/final(1)", "tail median"]
    rows = {(r[0], r[1]): r for r in table[1:]}
    assert set(rows) == {(m, s) for m in ("ASGD", "Clipped ASGD") for s in ("1", "100")}

    def final(tr):
        g = gap(tr)
        ok = tr.status.startswith("completed") and np.isfinite(g[-1]) and g[-1] <= 10 * g[0]
        return g[-1] if tr.status.startswith("completed") and np.isfinite(g[-1]) else math.inf, ok

    best = {}
    for tr in traces:
        c = tr.config
        key = ({"asgd": "ASGD", "clipped_asgd": "Clipped ASGD"}[c["method"]["name"]], f"{c['async']['slow_factor']:g}")
        value = final(tr)[0]
        if key not in best or value < best[key][0]:
            best[key] = (value, tr)
    for key, (value, tr) in best.items():
        row = rows[key]
        assert row[2] == f"{tr.config['stepsize']['value']:g}" and row[4] == f"{value:.3g}", key
        base = best[(key[0], "1")][0]
        assert row[5] == f"{value / base:.2g}", key
        budget = tr.config["async"]["max_time"]
        g, t = gap(tr), tr.metrics["sim_time"]
        assert row[6] == f"{np.median(g[t >= 0.9 * budget]):.3g}", key
        assert row[10] == str(int(tr.attrs["tau_max"])) and row[8] == str(int(tr.rounds[-1])), key
    # every run's final value, or 'div' for one that failed or ended above 10x its start
    gammas = markdown_tables(page)["lsq-gamma-asgd"]
    assert gammas[0] == ["method", "s", "γ = 1", "γ = 2"]
    for tr in traces:
        if tr.config["method"]["name"] != "asgd":
            continue
        value, ok = final(tr)
        row = next(r for r in gammas[1:] if r[1] == f"{tr.config['async']['slow_factor']:g}")
        cell = row[2 + [1.0, 2.0].index(tr.config["stepsize"]["value"])]
        assert cell == (f"{value:.2g}" if ok else "div")


def test_a_variant_has_the_baseline_runs_at_its_grid_points(tiny):
    root, _, page, _ = tiny
    rows = markdown_tables(page)["async-lsq-assignment-best"][1:]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("assignment=finisher", "ASGD", "1", "1"), ("assignment=finisher", "ASGD", "100", "1"),
        ("assignment=random", "ASGD", "1", "1"), ("assignment=random", "ASGD", "100", "1")]
    assert "With the runs of async-lsq at the same grid points (2 runs) as the baseline." in page
    random = {tr.config["async"]["slow_factor"]: tr for tr in traces_of(root, "async-lsq-assignment")}
    assert rows[3][4] == f"{gap(random[100.0])[-1]:.3g}"
    assert rows[3][5] == f"{gap(random[100.0])[-1] / gap(random[1.0])[-1]:.2g}"
    assert rows[3][10] == str(int(random[100.0].rounds[-1]))


def test_without_async_lsq_a_variant_has_no_baseline_and_a_sweep_not_run_is_a_sentence(tiny, tmp_path):
    _, planned, _, _ = tiny
    sweeps = {p.sweep.params.name: p.sweep for p in planned}
    page = Page(str(tmp_path / "alone"), "alone")
    asynchronous.write(page, {"async-lsq-assignment": sweeps["async-lsq-assignment"]})
    text = "\n".join(page.lines)
    assert "Without the baseline: async-lsq is not in this preset." in text and page.problems == []
    rows = markdown_tables(text)["async-lsq-assignment-best"][1:]
    assert [r[0] for r in rows] == ["assignment=random", "assignment=random"]
    assert "async-a9a, async-lsq, async-lsq-homogeneous" in text
    # the same sweep with traces in a directory where none were written: no run, no table, one sentence
    (unrun,) = reproduce.plan(TINY, "laptop", str(tmp_path / "nothing"))[1:]
    page = Page(str(tmp_path / "unrun"), "unrun")
    asynchronous.write(page, {"async-lsq-assignment": unrun.sweep})
    assert "No completed runs yet (0 of 2 runs have a finished trace)." in page.lines and page.files == []


def test_the_laptop_preset_plans_without_data_and_shows_the_stragglers(tmp_path, monkeypatch):
    """Every sweep of the laptop preset is a cut of the shipped one (planned without data files); the data
    sets keep s = 1, 10, 100 with ASGD and Clipped ASGD; a variant's baseline points are in async-lsq's cut."""
    fam = asynchronous.FAMILY
    assert reproduce.family("async") is fam and fam.page == "RESULTS.md" and fam.docs == "docs/async"
    monkeypatch.delenv("MPICLIP_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no data file is found here
    planned = {p.sweep.params.name: p.sweep for p in reproduce.plan(fam, "laptop", str(tmp_path))}
    assert list(planned) == [s for s in fam.sweeps if s in fam.laptop] and set(fam.laptop) <= set(fam.sweeps)
    assert os.listdir(tmp_path) == []
    point = lambda run: (run.config.method.name, run.config.stepsize.value, run.config.method.params.tau)
    for name, sweep in planned.items():
        assert sweep.runs and all(r.config.section("async").max_time > 0 for r in sweep.runs)
        if name in asynchronous.DATASETS:
            shown = {(r.config.method.name, r.config.section("async").slow_factor) for r in sweep.runs}
            assert {(m, s) for m in ("asgd", "clipped_asgd") for s in (1.0, 10.0, 100.0)} <= shown, name
    baseline = {point(r) for r in planned["async-lsq"].runs}
    for name, _, _, uses_baseline in asynchronous.VARIANTS:
        if name in planned and uses_baseline:
            assert {point(r) for r in planned[name].runs} <= baseline, name
    assert sum(len(s.runs) for s in planned.values()) <= 100
