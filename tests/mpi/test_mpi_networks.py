"""Networks under mpiexec: a CNN on digits with EF21 Top-k (global and per layer, augmented), DP-SGD, clipped
ASGD and FedGA, and a BatchNorm ResNet-20 with FedAvg on generated colour images, give the same trace on 1, 2 and all ranks, and a run
stopped by SIGTERM and resumed on another number of ranks gives the uninterrupted trace (BatchNorm
statistics included: they move the test metrics)."""

import os
import shutil
import signal

import pytest
from helpers import config_table, differences, trace_arrays
from mpi4py import MPI

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import MPIComm
from mpiclip.runners.asynchronous import AsynchronousRunner
from mpiclip.runners.federated import FederatedRunner
from mpiclip.runners.synchronous import SynchronousRunner

pytest.importorskip("torch", reason="the network tests need the torch extra (tests/run.sh installs it)")

WORLD = MPI.COMM_WORLD
ROUNDS = 16
CNN = {"problem": {"name": "cnn_mnist", "channels": [4, 8], "padding": 2},
       "data": {"source": "digits", "split": "label_sorted", "test_fraction": 0.2},
       "stepsize": {"rule": "constant", "value": 0.1}}
CASES = {
    "ef21-topk": {**CNN, "method": {"name": "ef21_sgd", "batch": 0.1}, "compressor": {"name": "topk", "k": 40}},
    "ef21-topk-layers-augmented": {**CNN, "problem": {**CNN["problem"], "augment": "crop_flip", "pad": 1},
                                   "method": {"name": "ef21_sgd", "batch": 0.1},
                                   "compressor": {"name": "topk_ratio", "ratio": 0.02, "per_layer": True}},
    "dp-sgd": {**CNN, "method": {"name": "dp_sgd", "tau": 1.0, "sigma": 0.5, "batch": 0.05}, "compressor": None},
    "clipped-asgd": {**CNN, "method": {"name": "clipped_asgd", "tau": 1.0}, "compressor": {"name": "identity"},
                     "async": {"oracle": "minibatch", "batch_size": 16, "slow_workers": [1], "slow_factor": 10.0}},
    "fedga": {**CNN, "method": {"name": "fedga", "local_steps": 2, "beta": 0.1}, "compressor": {"name": "identity"},
              "federated": {"clients_per_round": 3, "batch_size": 16}},
    "fedavg-resnet20-batchnorm": {**CNN, "problem": {"name": "resnet20", "norm": "batch", "augment": "flip"},
                                  "data": {"source": "synthetic_images", "n_samples": 300, "channels": 3, "size": 8,
                                           "split": "label_sorted", "test_fraction": 0.2},
                                  "method": {"name": "fedavg", "local_steps": 2}, "compressor": {"name": "identity"},
                                  "federated": {"clients_per_round": 3, "batch_size": 16}},
}


def collective(ok: bool) -> bool:
    return WORLD.allreduce(bool(ok), op=MPI.LAND)


def table_for(case: str, path: str) -> dict:
    table = config_table(run={"name": case, "n_workers": 5, "rounds": ROUNDS, "eval_every": 4, "check_every": 5},
                         **CASES[case])
    table["output"] = {"path": path, "exists": "overwrite"}
    return table


def run_on(comm, table, *overrides):
    config = cfg.validate(cfg.apply_overrides(table, [cfg.parse_override(o) for o in overrides]))
    (prepared,) = session.prepare_all([config], comm, "mpi-test", log=lambda *a: None)
    return session.execute(prepared)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_trace_on_1_2_and_all_ranks(mpi_tmp_path, case):
    world = MPIComm()
    groups = {"all": world, "one": world.split(world.rank)}
    if world.size >= 4 and world.size % 2 == 0:
        groups["two"] = world.split(world.rank // 2)
    paths = {}
    for label, comm in groups.items():
        paths[label] = os.path.join(str(mpi_tmp_path), f"{case}-{label}-g{world.rank // comm.size}.h5")
        assert run_on(comm, table_for(case, paths[label])).status.startswith("completed")
    WORLD.Barrier()
    ok = True
    if world.rank == 0:
        reference = trace_arrays(paths["all"])
        assert "test_accuracy" in reference
        for label in groups:
            differ = differences(reference, trace_arrays(paths[label]))
            if differ:
                print(f"{case}: {differ} differ between {world.size} ranks and group {label!r}")
            ok &= not differ
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", sorted(CASES))
def test_sigterm_then_resume_on_one_rank_is_the_uninterrupted_trace(mpi_tmp_path, monkeypatch, case):
    world, tmp = MPIComm(), str(mpi_tmp_path)
    base = lambda label: os.path.join(tmp, f"{case}-{label}")
    run_on(world, table_for(case, base("full") + ".h5"))
    stop = 7
    for runner in (SynchronousRunner, AsynchronousRunner, FederatedRunner):
        original = runner.advance

        def advance(self, state, original=original):  # the first call at or past the stop: several ranks exchanging
            # arrivals in blocks run the updates up to the next row or check in one call, as one rank does
            if state.t >= stop and WORLD.rank == 0 and not getattr(self, "_signalled", False):
                self._signalled = True
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, state)

        monkeypatch.setattr(runner, "advance", advance)
    stopped = run_on(world, table_for(case, base("stopped") + ".h5"))
    monkeypatch.undo()
    ok = stopped.status.startswith("interrupted: SIGTERM")
    WORLD.Barrier()
    for suffix in (".h5", ".ckpt.h5"):
        shutil.copy(base("stopped") + suffix, base(f"copy{world.rank}") + suffix)
    resumed = run_on(world.split(world.rank), table_for(case, base(f"copy{world.rank}") + ".h5"), "run.resume='yes'")
    ok &= resumed.status.startswith("completed")
    differ = differences(trace_arrays(base("full") + ".h5"), trace_arrays(base(f"copy{world.rank}") + ".h5"))
    if differ:
        print(f"{case}: {differ} differ after the resume")
    assert collective(ok and not differ)
