"""A long job on real Slurm: the time limit's signal stops the run with a checkpoint, the job requeues
itself, and the requeued job finishes the run with the trace of an uninterrupted one.

The tests need a Slurm cluster, and one node is enough (docs/design.md §8, "Slurm tests"): slurmctld, slurmd
and munge from the distribution, started by hand (munged first); a slurm.conf with the local host as controller and
as a node of at least 2 CPUs, no cgroup plugins and EnforcePartLimits=ALL; an srun MPI plugin that matches the MPI
(pmi2 for the ``mpich`` wheel); no accounting database. The requeue test takes about 10 minutes (Slurm holds each
requeued job about 2 minutes), so they run only with MPICLIP_TEST_SLURM=1.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers import REPO, config_table, differences, mpiclip, random_classification, trace_arrays, write_libsvm, write_toml

from mpiclip.trace import load_trace

pytestmark = pytest.mark.skipif(
    os.environ.get("MPICLIP_TEST_SLURM") != "1" or shutil.which("sbatch") is None,
    reason="set MPICLIP_TEST_SLURM=1 with a Slurm cluster up (a single node will do: slurmctld, slurmd and munge "
           "started by hand, see docs/design.md §8) to run it")


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


def test_reproduce_submits_its_sweeps_as_arrays_and_the_pages_after_them(tmp_path):
    """`mpiclip reproduce --slurm` returns at once; the arrays' traces and the pages' job give the page of a
    local run."""
    from test_reproduce import TINY

    package = tmp_path / "tinyfamilies"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "clip21.py").write_text(TINY + "\nFAMILY = CLIP21\n")
    (tmp_path / "data").mkdir()
    write_libsvm(str(tmp_path / "data" / "mushrooms.txt"), *random_classification(n=240, d=9, seed=2))
    env = {"PYTHONPATH": str(tmp_path), "MPICLIP_DATA_DIR": str(tmp_path / "data")}
    local = mpiclip(["reproduce", "tinyfamilies.clip21", "--out", "local", "--traces", "local-traces"], cwd=str(tmp_path),
                    env=env, timeout=600)
    assert local.returncode == 0, local.stderr
    start = time.time()
    proc = mpiclip(["reproduce", "tinyfamilies.clip21", "--slurm", "--runs-per-task", "3", "--sbatch=--time=00:10:00"],
                   cwd=str(tmp_path), env=env)
    assert proc.returncode == 0 and time.time() - start < 30, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split(": ", 1)[1] for ln in lines] == [
        "sweep clip21-counterexample, 5 runs in 2 array tasks", "sweep clip21-dp-mushrooms, 4 runs in 2 array tasks",
        "the pages in results/reproduce/tinyfamilies.clip21, after the sweeps"]
    pages_job = lines[-1].split()[2].rstrip(":")
    deadline = time.time() + 600
    while time.time() < deadline and job_state(pages_job).get("JobState") not in ("COMPLETED", "FAILED", "CANCELLED"):
        time.sleep(2)
    assert job_state(pages_job)["JobState"] == "COMPLETED"
    page = tmp_path / "results" / "reproduce" / "tinyfamilies.clip21" / "README.md"
    assert page.read_text() == (tmp_path / "local" / "README.md").read_text()
    assert "| clip21-dp-mushrooms | 4 | 4 | 0 | 0 | 0 |" in page.read_text()


def test_a_sweep_beyond_the_array_limit_runs_as_several_arrays_and_a_missing_environment_is_one_line(tmp_path):
    """submit_sweep.sh reads MaxArraySize from scontrol; with a limit of 2 a sweep of 5 points goes in 3 arrays whose
    tasks each run their own point; a job whose MPICLIP_VENV is missing fails with one line in its log."""
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE")}
    env.update(MPICLIP_VENV=os.path.dirname(os.path.dirname(sys.executable)), PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    (tmp_path / "s.toml").write_text('[sweep]\nname = "s"\nbase = "ef21-libsvm"\noutput = "out"\n[set]\n'
                                     '"data.source" = "synthetic"\n"data.n_samples" = 200\n"run.rounds" = 5\n'
                                     '[[grid]]\n"run.seed" = [0, 1, 2, 3, 4]\n')
    submit = os.path.join(REPO, "jobs", "slurm", "submit_sweep.sh")
    dry = subprocess.run(["bash", submit, "s.toml"], cwd=str(tmp_path), env={**env, "MPICLIP_DRY_RUN": "1"},
                         capture_output=True, text=True, check=True)
    limit = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    max_size = next(line.split("=")[1].strip() for line in limit.splitlines() if line.startswith("MaxArraySize"))
    assert f"of at most {max_size} (MaxArraySize, from scontrol show config)" in dry.stdout.splitlines()[0]
    from mpiclip.cli.reproduce import cluster_max_array_size

    assert cluster_max_array_size() == int(max_size)  # what `mpiclip reproduce --slurm` splits by
    proc = subprocess.run(["bash", submit, "s.toml", "1", "1", "--time=00:05:00"], cwd=str(tmp_path),
                          env={**env, "MPICLIP_MAX_ARRAY_SIZE": "2"}, capture_output=True, text=True, check=True)
    jobs = [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("Submitted batch job")]
    assert len(jobs) == 3, proc.stdout
    broken = subprocess.run(["sbatch", "--parsable", "--array=0-0", f"--chdir={tmp_path}",
                             os.path.join(REPO, "jobs", "slurm", "sweep.sbatch"), "s.toml"], capture_output=True,
                            text=True, env={**env, "MPICLIP_VENV": str(tmp_path / "nowhere")}, check=True).stdout.strip()
    deadline = time.time() + 300
    while time.time() < deadline and subprocess.run(["squeue", "-h", "-j", ",".join(jobs + [broken])], capture_output=True,
                                                    text=True).stdout.strip():
        time.sleep(1)
    traces = sorted(p.name for p in (tmp_path / "out").glob("*.h5"))
    assert len(traces) == 5 and all(load_trace(str(tmp_path / "out" / t)).status == "completed" for t in traces)
    log = (tmp_path / f"mpiclip-sweep-{broken}_0.out").read_text().splitlines()
    assert log == [f"mpiclip: error: MPICLIP_VENV = '{tmp_path / 'nowhere'}': no virtual environment there (make it with "
                   f"jobs/venv.sh {tmp_path / 'nowhere'} mpi, or set MPICLIP_VENV to yours, or to none to use the python "
                   "of the loaded modules)"]
