"""Real asynchrony under mpiexec: rank 0 serves, the other ranks compute; the recorded schedule replays
in simulated mode to the same trace, bit for bit."""

import os

import numpy as np
import pytest
from helpers import config_table, differences, trace_arrays
from mpi4py import MPI

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import MPIComm
from mpiclip.errors import InputError
from mpiclip.trace import load_trace

WORLD = MPI.COMM_WORLD

REAL_CASES = {
    "asgd-random": ({"name": "asgd"}, {"name": "identity"}, {"assignment": "random"}),
    "clipped-noise": ({"name": "clipped_asgd", "tau": 0.2}, {"name": "identity"},
                      {"oracle": "noise", "noise_sigma": 0.3, "slow_workers": [0], "slow_factor": 5.0, "time_unit": 2e-4}),
    "delay-adaptive-topk": ({"name": "delay_adaptive_asgd"}, {"name": "topk", "k": 2}, {"oracle": "minibatch", "batch_size": 7}),
    "minibatch-sgd": ({"name": "minibatch_sgd"}, {"name": "identity"}, {}),
    "rennala": ({"name": "rennala_sgd", "batch": 3}, {"name": "identity"}, {"data": "homogeneous"}),
    "ringmaster": ({"name": "ringmaster_asgd", "max_delay": 2}, {"name": "randk", "k": 3}, {}),
    "fedbuff-topk": ({"name": "fedbuff", "client_lr": 0.5, "local_steps": 3, "buffer": 2}, {"name": "topk", "k": 2},
                     {"oracle": "minibatch", "batch_size": 5}),
}


def collective(ok: bool) -> bool:
    return WORLD.allreduce(bool(ok), op=MPI.LAND)


def run_on(comm, table):
    config = cfg.validate(table)
    (prepared,) = session.prepare_all([config], comm, "mpi-test", log=lambda *a: None)
    return session.execute(prepared)


def table_for(path: str, method: dict, compressor: dict, asynchrony: dict, n: int) -> dict:
    table = config_table(run={"name": "r", "n_workers": n, "rounds": 60, "eval_every": 4}, method=method,
                         compressor=compressor, stepsize={"factor": 1.0})
    table["async"] = asynchrony
    table["output"] = {"path": path, "exists": "overwrite", "flush_rows": 5}
    return table


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", sorted(REAL_CASES))
def test_a_real_run_replays_in_simulated_mode_to_the_same_trace(mpi_tmp_path, case):
    method, compressor, asynchrony = REAL_CASES[case]
    world, tmp = MPIComm(), str(mpi_tmp_path)
    n = world.size + 2
    real = os.path.join(tmp, f"{case}-real.h5")
    result = run_on(world, table_for(real, method, compressor, {**asynchrony, "mode": "real"}, n))
    ok = result.status == "completed: round budget 60 reached"
    WORLD.Barrier()
    replay = os.path.join(tmp, f"{case}-replay{world.rank}.h5")
    simulated = {k: v for k, v in asynchrony.items() if k != "time_unit"}
    again = run_on(world.split(world.rank), table_for(replay, method, compressor, {**simulated, "replay": real}, n))
    ok &= again.status == result.status
    ok &= differences(trace_arrays(real), trace_arrays(replay)) == []
    ev = load_trace(real).tables["events"]
    applied = ev["update"] >= 0
    ok &= bool(np.array_equal(ev["delay"][applied], ev["update"][applied] - ev["start"][applied]))
    ok &= bool((np.bincount(ev["worker"], minlength=n) > 0).all())  # every worker really computed
    if not ok:
        print(case, result.status, again.status, differences(trace_arrays(real), trace_arrays(replay)))
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_real_mode_refusals_reach_every_rank(mpi_tmp_path):
    world = MPIComm()
    path = os.path.join(str(mpi_tmp_path), "bad.h5")
    for asynchrony, run, message in [({"mode": "real", "slow_workers": [1]}, {}, "async.time_unit = 0.0"),
                                     ({"mode": "real"}, {"checkpoint_every": 5}, "run.checkpoint_every = 5"),
                                     ({"mode": "real"}, {"resume": "yes"}, "run.resume = 'yes'"),
                                     ({"mode": "real", "outages": [[0, 1.0, 2.0]]}, {}, "async.outages")]:
        table = table_for(path, {"name": "asgd"}, {"name": "identity"}, asynchrony, world.size + 1)
        table["run"].update(run)
        with pytest.raises(InputError, match=message):
            run_on(world, table)
    with pytest.raises(InputError, match="stops"):
        run_on(world, table_for(path, {"name": "ringmaster_asgd", "stops": True}, {"name": "identity"}, {"mode": "real"},
                                world.size + 1))
    assert collective(not os.path.exists(path))


@pytest.mark.mpi(min_size=2)
def test_real_mode_with_a_worker_per_worker_rank_is_refused_saying_what_it_needs(mpi_tmp_path):
    """P ranks, P − 1 workers (3 and 2 under mpiexec -n 3): rank 0 serves, but every rank evaluates the rows on its
    own workers, so real mode needs n ≥ P like the other runners; the refusal says so, on every rank, before any
    file is written."""
    world = MPIComm()
    path = os.path.join(str(mpi_tmp_path), "few.h5")
    n = world.size - 1
    table = table_for(path, {"name": "asgd"}, {"name": "identity"}, {"mode": "real"}, n)
    with pytest.raises(InputError) as refused:
        run_on(world, table)
    message = str(refused.value)
    want = f"run.n_workers = {n}: is less than the {world.size} MPI ranks; every rank needs at least one worker, " \
           "in real mode too"
    advice = "2 workers or more" if n < 2 else "on 2 ranks" if n == 2 else f"on 2 to {n} ranks"
    assert message.startswith(want) and advice in message
    plain = table_for(path, {"name": "asgd"}, {"name": "identity"}, {}, n)  # simulated: the rule's message alone
    with pytest.raises(InputError, match=r"every rank needs at least one worker$"):
        run_on(world, plain)
    assert collective(not os.path.exists(path))


@pytest.mark.mpi(min_size=2)
def test_a_simulated_run_on_a_network_gives_the_same_trace_on_any_number_of_ranks(mpi_tmp_path):
    """[system]'s links on the asynchronous clock (issue 29 item 3): every rank prices each job's transfers alike."""
    from mpiclip.comm import SerialComm

    world, tmp = MPIComm(), str(mpi_tmp_path)
    system = {"latency": 0.01, "bandwidth_up": [1e5, 2e3, 1e4, 1e5], "bandwidth_down": 1e6, "encoding": "coo32"}
    tables = {}
    for name in ("ranks", f"alone{world.rank}"):
        tables[name] = table_for(os.path.join(tmp, f"{name}.h5"), {"name": "delay_adaptive_asgd"},
                                 {"name": "topk", "k": 2}, {}, 4)
        tables[name]["system"] = system
    ok = run_on(world, tables["ranks"]).status == "completed: round budget 60 reached"
    ok = run_on(SerialComm(), tables[f"alone{world.rank}"]).status == "completed: round budget 60 reached" and ok
    WORLD.Barrier()
    shared, alone = (trace_arrays(os.path.join(tmp, f"{name}.h5")) for name in ("ranks", f"alone{world.rank}"))
    assert collective(ok and differences(shared, alone) == [] and shared["sim_time"][-1] > 0)


# Simulated runs whose ranks compute their jobs late (issue 31): several workers per rank and rows far apart, so each
# rank holds a queue of pending jobs, computed while it waits for other ranks' arrivals, when one of its own is due,
# or before a row; stopped and restarted jobs (Ringmaster), batches (Rennala), local steps (FedBuff) and the pooled
# minibatch of homogeneous data among them.
DEFERRED_CASES = {
    "asgd-full": ({"name": "asgd"}, {"name": "identity"}, {"slow_workers": [1], "slow_factor": 4.0}),
    "asgd-homogeneous-minibatch": ({"name": "asgd"}, {"name": "identity"},
                                   {"data": "homogeneous", "oracle": "minibatch", "batch_size": 9}),
    "clipped-random-randk": ({"name": "clipped_asgd", "tau": 0.3}, {"name": "randk", "k": 3},
                             {"assignment": "random", "oracle": "minibatch", "batch_size": 4}),
    "ringmaster-stops": ({"name": "ringmaster_asgd", "max_delay": 3, "stops": True}, {"name": "identity"},
                         {"compute_time": "lognormal"}),
    "rennala-noise": ({"name": "rennala_sgd", "batch": 4}, {"name": "topk", "k": 2},
                      {"data": "homogeneous", "oracle": "noise"}),
    "minibatch-sgd": ({"name": "minibatch_sgd"}, {"name": "identity"}, {}),
    "fedbuff": ({"name": "fedbuff", "client_lr": 0.5, "local_steps": 2, "buffer": 3}, {"name": "identity"},
                {"oracle": "minibatch", "batch_size": 5}),
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", sorted(DEFERRED_CASES))
def test_jobs_computed_late_give_the_trace_of_one_rank(mpi_tmp_path, case):
    from mpiclip.comm import SerialComm

    world, tmp = MPIComm(), str(mpi_tmp_path)
    method, compressor, asynchrony = DEFERRED_CASES[case]
    n = 3 * world.size + 1
    tables = {name: table_for(os.path.join(tmp, f"{name}.h5"), method, compressor, asynchrony, n)
              for name in ("ranks", f"alone{world.rank}")}
    for table in tables.values():
        table["run"].update(rounds=150, eval_every=70, check_every=40)
    statuses = {run_on(world, tables["ranks"]).status, run_on(SerialComm(), tables[f"alone{world.rank}"]).status}
    WORLD.Barrier()
    shared, alone = (trace_arrays(os.path.join(tmp, f"{name}.h5")) for name in ("ranks", f"alone{world.rank}"))
    events = shared["events/worker"]
    assert collective(statuses == {"completed: round budget 150 reached"} and differences(shared, alone) == []
                      and len(np.unique(events)) == n)


# The several-rank block exchange (issue 31): between two rows, checks or checkpoints the arrivals whose jobs were all
# in flight at a block's start are exchanged in one collective, then applied in order on every rank.
BLOCK_CASES = {
    "asgd-full": ({"name": "asgd"}, {"name": "identity"}, {}),
    "rennala": ({"name": "rennala_sgd", "batch": 3}, {"name": "identity"}, {"data": "homogeneous", "oracle": "minibatch",
                                                                         "batch_size": 6}),
    "ef21-topk": ({"name": "delay_adaptive_asgd"}, {"name": "topk", "k": 2}, {"oracle": "minibatch", "batch_size": 5}),
    "clipped": ({"name": "clipped_asgd", "tau": 0.2}, {"name": "identity"}, {"slow_workers": [0], "slow_factor": 3.0}),
}


def block_tables(tmp: str, case: str, n: int, **run) -> dict:
    method, compressor, asynchrony = BLOCK_CASES[case]
    tables = {name: table_for(os.path.join(tmp, f"{name}.h5"), method, compressor, asynchrony, n)
              for name in ("ranks", f"alone{WORLD.rank}")}
    for table in tables.values():
        table["run"].update(rounds=300, eval_every=100, check_every=60, **run)
    return tables


class Exchanges:
    """Counts, on this rank, the block path's collectives (``allgather_sized``) and the per-arrival broadcasts."""

    def __init__(self, monkeypatch):
        self.blocks = self.broadcasts = 0
        gather, broadcast = MPIComm.allgather_sized, MPIComm.ibcast_array

        def gathered(comm, *args):
            self.blocks += 1
            return gather(comm, *args)

        def broadcasted(comm, *args):
            self.broadcasts += 1
            return broadcast(comm, *args)

        monkeypatch.setattr(MPIComm, "allgather_sized", gathered)
        monkeypatch.setattr(MPIComm, "ibcast_array", broadcasted)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", sorted(BLOCK_CASES))
def test_arrivals_exchanged_in_blocks_give_the_trace_of_one_rank_with_far_fewer_collectives(mpi_tmp_path, monkeypatch,
                                                                                             case):
    from mpiclip.comm import SerialComm

    n = 8 * WORLD.size
    tables = block_tables(str(mpi_tmp_path), case, n)
    exchanges = Exchanges(monkeypatch)
    statuses = {run_on(MPIComm(), tables["ranks"]).status}
    blocks, broadcasts = exchanges.blocks, exchanges.broadcasts
    statuses.add(run_on(SerialComm(), tables[f"alone{WORLD.rank}"]).status)
    WORLD.Barrier()
    shared, alone = (trace_arrays(os.path.join(str(mpi_tmp_path), f"{name}.h5")) for name in ("ranks", f"alone{WORLD.rank}"))
    arrivals = len(shared["events/worker"])
    ok = statuses == {"completed: round budget 300 reached"} and differences(shared, alone) == []
    ok &= broadcasts == 0 and 0 < blocks <= arrivals / 4  # several arrivals per collective, none on its own
    if not ok:
        print(case, statuses, differences(shared, alone), f"{blocks} exchanges, {broadcasts} broadcasts, {arrivals} arrivals")
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_a_method_whose_decisions_may_depend_on_the_vector_falls_back_to_a_broadcast_per_arrival(mpi_tmp_path,
                                                                                                 monkeypatch):
    """Where ``decisions`` is None the runner cannot find the blocks without the vectors: one broadcast per arrival,
    still the trace of one rank."""
    from mpiclip.comm import SerialComm
    from mpiclip.methods.asgd import AsyncSGD

    tables = block_tables(str(mpi_tmp_path), "asgd-full", 3 * WORLD.size)
    monkeypatch.setattr(AsyncSGD, "decisions", lambda self, server: None)
    exchanges = Exchanges(monkeypatch)
    status = run_on(MPIComm(), tables["ranks"]).status
    blocks, broadcasts = exchanges.blocks, exchanges.broadcasts
    ok = status == run_on(SerialComm(), tables[f"alone{WORLD.rank}"]).status == "completed: round budget 300 reached"
    WORLD.Barrier()
    shared, alone = (trace_arrays(os.path.join(str(mpi_tmp_path), f"{name}.h5")) for name in ("ranks", f"alone{WORLD.rank}"))
    ok &= differences(shared, alone) == [] and blocks == 0 and broadcasts == len(shared["events/worker"])
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_a_block_exchanged_run_stopped_at_a_check_and_resumed_gives_the_uninterrupted_trace_of_one_rank(mpi_tmp_path,
                                                                                                    monkeypatch):
    """SIGTERM on rank 0 just before the check at update 120 (EF21 uploads whose estimates the checkpoint keeps, and
    jobs computed late that it must hold): the ranks agree at that check and stop; resumed, the trace is one rank's
    uninterrupted run."""
    import signal

    from mpiclip.comm import SerialComm
    from mpiclip.runners.asynchronous import AsynchronousRunner

    tables = block_tables(str(mpi_tmp_path), "ef21-topk", 3 * WORLD.size + 1, checkpoint_every=50)
    ok = run_on(SerialComm(), tables[f"alone{WORLD.rank}"]).status == "completed: round budget 300 reached"
    check, fired = AsynchronousRunner._check_step, []

    def signalling(runner, state):
        if state.t == 120 and WORLD.rank == 0 and not fired:
            fired.append(state.t)
            os.kill(os.getpid(), signal.SIGTERM)
        return check(runner, state)

    monkeypatch.setattr(AsynchronousRunner, "_check_step", signalling)
    ok &= run_on(MPIComm(), tables["ranks"]).status == "interrupted: SIGTERM at round 120"
    monkeypatch.setattr(AsynchronousRunner, "_check_step", check)
    tables["ranks"]["run"]["resume"] = "yes"
    ok &= run_on(MPIComm(), tables["ranks"]).status == "completed: round budget 300 reached"
    WORLD.Barrier()
    shared, alone = (trace_arrays(os.path.join(str(mpi_tmp_path), f"{name}.h5")) for name in ("ranks", f"alone{WORLD.rank}"))
    ok &= differences(shared, alone) == []
    assert collective(ok)
