"""Sweeps: expansion, validation, local runs in rank groups and slices, resuming, best-run selection."""

import math
import os

import numpy as np
import pytest
from helpers import REPO, mpiclip

from mpiclip.config import tomllib
from mpiclip.errors import InputError
from mpiclip.sweep import SelectParams, load_sweep, read_sweep, score, shipped_sweeps, status_of, sweep_file, sweep_of, sweep_text
from mpiclip.trace import load_trace

SWEEP = """
[sweep]
name = "tiny"
base = "synthetic-logreg"
output = "{out}/{{name}}"
[set]
"run.rounds" = 60
"run.n_workers" = 4
"data.n_samples" = 400
[[grid]]
"method.name" = ["ef21", "ef14"]
"stepsize.factor" = [0.5, 32]
[[grid]]
"method.name" = ["gd"]
"compressor.name" = ["identity"]
"stepsize.factor" = [1]
[select]
group = ["method.name"]
criterion = "{criterion}"
target = 1e-6
"""


def write(tmp_path, criterion="final", text=SWEEP):
    path = tmp_path / "s.toml"
    path.write_text(text.format(out=tmp_path / "res", criterion=criterion))
    return str(path)


def test_expansion_labels_and_overrides(tmp_path):
    sweep = load_sweep(write(tmp_path))
    assert [r.label for r in sweep.runs] == [
        "method.name=ef21,stepsize.factor=0.5", "method.name=ef21,stepsize.factor=32",
        "method.name=ef14,stepsize.factor=0.5", "method.name=ef14,stepsize.factor=32",
        "method.name=gd,compressor.name=identity,stepsize.factor=1"]
    first = sweep.runs[0].config
    assert first.run.rounds == 60 and first.run.n_workers == 4 and first.data.source.n_samples == 400
    assert first.trace_path == str(tmp_path / "res" / "tiny" / "method.name=ef21,stepsize.factor=0.5.h5")
    assert sweep.runs[4].config.compressor.name == "identity"


@pytest.mark.parametrize("change, message", [
    (("[select]", "[selekt]"), r"^selekt = .*: unknown sweep section"),
    (('"stepsize.factor" = [1]', '"stepsize.factor" = []'), r"^grid\[1\].stepsize.factor = \[\]: must be a non-empty list"),
    (('"stepsize.factor" = [0.5, 32]', '"stepsize.factr" = [0.5, 32]'), r"^--set stepsize.factr|^stepsize.factr = 0.5: unknown key"),
    (('base = "synthetic-logreg"', 'base = ""'), r"^sweep.base = '': a sweep needs a base config"),
    (('base = "synthetic-logreg"', 'base = "quickstart"'), r"^sweep.base = 'quickstart': must describe one run"),
    (('criterion = "{criterion}"', 'criterion = "best"'), r"^select.criterion = 'best': must be one of"),
    (('"stepsize.factor" = [1]', '"stepsize.factor" = [-1]'), r"^stepsize.factor = -1.0: must be > 0"),
])
def test_bad_sweeps(tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        load_sweep(write(tmp_path, text=SWEEP.replace(*change)))


@pytest.mark.parametrize("ranks, extra", [(None, []), (2, []), (2, ["--ranks-per-run", "2"])])
def test_run_resume_and_best(tmp_path, ranks, extra):
    path = write(tmp_path, criterion="bits_to")
    proc = mpiclip(["sweep", "run", path, *extra], ranks=ranks, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "5 completed, 0 skipped, 0 failed" in proc.stdout
    sweep = load_sweep(path)
    assert all(status_of(r.config.trace_path) == "completed" for r in sweep.runs)
    n_ranks = {load_trace(r.config.trace_path).attrs["n_ranks"] for r in sweep.runs}
    assert n_ranks == {2 if "--ranks-per-run" in extra else 1}
    again = mpiclip(["sweep", "run", path, *extra], ranks=ranks, cwd=str(tmp_path), timeout=300)
    assert "0 completed, 5 skipped" in again.stdout
    listing = mpiclip(["sweep", "list", path]).stdout
    assert "5 runs in" in listing and "5 completed" in listing
    best = mpiclip(["sweep", "best", path, "--plot", str(tmp_path / "best.png")])
    assert best.returncode == 0, best.stderr
    lines = best.stdout.splitlines()
    assert any(ln.startswith("ef21") and "factor=32" in ln for ln in lines)  # γ × 32 beats γ × 0.5
    assert (tmp_path / "best.png").stat().st_size > 5000


def test_task_slices_cover_the_sweep(tmp_path):
    path = write(tmp_path)
    for task in range(3):
        proc = mpiclip(["sweep", "run", path, "--task", str(task), "--runs-per-task", "2"], cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert f"{min(2, 5 - 2 * task)} runs on 1 group" in proc.stdout
    sweep = load_sweep(path)
    assert all(status_of(r.config.trace_path) == "completed" for r in sweep.runs)
    bad = mpiclip(["sweep", "run", path, "--task", "3", "--runs-per-task", "2"], cwd=str(tmp_path))
    assert bad.returncode == 2 and "--task = 3: is out of range: 5 runs, 2 per task" in bad.stderr


def test_ranks_per_run_must_divide_the_job(tmp_path):
    proc = mpiclip(["sweep", "run", write(tmp_path), "--ranks-per-run", "3"], ranks=2, cwd=str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "mpiclip: error: --ranks-per-run = 3: must divide the 2 ranks of the job"


class FakeTrace:
    def __init__(self, status, g, bits):
        self.status, self.grad_norm_sq, self._bits = status, np.array(g), np.array(bits, dtype=float)
        self.loss, self.attrs = np.zeros(len(g)), {}

    def bits_per_worker(self, encoding):
        return self._bits


def test_score_criteria():
    fast = FakeTrace("completed", [1.0, 1e-3, 1e-8, 1e-9], [0, 10, 20, 30])
    slow = FakeTrace("completed", [1.0, 1e-2, 1e-4, 1e-8], [0, 10, 20, 30])
    stuck = FakeTrace("completed", [1.0, 1e-3, 1e-4, 2e-4], [0, 10, 20, 30])
    failed = FakeTrace("failed: diverged at round 3", [1.0, 1e3], [0, 10])
    to = SelectParams(criterion="bits_to", target=1e-7)
    assert score(fast, to) == (0, 20.0) and score(slow, to) == (0, 30.0)
    assert score(stuck, to) == (1, 2e-4) and score(failed, to) == (2, math.inf)
    assert sorted([score(t, to) for t in (stuck, slow, failed, fast)])[0] == (0, 20.0)
    assert score(stuck, SelectParams(criterion="min")) == (1, 1e-4)
    assert score(stuck, SelectParams(criterion="final")) == (1, 2e-4)


def test_shipped_sweeps_are_found_by_name_and_files_by_path(tmp_path, monkeypatch):
    names = shipped_sweeps()
    assert "ef21-logreg-a9a" in names and "clip21-dp-mushrooms" in names and len(names) >= 20
    assert sweep_file("ef21-logreg-a9a") == os.path.join(REPO, "mpiclip", "sweeps", "ef21-logreg-a9a.toml")
    assert os.path.samefile(sweep_file(os.path.join(REPO, "jobs", "sweeps", "ef21-logreg-a9a")),  # a path; .toml added
                            os.path.join(REPO, "mpiclip", "sweeps", "ef21-logreg-a9a.toml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ef21-logreg-a9a.toml").write_text(SWEEP)
    (tmp_path / "mine.toml").write_text(SWEEP)
    assert sweep_file("ef21-logreg-a9a").startswith(REPO)  # a name is the shipped sweep's, whatever lies here
    assert sweep_file("./ef21-logreg-a9a.toml") == "./ef21-logreg-a9a.toml" and sweep_file("mine") == "mine.toml"
    with pytest.raises(InputError, match=r"^sweep = 'nosuch': is neither a sweep file nor a shipped sweep"):
        sweep_file("nosuch")
    with pytest.raises(InputError, match=r"^sweep = 'dir/nosuch.toml': no such file$"):
        sweep_file("dir/nosuch.toml")


@pytest.mark.parametrize("name", shipped_sweeps())
def test_a_shipped_sweep_written_back_is_the_same_sweep(name):
    table, path = read_sweep(name)
    assert tomllib.loads(sweep_text(table, "a header\nof two lines")) == table
    assert [r.label for r in load_sweep(name).runs] == [r.label for r in sweep_of(table, path).runs]


HUGE = """
[sweep]
name = "huge"
base = "synthetic-logreg"
output = "{out}/{{name}}"
[[grid]]
""" + "\n".join(f'"{key}" = [{", ".join(str(v) for v in range(1, 11))}]' for key in (
    "run.seed", "stepsize.factor", "compressor.k", "run.x0_scale", "run.eval_every", "run.check_every",
    "output.flush_rows", "output.flush_seconds", "run.tol")) + "\n"


def test_a_grid_of_a_billion_runs_is_counted_and_indexed_without_being_expanded(tmp_path):
    import tracemalloc

    tracemalloc.start()
    sweep = load_sweep(write(tmp_path, text=HUGE))
    run = sweep.runs[123456789]  # digits 1..9: the (d+1)-th value of each axis, the last axis fastest
    last = sweep.runs[-1]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(sweep.runs) == 10**9 and peak < 20 * 2**20  # a few configs' worth, not a billion runs'
    assert [v for _, v in run.values] == [2, 3, 4, 5, 6, 7, 8, 9, 10] and run.index == 123456789
    assert run.config.run.seed == 2 and run.config.run.tol == 10 and run.trace_path == run.config.trace_path
    assert last.index == 10**9 - 1 and [v for _, v in last.values] == [10] * 9


def test_the_lazy_runs_are_the_expanded_grids_in_order(tmp_path):
    """Point i of the lazy sweep is point i of itertools.product over each grid in turn; slices, negative
    indices and iteration agree, and every run's trace path is its config's."""
    import itertools

    sweep = load_sweep(write(tmp_path))
    table, _ = read_sweep(write(tmp_path))
    expected = [tuple(zip(g, combo)) for g in table["grid"] for combo in itertools.product(*g.values())]
    assert [r.values for r in sweep.runs] == expected and len(sweep.runs) == len(expected) == 5
    assert [r.index for r in sweep.runs] == list(range(5)) and sweep.runs[-1] == sweep.runs[4] == list(sweep.runs)[4]
    assert sweep.runs[1:4] == list(sweep.runs)[1:4] and sweep.runs[::2] == list(sweep.runs)[::2]
    assert all(r.trace_path == r.config.trace_path for r in sweep.runs)
    with pytest.raises(IndexError):
        sweep.runs[5]


def test_the_first_repeated_label_is_found_from_the_axes_as_expanding_would():
    """first_repeated against the label-by-label search over the expansion, on random grids with repeated texts
    (1 and 1.0 are both 'k=1'), repeated grids and grids of other keys."""
    import itertools
    import random

    from mpiclip.config import label_of
    from mpiclip.sweep import SweepRuns, _Composer

    rng = random.Random(0)
    composer = _Composer("base", "base", {}, [], "out")
    for _ in range(300):
        grids = []
        for _ in range(rng.randint(1, 3)):
            keys = rng.sample(["a", "b", "c"], rng.randint(0, 3)) if rng.random() < 0.7 else ["a", "b"]
            grids.append({k: [rng.choice([1, 2, 3, 1.0, 2.0, "x"]) for _ in range(rng.randint(1, 3))] for k in keys})
        runs = SweepRuns(grids, composer)
        seen, first = set(), None
        for run in runs:
            if run.label in seen:
                first = run.index
                break
            seen.add(run.label)
        assert runs.first_repeated() == first, grids
        assert [r.label for r in runs] == [label_of(tuple(zip(g, c))) for g in grids
                                           for c in itertools.product(*g.values())]


def test_a_repeated_point_and_a_bad_grid_are_one_line(tmp_path):
    twice = SWEEP.replace('"stepsize.factor" = [0.5, 32]', '"stepsize.factor" = [0.5, 32, 32.0]')
    with pytest.raises(InputError, match=r"^grid = 'method.name=ef21,stepsize.factor=32': appears twice"):
        load_sweep(write(tmp_path, text=twice))
    again = SWEEP + '[[grid]]\n"method.name" = ["ef14"]\n"stepsize.factor" = [4, 0.5]\n'
    with pytest.raises(InputError, match=r"^grid = 'method.name=ef14,stepsize.factor=0.5': appears twice"):
        load_sweep(write(tmp_path, text=again))
    with pytest.raises(InputError, match=r"^grid\[0\] = 5: must be a table"):
        sweep_of({"sweep": {"base": "synthetic-logreg"}, "grid": [5]}, str(tmp_path / "s.toml"))


def test_list_streams_counts_and_slices_and_a_huge_grid_is_counted_not_listed(tmp_path):
    small, huge = write(tmp_path), str(tmp_path / "huge.toml")
    (tmp_path / "huge.toml").write_text(HUGE.format(out=tmp_path / "res"))
    count = mpiclip(["sweep", "list", huge, "--count"])
    assert count.returncode == 0 and count.stdout == "1000000000\n"
    assert mpiclip(["sweep", "list", huge, "--count", "--runs-per-task", "7"]).stdout == "142857143\n"  # array tasks
    listing = mpiclip(["sweep", "list", huge])
    assert listing.returncode == 0 and listing.stdout.splitlines() == [
        f"1,000,000,000 runs in {tmp_path}/res/huge: too many to list one line each (at most 1,000,000); "
        "`--count` counts them, `--task I --runs-per-task M` lists slice I"]
    part = mpiclip(["sweep", "list", huge, "--task", "61728394", "--runs-per-task", "2"]).stdout.splitlines()
    assert [line.split()[0] for line in part[:2]] == ["123456788", "123456789"]
    assert part[1].endswith("run.tol=10") and part[2].startswith("2 of 1000000000 runs (slice 61728394)")
    whole = mpiclip(["sweep", "list", small]).stdout.splitlines()
    assert len(whole) == 6 and whole[-1].endswith("5 runs in " + str(tmp_path / "res" / "tiny") + ": 5 missing")
    show = mpiclip(["sweep", "run", huge, "--task", "123456789", "--show-config"])
    assert show.returncode == 0 and show.stdout.startswith("# [1/1] run.seed=2,stepsize.factor=3,")
    assert "\n[run]\nname = \"run.seed=2,stepsize.factor=3," in show.stdout and not (tmp_path / "res").exists()
    whole_run = mpiclip(["sweep", "run", huge])
    assert whole_run.returncode == 2 and whole_run.stderr.splitlines() == [
        "mpiclip: error: runs = 1000000000: too many for one process (at most 100,000): run slices of them with "
        "--task I --runs-per-task M, e.g. as a Slurm array (jobs/slurm/submit_sweep.sh)"]
