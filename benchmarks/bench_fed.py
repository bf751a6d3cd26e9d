"""Federated rounds: seconds per round against the bare arithmetic of the same round, measured in one job.

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py benchmarks/bench_fed.py [--rounds 200] [--repeat 3] [--json PATH]

Digits (scikit-learn, extra `fed`), an MLP 64-32-10 (ReLU, d = 2,410), 100 clients spread iid, K = 5 local
steps on minibatches of 10, constant γ; all 100 clients per round and 20 of them. For FedAvg and FedGA the
loop's time per round (client sampling, local steps, compression bookkeeping, the ordered sums, the server
step; the evaluation of recorded rows is metric-only work and not counted) is set against the bound: the
same clients' local steps done bare (``Problem.worker_grad`` on the same minibatches and y ← y − γ g) plus
one Allreduce of the d-vector per communication round. The target is ≤ 1.2×. ``--json`` writes, per method
and number of participants, the medians of the loop's and the bound's milliseconds per round and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np
from _shared import write_json

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import make_comm
from mpiclip.methods.gradalign import local_batch
from mpiclip.runners.federated import LocalRound

LOOP = ("alignment", "local", "communication", "update")


def prepared_run(comm, method: dict, participants: int, rounds: int, out: str):
    table = {
        "run": {"name": "bench", "n_workers": 100, "rounds": rounds, "eval_every": 10**9, "x0": "model",
                "check_every": 10**9},
        "data": {"source": "digits", "split": "iid"},
        "problem": {"name": "mlp", "hidden": [32], "activation": "relu"},
        "method": method,
        "compressor": {"name": "identity"},
        "federated": {"clients_per_round": participants, "batch_size": 10},
        "stepsize": {"rule": "constant", "value": 0.1},
        "output": {"path": f"{out}/bench.h5", "exists": "overwrite"},
    }
    (prepared,) = session.prepare_all([cfg.validate(table)], comm, log=lambda *a: None)
    return prepared


def bare(comm, prepared, clients: np.ndarray, aligns: bool, steps: int) -> float:
    """Seconds of the rounds' arithmetic on this rank: the local clients' steps and one Allreduce per round."""
    from mpi4py import MPI

    problem, ids, c = prepared.problem, prepared.worker_ids, prepared.config
    x = prepared.x0.copy()
    d, gamma = len(x), prepared.method.gamma
    out = np.empty(d)
    comm.sum_rows(np.zeros((len(ids), 1)), True)  # start together
    t0 = time.perf_counter()
    for t, chosen in enumerate(clients):
        rnd = LocalRound(t, c.run.seed, gamma, 1.0, c.section("federated").batch_size, 0.0, 0.0)
        local = np.flatnonzero(np.isin(ids, chosen))
        total = np.zeros(d)
        if aligns:
            for i in local:
                total += problem.worker_grad(x, i)
            comm._c.Allreduce(total, out, op=MPI.SUM)
        total = np.zeros(d)
        for i in local:
            y = x
            for k in range(steps):
                y = y - gamma * problem.worker_grad(y, i, local_batch(rnd, int(ids[i]), k, int(problem.local_sizes[i])))
            total += x - y
        comm._c.Allreduce(total, out, op=MPI.SUM)
        x = x - out / len(chosen)
    return time.perf_counter() - t0


def measure(comm, method: dict, participants: int, rounds: int, out: str) -> tuple[float, float]:
    """(loop seconds per round, bare seconds per round): maxima over the ranks."""
    prepared = prepared_run(comm, method, participants, rounds, out)
    result = session.execute(prepared)
    loop = max(comm.allgather_objects(sum(result.timing[k] for k in LOOP)))
    from mpiclip.trace import load_trace

    clients = comm.bcast(load_trace(result.path).tables["clients"] if comm.rank == 0 else None)
    steps = method.get("local_steps", 5)
    arithmetic = max(comm.allgather_objects(bare(comm, prepared, clients, method["name"] != "fedavg", steps)))
    return loop / rounds, arithmetic / rounds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the medians here")
    args = ap.parse_args(argv)
    comm = make_comm()
    out = comm.bcast(tempfile.mkdtemp(prefix="bench-fed-") if comm.rank == 0 else None)
    if comm.rank == 0:
        print(f"digits MLP 64-32-10, 100 clients on {comm.size} ranks, K = 5, batch 10, {args.rounds} rounds; "
              f"median of {args.repeat}")
        print(f"{'method':8s} {'P':>4s} {'loop ms/round':>14s} {'bound ms/round':>15s} {'ratio':>6s}")
    figures = []
    for method in ({"name": "fedavg", "local_steps": 5}, {"name": "fedga", "local_steps": 5, "beta": 0.5}):
        for participants in (100, 20):
            pairs = [measure(comm, method, participants, args.rounds, out) for _ in range(args.repeat)]
            loop = statistics.median(p[0] for p in pairs)
            bound = statistics.median(p[1] for p in pairs)
            if comm.rank == 0:
                print(f"{method['name']:8s} {participants:4d} {1e3 * loop:14.2f} {1e3 * bound:15.2f} {loop / bound:6.2f}")
            figures.append({"method": method["name"], "participants": participants, "loop_ms": 1e3 * loop,
                            "bound_ms": 1e3 * bound, "ratio": loop / bound})
    if comm.rank == 0:
        write_json(args.json, {"rounds": args.rounds, "rows": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
