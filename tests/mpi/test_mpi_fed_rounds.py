"""Runs under mpiexec: the collectives of a federated round, counted on the real communicator."""

import os

import pytest
from helpers import METHOD_CASES, config_table
from mpi4py import MPI
from test_mpi_runs import collective

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import MPIComm
from mpiclip.runners.federated import FederatedRunner

WORLD = MPI.COMM_WORLD
# the evaluation's ordered sum over every client (exact_row), a ring: a receive from the rank before, a send to the
# rank after, and the broadcast of the sum
EVALUATION = (WORLD.rank > 0) + (WORLD.rank < WORLD.size - 1) + 1


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case, sums", [("fedavg", 1), ("fedga", 2), ("scaffold", 2), ("scaffold_stored", 1), ("lbsgd", 1),
                                        ("fedprox", 1)])
def test_a_round_makes_one_collective_per_communication_round(mpi_tmp_path, monkeypatch, case, sums):
    """A round between records: one collective per communication round (the sampled clients' rows gathered, not
    a ring of hops); a recorded round adds only the evaluation's sum, its gradient variance riding on the
    round's first sum; the last row, with no round after it, sums its gradient variance alone."""
    rounds, every = 9, 4
    table = config_table(run={"name": case, "n_workers": 7, "rounds": rounds, "eval_every": every, "check_every": 100},
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
