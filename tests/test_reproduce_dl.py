"""The deep-learning families of `mpiclip reproduce`: their pages from real (tiny) runs, the best setting per method
recomputed from the traces, the claims' sentences, the Slurm arrays of the papers' sizes, and the docs pages."""

import os
import re
import shlex
import textwrap

import numpy as np
import pytest
from helpers import REPO, checked_tables, markdown_tables, mpiclip

from mpiclip import reproduce
from mpiclip.cli.reproduce import MAX_ARRAY_SIZE
from mpiclip.trace import load_trace

pytest.importorskip("torch", reason="the network tests need the torch extra (tests/run.sh installs it)")

DL = ("ef21-dl", "clip21-dl", "dp-dl", "fed-dl", "async-dl")

# Each family's own writer on a cut of its first sweep: two step sizes, a few rounds
TINY = textwrap.dedent('''
    from mpiclip.reproduce import Cut, Family, async_dl, clip21_dl, dp_dl, ef21_dl, fed_dl

    def tiny(module, sweep, grids, rounds=12):
        fam = module.FAMILY
        sets = {**fam.laptop[sweep].set, "run.rounds": rounds, "run.eval_every": 4}
        return Family(name="tinydl." + fam.name.replace("-", "_"), title=fam.title + ", tiny", write=fam.write,
                      sweeps=(sweep,), laptop={sweep: Cut(grids=grids, set=sets)})

    EF21 = tiny(ef21_dl, "ef21-dl-resnet18", ({"stepsize.value": [0.03, 0.1]}, {"stepsize.value": [0.1]}))
    CLIP21 = tiny(clip21_dl, "clip21-dl-vgg11", ({"method.tau": [0.1, 1.0], "stepsize.value": [0.1]}, None))
    DP = tiny(dp_dl, "dp-dl-mnist", ({"method.target_epsilon": [3.0, 27.0], "method.tau": [1.0], "stepsize.value": [0.1]},))
    FED = tiny(fed_dl, "fed-dl-emnist", ({}, {}), rounds=4)
    ASYNC = tiny(async_dl, "async-dl-resnet20", ({"stepsize.value": [0.05], "async.slow_factor": [1.0, 100.0]},), rounds=40)
    ''')


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce-dl")
    (root / "tinydl").mkdir()
    (root / "tinydl" / "__init__.py").write_text("")
    for name in ("ef21", "clip21", "dp", "fed", "async"):
        (root / "tinydl" / f"{name}_dl.py").write_text(TINY + f"\nFAMILY = {name.upper()}\n")
    return root


def run_cli(workspace, args, ranks=None):
    env = {"PYTHONPATH": str(workspace) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return mpiclip(["reproduce", *args], ranks=ranks, cwd=str(workspace), timeout=900, env=env)


@pytest.fixture(scope="module")
def pages(workspace):
    """Every tiny family run once on 2 ranks, then its page."""
    families = [f"tinydl.{name}_dl" for name in ("ef21", "clip21", "dp", "fed", "async")]
    proc = run_cli(workspace, [*families, "--out", "pages", "--traces", "traces"], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr  # every figure passes the layout checks
    return workspace / "pages"


def page_of(pages, name):
    folder = pages / f"tinydl.{name}_dl"
    text = (folder / "README.md").read_text()
    return folder, text, checked_tables(folder, text)


def test_the_best_setting_of_each_method_is_the_best_mean_final_test_accuracy(pages, workspace):
    folder, text, tables = page_of(pages, "ef21")
    rows = {r[0]: r for r in tables["ef21-dl-resnet18"][1:]}
    assert set(rows) == {"EF21-SGD, Top-1 %", "EF21-SGD, Top-1 % per layer", "EF-SGD, Top-1 %", "EF-SGD, Top-1 % per layer",
                         "SGD (no compression)"}
    traces = [load_trace(str(p)) for p in (workspace / "traces" / "ef21-dl-resnet18").glob("*.h5")]
    for label, method, compressor in (("EF21-SGD, Top-1 % per layer", "ef21_sgd", True), ("EF-SGD, Top-1 %", "ef14_sgd", False)):
        mine = [tr for tr in traces if tr.attrs["method"] == method and tr.config["compressor"].get("per_layer") is compressor
                and tr.config["compressor"]["name"] == "topk_ratio"]
        best = max(mine, key=lambda tr: tr.metrics["test_accuracy"][-1])
        assert rows[label][1] == f"value {best.config['stepsize']['value']:g}"
        assert rows[label][3] == f"{best.metrics['test_accuracy'][-1]:.4f}"
        assert rows[label][6] == f"{best.bits_per_worker('paper')[-1]:.3g}"
        assert rows[label][7] == "2 (0)"
    claim = re.search(r"At laptop size with Top-1 %, EF21-SGD ends at a test accuracy of ([0-9.]+) and EF-SGD at ([0-9.]+)", text)
    assert claim and claim.group(1) == f"{float(rows['EF21-SGD, Top-1 %'][3]):.3f}"
    verdict = "ahead of" if float(claim.group(1)) > float(claim.group(2)) else "behind"
    assert verdict in text
    for figure in ("ef21-dl-resnet18-accuracy", "ef21-dl-resnet18-loss"):
        assert (folder / f"{figure}.png").stat().st_size > 1000 and (folder / f"{figure}.pdf").exists()


def test_every_family_page_states_its_claim_and_its_cost(pages):
    claims = {"ef21": "EF21 is", "clip21": "Clip21 is ahead at", "dp": "It is ahead in",
              "fed": "The paper's claim that FedGA beats FedAvg under one-class clients", "async": "Clipped ASGD is at least as steady"}
    for name, claim in claims.items():
        folder, text, tables = page_of(pages, name)
        assert claim in text, name
        assert "## At the papers' size" in text and f"mpiclip reproduce {name}-dl --full --slurm" in text
        assert f"{name}-dl-cost" in tables, name
        for figure in re.findall(r"!\[[^]]*\]\(([^)]+)\.png\)", text):
            assert (folder / f"{figure}.pdf").exists()


def test_dp_and_async_pages_split_by_budget_and_straggler(pages, workspace):
    _, text, tables = page_of(pages, "dp")
    assert "![dp-dl-mnist-replace-frontier](dp-dl-mnist-replace-frontier.png)" in text
    assert "![dp-dl-mnist-add_remove-frontier](dp-dl-mnist-add_remove-frontier.png)" in text
    methods = {r[0].split(",")[0] for r in tables["dp-dl-mnist"][1:]}
    assert methods == {"Clip21-SGD2M", "DP-SGD", "DP-Clip-SGD"} and len(tables["dp-dl-mnist"]) == 1 + 3 * 2 * 2
    _, text, tables = page_of(pages, "async")
    assert [r[0] for r in tables["async-dl-resnet20-steadiness"][1:]] == ["1×", "100×"]
    for row in tables["async-dl-resnet20-steadiness"][1:]:
        factor = float(row[0].rstrip("×"))
        plain = next(load_trace(str(p)) for p in (workspace / "traces" / "async-dl-resnet20").glob("*.h5")
                     if "nameasgd" in p.name and f"slow_factor={factor:g}," in p.name)
        drop = max(0.0, -np.min(np.diff(plain.metrics["test_accuracy"])))
        assert row[2] == f"{drop:.3f}"
    assert "async-dl-resnet20-slow_factor-100-accuracy.png" in text


@pytest.mark.parametrize("family", DL)
def test_full_slurm_dry_run_prints_the_arrays_within_max_array_size_and_writes_nothing(tmp_path, family):
    proc = mpiclip(["reproduce", family, "--full", "--slurm", "--dry-run", "--gpus", "1"], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    commands = [shlex.split(line) for line in lines if line.startswith("sbatch")]
    arrays, pages = commands[:-1], commands[-1]
    fam = reproduce.family(family)
    planned = {p.sweep.params.name: len(p.sweep.runs) for p in reproduce.plan(fam, "full", str(tmp_path))}
    for name, runs in planned.items():
        mine = [c for c in arrays if f"--job-name=mpiclip-{name}" in c]
        sizes = [int(next(a for a in c if a.startswith("--array=0-")).split("-")[-1]) + 1 for c in mine]
        assert sum(sizes) == runs and max(sizes) <= MAX_ARRAY_SIZE  # one run per task for the deep-learning families
        assert all("--gpus-per-task=1" in c for c in mine)
    assert pages[2].startswith("--dependency=afterany:") and "--gpus-per-task=1" not in pages
    assert "--report-only" in pages[-1] and "--gpus=1" in pages[-1]
    assert os.listdir(tmp_path) == []


def test_sweeps_larger_than_max_array_size_go_in_several_arrays_with_offsets(tmp_path):
    proc = mpiclip(["reproduce", "dp-dl", "--full", "--slurm", "--dry-run", "--max-array-size", "64"], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    mnist = [shlex.split(line) for line in proc.stdout.splitlines() if "--job-name=mpiclip-dp-dl-mnist" in line]
    assert [next(a for a in c if a.startswith("--array=")) for c in mnist] == ["--array=0-63", "--array=0-63", "--array=0-51"]
    offsets = [next((a.split("=")[-1] for a in c if a.startswith("--export=")), "0") for c in mnist]
    assert offsets == ["0", "64", "128"]  # sweep.sbatch adds MPICLIP_TASK_OFFSET to the array index
    assert all("--gpus-per-task" not in " ".join(c) for c in mnist)
    script = open(os.path.join(REPO, "jobs", "slurm", "sweep.sbatch")).read()
    assert '--task "$(( ${SLURM_ARRAY_TASK_ID:-0} + ${MPICLIP_TASK_OFFSET:-0} ))"' in script


def test_gpus_set_cuda_in_the_network_sweeps_only(tmp_path):
    net = reproduce.plan(reproduce.family("fed-dl"), "full", str(tmp_path), cuda=True)
    assert all(r.config.problem.params.device == "cuda" for p in net for r in p.sweep.runs)
    assert all("problem.device" not in p.text for p in reproduce.plan(reproduce.family("fed-dl"), "full", str(tmp_path)))
    numpy = reproduce.plan(reproduce.family("fed"), "full", str(tmp_path), cuda=True)
    assert all("problem.device" not in p.text for p in numpy)
    proc = mpiclip(["reproduce", "ef21-dl", "--dry-run"], cwd=str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "mpiclip: error: --dry-run = True: prints what --slurm would submit; add --slurm"]


@pytest.mark.parametrize("family", DL)
def test_the_docs_page_is_the_laptop_output_of_reproduce(family):
    """docs/<family> is the page `mpiclip reproduce FAMILY` made here (the papers' sizes need a cluster): its
    tables equal their CSVs, its figures have a PNG and a PDF, and every laptop run completed."""
    fam = reproduce.family(family)
    folder = os.path.join(REPO, fam.docs)
    page = open(os.path.join(folder, fam.page)).read()
    assert page.startswith(f"# {fam.title}\n\nMade by `mpiclip reproduce {family}` (laptop preset) from the traces")
    tables = checked_tables(folder, page)
    runs = {row[0]: row for row in tables["runs"][1:]}
    assert list(runs) == list(fam.laptop) and all(row[1] == row[2] for row in runs.values())
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\.png\)", page)
    assert figures and all(os.path.exists(os.path.join(folder, f + ext)) for f in figures for ext in (".png", ".pdf"))
    assert f"{family}-cost" in markdown_tables(page)


def test_every_deep_learning_sweep_has_its_cost_measured():
    import json
    from importlib import resources

    costs = json.loads(resources.files("mpiclip.reproduce").joinpath("dl_costs.json").read_text())
    measured = {r["sweep"]: r for r in costs["sweeps"]}
    for family in DL:
        for sweep in reproduce.family(family).sweeps:
            assert sweep in measured, sweep
            plan = reproduce.plan(reproduce.family(family), "full", "/nonexistent")
            runs = next(len(p.sweep.runs) for p in plan if p.sweep.params.name == sweep)
            row = measured[sweep]
            assert row["runs"] == runs and row["family"] == family
            hours = runs * (row["rounds"] * row["seconds_per_round"] + row["evaluations"] * row["seconds_per_evaluation"]) / 3600
            assert row["core_hours"] == pytest.approx(hours, rel=1e-6)

