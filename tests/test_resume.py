"""Checkpoint and resume: a run stopped at any round and resumed writes the uninterrupted run's trace,
bit for bit (wall time aside), for every registered method; bad checkpoints are refused and nothing
already written is lost."""

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from helpers import (
    DAMAGE,
    METHOD_CASES,
    config_table,
    damage,
    differences,
    mpiclip,
    stop_round,
    trace_arrays,
    write_libsvm,
    write_toml,
)

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.cli import main
from mpiclip.comm import SerialComm
from mpiclip.errors import InputError
from mpiclip.methods import METHODS
from mpiclip.runners import RUNNERS
from mpiclip.runners.asynchronous import AsynchronousRunner
from mpiclip.runners.federated import FederatedRunner
from mpiclip.runners.synchronous import SynchronousRunner
from mpiclip.trace import trace_status

ROUNDS = 60


def case(name: str, path, **run) -> dict:
    table = config_table(run={"name": name, "n_workers": 5, "rounds": ROUNDS, "eval_every": 3, "check_every": 4, **run},
                         **METHOD_CASES[name])
    table["output"] = {"path": str(path), "exists": "overwrite", "flush_rows": 7}
    return table


def run(table: dict, *overrides: str):
    config = cfg.validate(cfg.apply_overrides(table, [cfg.parse_override(o) for o in overrides]))
    (prepared,) = session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
    return session.execute(prepared)


@contextlib.contextmanager
def at_round(monkeypatch, t: int, act):
    """Call ``act()`` once, at the top of round t (before the runner's step). The asynchronous runner on one rank
    advances a block of updates at a time (to the next row, check or checkpoint): round t ends one, so that its
    ``advance`` sees round t (a boundary more changes no trace: tests/test_async_blocks.py)."""
    fired = []
    for runner in (SynchronousRunner, AsynchronousRunner, FederatedRunner):
        def advance(self, state, original=runner.advance):
            if state.t == t and not fired:
                fired.append(t)
                act()
            return original(self, state)

        monkeypatch.setattr(runner, "advance", advance)

    def horizon(self, now, original=AsynchronousRunner._horizon):
        return min(original(self, now), t) if now < t else original(self, now)

    monkeypatch.setattr(AsynchronousRunner, "_horizon", horizon)
    yield fired


def stamp_of(path) -> dict:
    with h5py.File(path) as f:
        return json.loads(f.attrs["stamp"])


def signal_self(sig):
    return lambda: os.kill(os.getpid(), sig)


def test_every_method_has_a_case_and_a_registered_runner():
    assert set(METHOD_CASES) == set(METHODS)
    for name, method in METHODS.items():
        assert method.runner in RUNNERS, name


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_signal_stop_then_resume_is_the_uninterrupted_trace(tmp_path, monkeypatch, name):
    full = run(case(name, tmp_path / "full.h5"))
    assert full.status.startswith("completed")
    table = case(name, tmp_path / "cut.h5")
    t = stop_round(name, ROUNDS)
    with at_round(monkeypatch, t, signal_self(signal.SIGTERM)) as fired:
        stopped = run(table)
    assert fired == [t]
    assert stopped.status.startswith("interrupted: SIGTERM at round"), stopped.status
    stop = int(stopped.status.rsplit(" ", 1)[1])
    assert t <= stop <= t + 3  # the next recorded or checked round
    ckpt = tmp_path / "cut.ckpt.h5"
    assert stamp_of(ckpt)["t"] == stop
    with h5py.File(tmp_path / "cut.h5") as f:
        assert f.attrs["status"] == "interrupted" and len(f["rounds"]) == (stop + 2) // 3
    resumed = run(table, "run.resume='yes'")
    assert resumed.status == full.status and resumed.bits_per_worker == full.bits_per_worker
    assert differences(trace_arrays(tmp_path / "full.h5"), trace_arrays(tmp_path / "cut.h5")) == []
    assert not ckpt.exists()  # the run has ended: nothing left to resume


@pytest.mark.parametrize("name", ["ef21_sgd", "clip21_sgd", "ef21_page"])
def test_sigusr1_saves_and_goes_on_and_a_crash_resumes_from_it(tmp_path, monkeypatch, name):
    full = run(case(name, tmp_path / "full.h5"))
    table = case(name, tmp_path / "cut.h5")

    def crash():
        raise RuntimeError("node lost")

    with at_round(monkeypatch, 20, signal_self(signal.SIGUSR1)):
        with at_round(monkeypatch, 41, crash):
            with pytest.raises(RuntimeError, match="node lost"):
                run(table)
    with h5py.File(tmp_path / "cut.h5") as f:
        assert f.attrs["status"] == "failed: RuntimeError: node lost"
    assert stamp_of(tmp_path / "cut.ckpt.h5")["t"] == 21  # agreed at round 20 (a checked round), saved at the next top
    resumed = run(table, "run.resume='auto'")
    assert resumed.status == full.status
    assert differences(trace_arrays(tmp_path / "full.h5"), trace_arrays(tmp_path / "cut.h5")) == []


def test_checkpoint_every_writes_at_its_rounds_and_changes_nothing(tmp_path, monkeypatch):
    full = run(case("ef21", tmp_path / "full.h5"))
    table = case("ef21", tmp_path / "cut.h5", checkpoint_every=10)
    seen = []
    original = session.checkpoint.write
    monkeypatch.setattr(session.checkpoint, "write", lambda path, state, comm, stamp: (
        seen.append(state.t), original(path, state, comm, stamp)))
    every = run(table)
    assert seen == [10, 20, 30, 40, 50] and every.timing["checkpoint"] > 0
    assert every.status == full.status
    assert differences(trace_arrays(tmp_path / "full.h5"), trace_arrays(tmp_path / "cut.h5")) == []


def test_checkpoint_seconds_saves_by_wall_time_at_agreed_rounds_and_changes_nothing(tmp_path, monkeypatch):
    """run.checkpoint_seconds: once the time has passed, the ranks agree at the next recorded (every 3rd) or
    checked (every 4th) round and save at the top of the round after; the trace is that of a run without."""
    full = run(case("ef21", tmp_path / "full.h5"))
    seen = []
    original = session.checkpoint.write
    monkeypatch.setattr(session.checkpoint, "write", lambda path, state, comm, stamp: (
        seen.append(state.t), original(path, state, comm, stamp)))
    timed = run(case("ef21", tmp_path / "cut.h5", checkpoint_seconds=1e-9))
    agreed = [t for t in range(ROUNDS) if t % 3 == 0 or (t and t % 4 == 0)]
    assert seen == [t + 1 for t in agreed]
    assert differences(trace_arrays(tmp_path / "full.h5"), trace_arrays(tmp_path / "cut.h5")) == []
    seen.clear()
    run(case("ef21", tmp_path / "cut.h5", checkpoint_seconds=3600))
    assert seen == [] and timed.status == full.status
    assert cfg.validate(case("ef21", tmp_path / "a.h5", checkpoint_seconds=5)).hash == cfg.validate(
        case("ef21", tmp_path / "a.h5")).hash


KILL_DRIVER = """
import os, signal, sys
from mpiclip.cli import main
from mpiclip.runners.asynchronous import AsynchronousRunner
from mpiclip.runners.federated import FederatedRunner
from mpiclip.runners.synchronous import SynchronousRunner
for runner in (SynchronousRunner, AsynchronousRunner, FederatedRunner):
    def advance(self, state, original=runner.advance):
        if state.t == {t}:
            os.kill(os.getpid(), signal.SIGKILL)  # every rank at the same round: the whole job dies
        return original(self, state)
    runner.advance = advance
horizon = AsynchronousRunner._horizon  # one rank runs blocks of updates: round t ends one, so that advance sees it
AsynchronousRunner._horizon = lambda self, now: min(horizon(self, now), {t}) if now < {t} else horizon(self, now)
sys.exit(main({argv!r}))
"""


def killed_run(config_path: str, t: int, ranks):
    code = KILL_DRIVER.format(t=t, argv=["run", config_path, "-q"])
    cmd = [sys.executable, "-c", code]
    if ranks:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks), sys.executable, "-m", "mpi4py",
               "-c", code]
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**env, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_kill_9_of_the_whole_job_then_resume_on_another_rank_count(tmp_path, name):
    """checkpoint_every + SIGKILL at a later round; the resumed run (on 2 ranks if it was killed on 1, and
    the other way round) completes the uninterrupted trace."""
    ranks = (None, 2) if sorted(METHOD_CASES).index(name) % 2 else (2, None)
    run(case(name, tmp_path / "full.h5"))
    table = case(name, tmp_path / "cut.h5", checkpoint_every=8)
    path = write_toml(str(tmp_path / "cut.toml"), table)
    t = max(9, stop_round(name, ROUNDS))
    killed = killed_run(path, t, ranks[0])
    assert killed.returncode != 0
    stamp = stamp_of(tmp_path / "cut.ckpt.h5")
    assert stamp["t"] == 8 * (t // 8) and stamp["n_ranks"] == (ranks[0] or 1)
    with h5py.File(tmp_path / "cut.h5", "r", swmr=True) as f:
        assert f.attrs["status"] == "running"  # its writer never got to say otherwise
    resumed = mpiclip(["run", path, "--resume", "-q"], ranks=ranks[1])
    assert resumed.returncode == 0, resumed.stderr
    assert differences(trace_arrays(tmp_path / "full.h5"), trace_arrays(tmp_path / "cut.h5")) == []
    with h5py.File(tmp_path / "cut.h5") as f:
        assert f.attrs["status"] == "completed" and f.attrs["n_ranks"] == (ranks[1] or 1)
        assert '"round": %d' % (8 * (t // 8)) in f.attrs["resumed"]


SIGNAL_IN_CHECKPOINT = """
import os, sys
from mpiclip import checkpoint
from mpiclip.cli import main
original, calls = checkpoint._Sink.commit, []
def commit(self):
    calls.append(1)
    if len(calls) == 2:  # the second checkpoint: laid out and filled, not yet renamed into place
        for sig in {signals}:
            os.kill(os.getpid(), sig)
    return original(self)
checkpoint._Sink.commit = commit
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("signals, ranks, code, kept, status", [
    ([signal.SIGTERM], None, 143, range(16, 20), "interrupted"),  # the write finishes; the run stops at a later check
    ([signal.SIGTERM, signal.SIGTERM], None, 143, [8], "interrupted"),  # the second signal aborts the write
    ([signal.SIGTERM, signal.SIGTERM], 2, 143, [8], "interrupted"),  # ... and the whole job, at once
    ([signal.SIGKILL], None, -9, [8], "failed: writer lost"),
], ids=["SIGTERM", "SIGTERM-twice", "SIGTERM-twice-2-ranks", "SIGKILL"])
def test_a_signal_during_a_checkpoint_write_keeps_a_whole_checkpoint(tmp_path, signals, ranks, code, kept, status):
    """The checkpoint on disk is always whole: the one being written when the signal comes either completes
    or leaves the previous one in place, and resuming completes the uninterrupted trace; the resumed run
    removes the temporary file a killed writer left."""
    run(case("ef21", tmp_path / "full.h5"))
    path = write_toml(str(tmp_path / "cut.toml"), case("ef21", tmp_path / "cut.h5", checkpoint_every=8))
    code_text = SIGNAL_IN_CHECKPOINT.format(signals=[int(s) for s in signals], argv=["run", path, "-q"])
    cmd = [sys.executable, "-c", code_text]
    if ranks:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks), sys.executable, "-m", "mpi4py",
               *cmd[1:]]
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**env, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == code, proc.stderr
    if len(signals) == 2:  # under mpiexec every rank got the signals (each writes its part of the checkpoint) and
        # aborts; MPICH's line for each rank's MPI_Abort may follow ours, if it is printed before the job is killed
        lines = proc.stderr.splitlines()
        assert lines[0] == ("mpiclip: aborted by SIGTERM: a trace being written says 'interrupted', "
                            "and its last complete checkpoint is kept")
        assert len(lines) <= 1 + (ranks or 0) and all(line.startswith("Abort(") for line in lines[1:]), proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    assert stamp_of(tmp_path / "cut.ckpt.h5")["t"] in kept
    assert trace_status(str(tmp_path / "cut.h5")).startswith(status)
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".cut.ckpt.h5.tmp-")]
    assert len(leftovers) == (1 if signals == [signal.SIGKILL] else 0)
    resumed = mpiclip(["run", path, "--resume", "-q"])
    assert resumed.returncode == 0, resumed.stderr
    assert differences(trace_arrays(tmp_path / "full.h5"), trace_arrays(tmp_path / "cut.h5")) == []
    assert sorted(os.listdir(tmp_path)) == ["cut.h5", "cut.toml", "full.h5"]


# ----------------------------------------------------------------------------------- refusals
def digest(*paths) -> list:
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


@pytest.fixture
def stopped(tmp_path, monkeypatch):
    """A run stopped by SIGTERM at round 30: its table, trace and checkpoint."""
    table = case("ef21", tmp_path / "cut.h5")
    with at_round(monkeypatch, 30, signal_self(signal.SIGTERM)):
        assert run(table).status.startswith("interrupted")
    return table, tmp_path / "cut.h5", tmp_path / "cut.ckpt.h5"


def test_a_checkpoint_of_another_config_is_refused(stopped):
    table, trace, ckpt = stopped
    before = digest(trace, ckpt)
    with pytest.raises(InputError, match=r"^checkpoint = '.*cut.ckpt.h5': belongs to another config \(hash "):
        run(table, "run.resume='yes'", "stepsize.factor=2.0")
    assert digest(trace, ckpt) == before
    # keys that do not change the trajectory may change
    assert run(table, "run.resume='yes'", "run.check_every=5", "output.flush_rows=3").status.startswith("completed")


def test_a_truncated_checkpoint_is_refused(stopped):
    table, trace, ckpt = stopped
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    before = digest(trace, ckpt)
    with pytest.raises(InputError, match=r"^checkpoint = '.*': is not a readable checkpoint \(truncated or corrupt"):
        run(table, "run.resume='yes'")
    with pytest.raises(InputError, match=r"^checkpoint = .*not a readable checkpoint"):
        run(table, "run.resume='auto'")  # auto does not silently start again over a damaged checkpoint
    assert digest(trace, ckpt) == before


def test_a_checkpoint_resumes_after_its_state_classes_moved_and_is_refused_with_other_fields(tmp_path, stopped):
    """A checkpoint names its state classes only for a reader's information: the state is read back into the
    classes the run starts from, so a class that moved or was renamed between versions resumes (here: the names
    an older layout would have written), while a state with other fields is refused, naming them."""
    table, trace, ckpt = stopped
    with h5py.File(ckpt, "r+") as f:
        for group in ("workers", "server"):
            if f[group].attrs["type"] != "none":
                f[group].attrs["type"] = "mpiclip.methods.gone:OldName"
    moved = tmp_path / "moved.ckpt.h5"
    os.link(ckpt, moved)
    assert run(table, "run.resume='yes'").status.startswith("completed")
    full = case("ef21", tmp_path / "full.h5")
    assert run(full).status.startswith("completed")
    assert differences(trace_arrays(tmp_path / "full.h5"), trace_arrays(trace)) == []
    # the same checkpoint with a field renamed: refused before anything is written
    os.replace(moved, ckpt)
    with h5py.File(ckpt, "r+") as f:
        f.move("workers/g", "workers/h")
    before = digest(ckpt)
    with pytest.raises(InputError, match=r"^checkpoint = '.*': workers holds the fields \(h\), where this "
                                         r"method keeps \(g\)$"):
        run(table, "run.resume='yes'")
    assert digest(ckpt) == before


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_trace_is_not_resumed_into(stopped, how):
    table, trace, ckpt = stopped
    damage(trace, how)
    before = digest(trace, ckpt)
    with pytest.raises(InputError, match=r"^output.path = '.*cut.h5': cannot be resumed: the trace is unreadable \("):
        run(table, "run.resume='yes'")
    assert digest(trace, ckpt) == before


def test_resume_without_a_checkpoint_and_into_a_foreign_trace_is_refused(tmp_path, stopped):
    table, trace, ckpt = stopped
    other = case("ef21", tmp_path / "other.h5")
    run(other)
    with pytest.raises(InputError, match=r"^run.resume = 'yes': there is no checkpoint .*other.ckpt.h5 to resume from$"):
        run(other, "run.resume='yes'")
    os.replace(ckpt, tmp_path / "other.ckpt.h5")  # a checkpoint beside a trace of another run
    before = digest(tmp_path / "other.h5", tmp_path / "other.ckpt.h5")
    with pytest.raises(InputError, match=r"^output.path = .*other.h5': is not the trace of the checkpoint's run"):
        run(other, "run.resume='yes'")
    assert digest(tmp_path / "other.h5", tmp_path / "other.ckpt.h5") == before


def test_cli_resume_reports_one_line(tmp_path, stopped):
    table, trace, ckpt = stopped
    path = write_toml(str(tmp_path / "c.toml"), {**table, "stepsize": {"factor": 8.0}})
    proc = mpiclip(["run", path, "--resume"])
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        f"mpiclip: error: checkpoint = '{ckpt}': belongs to another config (hash "
        + proc.stderr.split("(hash ", 1)[1].strip()]


def test_resume_auto_resumes_skips_or_starts(tmp_path, stopped):
    table, trace, ckpt = stopped
    assert run(table, "run.resume='auto'").status.startswith("completed") and not ckpt.exists()
    assert run(table, "run.resume='auto'").skipped  # completed: nothing to do
    fresh = case("ef21", tmp_path / "fresh.h5")
    assert run(fresh, "run.resume='auto'").status.startswith("completed")


def test_starting_afresh_removes_a_stale_checkpoint(stopped):
    table, trace, ckpt = stopped
    assert run(table, "output.exists='overwrite'").status.startswith("completed")
    assert not ckpt.exists()


def test_a_stop_agreed_at_the_last_round_completes_the_run(tmp_path, monkeypatch):
    table = case("ef21", tmp_path / "last.h5")
    with at_round(monkeypatch, ROUNDS, signal_self(signal.SIGTERM)) as fired:
        result = run(table)
    assert fired == [ROUNDS] and result.status == f"completed: round budget {ROUNDS} reached"
    assert not (tmp_path / "last.ckpt.h5").exists()


# ------------------------------------------------------- issue 28 item 3: checkpoint contents are validated
def edit_checkpoint(ckpt, how: str) -> None:
    """Spoil one part of a checkpoint the way a cut copy, a hand edit or another version would."""
    with h5py.File(ckpt, "r+") as f:
        if how == "stamp":
            f.attrs["stamp"] = json.dumps({**json.loads(f.attrs["stamp"]), "method": "ef14"})
            return
        name, data = {
            "workers-cut": ("workers/g", lambda a: a[:3]),  # 3 of the 5 workers' rows
            "workers-columns": ("workers/g", lambda a: a[:, :7]),
            "x-cut": ("x", lambda a: a[:5]),
            "x-dtype": ("x", lambda a: a.astype("S8")),
            "ledger-dtype": ("ledger/sent_up", lambda a: a.astype(np.int64)),
            "server-shape": ("server/g", lambda a: np.zeros((2, len(a)))),
            "ledger-missing": ("ledger/pending_down", None),
        }[how]
        old = f[name][()]
        del f[name]
        if data is not None:
            f.create_dataset(name, data=data(old))


BAD_CHECKPOINTS = {
    "workers-cut": r"/workers/g has shape \(3, 12\), where this run keeps \(5, 12\)",
    "workers-columns": r"/workers/g has shape \(5, 7\), where this run keeps \(5, 12\)",
    "x-cut": r"/x has shape \(5,\), where this run keeps \(12,\)",
    "x-dtype": r"/x has dtype \|S8, where this run keeps floating-point values",
    "ledger-dtype": r"/ledger/sent_up has dtype int64, where this run keeps floating-point values",
    "server-shape": r"/server/g has shape \(2, 12\), where this run keeps \(12,\)",
    "ledger-missing": r"has no dataset /ledger/pending_down, which this run keeps",
    "stamp": r"was written by a run with method = 'ef14'; this run has 'ef21'",
}


@pytest.mark.parametrize("how", sorted(BAD_CHECKPOINTS))
def test_a_checkpoint_whose_arrays_do_not_fit_the_run_is_refused_and_nothing_is_touched(stopped, capsys, how):
    """A cut or rewritten array used to pass the read and fail the resumed run with a broadcast traceback,
    turning the 'interrupted' trace into 'failed'; now it is one line naming the file and the dataset, exit 2,
    and the trace and the checkpoint stay byte for byte as they were."""
    table, trace, ckpt = stopped
    edit_checkpoint(ckpt, how)
    before = digest(trace, ckpt)
    path = write_toml(str(trace.parent / "c.toml"), table)
    code = main(["run", path, "--resume", "-q"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert re.fullmatch(rf"mpiclip: error: checkpoint = '{re.escape(str(ckpt))}': {BAD_CHECKPOINTS[how]}.*", err[0]), err
    assert digest(trace, ckpt) == before
    assert trace_status(str(trace)) == "interrupted"


def test_an_asynchronous_checkpoint_with_a_cut_schedule_is_refused(tmp_path, monkeypatch):
    table = case("asgd", tmp_path / "cut.h5")
    with at_round(monkeypatch, 30, signal_self(signal.SIGTERM)):
        assert run(table).status.startswith("interrupted")
    ckpt = tmp_path / "cut.ckpt.h5"
    with h5py.File(ckpt, "r+") as f:
        finish = f["extra/schedule_finish"][()]
        del f["extra/schedule_finish"]
        f["extra/schedule_finish"] = finish[:2]
    before = digest(tmp_path / "cut.h5", ckpt)
    with pytest.raises(InputError, match=r"^checkpoint = '.*': /extra/schedule_finish has shape \(2,\), where this run "
                                         r"keeps \(5,\)$"):
        run(table, "run.resume='yes'")
    assert digest(tmp_path / "cut.h5", ckpt) == before


def libsvm_case(tmp_path):
    rng = np.random.default_rng(3)
    X, y = rng.random((60, 8)).round(2), np.where(rng.random(60) < 0.5, -1, 1)
    data = write_libsvm(str(tmp_path / "data.txt"), X, y)
    table = case("ef21", tmp_path / "cut.h5")
    table["data"] = {"source": "libsvm", "path": data}
    table["compressor"] = {"name": "topk", "k": 2}
    return table, tmp_path / "data.txt"


@pytest.mark.parametrize("old_checkpoint", [False, True], ids=["checkpoint", "checkpoint-of-an-earlier-version"])
def test_a_resume_after_the_data_changed_is_refused(tmp_path, monkeypatch, old_checkpoint):
    """The same file name and size, other rows: the run would mix two data sets in one trace. The checkpoint
    records the data's checksum (and a checkpoint of an earlier version, without one, is checked against the
    trace's)."""
    table, data = libsvm_case(tmp_path)
    with at_round(monkeypatch, 30, signal_self(signal.SIGTERM)):
        assert run(table).status.startswith("interrupted")
    trace, ckpt = tmp_path / "cut.h5", tmp_path / "cut.ckpt.h5"
    assert stamp_of(ckpt)["dataset_checksum"].startswith("sha256:")
    if old_checkpoint:
        with h5py.File(ckpt, "r+") as f:
            f.attrs["stamp"] = json.dumps({k: v for k, v in json.loads(f.attrs["stamp"]).items() if k != "dataset_checksum"})
    lines = data.read_text().splitlines(keepends=True)
    size = data.stat().st_size
    data.write_text("".join([lines[1], lines[0], *lines[2:]]))  # two rows swapped: same name, same size
    assert data.stat().st_size == size
    before = digest(trace, ckpt)
    with pytest.raises(InputError, match=r"^checkpoint = '.*cut.ckpt.h5': was written on data sha256:\w+, and the data "
                                         r"now is sha256:\w+: the data changed since the run began"):
        run(table, "run.resume='yes'")
    assert digest(trace, ckpt) == before
    data.write_text("".join(lines))  # the data back as it was: the resume goes on
    assert run(table, "run.resume='yes'").status.startswith("completed")


def test_resume_auto_skips_only_a_completed_trace_of_the_same_config_and_data(tmp_path):
    """A sweep point (resume 'auto', exists 'overwrite') whose config or data changed since its trace completed
    is run again, not skipped with the old result; a single run (exists 'error' or 'skip') is refused."""
    table, data = libsvm_case(tmp_path)
    first = run(table, "run.resume='auto'")
    assert first.status.startswith("completed") and run(table, "run.resume='auto'").skipped
    run_id = lambda: h5py.File(tmp_path / "cut.h5", "r").attrs["run_id"]  # noqa: E731
    kept = run_id()
    again = run(table, "run.resume='auto'", "stepsize.factor=2.0")  # exists = 'overwrite' (the sweep's setting)
    assert not again.skipped and again.status.startswith("completed") and run_id() != kept
    for exists in ("error", "skip"):
        before = digest(tmp_path / "cut.h5")
        with pytest.raises(InputError, match=r"^output.path = '.*cut.h5': holds a completed run of another config "
                                             r"\(config_hash \w+…, this run's \w+…\); set output.exists = 'overwrite'"):
            run(table, "run.resume='auto'", f"output.exists='{exists}'")
        assert digest(tmp_path / "cut.h5") == before
    assert run(table, "run.resume='auto'", "stepsize.factor=2.0", "output.exists='skip'").skipped  # the same config
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join([lines[1], lines[0], *lines[2:]]))
    with pytest.raises(InputError, match=r"holds a completed run of another data \(dataset_checksum sha256:"):
        run(table, "run.resume='auto'", "stepsize.factor=2.0", "output.exists='error'")
    assert not run(table, "run.resume='auto'", "stepsize.factor=2.0").skipped


def test_a_sweep_runs_again_the_points_whose_config_changed_since_they_completed(tmp_path):
    """`sweep run` skipped every completed trace, even one of another config (a changed [set] keeps the
    points' names); now a point is skipped only when its trace completed with this config and data."""
    from mpiclip.sweep import load_sweep
    from mpiclip.sweep_run import run_sweep

    text = ('[sweep]\nname = "s"\nbase = "synthetic-logreg"\noutput = "{out}"\n[set]\n"run.rounds" = {rounds}\n'
            '"run.n_workers" = 2\n"data.n_samples" = 100\n[[grid]]\n"method.name" = ["ef21", "gd"]\n'
            '"compressor.name" = ["identity"]\n')
    path = tmp_path / "s.toml"

    def sweep(rounds):
        path.write_text(text.replace("{out}", str(tmp_path / "res")).replace("{rounds}", str(rounds)))
        return run_sweep(list(load_sweep(str(path)).runs), SerialComm(), say=lambda *a: None)[0]

    assert sweep(5) == {"completed": 2, "skipped": 0, "failed": 0}
    assert sweep(5) == {"completed": 0, "skipped": 2, "failed": 0}
    assert sweep(7) == {"completed": 2, "skipped": 0, "failed": 0}
    assert {len(h5py.File(p, "r")["rounds"]) for p in (tmp_path / "res").glob("*.h5")} == {8}
