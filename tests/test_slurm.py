"""A long job on real Slurm: the time limit's signal stops the run with a checkpoint, the job requeues
itself, and the requeued job finishes the run with the trace of an uninterrupted one.

It needs a Slurm cluster (``../shared/tools/slurm-ci-up.sh`` starts a single-node one in about 10 s) and
takes about 10 minutes (Slurm holds each requeued job about 2 minutes), so it runs only with
MPICLIP_TEST_SLURM=1.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers import REPO, config_table, differences, trace_arrays, write_toml

from mpiclip.trace import load_trace

pytestmark = pytest.mark.skipif(
    os.environ.get("MPICLIP_TEST_SLURM") != "1" or shutil.which("sbatch") is None,
    reason="set MPICLIP_TEST_SLURM=1 with a Slurm cluster up (../shared/tools/slurm-ci-up.sh) to run it")


def job_state(job: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def test_a_job_past_its_time_limit_is_requeued_and_resumes_bit_for_bit(tmp_path):
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE")}

    def run(rounds: int, name: str) -> float:
        table = config_table(run={"name": "req", "n_workers": 4, "rounds": rounds, "eval_every": 100},
                             data={"source": "synthetic", "n_samples": 400, "n_features": 20})
        table["output"] = {"path": str(tmp_path / "{name}.h5")}
        write_toml(str(tmp_path / "long.toml"), table)
        start = time.time()
        subprocess.run([os.path.join(venv, "bin", "mpiexec"), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "mpiclip",
                        "run", str(tmp_path / "long.toml"), "-q", "--set", f"run.name={name!r}"], check=True,
                       env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True)
        return time.time() - start

    probe = 20000
    rounds = 100 * int(probe * 150 / run(probe, "probe") / 100)  # about 150 s on this machine, whatever its speed
    uninterrupted = run(rounds, "full")
    config = str(tmp_path / "long.toml")
    assert uninterrupted > 70, "the run must outlast the signal (60 s before a 2 minute limit)"
    submit = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--time=2", "--signal=B:USR1@60",
                             f"--chdir={tmp_path}", os.path.join(REPO, "jobs", "slurm", "run.sbatch"), config, "-q"],
                            capture_output=True, text=True, env={**env, "MPICLIP_VENV": venv}, check=True)
    job, submitted = submit.stdout.strip().split(";")[0], time.time()
    deadline = time.time() + 1500  # Slurm holds a requeued job about 2 minutes before it starts again
    state = {}
    while time.time() < deadline:
        state = job_state(job)
        if state.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(2)
    log = (tmp_path / f"mpiclip-{job}.out").read_text()
    assert state.get("JobState") == "COMPLETED", (state, log)
    assert int(state["Restarts"]) >= 1 and "requeueing job" in log, log
    tr = load_trace(str(tmp_path / "req.h5"))
    assert tr.status == "completed" and '"round"' in tr.attrs["resumed"]
    assert differences(trace_arrays(tmp_path / "full.h5"), trace_arrays(tmp_path / "req.h5")) == []
    print(f"uninterrupted {uninterrupted:.0f} s; the Slurm job {time.time() - submitted:.0f} s with "
          f"{state['Restarts']} requeue(s)")
