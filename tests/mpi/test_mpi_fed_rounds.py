"""Runs under mpiexec: the collectives of a federated round, counted on the real communicator, and the same
federated trace on 1, 2, ... and all ranks, however many (4 and 8 oversubscribed: a check of correctness)."""

import os

import numpy as np
import pytest
from helpers import FEDERATED, METHOD_CASES, config_table
from mpi4py import MPI
from test_mpi_runs import CASES, arrays, collective, run_on

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import MPIComm
from mpiclip.runners.federated import FederatedRunner

WORLD = MPI.COMM_WORLD
EVALUATION = 1  # the evaluation's ordered sum over every client (exact_row): one Allgatherv of its small rows


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case, sums", [("fedavg", 1), ("fedga", 2), ("scaffold", 2), ("scaffold_stored", 1), ("lbsgd", 1),
                                        ("fedprox", 1)])
def test_a_round_makes_one_collective_per_communication_round(mpi_tmp_path, monkeypatch, case, sums):
    """A round between records: one collective per communication round (the sampled clients' rows gathered, not
    a ring of hops); a recorded round adds only the evaluation's sum, its gradient variance riding on the
    round's first sum; the last row, with no round after it, sums its gradient variance alone."""
    rounds, every = 9, 4
    table = config_table(run={"name": case, "n_workers": WORLD.size + 3, "rounds": rounds, "eval_every": every, "check_every": 100},
                         **METHOD_CASES[case])
    table["output"] = {"path": os.path.join(str(mpi_tmp_path), f"{case}-{WORLD.rank // WORLD.size}.h5"),
                       "exists": "overwrite", "flush_seconds": 3600.0}
    comm = MPIComm()
    (prepared,) = session.prepare_all([cfg.validate(table)], comm, "mpi-test", log=lambda *a: None)
    counter, per_round = comm.count_calls(), {}
    advance = FederatedRunner.advance

    def counted(runner, state):
        t, before = state.t, counter.total
        state = advance(runner, state)
        per_round[t] = counter.total - before
        return state

    monkeypatch.setattr(FederatedRunner, "advance", counted)
    assert session.execute(prepared).status.startswith("completed")
    expected = {t: sums + (EVALUATION if t % every == 0 else 0) for t in range(rounds)}
    expected[rounds] = 2 * EVALUATION
    ok = per_round == expected
    if not ok:
        print(f"{case}: collectives per round {per_round}, expected {expected}")
    assert collective(ok)


FED_CASES = {**{name: METHOD_CASES[name] for name in FEDERATED + ("ce_fedavg",)},
             "fedga-mlp-digits": CASES["fed-fedga-mlp-digits-test-set"],
             "fedavg-topk-update-clip-samples": {"method": {"name": "fedavg", "local_steps": 2},
                                                 "compressor": {"name": "topk", "k": 3},
                                                 "federated": {"clients_per_round": 4, "update_clip": 0.3,
                                                               "weighting": "samples"}}}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", sorted(FED_CASES))
def test_a_federated_trace_is_the_same_on_1_and_every_number_of_ranks(mpi_tmp_path, case):
    """2·size + 1 clients, so that every rank holds some, in uneven blocks, on any world (test_mpi_runs's 4 and 5
    clients cannot run on 8 ranks): the trace of all ranks, of 1 rank, and of groups of 2 and size/2 ranks."""
    n_workers = 2 * WORLD.size + 1
    table = config_table(run={"name": case, "n_workers": n_workers, "rounds": 20, "eval_every": 3, "check_every": 7},
                         **FED_CASES[case])
    world = MPIComm()
    groups = {"all": world}
    for size in sorted({1, 2, world.size // 2}):
        if size < world.size and world.size % size == 0:
            groups[f"{size}-ranks"] = world.split(world.rank // size)
    paths = {}
    for label, comm in groups.items():
        paths[label] = os.path.join(str(mpi_tmp_path), f"{case}-{label}-g{world.rank // comm.size}.h5")
        run_on(comm, table, paths[label])
    WORLD.Barrier()
    ok = True
    if world.rank == 0:
        reference, attrs = arrays(paths["all"])
        ok = attrs["status"].startswith("completed") and attrs["n_ranks"] == world.size
        if not ok:
            print(f"{case}: {attrs['status']} on {attrs['n_ranks']} ranks")
        for label in groups:
            data, _ = arrays(paths[label])
            for name in reference:
                if name != "time" and not np.array_equal(reference[name], data[name], equal_nan=True):
                    print(f"{case}: {name} differs between {world.size} ranks and {label}")
                    ok = False
    assert collective(ok)
