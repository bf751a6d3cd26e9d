"""Checkpoint and resume under mpiexec: a run stopped by a signal on one rank stops on every rank at the
same round, and a resume on another number of ranks (1 <-> all) completes the uninterrupted trace."""

import os
import shutil
import signal

import numpy as np
import pytest
from helpers import METHOD_CASES, config_table, differences, stop_round, trace_arrays
from mpi4py import MPI

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import MPIComm
from mpiclip.errors import InputError
from mpiclip.runners.asynchronous import AsynchronousRunner
from mpiclip.runners.federated import FederatedRunner
from mpiclip.runners.synchronous import SynchronousRunner

WORLD = MPI.COMM_WORLD
ROUNDS = 40


def collective(ok: bool) -> bool:
    return WORLD.allreduce(bool(ok), op=MPI.LAND)


def table_for(name: str, path: str, **run) -> dict:
    table = config_table(run={"name": name, "n_workers": 5, "rounds": ROUNDS, "eval_every": 3, "check_every": 4, **run},
                         **METHOD_CASES[name])
    table["output"] = {"path": path, "exists": "overwrite", "flush_rows": 5}
    return table


def run_on(comm, table, *overrides):
    config = cfg.validate(cfg.apply_overrides(table, [cfg.parse_override(o) for o in overrides]))
    (prepared,) = session.prepare_all([config], comm, "mpi-test", log=lambda *a: None)
    return session.execute(prepared)


RUNNER_CLASSES = (SynchronousRunner, AsynchronousRunner, FederatedRunner)


def term_at(monkeypatch, t: int, ranks):
    """SIGTERM to this process at the top of round t if its world rank is in ``ranks``; returns the undo. The
    asynchronous runner on one rank advances blocks of updates: round t ends one, so that its ``advance`` sees it."""
    originals = [runner.advance for runner in RUNNER_CLASSES]
    for runner, original in zip(RUNNER_CLASSES, originals):
        def advance(self, state, original=original):
            if state.t == t and WORLD.rank in ranks and not getattr(self, "_signalled", False):
                self._signalled = True
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, state)

        monkeypatch.setattr(runner, "advance", advance)
    horizon = AsynchronousRunner._horizon
    monkeypatch.setattr(AsynchronousRunner, "_horizon", lambda self, now: min(horizon(self, now), t) if now < t
                        else horizon(self, now))

    def undo():
        for runner, original in zip(RUNNER_CLASSES, originals):
            monkeypatch.setattr(runner, "advance", original)
        monkeypatch.setattr(AsynchronousRunner, "_horizon", horizon)

    return undo


def copy_run(src: str, dst: str) -> None:
    for suffix in (".h5", ".ckpt.h5"):
        shutil.copy(src + suffix, dst + suffix)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_stop_on_all_ranks_and_resume_on_one_and_back(mpi_tmp_path, monkeypatch, name):
    world, tmp = MPIComm(), str(mpi_tmp_path)
    one = world.split(world.rank)
    base = lambda label: os.path.join(tmp, f"{name}-{label}")
    full = run_on(world, table_for(name, base("full") + ".h5"))
    t = stop_round(name, ROUNDS)

    # stopped on all ranks (the signal reaches rank 0 only), resumed on one rank (a copy per rank)
    undo = term_at(monkeypatch, t, {0})
    stopped = run_on(world, table_for(name, base("world") + ".h5"))
    undo()
    ok = stopped.status.startswith("interrupted: SIGTERM")
    WORLD.Barrier()
    copy_run(base("world"), base(f"copy{world.rank}"))
    resumed = run_on(one, table_for(name, base(f"copy{world.rank}") + ".h5"), "run.resume='yes'")
    ok &= resumed.status == full.status
    reference = trace_arrays(base("full") + ".h5")
    ok &= differences(reference, trace_arrays(base(f"copy{world.rank}") + ".h5")) == []

    # stopped on one rank, resumed on all of them
    undo = term_at(monkeypatch, t, set(range(world.size)))
    alone = run_on(one, table_for(name, base(f"one{world.rank}") + ".h5"))
    undo()
    ok &= alone.status.startswith("interrupted: SIGTERM")
    WORLD.Barrier()
    resumed = run_on(world, table_for(name, base("one0") + ".h5"), "run.resume='yes'")
    ok &= resumed.status == full.status
    WORLD.Barrier()
    ok &= differences(reference, trace_arrays(base("one0") + ".h5")) == []
    if not ok:
        print(f"{name}: stopped at {t}: {stopped.status} / {alone.status}")
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_allreduce_runs_resume_only_on_their_rank_count(mpi_tmp_path, monkeypatch):
    world, tmp = MPIComm(), str(mpi_tmp_path)
    path = os.path.join(tmp, "unordered")
    table = table_for("ef21", path + ".h5", deterministic=False)
    undo = term_at(monkeypatch, 10, {0})
    assert collective(run_on(world, table).status.startswith("interrupted"))
    undo()
    WORLD.Barrier()
    copy_run(path, path + f"-{world.rank}")
    with pytest.raises(InputError, match=r"^run.deterministic = False: the checkpoint was written on \d ranks"):
        run_on(world.split(world.rank), table_for("ef21", path + f"-{world.rank}.h5", deterministic=False), "run.resume='yes'")
    WORLD.Barrier()
    assert collective(run_on(world, table, "run.resume='yes'").status.startswith("completed"))
    assert collective(np.isfinite(trace_arrays(path + ".h5")["grad_norm_sq"]).all())


@pytest.mark.mpi(min_size=2)
def test_a_cut_checkpoint_is_refused_on_every_rank_and_nothing_is_touched(mpi_tmp_path, monkeypatch):
    """Issue 28 item 3: a checkpoint array with fewer rows than workers is refused by every rank alike, before
    any collective and before the trace is reopened, and the trace keeps its status and bytes."""
    import hashlib

    import h5py

    world, path = MPIComm(), os.path.join(str(mpi_tmp_path), "cut")
    table = table_for("ef21", path + ".h5")
    undo = term_at(monkeypatch, 10, {0})
    assert collective(run_on(world, table).status.startswith("interrupted"))
    undo()
    WORLD.Barrier()
    if WORLD.rank == 0:
        with h5py.File(path + ".ckpt.h5", "r+") as f:
            g = f["workers/g"][()]
            del f["workers/g"]
            f["workers/g"] = g[:2]
    WORLD.Barrier()
    before = [hashlib.sha256(open(path + suffix, "rb").read()).hexdigest() for suffix in (".h5", ".ckpt.h5")]
    with pytest.raises(InputError, match=r"^checkpoint = '.*cut.ckpt.h5': /workers/g has shape \(2, 12\), where this run "
                                         r"keeps \(5, 12\)$"):
        run_on(world, table, "run.resume='yes'")
    WORLD.Barrier()
    after = [hashlib.sha256(open(path + suffix, "rb").read()).hexdigest() for suffix in (".h5", ".ckpt.h5")]
    assert collective(after == before)
