"""`mpiclip reproduce fed` (mpiclip/reproduce/federated.py): a tiny cut of fed-digits-pct0 (softmax, P = 10, four
methods, 10/20 rounds) run through the real machinery, its -seeds sweep written from the traces and run, then
the page: tables (Markdown = CSV), figures (PNG + PDF, no Type 3 fonts, no layout problems) and numbers
recomputed from the traces; the laptop preset's cuts; the seeds writer and its command line."""

import math
import os

import numpy as np
import pytest
from helpers import checked_tables, markdown_tables

from mpiclip import plotting, reproduce
from mpiclip.comm.serial import SerialComm
from mpiclip.config import tomllib
from mpiclip.reproduce import Cut, Family, federated
from mpiclip.reproduce.page import Page
from mpiclip.sweep import best_runs, load_sweep, read_sweep, sweep_text
from mpiclip.sweep_run import run_sweep
from mpiclip.trace import load_trace

SOFTMAX_P10 = {"problem.name": ["softmax"], "federated.clients_per_round": [10]}
CUT = Cut(grids=({**SOFTMAX_P10, "method.beta": [0.1, 1.0], "stepsize.value": [0.5]},  # FedGA
                 None,  # SCAFFOLD
                 {**SOFTMAX_P10, "method.beta": [0.1], "stepsize.value": [2.0]},  # GradAlign
                 {**SOFTMAX_P10, "method.name": ["fedavg"], "stepsize.value": [0.1, 0.5]},
                 None,  # FedProx
                 {**SOFTMAX_P10, "stepsize.value": [2.0]},  # large-batch SGD
                 None, None))
TABLES = {"runs", "claim-equal-communication", "claim-equal-server-rounds", "overview-accuracy", "overview-variance",
          "overview-last-10pct-accuracy", "overview-server-rounds-accuracy", "overview-server-rounds-variance",
          *(f"pct0-softmax-P10-{t}" for t in ("A", "B", "C", "beta-mu", "grid"))}
FIGURES = {"beta-pct0", "pct0-softmax-P10"}


def by_method(table: list) -> dict:
    return {row[0]: dict(zip(table[0], row)) for row in table[1:]}


def tiny_family(root, seeds: bool) -> Family:
    """fed-digits-pct0 with 10 server rounds for the aligning methods and 20 for the others (20x fewer), cut
    to CUT, as root/fed-digits-pct0.toml; with its -seeds sweep (root/fed-digits-pct0-seeds.toml) if ``seeds``."""
    tuning = root / "fed-digits-pct0.toml"
    if not tuning.exists():
        table, _ = read_sweep("fed-digits-pct0")
        for grid in table["grid"]:
            grid["run.rounds"] = [grid["run.rounds"][0] // 20]
            grid["run.eval_every"] = [1 if grid["run.rounds"][0] == 10 else 2]
        tuning.write_text(sweep_text(table, "fed-digits-pct0, 20x shorter"))
    sweeps = (str(tuning),) + ((str(root / "fed-digits-pct0-seeds.toml"),) if seeds else ())
    return Family(name="fed", title="GradAlign / FedGA, tiny", sweeps=sweeps, write=federated.write, page="RESULTS.md",
                  laptop={"fed-digits-pct0": CUT, **({"fed-digits-pct0-seeds": Cut()} if seeds else {})})


def run_all(planned) -> dict:
    summary, stopped = run_sweep([r for p in planned for r in p.sweep.runs], SerialComm(), say=lambda *a: None)
    assert stopped is None and summary["failed"] == 0
    return summary


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    """The tuning runs, the seeds sweep written from them and run, and the page of both."""
    root = tmp_path_factory.mktemp("fed")
    traces = str(root / "traces")
    planned = reproduce.plan(tiny_family(root, seeds=False), "laptop", traces)
    reproduce.write_sweep_files(planned)
    assert run_all(planned)["completed"] == 6
    said = []
    written = federated.write_seeds(str(root), "laptop", traces, family=tiny_family(root, False), say=said.append)
    assert written == [str(root / "fed-digits-pct0-seeds.toml")]
    assert said == [f"{written[0]}: 4 configurations x 2 seeds"]  # one per (model, P, method) of the cut
    planned = reproduce.plan(tiny_family(root, seeds=True), "laptop", traces)
    reproduce.write_sweep_files(planned)
    assert run_all(planned) == {"completed": 8, "skipped": 6, "failed": 0}
    pages, problems = reproduce.write_pages(planned, "laptop", str(root / "page"), "mpiclip reproduce fed")
    return {"root": root, "traces": root / "traces", "page": root / "page", "problems": problems, "pages": pages,
            "planned": planned}


def test_the_page_names_every_table_and_figure_and_each_csv_is_its_markdown_table(fed):
    assert fed["pages"] == [str(fed["page"] / "RESULTS.md")]
    page = (fed["page"] / "RESULTS.md").read_text()
    tables = checked_tables(fed["page"], page)
    assert set(tables) == TABLES
    for name in FIGURES:
        assert f"({name}.png)" in page and f"[{name}.pdf]({name}.pdf)" in page
        png, pdf = (fed["page"] / f"{name}.png").read_bytes(), (fed["page"] / f"{name}.pdf").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"/Type3" not in pdf and b"/FontFile2" in pdf
    assert fed["problems"] == []
    assert "Not in this preset: `fed-digits-oneclass`, `fed-synthetic`, `fed-synthetic-samples`" in page
    assert tables["runs"][1:] == [["fed-digits-pct0", "6", "6", "0", "0", "0"], ["fed-digits-pct0-seeds", "8", "8", "0", "0", "0"]]


def test_table_a_is_the_best_run_per_method_and_its_seeds_recomputed_from_the_traces(fed):
    """The best run per method by the final test accuracy (ties: the earlier run), then the mean ± sample std over
    it and its reruns with seeds 1 and 2, all from load_trace."""
    traces = [load_trace(str(p)) for d in ("fed-digits-pct0", "fed-digits-pct0-seeds")
              for p in sorted((fed["traces"] / d).glob("*.h5"))]
    assert len(traces) == 14 and all(tr.status.startswith("completed") for tr in traces)
    key = lambda tr: (tr.config["method"]["name"], tr.config["stepsize"]["value"], tr.config["method"].get("beta"))
    table = by_method(markdown_tables((fed["page"] / "RESULTS.md").read_text())["pct0-softmax-P10-A"])
    assert list(table) == ["FedGA", "GradAlign", "Large-batch SGD", "FedAvg"]
    for method, name in (("fedga", "FedGA"), ("gradalign", "GradAlign"), ("lbsgd", "Large-batch SGD"), ("fedavg", "FedAvg")):
        seed0 = [tr for tr in traces if tr.config["method"]["name"] == method and tr.config["run"]["seed"] == 0]
        best = max(seed0, key=lambda tr: tr.metrics["test_accuracy"][-1])  # no ties among these runs
        row = table[name]
        assert row["seed 0 acc %"] == f"{100 * best.metrics['test_accuracy'][-1]:.1f}"
        assert row["best configuration"].startswith(f"γ = {best.config['stepsize']['value']:g}")
        mine = [tr for tr in traces if key(tr) == key(best)]
        assert sorted(tr.config["run"]["seed"] for tr in mine) == [0, 1, 2] and row["seeds"] == "3"
        acc = 100 * np.array([tr.metrics["test_accuracy"][-1] for tr in mine])
        assert row["test accuracy %"] == f"{acc.mean():.1f} ± {acc.std(ddof=1):.1f}"
        comm = int(best.metrics["comm_rounds"][-1])
        assert (row["server rounds"], row["comm rounds (code)"]) == (str(int(best.rounds[-1])), str(comm)) and comm == 20
    fedavg = [tr for tr in traces if tr.config["method"]["name"] == "fedavg" and tr.config["run"]["seed"] == 0]
    grid = by_method(markdown_tables((fed["page"] / "RESULTS.md").read_text())["pct0-softmax-P10-grid"])
    for tr in fedavg:
        assert grid["FedAvg"][f"γ = {tr.config['stepsize']['value']:g}"] == f"{100 * tr.metrics['test_accuracy'][-1]:.1f}"


def test_the_claim_table_compares_at_equal_communication(fed):
    """FedGA − FedAvg: the difference of the mean final accuracies over the seeds and its standard error."""
    claim = markdown_tables((fed["page"] / "RESULTS.md").read_text())["claim-equal-communication"]
    a = by_method(markdown_tables((fed["page"] / "RESULTS.md").read_text())["pct0-softmax-P10-A"])
    assert claim[1][0] == "Digits, percentage-iid 0, softmax, P = 10 of 10"
    mean_sd = lambda text: tuple(float(x) for x in text.split(" ± "))
    (m1, s1), (m2, s2) = mean_sd(a["FedGA"]["test accuracy %"]), mean_sd(a["FedAvg"]["test accuracy %"])
    diff, se = claim[1][1].split(" (")[0].split(" ± ")
    assert abs(float(diff) - (m1 - m2)) <= 0.11 and abs(float(se) - math.sqrt((s1 ** 2 + s2 ** 2) / 3)) <= 0.11


def test_without_the_seeds_sweep_the_tables_show_seed_0_alone(fed, tmp_path):
    class Tables(Page):  # the tables only: the figures are those of the page with the seeds
        def figure(self, name, fig, alt=""):
            plotting.pyplot().close(fig)

    page = Tables(str(tmp_path), "fed")
    federated.write(page, {p.sweep.params.name: p.sweep for p in fed["planned"] if p.sweep.params.name == "fed-digits-pct0"})
    text = "\n".join(page.lines)
    assert "`fed-digits-pct0-seeds` is not in this preset: seed 0 alone." in text
    table = by_method(markdown_tables(text)["pct0-softmax-P10-A"])
    assert {row["seeds"] for row in table.values()} == {"1"}
    assert all(row["test accuracy %"] == row["seed 0 acc %"] for row in table.values())


def test_sweeps_without_traces_give_a_sentence(tmp_path):
    """The laptop preset planned over an empty directory: a page without figures, nothing raised."""
    planned = reproduce.plan(federated.FAMILY, "laptop", str(tmp_path / "traces"))
    (page,), problems = reproduce.write_pages(planned, "laptop", str(tmp_path / "page"), "mpiclip reproduce fed")
    text = open(page).read()
    assert "`fed-digits-pct0`: none of its 16 runs has completed yet." in text and "No completed runs yet" in text
    assert problems == [] and not list((tmp_path / "page").glob("*.png"))


# -- the laptop preset --------------------------------------------------------------------------------------------
def test_the_laptop_preset_plans_and_its_seeds_reruns_are_configurations_of_its_grid(tmp_path):
    """Every cut is valid, and every configuration the laptop's -seeds sweeps rerun is a run of the laptop's tuning
    grid (so that, when it is the grid's best, as in the full sweep, its seeds are used)."""
    planned = {p.sweep.params.name: p.sweep for p in reproduce.plan(federated.FAMILY, "laptop", str(tmp_path))}
    assert set(planned) == set(federated.FAMILY.laptop) and len(planned) == 4
    assert os.listdir(tmp_path) == []
    for name in ("fed-digits-pct0", "fed-synthetic-samples"):
        grid = {tuple(v for v in r.values if v[0] != "run.seed") for r in planned[name].runs}
        seeds = planned[f"{name}-seeds"].runs
        assert len(seeds) == 8 and {r.config.method.name for r in seeds} == set(federated.CLAIM)
        for run in seeds:
            point = dict(run.values)
            assert point.pop("run.seed") in (1, 2)
            assert any(dict(g) == point for g in grid), run.label
    assert sum(len(s.runs) for s in planned.values()) <= 60  # a few minutes on two cores


# -- the seeds writer -----------------------------------------------------------------------------------------------
def test_the_seeds_sweep_reruns_the_best_configuration_of_each_group(fed):
    """Checked against `mpiclip sweep best`'s own selection (mpiclip.sweep.best_runs)."""
    seeds = load_sweep(str(fed["root"] / "fed-digits-pct0-seeds.toml"))
    assert seeds.params.name == "fed-digits-pct0-seeds" and seeds.params.base == "fed-digits"
    tuning = next(p.sweep for p in fed["planned"] if p.sweep.params.name == "fed-digits-pct0")
    chosen = [b for b in best_runs(tuning) if b.run is not None]
    assert len(chosen) == 4
    expected = {(b.run.values, s) for b in chosen for s in (1, 2)}
    assert {(tuple(v for v in r.values if v[0] != "run.seed"), dict(r.values)["run.seed"]) for r in seeds.runs} == expected
    written = tomllib.loads((fed["root"] / "fed-digits-pct0-seeds.toml").read_text())
    assert written["set"] == read_sweep("fed-digits-pct0")[0]["set"]  # everything else as in the tuning sweep
    assert seeds.select.metric == "test_accuracy" and seeds.select.criterion == "final"


def test_the_seeds_writer_keeps_existing_files_and_its_command_line(fed, tmp_path):
    target = tmp_path / "fed-digits-pct0-seeds.toml"
    target.write_text("# mine\n")
    family, said = tiny_family(fed["root"], seeds=False), []
    assert federated.write_seeds(str(tmp_path), "laptop", str(fed["traces"]), family=family, say=said.append) == []
    assert target.read_text() == "# mine\n" and "exists; not written (--overwrite replaces it)" in said[0]
    assert federated.write_seeds(str(tmp_path), "laptop", str(fed["traces"]), family=family, overwrite=True,
                                 say=said.append) == [str(target)]
    body = lambda path: [line for line in path.read_text().splitlines() if not line.startswith("#")]  # comments name the file
    assert body(target) == body(fed["root"] / "fed-digits-pct0-seeds.toml") and f"sweep run {target}" in target.read_text()
    # the command line on the real family: no traces of its laptop preset here, so nothing is written
    out = tmp_path / "cli"
    assert federated.main(["--write-seeds", str(out), "--laptop", "--traces", str(tmp_path / "none")]) == 1
    assert not out.exists()
