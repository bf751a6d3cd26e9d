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
