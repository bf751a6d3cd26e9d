"""Bad input and faults, as a user meets them: every case ends with one clear line, a non-zero exit and
nothing written or lost, or with an honest status in a readable trace.

The catalogue below runs the command line in this process (one case is a few milliseconds); the faults
that need a process of their own (a file-size limit, a full file system, a second writer, kill -9) run
the CLI as a subprocess. The README's troubleshooting section lists the same cases.
"""

import gzip
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

import h5py
import numpy as np
import pytest
from helpers import DAMAGE, REPO, config_table, damage, write_libsvm, write_toml

from mpiclip import writer_lock
from mpiclip.cli import main
from mpiclip.compressors import COMPRESSORS
from mpiclip.methods import METHODS
from mpiclip.problems import PROBLEMS
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
    # issue 28 item 6: links to nothing (a file made through one lands wherever it points), and one to a file
    for link in ("dangling.h5", "dangling-dir", "locked.h5.lock", "saved.ckpt.h5"):
        os.symlink(tmp / "nowhere", tmp / link)
    os.symlink(tmp / "notes.txt", tmp / "linked.h5.lock")
    for name, change in HOSTILE_SCHEDULES.items():
        write_schedule(tmp / f"schedule-{name}.h5", change)
    broken_data_files(tmp, X, y)
    system_files(tmp)


def system_files(tmp) -> None:
    """Issue 29: measured speeds and availability traces of the 4 workers, broken."""
    (tmp / "speeds-short.txt").write_text("0.1\n0.2\n0.3\n")
    (tmp / "speeds-negative.txt").write_text("0.1\n-0.2\n0.3\n0.4\n")
    (tmp / "online-short.txt").write_text("1 0 1\n1 1 1\n")
    (tmp / "online-never.txt").write_text("1 0 1\n1 1 1\n0 0 0\n1 1 0\n")
    write_schedule(tmp / "schedule.h5", ("worker", None, SCHEDULE["worker"]))  # a whole, valid schedule


def broken_data_files(tmp, X, y) -> None:
    """Issue 28, item 4: user data files broken in their real formats."""
    np.savez(tmp / "objects.npz", X=np.array([np.zeros(2), np.zeros(3)], dtype=object), y=np.ones(2))
    np.savez(tmp / "sound.npz", X=X, y=y)
    whole = (tmp / "sound.npz").read_bytes()
    os.remove(tmp / "sound.npz")
    (tmp / "cut.npz").write_bytes(whole[: len(whole) // 2])
    at = whole.index(b"\x93NUMPY") + 200
    (tmp / "corrupt.npz").write_bytes(whole[:at] + bytes(b ^ 0xFF for b in whole[at : at + 8]) + whole[at + 8 :])
    (tmp / "text.npz").write_text("not an archive\n")
    np.savez(tmp / "complex.npz", X=X + 1j, y=y)
    np.savez(tmp / "nan.npz", X=np.where(X > 0.9, np.nan, X), y=y)
    np.savez(tmp / "labels-3d.npz", X=X, y=y.reshape(-1, 1, 1))
    np.savez(tmp / "lengths.npz", X=X, y=y[:30])
    (tmp / "binary.txt").write_bytes(bytes(range(256)))
    (tmp / "huge-token.txt").write_bytes(b"1 1:" + b"1" * 100_000 + b"\n")
    (tmp / "cut.txt.gz").write_bytes(gzip.compress(b"1 1:1\n-1 2:1\n" * 100)[:30])


# A schedule to replay (4 workers), and the hostile versions of it the catalogue replays
SCHEDULE = {"worker": np.array([0, 1, 2, 3, 0, 1]), "start": np.array([0, 0, 0, 0, 1, 2]),
            "job": np.array([0, 0, 0, 0, 1, 1]), "sim_time": np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0])}
HOSTILE_SCHEDULES = {
    "worker-id": ("worker", 4, 9), "nan-time": ("sim_time", 2, np.nan), "negative-time": ("sim_time", 0, -1.0),
    "time-backwards": ("sim_time", 5, 0.5), "job-repeated": ("job", 4, 0), "start-ahead": ("start", 3, 5),
    "float-workers": ("worker", None, SCHEDULE["worker"].astype(float)), "no-start": ("start", None, None),
}


def write_schedule(path, change) -> None:
    """An asynchronous trace's /events as h5py writes them, with one column changed (``(column, index, value)``;
    index None: the whole column, value None: no column)."""
    column, index, value = change
    with h5py.File(path, "w") as f:
        for name, values in SCHEDULE.items():
            values = values.copy()
            if name == column:
                if index is None and value is None:
                    continue
                if index is None:
                    values = value
                else:
                    values = values.astype(type(value)) if isinstance(value, float) else values
                    values[index] = value
            f[f"events/{name}"] = values


LIBSVM = ["--set", "data.source=libsvm", "--set", "data.path='data.txt'"]
ASGD = ["--set", "method.name=asgd", "--set", "compressor.name=identity"]
DP_CLIP_SGD = ["--set", "method.name=clip_sgd", "--set", "compressor.name=identity", "--set", "method.tau=0.5", "--set",
               "method.sigma=0.01"]
FEDBUFF = ["--set", "method.name=fedbuff", "--set", "compressor.name=identity", "--set", "method.client_lr=0.1"]


def npz(name: str) -> list:
    return ["--set", "data.source=npz", "--set", f"data.path='{name}'"]


def libsvm(name: str) -> list:
    return ["--set", "data.source=libsvm", "--set", f"data.path='{name}'"]

DP_PP = ["--set", "method.name=clip21_gd", "--set", "compressor.name=identity", "--set", "method.sigma=0.1",
         "--set", "method.participation=0.5"]

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
    # issue 28, item 4: broken user data files (npz never unpickles; every damage is one line)
    ("npz-object-array", npz("objects.npz"), "data.path = 'objects.npz': array 'X' holds Python objects (dtype object)"),
    ("npz-truncated", npz("cut.npz"), "data.path = 'cut.npz': is a damaged or truncated .npz archive"),
    ("npz-corrupt-member", npz("corrupt.npz"), "data.path = 'corrupt.npz': array 'X' is damaged (Bad CRC-32"),
    ("npz-not-a-zip", npz("text.npz"), "data.path = 'text.npz': is not an .npz archive (a zip file of .npy arrays"),
    ("npz-complex", npz("complex.npz"), "data.x_key = 'X': must be a numeric array with one row per sample"),
    ("npz-nan", npz("nan.npz"), "data.path = 'nan.npz': holds non-finite values (nan or inf)"),
    ("npz-labels-3d", npz("labels-3d.npz"), "data.y_key = 'y': must hold one number per row of X (40); has shape (40, 1, 1)"),
    ("npz-lengths", npz("lengths.npz"), "data.y_key = 'y': must hold one number per row of X (40); has shape (30,)"),
    ("libsvm-binary", libsvm("binary.txt"), "data.path = 'binary.txt': line 1: byte 0x00 at column 1 is not text"),
    ("libsvm-huge-token", libsvm("huge-token.txt"), "data.path = 'huge-token.txt': line 1: '1:1111111111111111111111111"
     "1111111111111...' is too long (100,002 characters)"),
    ("libsvm-truncated-gzip", libsvm("cut.txt.gz"), "data.path = 'cut.txt.gz': cannot be decompressed: Compressed file"),
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
    # issue 28 item 6: symbolic links to nothing on the way to the files a run makes, and names with control
    # characters (they make broken file names, table rows and message lines)
    ("output-dangling-link", ["--set", "output.path='dangling.h5'"],
     "output.path = 'dangling.h5': passes a symbolic link to nothing: "),
    ("output-dir-dangling-link", ["--set", "output.path='dangling-dir/{name}.h5'"],
     "output.path = 'dangling-dir/t.h5': passes a symbolic link to nothing: "),
    ("lock-dangling-link", ["--set", "output.path='locked.h5'"], "output.path = 'locked.h5': passes a symbolic link to nothing"),
    ("checkpoint-dangling-link", ["--set", "output.path='saved.h5'"],
     "output.path = 'saved.h5': passes a symbolic link to nothing"),
    ("lock-is-a-link", ["--set", "output.path='linked.h5'"], "output.path = 'linked.h5': its lock file is a symbolic link"),
    ("name-newline", ["--set", r'run.name="a\nb"'], r"run.name = 'a\nb': holds the control character '\n'"),
    ("name-tab", ["--set", r'run.name="a\tb"'], r"run.name = 'a\tb': holds the control character '\t'"),
    ("name-nul", ["--set", r'run.name="a\u0000b"'], r"run.name = 'a\x00b': holds the control character '\x00'"),
    ("name-del", ["--set", r'run.name="a\u007fb"'], r"run.name = 'a\x7fb': holds the control character '\x7f'"),
    ("name-c1", ["--set", r'run.name="a\u0085b"'], r"run.name = 'a\x85b': holds the control character '\x85'"),
    ("output-path-newline", ["--set", r'output.path="out/\n{name}.h5"'],
     r"output.path = 'out/\n{name}.h5': holds the control character '\n'"),
    ("multirun-newline", ["--multirun", "--set", "run.seed=1,2", "--set", r'run.name="x\ry"'],
     r"run.name = 'x\ry-run.seed=1': holds the control character '\r'"),
    ("plot-newline", ["--plot", "fig\n.png"], r"--plot = 'fig\n.png': holds the control character '\n'"),
    ("plot-suffix", ["--plot", "figure.txt"], "--plot = 'figure.txt': needs one of the suffixes .png, .pdf, .svg"),
    ("plot-unwritable", ["--plot", "/proc/figure.png"], "--plot = '/proc/figure.png': cannot be written"),
    # issue 28, item 1: values that pass "finite > 0" but overflow in a product (the clock, a sleep, a buffer)
    ("async-mean-time-overflows", [*ASGD, "--set", "async.mean_time=1e308"],
     "async.mean_time = 1e+308: the simulated clock would overflow: the largest per-gradient time is inf"),
    ("async-factor-overflows", [*ASGD, "--set", "async.factors=[1e308, 1, 1, 1]"],
     "async.factors = 1e+308: the simulated clock would overflow"),
    ("async-slowdown-overflows", [*ASGD, "--set", "async.slow_workers=[1]", "--set", "async.slow_factor=1e300"],
     "async.slow_factor = 1e+300: the simulated clock would overflow: the largest per-gradient time is 4.44e+301"),
    ("async-lognormal-underflows", [*ASGD, "--set", "async.compute_time=lognormal", "--set", "async.lognormal_sigma=30"],
     "async.lognormal_sigma = 30.0: draws of the log-normal compute time would underflow to 0"),
    ("async-time-underflows", [*ASGD, "--set", "async.compute_time=list", "--set", "async.times=[[1e-200]]",
                               "--set", "async.factors=[1e-200, 1, 1, 1]"],
     "async.times = 1e-200: the smallest per-gradient time underflows to 0"),
    ("async-sleep-overflows", [*ASGD, "--set", "async.mode=real", "--set", "async.time_unit=1e307"],
     "async.time_unit = 1e+307: a worker would sleep time_unit × 44.4"),
    ("flush-rows-beyond-memory", ["--set", "output.flush_rows=100000000000000000000"],
     "output.flush_rows = 100000000000000000000: needs about"),
    # issue 28, item 2: a replayed schedule is data (schedule-*.h5 in files())
    ("replay-worker-id", [*ASGD, "--set", "async.replay='schedule-worker-id.h5'"],
     "async.replay = 'schedule-worker-id.h5': event 4 (worker 9, start 1, job 1, time 2): its worker is not a worker "
     "id (0..3)"),
    ("replay-nan-time", [*ASGD, "--set", "async.replay='schedule-nan-time.h5'"],
     "async.replay = 'schedule-nan-time.h5': event 2 (worker 2, start 0, job 0, time nan): its time is not finite"),
    ("replay-negative-time", [*ASGD, "--set", "async.replay='schedule-negative-time.h5'"],
     "async.replay = 'schedule-negative-time.h5': event 0 (worker 0, start 0, job 0, time -1): its time is negative"),
    ("replay-time-backwards", [*ASGD, "--set", "async.replay='schedule-time-backwards.h5'"],
     "async.replay = 'schedule-time-backwards.h5': event 5 (worker 1, start 2, job 1, time 0.5): its time is earlier"),
    ("replay-job-repeated", [*ASGD, "--set", "async.replay='schedule-job-repeated.h5'"],
     "async.replay = 'schedule-job-repeated.h5': event 4 (worker 0, start 1, job 0, time 2): its job index is not "
     "past that of the worker's previous arrival"),
    ("replay-start-ahead", [*ASGD, "--set", "async.replay='schedule-start-ahead.h5'"],
     "async.replay = 'schedule-start-ahead.h5': event 3 (worker 3, start 5, job 0, time 1): its start update is "
     "beyond the updates"),
    ("replay-float-workers", [*ASGD, "--set", "async.replay='schedule-float-workers.h5'"],
     "async.replay = 'schedule-float-workers.h5': /events/worker is not a column of integers (dtype float64"),
    ("replay-no-start", [*ASGD, "--set", "async.replay='schedule-no-start.h5'"],
     "async.replay = 'schedule-no-start.h5': has no dataset /events/start"),
    # issue 29 item 3: FedBuff's settings, and the [async] settings its local steps cannot work with
    ("fedbuff-client-lr-missing", ["--set", "method.name=fedbuff", "--set", "compressor.name=identity"],
     "method.client_lr = 'missing': fedbuff needs the clients' step size η_l"),
    ("fedbuff-client-lr-negative", [*FEDBUFF, "--set", "method.client_lr=-1"],
     "method.client_lr = -1.0: must be a finite number > 0"),
    ("fedbuff-local-steps-zero", [*FEDBUFF, "--set", "method.local_steps=0"], "method.local_steps = 0: must be >= 1"),
    ("fedbuff-buffer-zero", [*FEDBUFF, "--set", "method.buffer=0"], "method.buffer = 0: must be >= 1"),
    ("fedbuff-staleness-unknown", [*FEDBUFF, "--set", "method.staleness=sqrt"],
     "method.staleness = 'sqrt': must be one of inverse_sqrt, constant, polynomial"),
    ("fedbuff-exponent-missing", [*FEDBUFF, "--set", "method.staleness=polynomial"],
     "method.staleness_exponent = 'missing': staleness = 'polynomial' needs an exponent a"),
    ("fedbuff-exponent-unused", [*FEDBUFF, "--set", "method.staleness_exponent=0.5"],
     "method.staleness_exponent = 0.5: is only used with staleness = 'polynomial' (staleness is 'inverse_sqrt')"),
    ("fedbuff-exponent-negative", [*FEDBUFF, "--set", "method.staleness=polynomial", "--set",
                                   "method.staleness_exponent=-0.5"],
     "method.staleness_exponent = -0.5: must be a finite number >= 0"),
    ("fedbuff-homogeneous", [*FEDBUFF, "--set", "async.data=homogeneous"],
     "async.data = 'homogeneous': fedbuff's clients run local steps on their own data (use 'heterogeneous')"),
    ("fedbuff-noise-oracle", [*FEDBUFF, "--set", "async.oracle=noise"],
     "async.oracle = 'noise': fedbuff's local steps take 'full' or 'minibatch' gradients of the client's data"),
    ("fedbuff-steps-overflow", [*FEDBUFF, "--set", "async.compute_time=constant", "--set", "async.mean_time=1e280",
                                "--set", "method.local_steps=100000000000000"],
     "method.local_steps = 100000000000000: jobs of 100000000000000 gradients would overflow the simulated clock"),
    # issue 28, items 5 and 12: misspelt names say what was meant; range(...)/choice(...) sweeps; grids too large
    ("did-you-mean-section", ["--set", "compresor.k=2"], "--set compresor.k = 2: unknown section (valid: run, data, "
     "problem, method, compressor, stepsize, async, federated, system, output); did you mean 'compressor'?"),
    ("did-you-mean-key", ["--set", "stepsize.factr=2"],
     "stepsize.factr = 2: unknown key (valid keys: factor, rule, value); did you mean 'factor'?"),
    ("did-you-mean-choice", ["--set", "output.exists=overwite"],
     "output.exists = 'overwite': must be one of error, overwrite, skip; did you mean 'overwrite'?"),
    ("did-you-mean-method", ["--set", "method.name=ef2l"],
     f"method.name = 'ef2l': unknown method (valid: {', '.join(sorted(METHODS))}); did you mean 'ef21'?"),
    ("did-you-mean-compressor", ["--set", "compressor.name=topkk"],
     f"compressor.name = 'topkk': unknown compressor (valid: {', '.join(sorted(COMPRESSORS))}); did you mean 'topk'?"),
    ("did-you-mean-problem", ["--set", "problem.name=logrg"],
     f"problem.name = 'logrg': unknown problem (valid: {', '.join(sorted(PROBLEMS))}); did you mean 'logreg'?"),
    ("sweep-without-multirun", ["--set", "compressor.k=range(1,4)"],
     "--set compressor.k = 'range(1,4)': range(...) and choice(...) are sweeps: add --multirun"),
    ("range-empty", ["--multirun", "--set", "compressor.k=range(4,1)"],
     "--set compressor.k = 'range(4,1)': is an empty range (stop is excluded)"),
    ("range-step-zero", ["--multirun", "--set", "stepsize.factor=range(1,2,0)"],
     "--set stepsize.factor = 'range(1,2,0)': the step of a range must not be 0"),
    ("range-not-numbers", ["--multirun", "--set", "compressor.k=range(a,4)"],
     "--set compressor.k = 'range(a,4)': expected range(start, stop[, step]) with finite numbers (stop excluded)"),
    ("choice-empty", ["--multirun", "--set", "compressor.k=choice()"],
     "--set compressor.k = 'choice()': choice(...) needs one or more values"),
    ("range-point-invalid", ["--multirun", "--set", "compressor.k=range(10,14)"], "compressor.k = 13: must be <= d = 12"),
    ("grid-too-large", ["--multirun", "--set", "run.seed=range(0,1000000)", "--set", "compressor.k=range(1,1000)"],
     "runs = 999000000: too many for one process (at most 100,000): run slices of them with --task I"),
    # issue 29, items 1 and 2: the system model ([system]) refuses what no cluster or fleet can be
    # issue 29, item 3: the asynchronous clock takes [system]'s links only (its compute and budget stay [async]'s)
    ("system-compute-on-async", [*ASGD, "--set", "system.mean_time=0.5"],
     "system.mean_time = 0.5: does not apply to method 'asgd': the asynchronous runner's compute times are [async]'s "
     "(async.mean_time)"),
    ("system-speeds-on-async", [*FEDBUFF, "--set", "system.speeds_file='speeds-negative.txt'"],
     "system.speeds_file = 'speeds-negative.txt': does not apply to method 'fedbuff': the asynchronous runner's compute"),
    ("system-budget-on-async", [*ASGD, "--set", "system.max_time=10"],
     "system.max_time = 10: does not apply to method 'asgd': the asynchronous runner's time budget is async.max_time"),
    ("system-collective-on-async", [*ASGD, "--set", "system.collective='parameter_server'"],
     "system.collective = 'parameter_server': does not apply to method 'asgd': a synchronous round's collective"),
    ("system-deadline-on-async", [*FEDBUFF, "--set", "system.deadline=2"],
     "system.deadline = 2: does not apply to method 'fedbuff': a federated round's setting: the asynchronous runner "
     "has no rounds to drop clients from"),
    ("system-availability-on-async", [*ASGD, "--set", "system.availability='markov'"],
     "system.availability = 'markov': does not apply to method 'asgd': a federated round's setting"),
    ("system-on-async-real", [*ASGD, "--set", "async.mode=real", "--set", "system.latency=0.001"],
     "async.mode = 'real': times the run on the wall clock, whose messages take the machine's own network"),
    ("system-on-async-replay", [*ASGD, "--set", "async.replay='schedule.h5'", "--set", "system.latency=0.001"],
     "async.replay = 'schedule.h5': re-applies recorded arrival times: [system]'s links would not apply"),
    ("system-async-transfer-overflows", [*ASGD, "--set", "system.bandwidth_up=1e-300"],
     "system.bandwidth_up = 1e-300: worker 0's job would take 4.8e+301 s on the network: the simulated clock would "
     "overflow"),
    ("system-negative-latency", ["--set", "system.latency=-0.001"], "system.latency = -0.001: must be a finite number >= 0"),
    ("system-zero-bandwidth", ["--set", "system.bandwidth_up=[1e9, 0, 1e9, 1e9]"],
     "system.bandwidth_up = 0: must be a finite number > 0"),
    ("system-inf-bandwidth", ["--set", "system.bandwidth_down=inf"], "system.bandwidth_down = inf: must be a finite number > 0"),
    ("system-nan-latency", ["--set", "system.latency=nan"], "system.latency = nan: must be a finite number >= 0"),
    ("system-negative-speed", ["--set", "system.factors=[1, -1, 1, 1]"], "system.factors = -1.0: must be a finite number > 0"),
    ("system-inf-mean-time", ["--set", "system.mean_time=inf"], "system.mean_time = inf: must be a finite number > 0"),
    ("system-links-wrong-length", ["--set", "system.latency=[0.1, 0.2]"],
     "system.latency = 2: values given: need 1 or one per worker (n = 4)"),
    ("system-speeds-wrong-length", ["--set", "system.speeds_file='speeds-short.txt'"],
     "system.speeds_file = 'speeds-short.txt': holds 3 numbers, need one per worker (n = 4)"),
    ("system-speeds-negative", ["--set", "system.speeds_file='speeds-negative.txt'"],
     "system.speeds_file = 'speeds-negative.txt': worker 1's speed -0.2 is not a finite number > 0"),
    ("system-availability-wrong-length", ["--set", "system.availability='file'", "--set",
                                          "system.availability_file='online-short.txt'"],
     "system.availability_file = 'online-short.txt': holds 2 lines, need one per client (n = 4)"),
    ("system-client-never-online", ["--set", "system.availability='file'", "--set",
                                    "system.availability_file='online-never.txt'"],
     "system.availability_file = 'online-never.txt': client 2 is never online"),
    ("system-deadline-unmeetable", ["--set", "method.name=fedavg", "--set", "compressor.name=identity", "--set",
                                    "system.mean_time=1", "--set", "system.deadline=2.5"],
     "system.deadline = 2.5: no client can meet it: the fastest, client 0, needs 5"),
    # issue 29: compute time per sample (system.compute_unit)
    ("system-unit-on-async", [*ASGD, "--set", "system.compute_unit='sample'"],
     "system.compute_unit = 'sample': does not apply to method 'asgd': the asynchronous runner's compute times"),
    ("system-unit-unknown", ["--set", "system.compute_unit='epoch'"], "system.compute_unit = 'epoch': "),
    # issue 30, item 5: record-level add/remove with Poisson sampling, accounted only where dp-accounting can
    ("dp-fixed-size-under-add-remove-record", [*DP_CLIP_SGD, "--set", "method.relation='add_remove_record'"],
     "method.sampling = 'fixed': is accounted under relation 'replace' only (dp-accounting amplifies fixed-size "
     "sampling for that relation), not 'add_remove_record'; use sampling 'poisson'"),
    ("dp-poisson-under-replace", [*DP_CLIP_SGD, "--set", "method.sampling='poisson'"],
     "method.sampling = 'poisson': is accounted under relation 'add_remove_record' only"),
    ("dp-pld-with-fixed-size-batches", [*DP_CLIP_SGD, "--set", "method.accountant='pld'"],
     "method.accountant = 'pld': dp-accounting's PLD accountant handles Poisson sampling only"),
    ("dp-pld-poisson-too-little-noise", [*DP_CLIP_SGD, "--set", "method.relation='add_remove_record'", "--set",
                                         "method.sampling='poisson'", "--set", "method.accountant='pld'", "--set",
                                         "method.sigma=0.01"],
     "method.accountant = 'pld': a Poisson round's privacy loss distribution at noise multiplier 0.01 (below 0.5)"),
    ("dp-sgd-poisson-worker-level", ["--set", "method.name=dp_sgd", "--set", "compressor.name=identity", "--set",
                                     "method.sigma=1", "--set", "method.relation='add_remove'", "--set",
                                     "method.sampling='poisson'"],
     "method.sampling = 'poisson': DP-SGD's sum over a Poisson lot has no worker-level sensitivity bound"),
    ("sampling-unknown", [*DP_CLIP_SGD, "--set", "method.sampling='uniform'"],
     "method.sampling = 'uniform': must be one of fixed, poisson"),
    ("sampling-on-full-batch-method", ["--set", "method.name=clip_gd", "--set", "compressor.name=identity", "--set",
                                       "method.sampling='poisson'"], "method.sampling = 'poisson': unknown key"),
    # issue 30 item 3: partial participation of the clipping methods, and the worker samplings privacy can account
    ("pp-selects-nobody", [*DP_PP, "--set", "method.participation=0.2"],
     "method.participation = 0.2: selects no worker out of 4"),
    ("pp-fixed-add-remove", [*DP_PP, "--set", "method.relation=add_remove"],
     "method.participation_sampling = 'fixed': with method.relation = add_remove is not an event dp-accounting"),
    ("pp-poisson-replace", [*DP_PP, "--set", "method.participation_sampling=poisson"],
     "method.participation_sampling = 'poisson': with DP noise is not accounted: each drawn worker adds its own noise"),
    ("pp-fixed-pld", [*DP_PP, "--set", "method.accountant=pld"],
     "method.accountant = 'pld': dp-accounting's PLD accountant handles Poisson sampling only, not the fixed-size"),
    # issue 30 items 3 and 5 together: record-level add/remove with worker sampling, the pairs refused
    ("pp-poisson-add-remove-record", [*DP_PP, "--set", "method.relation=add_remove_record", "--set",
                                      "method.participation_sampling=poisson"], "method.participation_sampling = 'poisson': with DP noise is not accounted"),
    ("pp-poisson-records-in-poisson-workers", [*DP_CLIP_SGD, "--set", "method.relation=add_remove_record", "--set",
                                               "method.sampling=poisson", "--set", "method.participation=0.5", "--set",
                                               "method.participation_sampling=poisson"], "method.participation_sampling = 'poisson': with DP noise is not accounted"),
    ("pp-poisson-worker-level", [*DP_PP, "--set", "method.relation=add_remove", "--set",
                                 "method.participation_sampling=poisson", "--set", "method.accountant=pld"], "method.participation_sampling = 'poisson': with DP noise is not accounted"),
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


def test_the_catalogue_has_unique_names_and_the_readme_counts_it():
    assert len(CATALOGUE) >= 40 and len({c[0] for c in CATALOGUE}) == len(CATALOGUE)
    readme = open(os.path.join(REPO, "README.md")).read()
    assert f"holds the catalogue ({len(CATALOGUE)} cases)" in readme


@pytest.mark.parametrize("name, args, message", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_catalogue(workdir, capsys, name, args, message):
    before = digest(workdir)
    code = main(["run", "c.toml", "-q", *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"mpiclip: error: {message}"), err
    assert digest(workdir) == before  # no input touched, nothing new beside them
    assert not (workdir / "out").exists() and not os.listdir(workdir / "sub")


def test_compute_per_sample_on_a_problem_without_samples_is_refused(tmp_path, monkeypatch, capsys):
    """The catalogue's c.toml has [data], which a generated problem refuses first: this case has its own config."""
    table = config_table(run={"name": "q", "n_workers": 4, "rounds": 5}, problem={"name": "quadratic", "d": 5},
                         data=None, method={"name": "gd"}, compressor={"name": "identity"},
                         system={"compute_unit": "sample"})
    table["output"] = {"path": "out/{name}.h5"}
    write_toml(str(tmp_path / "q.toml"), table)
    monkeypatch.chdir(tmp_path)
    code = main(["run", "q.toml", "-q"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == ["mpiclip: error: system.compute_unit = 'sample': counts the samples gradients touch; "
                                 "problem 'quadratic' is not made of samples (use 'step')"], err
    assert os.listdir(tmp_path) == ["q.toml"]


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


# ------------------------------------------------------------ issue 28 item 6: paths and names, the siblings
def test_names_with_control_characters_are_refused_in_sweeps_variants_and_reproduce(tmp_path, capsys, monkeypatch):
    """Every name that becomes a file name or a table cell: a sweep's name and output, a grid value that makes a
    run's name, a variant's label, `reproduce --out/--traces`."""
    from mpiclip.errors import InputError
    from mpiclip.sweep import load_sweep

    monkeypatch.chdir(tmp_path)
    sweep = '[sweep]\nname = "{name}"\nbase = "synthetic-logreg"\n[[grid]]\n"run.seed" = [1]\n"data.source" = ["{value}"]\n'
    for name, value, message in [(r"a\nb", "synthetic", r"sweep.name = 'a\nb': holds the control character '\n'"),
                                 ("s", r"synthetic\u0007", r"grid = 'run.seed=1,data.source=synthetic\x07': holds the "
                                                            r"control character '\x07'")]:
        (tmp_path / "s.toml").write_text(sweep.format(name=name, value=value))
        with pytest.raises(InputError) as e:
            load_sweep(str(tmp_path / "s.toml"))
        assert str(e.value).startswith(message), str(e.value)
    table = config_table()
    table["variants"] = {'"a\\tb"': {"method": {"name": "gd"}, "compressor": {"name": "identity"}}}
    write_toml(str(tmp_path / "v.toml"), table)
    assert main(["run", "v.toml", "-q"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        r"mpiclip: error: variants = 'a\tb': holds the control character '\t'; use printable characters"]
    for flag in ("--out", "--traces"):
        assert main(["reproduce", "ef21", "--report-only", flag, "x\ny"]) == 2
        assert capsys.readouterr().err.splitlines() == [
            rf"mpiclip: error: {flag} = 'x\ny': holds the control character '\n'; use printable characters"]
    assert sorted(os.listdir(tmp_path)) == ["s.toml", "v.toml"]


def test_a_link_at_a_temporary_name_is_removed_not_followed(tmp_path, monkeypatch):
    """A resume copies the trace into a temporary made under this process's name beside it (before the
    leftovers of killed writers are cleared); a link left at that name is removed first, not written through."""
    from mpiclip.runners.synchronous import SynchronousRunner

    monkeypatch.chdir(tmp_path)
    table = config_table(run={"name": "t", "n_workers": 4, "rounds": 6})
    path = write_toml(str(tmp_path / "c.toml"), {**table, "output": {"path": "out/{name}.h5"}})
    original = SynchronousRunner.advance

    def advance(self, state):
        if state.t == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, state)

    monkeypatch.setattr(SynchronousRunner, "advance", advance)
    assert main(["run", path, "-q"]) == 143
    monkeypatch.setattr(SynchronousRunner, "advance", original)
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / f".t.h5.resume-{os.getpid()}")
    assert main(["run", path, "-q", "--resume"]) == 0
    assert load_trace(str(tmp_path / "out" / "t.h5")).status == "completed"
    assert not (tmp_path / "elsewhere").exists() and not os.path.islink(tmp_path / "out" / "t.h5")
# ------------------------------------------------------ issue 28, item 8: real asynchrony under stop signals
SLEEPER = 2  # the worker of rank 2, asleep for an hour after its first gradient


def start_real_run(tmp):
    """A real-mode run on 3 ranks: rank 1's workers 0 and 1 keep the server busy (at most 200 gradients a second:
    each sleeps 5 ms), rank 2's worker sleeps an hour (time_unit × slow_factor = 3600 s); it returns once the trace
    holds 100 arrivals, which must reach it as they come (within 15 s of the trace's start, while the run could
    have made at most 3000)."""
    table = config_table(run={"name": "real", "n_workers": 3, "rounds": 10**8, "eval_every": 20},
                         method={"name": "asgd"}, compressor={"name": "identity"}, stepsize={"factor": 1.0})
    table["async"] = {"mode": "real", "compute_time": "constant", "time_unit": 5e-3, "slow_workers": [SLEEPER],
                      "slow_factor": 7.2e5}
    table["output"] = {"path": "out/{name}.h5", "flush_rows": 50, "flush_seconds": 1.0}
    path = write_toml(str(tmp / "real.toml"), table)
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE")}
    cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", "3", sys.executable, "-m", "mpi4py", "-m",
           "mpiclip", "run", path, "-q"]
    proc = subprocess.Popen(cmd, cwd=str(tmp), env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    trace = tmp / "out" / "real.h5"
    deadline = time.time() + 60
    while time.time() < deadline and not trace.exists():
        time.sleep(0.1)
    deadline = time.time() + 15
    while time.time() < deadline and arrivals_in(trace) < 100:
        time.sleep(0.1)
    if arrivals_in(trace) < 100:
        proc.kill()
        raise AssertionError(f"{arrivals_in(trace)} arrivals kept after 15 s: {proc.communicate()[1]}")
    return proc, path, trace


def arrivals_in(trace) -> int:
    try:
        return len(load_trace(str(trace)).tables["events"]["update"]) if trace.exists() else 0
    except (OSError, KeyError):
        return 0


def rank_pid(proc, path, rank: int) -> int:
    """The process of an MPI rank of the job (hydra puts PMI_RANK in each rank's environment)."""
    for pid in subprocess.run(["pgrep", "-f", f"mpiclip run {path}"], capture_output=True, text=True).stdout.split():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if int(pid) != proc.pid and f"PMI_RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no process of rank {rank}")


@pytest.mark.parametrize("to", ["mpiexec", "sleeper"])
def test_sigterm_ends_a_real_run_with_a_worker_asleep_for_an_hour_within_seconds(tmp_path, to):
    """The server polls for gradients and a sleeping worker for the server's word, so a stop ends the job at once
    (Slurm's KillWait is 30 s), with every row made so far evaluated; a signal that reaches only a worker rank is
    passed on to the server."""
    proc, path, trace = start_real_run(tmp_path)
    kept = arrivals_in(trace)
    stopped = time.time()
    os.kill(proc.pid if to == "mpiexec" else rank_pid(proc, path, SLEEPER), signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.time() - stopped < 10, err
    assert proc.returncode == 143, err
    tr = load_trace(str(trace))
    assert tr.status == "interrupted"
    updates = int(tr.attrs["stop_reason"].split("at update ")[1].split()[0])
    assert tr.attrs["stop_reason"] == f"interrupted: SIGTERM at update {updates} (real mode: not resumable)"
    events = tr.tables["events"]
    assert len(events["update"]) == updates >= kept  # ASGD applies each arrival: one update each
    assert not (events["worker"] == SLEEPER).any()  # the sleeper's gradient never arrived
    assert list(tr.rounds) == list(range(0, updates + 1, 20)) and np.isfinite(tr.grad_norm_sq).all()
    assert not (tmp_path / "out" / "real.ckpt.h5").exists()


def test_kill_9_of_a_real_mode_worker_keeps_the_arrivals_and_their_replay_gives_the_rows(tmp_path, capsys):
    """The rows of real mode are evaluated by every rank after the loop, which a killed rank ends; the arrivals
    reach the trace as they come (every output.flush_rows or flush_seconds), and a replay makes their rows."""
    proc, path, trace = start_real_run(tmp_path)
    kept = arrivals_in(trace)
    os.kill(rank_pid(proc, path, SLEEPER), signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    tr = load_trace(str(trace))
    assert tr.status.startswith("failed: writer lost"), tr.status
    arrived = len(tr.tables["events"]["update"])
    assert arrived >= kept and len(tr.rounds) == 0
    code = main(["run", path, "-q", "--set", "async.mode=simulated", "--set", f"async.replay='{trace}'",
                 "--set", "run.name=replay", "--set", f"output.path='{tmp_path}/replay.h5'"])
    assert code == 0, capsys.readouterr().err
    replay = load_trace(str(tmp_path / "replay.h5"))
    assert replay.attrs["stop_reason"] == f"completed: the replayed schedule ends at update {arrived}"
    assert list(replay.rounds) == list(range(0, arrived + 1, 20)) + [arrived] * (arrived % 20 != 0)
