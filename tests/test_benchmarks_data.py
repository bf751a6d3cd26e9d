"""The bench scripts find their data as `mpiclip run` does (the path, then --data-dir and $MPICLIP_DATA_DIR), and in
a fresh clone without the data they end in one line naming the data set and where they looked (issue 28, item 9)."""

import os
import subprocess
import sys

import pytest
from helpers import REPO

BENCHMARKS = os.path.join(REPO, "benchmarks")
SCRIPTS = [("bench_ef21_a9a.py", "--data"), ("bench_async.py", "--data"), ("bench_checkpoint.py", "--data"),
           ("bench_scale.py", "data set"), ("suite.py", "data set"), ("bench_time_model.py", "--data"),
           ("bench_scaling.py", "--data")]
DATA = {"bench_time_model.py": "mushrooms.txt"}  # the others read a9a


def bench(script: str, cwd, data_dir, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPICLIP_DATA_DIR": str(data_dir), "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    env.pop("PMI_RANK", None)
    env.pop("PMI_SIZE", None)
    return subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script, field", SCRIPTS, ids=[s for s, _ in SCRIPTS])
def test_without_the_data_a_bench_script_says_so_in_one_line(tmp_path, script, field):
    empty = tmp_path / "data"
    empty.mkdir()
    proc = bench(script, tmp_path, empty)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == (f"{script}: error: {field} = '{DATA.get(script, 'a9a.txt')}': data set not found: looked in {tmp_path} and "
                        f"$MPICLIP_DATA_DIR ({empty}); download it from https://www.csie.ntu.edu.tw/~cjlin/"
                        "libsvmtools/datasets/ and name its directory with "
                        + ("--data-dir or " if script == "suite.py" else "") + "$MPICLIP_DATA_DIR")
    assert os.listdir(tmp_path) == ["data"]  # nothing written


def test_the_time_model_bench_refuses_one_rank_in_one_line(tmp_path):
    """Real mode needs a server and a worker rank: without mpiexec the script says so before running anything."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mushrooms.txt").write_text("1 1:1\n")
    proc = bench("bench_time_model.py", tmp_path, data)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and lines == ["bench_time_model.py: error: ranks = 1: run it under mpiexec -n 2 or more "
                                              "(real mode needs a server and a worker rank)"], proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["data"]


@pytest.mark.parametrize("option, value, reason", [("--repeat", "0", "must be at least 1"), ("--rounds", "-3", "must be at least 1"),
                                                   ("--check", "1,4", "must be a comma list of rank counts of at least 2 (or '')"),
                                                   ("--check", "four", "must be a comma list of rank counts of at least 2 (or '')")])
def test_the_scaling_bench_refuses_bad_options_in_one_line(tmp_path, option, value, reason):
    proc = bench("bench_scaling.py", tmp_path, tmp_path, option, value)
    shown = repr(int(value)) if value.lstrip("-").isdigit() else repr(value)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"bench_scaling.py: error: {option} = {shown}: {reason}"]
    assert os.listdir(tmp_path) == []


def test_a_data_set_is_found_where_mpiclip_run_finds_it(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    from _shared import data_file

    from mpiclip.errors import InputError

    (tmp_path / "here").mkdir()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a9a.txt").write_text("1 1:1\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mushrooms.txt").write_text("1 1:1\n")
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("MPICLIP_DATA_DIR", str(tmp_path / "dir"))
    assert data_file("a9a.txt") == str(tmp_path / "dir" / "a9a.txt")
    assert data_file("../dir/a9a.txt") == str(tmp_path / "dir" / "a9a.txt")  # a path as given, made absolute
    assert data_file("mushrooms.txt", data_dir=str(tmp_path / "other")) == str(tmp_path / "other" / "mushrooms.txt")
    with pytest.raises(InputError, match=r"^--data-dir = '.*missing': is not a directory"):
        data_file("a9a.txt", data_dir=str(tmp_path / "missing"))


@pytest.mark.parametrize("case", ["full", "homogeneous-minibatch"])
def test_the_async_bench_s_bare_arithmetic_replays_the_run_to_the_bit(tmp_path, monkeypatch, case):
    """On one rank bench_async.py's bare arithmetic is the run itself without the runner: the same gradients at the same
    iterates, ending at the run's x to the bit (it refuses to give a ratio otherwise)."""
    import numpy as np
    from helpers import random_classification, write_libsvm

    monkeypatch.syspath_prepend(BENCHMARKS)
    import bench_async

    from mpiclip.comm import make_comm

    data = write_libsvm(str(tmp_path / "small.txt"), *random_classification(n=120, d=9, seed=3))
    comm = make_comm()
    rate, ratio = bench_async.simulated(comm, data, n=6, updates=300, out=str(tmp_path), case=case)
    assert rate > 0 and 0 < ratio < np.inf
    calls = []
    real_replay = bench_async.replayed

    def off_by_one_step(prepared, oracle, workers, jobs, gamma):  # the same replay with a step size 1 ulp off
        calls.append(gamma)
        return real_replay(prepared, oracle, workers, jobs, np.nextafter(gamma, np.inf))

    monkeypatch.setattr(bench_async, "replayed", off_by_one_step)
    with pytest.raises(SystemExit, match="does not end at the run's x"):
        bench_async.simulated(comm, data, n=6, updates=300, out=str(tmp_path), case=case)
    assert len(calls) == 1
