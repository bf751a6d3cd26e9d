"""`mpiclip reproduce`: presets cut from the shipped sweeps, real runs of small families, the pages they
write (Markdown and CSV tables, PNG and PDF figures), and bad input."""

import os
import re
import sys
import textwrap

import numpy as np
import pytest
from helpers import REPO, checked_tables, markdown_tables, mpiclip, random_classification, write_libsvm

from mpiclip import reproduce
from mpiclip.config import tomllib
from mpiclip.errors import InputError
from mpiclip.plotting import PRIVACY_UNITS
from mpiclip.reproduce import Cut, cut_table
from mpiclip.sweep import read_sweep, sweep_of
from mpiclip.trace import load_trace

# Small families made of cuts of the shipped sweeps, importable as `tinyfamilies.ef21` and `tinyfamilies.clip21`
TINY = textwrap.dedent('''
    from mpiclip.reproduce import Cut, Family, clip21, ef21, frontier

    EF21 = Family(name="tinyfamilies.ef21", title="EF21, tiny", write=ef21.write, sweeps=("ef21-logreg-phishing",),
                  laptop={"ef21-logreg-phishing": Cut(
                      grids=({"method.name": ["ef21", "ef21_plus"], "compressor.k": [1], "stepsize.factor": [16, 256]},
                             {"stepsize.factor": [1]}),
                      set={"run.rounds": 120, "run.max_bits": 20000})})
    CLIP21 = Family(name="tinyfamilies.clip21", title="Clip21, tiny", write=clip21.write,
                    sweeps=("clip21-counterexample", "clip21-dp-mushrooms"),
                    laptop={"clip21-counterexample": Cut(grids=({"method.tau": [0.5, 1.2]},), set={"run.rounds": 60}),
                            "clip21-dp-mushrooms": Cut(grids=({"method.target_epsilon": [16.0], "method.tau": [0.03],
                                                               "stepsize.factor": [0.3], "run.seed": [0, 1]}, None),
                                                       set={"run.rounds": 30})})
    SMALL = {"method.target_epsilon": [4.0, 16.0], "run.seed": [0, 1]}
    # the shipped sweep's grids, in order: Clip-SGD (three τ), Clip-SGDM, the same four with Poisson lots, DP-SGD
    # (replace, Poisson add/remove, worker), Clip21-GD (three τ), Clip21-SGD2M (two τ)
    DP = Family(name="tinyfamilies.dp", title="DP, tiny", write=frontier.write, sweeps=("dp-frontier-mushrooms",),
                laptop={"dp-frontier-mushrooms": Cut(grids=(
                    None, None, None, None, None, None, None, None,
                    {"method.tau": [1.0], "stepsize.factor": [0.3, 1.0], **SMALL}, None,
                    {"method.tau": [0.1], "stepsize.factor": [0.01, 0.1], **SMALL},
                    None, {"stepsize.factor": [0.1, 1.0], **SMALL}, None,
                    None, {"method": [{"name": "clip21_sgd2m", "batch": 1.0, "beta1": 0.1, "beta2": 0.1}],
                           "stepsize.factor": [0.01, 0.1], **SMALL}), set={"run.rounds": 20})})
    ''')


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A directory with the tiny families (a package on PYTHONPATH) and small stand-ins of the data sets."""
    root = tmp_path_factory.mktemp("reproduce")
    package = root / "tinyfamilies"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ef21.py").write_text(TINY + "\nFAMILY = EF21\n")
    (package / "clip21.py").write_text(TINY + "\nFAMILY = CLIP21\n")
    (package / "dp.py").write_text(TINY + "\nFAMILY = DP\n")
    data = root / "data"
    data.mkdir()
    for name, seed in (("phishing.txt", 1), ("mushrooms.txt", 2)):
        write_libsvm(str(data / name), *random_classification(n=240, d=9, seed=seed))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


def run_cli(workspace, args, ranks=None, cwd=None):
    env = {"PYTHONPATH": str(workspace) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return mpiclip(["reproduce", *args, "--data-dir", str(workspace / "data")], ranks=ranks, cwd=str(cwd or workspace),
                   timeout=600, env=env)


# -- presets ------------------------------------------------------------------------------------------------
def test_a_cut_keeps_subsets_of_the_grids_drops_grids_and_sets_keys():
    table, _ = read_sweep("clip21-dp-mushrooms")
    cut = cut_table("x", table, Cut(grids=({"method.tau": [0.3, 0.01]}, None), set={"run.rounds": 7}))
    assert [g["method.tau"] for g in cut["grid"]] == [[0.3, 0.01]] and cut["set"]["run.rounds"] == 7
    assert len(table["grid"]) == 2 and table["set"]["run.rounds"] == 300  # the shipped table is left alone
    with pytest.raises(ValueError, match=r"method.tau = \[0.5\] is not a subset of the grid's"):
        cut_table("x", table, Cut(grids=({"method.tau": [0.5]},)))
    with pytest.raises(ValueError, match="cuts method.beta, which grid 0 does not vary"):
        cut_table("x", table, Cut(grids=({"method.beta": [1.0]},)))
    with pytest.raises(ValueError, match="cuts 3 grids of 2"):
        cut_table("x", table, Cut(grids=({}, {}, {})))


@pytest.mark.parametrize("name", list(reproduce.MODULES))
def test_every_family_plans_both_presets_and_the_laptop_runs_are_runs_of_the_paper(name, tmp_path):
    fam = reproduce.family(name)
    full = {p.sweep.params.name: p for p in reproduce.plan(fam, "full", str(tmp_path / "full"))}
    laptop = reproduce.plan(fam, "laptop", str(tmp_path / "laptop"))
    assert list(full) == list(fam.sweeps) and 0 < len(laptop) <= len(full)
    for p in laptop:
        shipped = {r.label for r in full[p.sweep.params.name].sweep.runs}
        assert {r.label for r in p.sweep.runs} <= shipped
        again = sweep_of(tomllib.loads(p.text), p.path)  # the file written is the sweep planned
        assert [r.config for r in again.runs] == [r.config for r in p.sweep.runs]
        assert all(r.config.trace_path.startswith(str(tmp_path / "laptop" / p.sweep.params.name)) for r in p.sweep.runs)
    assert sum(len(p.sweep.runs) for p in laptop) < sum(len(p.sweep.runs) for p in full.values())
    assert os.listdir(tmp_path) == []  # planning writes nothing


def test_families_by_name_all_and_module():
    assert [f.name for f in reproduce.families(["all"])] == list(reproduce.MODULES)
    assert [f.name for f in reproduce.families(["clip21", "ef21", "clip21"])] == ["clip21", "ef21"]
    with pytest.raises(InputError, match=r"^family = 'ef12': is not a family \(families: ef21, clip21"):
        reproduce.family("ef12")
    with pytest.raises(InputError, match=r"^family = 'no.such.module': cannot be imported"):
        reproduce.family("no.such.module")
    with pytest.raises(InputError, match=r"^family = 'mpiclip.sweep': is a module without a FAMILY"):
        reproduce.family("mpiclip.sweep")


# -- real runs -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ef21_page(workspace):
    proc = run_cli(workspace, ["tinyfamilies.ef21", "--out", "ef21-page", "--traces", "traces"])
    assert proc.returncode == 0, proc.stderr
    assert "reproduce: 5 runs: 5 completed, 0 skipped, 0 failed" in proc.stdout and "warning" not in proc.stderr
    return workspace / "ef21-page"


def test_the_page_shows_every_table_as_markdown_and_csv_and_every_figure_as_png_and_pdf(ef21_page):
    page = (ef21_page / "README.md").read_text()
    assert page.startswith("# EF21, tiny\n\nMade by `mpiclip reproduce tinyfamilies.ef21` (laptop preset)")
    tables = checked_tables(ef21_page, page)
    assert set(tables) == {"runs", "ef21-logreg-phishing-best", "ef21-logreg-phishing-paper"}
    assert tables["runs"][1] == ["ef21-logreg-phishing", "5", "5", "0", "0", "0"]
    assert "![ef21-logreg-phishing: best run per method](ef21-logreg-phishing.png)" in page
    png, pdf = (ef21_page / "ef21-logreg-phishing.png").read_bytes(), (ef21_page / "ef21-logreg-phishing.pdf").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"/Type3" not in pdf and b"/FontFile2" in pdf
    assert b"/CreationDate" not in pdf  # the same figure gives the same bytes


def test_the_best_run_is_the_one_with_the_fewest_bits_to_the_target(ef21_page, workspace):
    """Recomputed from the traces: runs reaching 1e-7 by their bits when they first do, the others after."""
    traces = [load_trace(str(p)) for p in sorted((workspace / "traces" / "ef21-logreg-phishing").glob("*.h5"))]
    rows = {r[0]: r for r in markdown_tables((ef21_page / "README.md").read_text())["ef21-logreg-phishing-best"][1:]}
    for method, name in (("ef21", "EF21"), ("ef21_plus", "EF21+")):
        mine = [tr for tr in traces if tr.attrs["method"] == method]
        def score(tr):
            hit = np.flatnonzero(tr.grad_norm_sq <= 1e-7)
            return (0, tr.bits_per_worker("paper")[hit[0]]) if len(hit) else (1, tr.grad_norm_sq[-1])
        best = min(mine, key=score)
        factor = best.config["stepsize"]["factor"]
        assert rows[name][1] == f"k=1, factor={factor:g}"
        assert rows[name][2] == f"{best.grad_norm_sq[-1]:.3g}"
    paper = markdown_tables((ef21_page / "README.md").read_text())["ef21-logreg-phishing-paper"]
    assert [r[0] for r in paper[1:]] == ["EF21", "EF", "EF21+", "GD"]
    assert paper[2][3] == "not in this preset"  # EF is not in the tiny family
    ef21_16 = next(tr for tr in traces if tr.attrs["method"] == "ef21" and tr.config["stepsize"]["factor"] == 16)
    assert paper[1][3] == f"{ef21_16.grad_norm_sq[-1]:.3g}"


def test_a_second_reproduce_runs_nothing_and_writes_the_same_page(ef21_page, workspace):
    before = {p.name: p.read_bytes() for p in ef21_page.iterdir()}
    proc = run_cli(workspace, ["tinyfamilies.ef21", "--out", "ef21-page", "--traces", "traces"])
    assert proc.returncode == 0 and "0 completed, 5 skipped" in proc.stdout, proc.stderr
    assert {p.name: p.read_bytes() for p in ef21_page.iterdir()} == before


def test_clip21_pages_on_one_and_two_ranks_are_the_same(workspace, ef21_page):
    """A family's page, tables and PDFs are equal on 1 and 2 ranks; two families make an index page."""
    pages = {}
    for ranks, traces in ((None, "traces"), (2, "traces-2")):
        out = f"clip-{ranks}"
        proc = run_cli(workspace, ["tinyfamilies.clip21", "--out", out, "--traces", traces], ranks=ranks)
        assert proc.returncode == 0, proc.stderr
        assert "reproduce: 9 runs: 9 completed" in proc.stdout and "warning" not in proc.stderr
        pages[ranks] = {p.name: p.read_bytes() for p in (workspace / out).iterdir() if not p.name.endswith(".png")}
    assert pages[None] == pages[2]
    both = run_cli(workspace, ["tinyfamilies.clip21", "tinyfamilies.ef21", "--out", "both", "--traces", "traces",
                               "--report-only"])
    assert both.returncode == 0 and "runs:" not in both.stdout, both.stderr
    index = (workspace / "both" / "README.md").read_text()
    assert "| [Clip21, tiny](tinyfamilies.clip21/README.md) | 9 | 9 |" in index
    assert "| [EF21, tiny](tinyfamilies.ef21/README.md) | 5 | 5 |" in index
    below_the_command = lambda path: path.read_text().split("\n", 3)[3]
    assert below_the_command(workspace / "both" / "tinyfamilies.ef21" / "README.md") == below_the_command(ef21_page / "README.md")
    page = pages[2]["README.md"].decode()
    tables = checked_tables(workspace / "clip-2", page)
    assert set(tables) == {"runs", "clip21-counterexample", "clip21-dp-mushrooms", "clip21-dp-mushrooms-common"}
    dp = tables["clip21-dp-mushrooms"]
    assert dp[0] == ["method", "ε", "best τ", "factor", "seeds", "final ‖∇f‖²", "accuracy", "σ"]
    assert [(r[0], r[1], r[4]) for r in dp[1:]] == [("Clip21-GD", "16", "2"), ("Clip-GD", "16", "2")]
    traces = [load_trace(str(p)) for p in sorted((workspace / "traces-2" / "clip21-dp-mushrooms").glob("*.h5"))]
    for row in dp[1:]:
        mine = [tr for tr in traces if tr.attrs["method"] == {"Clip-GD": "clip_gd", "Clip21-GD": "clip21_gd"}[row[0]]
                and tr.config["method"]["target_epsilon"] == float(row[1])]
        assert row[5] == f"{np.mean([tr.grad_norm_sq[-1] for tr in mine]):.3g}"
        assert float(row[7]) > 0 and len(mine) == 2
    assert "![clip21-counterexample-activity](clip21-counterexample-activity.png)" in page


def test_the_frontier_picks_the_best_mean_f_per_method_unit_and_budget(workspace):
    """Per privacy unit, method and ε the page shows the settings with the least mean final f over the seeds, its
    mean and range, and Clip21-SGD2M's difference to the best baseline and to Clip21-GD (recomputed here)."""
    proc = run_cli(workspace, ["tinyfamilies.dp", "--out", "dp", "--traces", "traces"])
    assert proc.returncode == 0, proc.stderr
    assert "reproduce: 48 runs: 48 completed" in proc.stdout and "warning" not in proc.stderr
    page = (workspace / "dp" / "README.md").read_text()
    tables = checked_tables(workspace / "dp", page)
    traces = [load_trace(str(p)) for p in (workspace / "traces" / "dp-frontier-mushrooms").glob("*.h5")]
    names = {"DP-SGD": "dp_sgd", "Clip21-GD": "clip21_gd", "Clip21-SGD2M": "clip21_sgd2m"}
    for relation in ("replace", "add_remove"):
        rows = tables[f"dp-frontier-mushrooms-{relation}"]
        assert rows[0] == ["method", "ε", "best settings", "seeds", "final ‖∇f‖²", "final f", "final accuracy"]
        assert sorted((r[0], r[1]) for r in rows[1:]) == sorted((m, e) for m in names for e in ("4", "16"))
        means, accuracy = {}, {}
        spread = lambda values, fmt: f"{np.mean(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"
        for method, eps, settings, seeds, grad, f, acc in rows[1:]:
            by_factor = {}
            for tr in traces:
                if (tr.attrs["method"], tr.config["method"]["relation"], tr.config["method"]["target_epsilon"]) == (
                        names[method], relation, float(eps)):
                    by_factor.setdefault(tr.config["stepsize"]["factor"], []).append(tr)
            factor = min(by_factor, key=lambda k: np.mean([tr.loss[-1] for tr in by_factor[k]]))
            chosen = by_factor[factor]
            # two factors, both edges: explained (†) where the best has not trained, else not (*)
            start = np.mean([tr.loss[0] for tr in chosen])
            stood_still = start - np.mean([tr.loss[-1] for tr in chosen]) < 1e-3 * start
            assert settings.endswith(f"factor {factor:g}{'†' if stood_still else '*'}") and seeds == "2"
            taus = {tr.config["method"]["tau"] for trs in by_factor.values() for tr in trs}
            assert len(taus) == 1 and settings.startswith(f"tau {taus.pop():g},")  # one value: no edge
            side = "below" if factor == min(by_factor) else "above"
            why = [r[3] for r in tables[f"dp-frontier-mushrooms-{relation}-edges"][1:] if r[:3] == [method, eps, f"factor {side}"]]
            assert len(why) == 1 and why[0].startswith("the best improves on x⁰" if stood_still else "unexplained")
            assert f == spread([tr.loss[-1] for tr in chosen], ".5g")
            assert grad == spread([tr.grad_norm_sq[-1] for tr in chosen], ".3g")
            assert acc == spread([tr.metrics["accuracy"][-1] for tr in chosen], ".4f")
            means[(method, eps)] = np.mean([tr.loss[-1] for tr in chosen])
            accuracy[(method, eps)] = np.mean([tr.metrics["accuracy"][-1] for tr in chosen])
        # the reading names the least mean f per ε; the noise table is σ/τ of the chosen runs' messages
        winner = min((m for m, e in means if e == "4"), key=lambda m: means[(m, "4")])
        unit = PRIVACY_UNITS[relation]
        line = next(x for x in page.splitlines() if x.startswith(f"- **dp-frontier-mushrooms, {unit}**"))
        assert f"{winner} at ε = 4" in line or f"{winner} at ε = 4–" in line
        noise = {r[0]: r[1:] for r in tables[f"dp-frontier-mushrooms-{relation}-noise"][1:]}
        dp = [tr for tr in traces if (tr.attrs["method"], tr.config["method"]["relation"],
                                      tr.config["method"]["target_epsilon"]) == ("dp_sgd", relation, 4.0)]
        assert {f"{np.nanmin(tr.workers['noise_scale'][0]) / tr.config['method']['tau']:.3g}" for tr in dp} >= {noise["DP-SGD"][0]}
        verdict = tables[f"dp-frontier-mushrooms-{relation}-verdict"]
        for eps, ours, leader, difference, to_clip21, our_accuracy, their_accuracy in verdict[1:]:
            assert ours == f"{means[('Clip21-SGD2M', eps)]:.4g}" and leader.startswith("DP-SGD ")  # the only baseline
            assert our_accuracy == f"{accuracy[('Clip21-SGD2M', eps)]:.4f}"
            assert their_accuracy == f"{accuracy[('DP-SGD', eps)]:.4f}"
            assert difference == f"{means[('Clip21-SGD2M', eps)] - means[('DP-SGD', eps)]:+.3g}"
            assert to_clip21 == f"{means[('Clip21-SGD2M', eps)] - means[('Clip21-GD', eps)]:+.3g}"
    for relation in ("replace", "add_remove"):
        for key in ("grad_norm_sq", "loss", "accuracy"):
            assert f"![dp-frontier-mushrooms-{relation}-{key}](dp-frontier-mushrooms-{relation}-{key}.png)" in page


# -- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["ef12"], "family = 'ef12': is not a family (families: ef21, clip21, async, fed, dp, ef21bw, ef21-dl, clip21-dl, dp-dl, "
               "fed-dl, async-dl, all; or a module.name)"),
    (["tinyfamilies.ef21", "--ranks-per-run", "3"], "--ranks-per-run = 3: must divide the 1 ranks of the job"),
    (["tinyfamilies.ef21", "--runs-per-task", "0", "--slurm"], "--runs-per-task = 0: must be >= 1"),
    (["tinyfamilies.ef21", "--slurm", "--report-only"],
     "--report-only = True: and --slurm are alternatives (the pages' job runs --report-only)"),
])
def test_bad_input_is_one_line_and_writes_nothing(workspace, tmp_path, args, message):
    proc = run_cli(workspace, args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"mpiclip: error: {message}"]
    assert os.listdir(tmp_path) == []


def test_a_missing_data_file_is_named_before_anything_is_written(workspace, tmp_path):
    env = {"PYTHONPATH": str(workspace), "MPICLIP_DATA_DIR": ""}
    for ranks in (None, 2):
        proc = mpiclip(["reproduce", "tinyfamilies.clip21"], ranks=ranks, cwd=str(tmp_path), env=env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and lines == ["mpiclip: error: data.path = 'mushrooms.txt': no such file (--data-dir DIR "
                                                  "or $MPICLIP_DATA_DIR adds directories to look in); sweep "
                                                  "clip21-dp-mushrooms reads it"], proc.stderr
        assert os.listdir(tmp_path) == []


# -- the docs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ef21", "clip21", "dp"])
def test_the_docs_page_is_the_full_output_of_reproduce(name):
    """docs/reproduction, docs/clip21 and docs/dp are `mpiclip reproduce NAME --full` pages: every table's CSV, figure
    and PDF beside them. (The RESULTS.md of docs/async and docs/fed hold sweeps of several hours each, made
    before `reproduce`; they become its output when those sweeps are run again.)"""
    fam = reproduce.family(name)
    folder = os.path.join(REPO, fam.docs)
    page = open(os.path.join(folder, fam.page)).read()
    assert page.startswith(f"# {fam.title}\n\nMade by `mpiclip reproduce {name} --full` from the traces")
    tables = checked_tables(folder, page)
    assert "runs" in tables and len(tables) > len(fam.sweeps)
    runs = {row[0]: row for row in tables["runs"][1:]}
    # every run of the paper's grid ran to an end (runs at too large a step size diverge: 'failed')
    assert list(runs) == list(fam.sweeps) and all(row[4:] == ["0", "0"] for row in runs.values())
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\.png\)", page)
    assert figures and all(os.path.exists(os.path.join(folder, f + ext)) for f in figures for ext in (".png", ".pdf"))


def test_a_spread_is_text_in_the_page_and_numbers_beside_it_in_the_csv(tmp_path):
    """'mean ± std' and 'mean (low–high)' cells: the Markdown is the text alone (as before), the CSV keeps every
    text column in its place and adds '<column> mean/low/high' as numbers after each column that has spreads."""
    import csv

    from mpiclip.reproduce.federated import pm
    from mpiclip.reproduce.frontier import spread
    from mpiclip.reproduce.page import Page, markdown_table

    rows = [["a", pm([0.5, 0.7], pct=True), spread([1.0, 2.0, 4.5], ".3g"), "x"],
            ["b", pm([0.25]), "-", "y"], ["c", pm([]), spread([3.0], ".3g"), "z"]]
    header = ["method", "acc %", "final f", "note"]
    page = Page(str(tmp_path), "t")
    page.table("t", header, rows)
    assert markdown_table(header, rows) == markdown_table(header, [[str(c) for c in r] for r in rows])
    assert [str(c) for c in rows[0]] == ["a", "60.0 ± 14.1", "2.5 (1–4.5)", "x"]
    with open(tmp_path / "t.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["method", "acc %", "acc % mean", "acc % low", "acc % high", "final f", "final f mean",
                        "final f low", "final f high", "note"]
    mean, low, high = (float(v) for v in table[1][2:5])
    assert mean == pytest.approx(60.0) and low == pytest.approx(60 - 100 * np.std([0.5, 0.7], ddof=1))
    assert high == pytest.approx(60 + 100 * np.std([0.5, 0.7], ddof=1))
    assert table[1][5:9] == ["2.5 (1–4.5)", "2.5", "1.0", "4.5"]
    assert table[2][1:9] == ["0.25", "0.25", "", "", "-", "", "", ""]  # one value: no spread; none at all: empty
    assert table[3][1:9] == ["-", "", "", "", "3", "3.0", "", ""]
    checked_tables(tmp_path, page.write() and (tmp_path / "README.md").read_text())
