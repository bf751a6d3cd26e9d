"""The Slurm scripts without a cluster (issue 28, item 13): submit_sweep.sh splits a sweep into arrays of at most
MaxArraySize tasks, each told its offset, and the batch scripts end in one line when their environment is
missing. tests/test_slurm.py submits to a real cluster."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO

SLURM = os.path.join(REPO, "jobs", "slurm")
VENV = os.path.dirname(os.path.dirname(sys.executable))


def sweep_file(tmp_path, points: int) -> str:
    seeds = ", ".join(str(i) for i in range(points))
    path = tmp_path / "s.toml"
    path.write_text(f'[sweep]\nname = "s"\nbase = "ef21-libsvm"\noutput = "out"\n[set]\n"data.source" = "synthetic"\n'
                    f'[[grid]]\n"run.seed" = [{seeds}]\n')
    return str(path)


def no_slurm_path(tmp_path) -> str:
    """PATH without sbatch and scontrol (a directory of links to what the scripts need besides them)."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("bash", "awk", "python3", "env", "dirname", "cat"):
        found = shutil.which(name)
        if found:
            os.symlink(found, tools / name)
    return str(tools)


def submit(tmp_path, *args, **env):
    environment = {**os.environ, "PATH": no_slurm_path(tmp_path), "MPICLIP_VENV": VENV, "MPICLIP_DRY_RUN": "1",
                   "PYTHONPATH": REPO, **env}
    return subprocess.run(["bash", os.path.join(SLURM, "submit_sweep.sh"), sweep_file(tmp_path, 10), *args],
                          cwd=str(tmp_path), env=environment, capture_output=True, text=True, timeout=120)


def test_a_sweep_beyond_max_array_size_goes_in_several_arrays_each_with_its_offset(tmp_path):
    proc = submit(tmp_path, "1", "2", "--time=00:10:00", MPICLIP_MAX_ARRAY_SIZE="4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == ("10 runs -> 10 array tasks of 1 run(s) on 2 rank(s), in 3 array(s) of at most 4 "
                        "(MaxArraySize, from MPICLIP_MAX_ARRAY_SIZE)")
    script = os.path.join(SLURM, "sweep.sbatch")
    assert lines[1:] == [f"sbatch --array=0-{count - 1} --ntasks=2 --export=ALL,MPICLIP_TASK_OFFSET={first} "
                         f"--time=00:10:00 {script} {tmp_path / 's.toml'} 1 2" for first, count in ((0, 4), (4, 4), (8, 2))]


def test_without_scontrol_the_array_limit_is_slurms_default(tmp_path):
    proc = submit(tmp_path, "3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith("4 array tasks of 3 run(s) on 1 rank(s), in 1 array(s) of at most "
                                                "1001 (MaxArraySize, from Slurm's default)")
    assert len(proc.stdout.splitlines()) == 2


def test_reproduce_takes_slurms_default_limit_where_scontrol_is_missing(tmp_path, monkeypatch):
    from mpiclip.cli.reproduce import cluster_max_array_size

    monkeypatch.setenv("PATH", no_slurm_path(tmp_path))
    assert cluster_max_array_size() == 1001


def test_a_bad_array_limit_is_one_line(tmp_path):
    proc = submit(tmp_path, MPICLIP_MAX_ARRAY_SIZE="0")
    assert proc.returncode == 2 and proc.stdout.count("sbatch") == 0
    assert proc.stderr.strip() == ("submit_sweep.sh: error: MaxArraySize = '0' (from MPICLIP_MAX_ARRAY_SIZE): must be "
                                   "a whole number >= 1")


@pytest.mark.parametrize("script", ["run.sbatch", "sweep.sbatch"])
def test_a_batch_script_without_its_environment_ends_in_one_line(tmp_path, script):
    """MPICLIP_VENV naming no environment, or a python that cannot import mpiclip: one line, exit 2, before srun."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = no_slurm_path(tmp_path)
    (tmp_path / "tools" / "python").symlink_to(sys.base_prefix + "/bin/python3")  # a python without mpiclip
    missing = subprocess.run(["bash", os.path.join(SLURM, script), "s.toml"], cwd=str(tmp_path), capture_output=True,
                             text=True, env={**env, "MPICLIP_VENV": str(tmp_path / "nowhere")}, timeout=60)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.splitlines() == [
        f"mpiclip: error: MPICLIP_VENV = '{tmp_path / 'nowhere'}': no virtual environment there (make it with "
        f"jobs/venv.sh {tmp_path / 'nowhere'} mpi, or set MPICLIP_VENV to yours, or to none to use the python of "
        "the loaded modules)"]
    bare = subprocess.run(["bash", os.path.join(SLURM, script), "s.toml"], cwd=str(tmp_path), capture_output=True,
                          text=True, env={**env, "MPICLIP_VENV": "none"}, timeout=60)
    assert bare.returncode == 2 and bare.stdout == ""
    assert bare.stderr.splitlines() == [
        f"mpiclip: error: MPICLIP_VENV = 'none': {tmp_path / 'tools' / 'python'} cannot import mpiclip (make an "
        "environment with jobs/venv.sh .venv mpi where you submit, or set MPICLIP_VENV)"]


def test_the_batch_scripts_mark_where_modules_are_loaded():
    for script in ("run.sbatch", "sweep.sbatch"):
        text = open(os.path.join(SLURM, script)).read()
        marker = text.index("# ---- Site setup: load your cluster's modules here")
        assert marker < text.index('source "$VENV/bin/activate"') < text.index("\nsrun ")
