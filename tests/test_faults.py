"""Bad input and faults, as a user meets them: every case ends with one clear line, a non-zero exit and
nothing written or lost, or with an honest status in a readable trace.

The catalogue below runs the command line in this process (one case is a few milliseconds); the faults
that need a process of their own (a file-size limit, a full file system, a second writer, kill -9) run
the CLI as a subprocess. The README's troubleshooting section lists the same cases.
"""

import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import DAMAGE, config_table, damage, write_libsvm, write_toml

from mpiclip import writer_lock
from mpiclip.cli import main
from mpiclip.trace import TraceWriter, load_trace, trace_status


def files(tmp) -> None:
    """The inputs the catalogue points at, in the test's directory."""
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 5)), np.where(rng.random(40) < 0.5, -1, 1)
    write_libsvm(str(tmp / "data.txt"), X, y)
    write_libsvm(str(tmp / "three.txt"), X[:9], np.array([1, 2, 3] * 3))
    (tmp / "index31.txt").write_text("1 1:1 2147483648:1\n-1 2:1\n")
    (tmp / "index32.txt").write_text("1 1:1 4294967297:1\n-1 2:1\n")
    (tmp / "index-huge.txt").write_text("1 1:1 99999999999999999999999:1\n-1 2:1\n")
    (tmp / "empty.txt").write_text("# nothing here\n")
    (tmp / "notes.txt").write_text("not a trace\n")
    np.save(tmp / "x0-short.npy", np.zeros(3))
    np.save(tmp / "x0-nan.npy", np.full(12, np.nan))
    np.savez(tmp / "wrong-keys.npz", A=np.zeros((5, 2)), b=np.zeros(5))
    (tmp / "plain-file").write_text("")


LIBSVM = ["--set", "data.source=libsvm", "--set", "data.path='data.txt'"]

# (id, arguments after `mpiclip run c.toml`, the one line expected after "mpiclip: error: ")
CATALOGUE = [
    # the config itself
    ("unknown-section", ["--set", "runn.rounds=3"], "--set runn.rounds = 3: unknown section"),
    ("unknown-key", ["--set", "run.roundz=3"], "run.roundz = 3: unknown key"),
    ("wrong-type", ["--set", "run.rounds='many'"], "run.rounds = 'many': expected an integer"),
    ("negative-rounds", ["--set", "run.rounds=-1"], "run.rounds = -1: must be >= 0"),
    ("nan", ["--set", "stepsize.factor=nan"], "stepsize.factor = nan: must be a number, not nan"),
    ("inf-factor", ["--set", "stepsize.factor=inf"], "stepsize.factor = inf: must be finite"),
    ("inf-tol", ["--set", "run.tol=inf"], "run.tol = inf: must be finite"),
    ("inf-seconds", ["--set", "output.flush_seconds=inf"], "output.flush_seconds = inf: must be finite"),
    ("negative-checkpoint-seconds", ["--set", "run.checkpoint_seconds=-1"], "run.checkpoint_seconds = -1.0: must be >= 0"),
    ("unknown-method", ["--set", "method.name=ef22"], "method.name = 'ef22': unknown method"),
    ("unknown-compressor", ["--set", "compressor.name=top"], "compressor.name = 'top': unknown compressor"),
    ("k-too-large", ["--set", "compressor.k=13"], "compressor.k = 13: must be <= d = 12"),
    ("bad-choice", ["--set", "output.exists=maybe"], "output.exists = 'maybe': must be one of error, overwrite, skip"),
    ("async-for-sync", ["--set", "async.concurrency=2"], "async = {concurrency}: method 'ef21' runs on the synchronous"),
    ("federated-for-sync", ["--set", "federated.clients_per_round=2"], "federated = {clients_per_round}: method 'ef21'"),
    ("resume-nothing", ["--resume"], "run.resume = 'yes': there is no checkpoint"),
    # ranks, workers, data
    ("workers-exceed-samples", ["--set", "run.n_workers=201"], "run.n_workers = 201: exceeds the 200 samples"),
    ("missing-data", ["--set", "data.source=libsvm", "--set", "data.path='missing.txt'"],
     "data.path = 'missing.txt': no such file"),
    ("empty-data", ["--set", "data.source=libsvm", "--set", "data.path='empty.txt'"],
     "data.path = 'empty.txt': the file holds no samples"),
    ("three-labels", ["--set", "data.source=libsvm", "--set", "data.path='three.txt'"],
     "data.path = 'three.txt': has 3 distinct labels (1, 2, 3); a binary problem needs exactly 2"),
    ("three-labels-raw", ["--set", "data.source=libsvm", "--set", "data.path='three.txt'", "--set", "data.labels=raw"],
     "data.labels = 'raw': keeps the labels 1, 2, 3, and logistic regression needs -1 and +1"),
    ("index-2^31", ["--set", "data.source=libsvm", "--set", "data.path='index31.txt'"],
     "data.path = 'index31.txt': line 1: feature '2147483648:1': index 2147483648 exceeds 2147483647"),
    ("index-2^32+1", ["--set", "data.source=libsvm", "--set", "data.path='index32.txt'"],
     "data.path = 'index32.txt': line 1: feature '4294967297:1': index 4294967297 exceeds 2147483647"),
    ("index-beyond-int64", ["--set", "data.source=libsvm", "--set", "data.path='index-huge.txt'"],
     "data.path = 'index-huge.txt': line 1: feature '99999999999999999999999:1': index 99999999999999999999999 exceeds"),
    ("n-features-below-file", [*LIBSVM, "--set", "data.n_features=2"], "data.n_features = 2: the file uses feature index 5"),
    ("samples-beyond-index", ["--set", "data.n_samples=10000000000"], "data.n_samples = 10000000000: exceeds 2147483647"),
    ("samples-beyond-memory", ["--set", "data.n_samples=2000000000"], "data.n_samples = 2000000000: needs about"),
    ("features-beyond-memory", ["--set", "data.n_features=2000000000"], "data.n_features = 2000000000: needs about"),
    ("dimension-beyond-memory", [*LIBSVM, "--set", "data.n_features=2000000000"], "data.path = 'data.txt': needs about"),
    ("split-impossible", ["--set", "data.split=percentage_iid", "--set", "run.n_workers=3"],
     "data.percentage = 0.0: leaves 200 label-sorted samples of 200, which do not divide into 3 equal chunks"),
    ("npz-keys", ["--set", "data.source=npz", "--set", "data.path='wrong-keys.npz'"], "data.x_key = 'X':"),
    ("x0-shape", ["--set", "run.x0='x0-short.npy'"], "run.x0 = 'x0-short.npy': must hold 12 finite numbers"),
    ("x0-nan", ["--set", "run.x0='x0-nan.npy'"], "run.x0 = 'x0-nan.npy': must hold 12 finite numbers"),
    ("x0-model-logreg", ["--set", "run.x0=model"], "run.x0 = 'model': problem 'logreg' has no model initialisation"),
    # where things are written
    ("output-is-data", [*LIBSVM, "--set", "output.path='data.txt'", "--set", "output.exists=overwrite"],
     "output.path = 'data.txt': would overwrite the run's input data.path = 'data.txt'"),
    ("output-is-x0", ["--set", "run.x0='x0-short.npy'", "--set", "output.path='x0-short.npy'",
                      "--set", "output.exists=overwrite"], "run.x0 = 'x0-short.npy': must hold 12"),
    ("name-escapes", ["--set", "run.name='../../escaped'"], "run.name = '../../escaped': puts the trace at"),
    ("output-exists", ["--set", "output.path='notes.txt'"], "output.path = 'notes.txt': exists (set output.exists"),
    ("output-under-file", ["--set", "output.path='plain-file/x.h5'"], "output.path = 'plain-file/x.h5': cannot be created"),
    ("output-in-proc", ["--set", "output.path='/proc/mpiclip/{name}.h5'"], "output.path = '/proc/mpiclip/t.h5': cannot be created"),
    ("output-is-directory", ["--set", "output.path='sub'"], "output.path = 'sub': is a directory"),
    ("plot-suffix", ["--plot", "figure.txt"], "--plot = 'figure.txt': needs one of the suffixes .png, .pdf, .svg"),
    ("plot-unwritable", ["--plot", "/proc/figure.png"], "--plot = '/proc/figure.png': cannot be written"),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    files(tmp_path)
    (tmp_path / "sub").mkdir()
    table = config_table(run={"name": "t", "n_workers": 4, "rounds": 5})
    table["output"] = {"path": "out/{name}.h5"}
    write_toml(str(tmp_path / "c.toml"), table)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def digest(directory) -> dict:
    return {p: hashlib.sha256(open(os.path.join(directory, p), "rb").read()).hexdigest()
            for p in sorted(os.listdir(directory)) if os.path.isfile(os.path.join(directory, p))}


def test_the_catalogue_has_forty_cases_and_unique_names():
    assert len(CATALOGUE) >= 40 and len({c[0] for c in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("name, args, message", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_catalogue(workdir, capsys, name, args, message):
    before = digest(workdir)
    code = main(["run", "c.toml", "-q", *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"mpiclip: error: {message}"), err
    assert digest(workdir) == before  # no input touched, nothing new beside them
    assert not (workdir / "out").exists() and not os.listdir(workdir / "sub")


# ------------------------------------------------------------------------------- faults during a run
LONG = {"run": {"name": "long", "n_workers": 4, "rounds": 40000}, "output": {"path": "out/{name}.h5", "flush_rows": 200}}


def long_config(tmp, **changes):
    table = config_table(**{k: v for k, v in LONG.items() if k != "output"})
    table["output"] = dict(LONG["output"])
    for section, values in changes.items():
        table[section] = {**table.get(section, {}), **values}
    return write_toml(str(tmp / "long.toml"), table)


def cli(args, cwd, preexec=None, ranks=None, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PMI_RANK", None)
    env.pop("PMI_SIZE", None)
    cmd = [sys.executable, "-m", "mpiclip", *args]
    if ranks:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks), sys.executable, "-m",
               "mpi4py", "-m", "mpiclip", *args]
    return subprocess.run(cmd, cwd=str(cwd), capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=preexec)


def assert_honest_write_failure(proc, trace, reason):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"mpiclip: error: the trace cannot be written: {reason}"), lines
    tr = load_trace(str(trace))
    assert tr.status.startswith(f"failed: the trace cannot be written: {reason}")
    assert 0 < len(tr.rounds) < 40001 and np.array_equal(tr.rounds, np.arange(len(tr.rounds)))
    assert np.isfinite(tr.grad_norm_sq).all()  # every row flushed before the fault is whole
    assert not os.path.exists(writer_lock.lock_path(str(trace)))


def test_a_file_size_limit_ends_the_run_honestly(tmp_path):
    """ulimit -f: the write that would pass it is refused, and the run fails with the reason."""
    path = long_config(tmp_path)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))
    proc = cli(["run", path, "-q"], tmp_path, preexec=limit)
    assert_honest_write_failure(proc, tmp_path / "out" / "long.h5", "the file-size limit (ulimit -f) of 1500000 bytes")


@pytest.mark.parametrize("ranks", [None, 2])
def test_a_full_file_system_ends_the_run_honestly_on_every_rank(tmp_path, ranks):
    """A 1 MB tmpfs, mounted in a user namespace (no root needed where unprivileged namespaces are allowed);
    on 2 ranks the writer's error reaches the other rank, and the job ends promptly."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no unprivileged mount namespace here to make a small file system; the file-size limit test "
                    "covers the same path")
    path = long_config(tmp_path)
    (tmp_path / "out").mkdir()
    launch = f"{sys.executable} -m mpiclip" if ranks is None else \
        f"{os.path.dirname(sys.executable)}/mpiexec -n {ranks} {sys.executable} -m mpi4py -m mpiclip"
    script = (f"mount -t tmpfs -o size=1m tmpfs {tmp_path / 'out'} && cd {tmp_path} && "
              f"OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1 {launch} run {path} -q; rc=$?; "
              f"cp {tmp_path / 'out' / 'long.h5'} {tmp_path / 'copy.h5'}; exit $rc")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE")}
    start = time.time()
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert time.time() - start < 60
    assert_honest_write_failure(proc, tmp_path / "copy.h5", "no space left")


def rows_in(trace) -> int:
    """Rows of a trace being written (0 while it is missing or being laid out: HDF5 locks it until SWMR starts)."""
    try:
        return len(load_trace(str(trace)).rounds) if trace.exists() else 0
    except OSError:
        return 0


def start_long_run(tmp, **changes):
    path = long_config(tmp, **changes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mpiclip", "run", path, "-q"], cwd=str(tmp), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trace = tmp / "out" / "long.h5"
    deadline = time.time() + 60
    while time.time() < deadline and rows_in(trace) < 4:
        time.sleep(0.1)
    return proc, path, trace


def test_a_second_writer_is_refused_naming_the_first(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc, path, trace = start_long_run(tmp_path, run={"rounds": 10**8, "eval_every": 100}, output={"flush_rows": 2})
    try:
        assert trace_status(str(trace)) == "running"
        code = main(["run", path, "-q", "--set", "output.exists=overwrite"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert err == [f"mpiclip: error: output.path = 'out/long.h5': is being written by process {proc.pid} on "
                       f"{socket.gethostname()} " + err[0].split(f"on {socket.gethostname()} ", 1)[1]]
        assert "wait for that run to end or write elsewhere" in err[0]
        assert len(load_trace(str(trace)).rounds) >= 4  # the first run's trace is untouched
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert load_trace(str(trace)).status == "interrupted"
    assert not os.path.exists(writer_lock.lock_path(str(trace)))  # released with the final status


def test_a_writer_on_another_host_is_judged_by_its_heartbeat(tmp_path):
    trace = tmp_path / "t.h5"
    TraceWriter.create(str(trace), {}, 1, (), {}).finish("running", {}, {})  # a laid-out trace that says running
    lock = writer_lock.lock_path(str(trace))
    record = {"pid": 1, "host": "elsewhere", "started": "then", "heartbeat": time.time()}
    with open(lock, "w") as f:
        json.dump(record, f)
    assert trace_status(str(trace)) == "running"
    record["heartbeat"] = time.time() - writer_lock.STALE_SECONDS - 1
    with open(lock, "w") as f:
        json.dump(record, f)
    assert trace_status(str(trace)).startswith("failed: writer lost (process 1 on elsewhere")
    os.remove(lock)
    assert trace_status(str(trace)) == "failed: writer lost (no process holds the trace; it was killed or its node lost)"


def test_skip_reruns_failed_and_interrupted_traces_but_not_completed_ones(tmp_path, capsys):
    table = config_table(run={"name": "s", "n_workers": 4, "rounds": 50}, problem={"name": "quadratic", "d": 5},
                         data=None, method={"name": "gd"}, compressor={"name": "identity"})
    table["output"] = {"path": str(tmp_path / "{name}.h5"), "exists": "skip"}
    path = write_toml(str(tmp_path / "s.toml"), table)
    assert main(["run", path, "-q", "--set", "stepsize.factor=1e4"]) == 1  # diverges: failed
    assert load_trace(str(tmp_path / "s.h5")).status.startswith("failed: diverged")
    assert main(["run", path, "-q"]) == 0  # run again, and now it completes
    first = load_trace(str(tmp_path / "s.h5"))
    assert first.status == "completed"
    capsys.readouterr()
    assert main(["run", path]) == 0 and "skipped" in capsys.readouterr().out
    assert load_trace(str(tmp_path / "s.h5")).attrs["run_id"] == first.attrs["run_id"]


def test_kill_9_of_one_rank_ends_the_job_and_the_trace_says_writer_lost(tmp_path):
    """mpiexec ends the job at once when a rank dies; the trace keeps its flushed rows and is reported honestly."""
    path = long_config(tmp_path, run={"rounds": 10**8, "eval_every": 10}, output={"flush_rows": 5})
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE")}
    cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", "2", sys.executable, "-m", "mpi4py", "-m",
           "mpiclip", "run", path, "-q"]
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    trace = tmp_path / "out" / "long.h5"
    deadline = time.time() + 60
    while time.time() < deadline and rows_in(trace) < 20:
        time.sleep(0.1)
    writer = writer_lock.read_holder(writer_lock.lock_path(str(trace)))["pid"]
    ranks = subprocess.run(["pgrep", "-f", f"mpiclip run {path}"], capture_output=True, text=True).stdout.split()
    other = next(int(p) for p in ranks if int(p) != writer and int(p) != proc.pid)
    killed = time.time()
    os.kill(other, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode != 0 and time.time() - killed < 30
    tr = load_trace(str(trace))
    assert tr.status.startswith("failed: writer lost") or tr.status.startswith("interrupted"), tr.status
    assert len(tr.rounds) >= 20 and list(tr.rounds) == list(range(0, 10 * len(tr.rounds), 10))


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_trace_is_reported_in_one_line_and_run_again(tmp_path, capsys, how):
    """A cut-short or corrupt trace: `info` says so at once (a SWMR reader would hang on it), sweeps see it
    as unreadable, `exists = "error"` refuses to replace it and `exists = "skip"` runs the point again."""
    table = config_table(run={"name": "d", "n_workers": 4, "rounds": 30}, problem={"name": "quadratic", "d": 5},
                         data=None, method={"name": "gd"}, compressor={"name": "identity"})
    table["output"] = {"path": str(tmp_path / "{name}.h5"), "exists": "skip"}
    path = write_toml(str(tmp_path / "d.toml"), table)
    trace = tmp_path / "d.h5"
    assert main(["run", path, "-q"]) == 0
    damage(trace, how)
    proc = cli(["info", str(trace)], tmp_path, timeout=60)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"mpiclip: error: trace = '{trace}': not a readable HDF5 trace (")
    assert trace_status(str(trace)).startswith("unreadable: ")
    capsys.readouterr()
    assert main(["run", path, "-q", "--set", "output.exists=error"]) == 2
    assert capsys.readouterr().err.startswith(f"mpiclip: error: output.path = '{trace}': exists")
    assert main(["run", path, "-q"]) == 0
    assert load_trace(str(trace)).status == "completed"
