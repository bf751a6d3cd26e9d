"""Federated rounds: seconds per round against the bare arithmetic of the same round, measured in one job.

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py benchmarks/bench_fed.py [--rounds 200] [--repeat 3] [--json PATH]

Digits (scikit-learn, extra `fed`), an MLP 64-32-10 (ReLU, d = 2,410), 100 clients spread iid, K = 5 local
steps on minibatches of 10, constant γ; all 100 clients per round and 20 of them. For FedAvg and FedGA the
loop's time per round (client sampling, local steps, compression bookkeeping, the ordered sums, the server
step; the evaluation of recorded rows is metric-only work and not counted) is set against the bound: the
same clients' local steps done bare (``Problem.worker_grad`` on the same minibatches and y ← y − γ g) plus
one Allreduce of the d-vector per communication round. The target is ≤ 1.2×. ``--json`` writes, per method
and number of participants, the medians of the loop's and the bound's milliseconds per round and their ratio.

    python benchmarks/bench_fed.py --scaling [--rounds 200] [--repeat 3] [--json PATH] [--mpiexec PATH]

Strong scaling: the same FedAvg run on digits at each size of ``SIZES`` (clients n, participants P, the model:
softmax regression d = 650 or an MLP 64-h-10, rows of a local minibatch, K local steps; evaluation every 10
rounds) is started as ``mpiexec -n 1`` and ``mpiexec -n 2`` processes, alternated 1 2 1 2 ..., and each
prints the loop's seconds per round (the run's wall time from its first round to its trace's last flush,
evaluations included, divided by the rounds; the maximum over the ranks) and the collectives its rank 0 made
per round. The table: the medians on 1 and 2 ranks, the speed-up of 2 ranks over 1 and the whole process's
seconds (start-up included), and the balance bound on 2, 4 and 8 ranks: the speed-up of the local steps were
the sampling's imbalance all that held them back (:func:`balance_bound`), the model of a node with a core per
rank. On a shared machine both ranks compete with its other processes: read the speed-ups next to the load
(printed) and alternate, as this does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple, Optional

import numpy as np
from _shared import write_json

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import Layout, make_comm
from mpiclip.federation import sample_clients
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


# --------------------------------------------------------------------------------------- strong scaling
class Size(NamedTuple):
    """One FedAvg run on digits (1,797 rows) for the scaling table."""

    clients: int  # n
    participants: int  # P
    hidden: int  # 0: softmax regression (d = 650); else an MLP 64-hidden-10 with ReLU
    batch: int  # rows of a local minibatch; 0: the client's whole shard (1,797 / n rows)
    local_steps: int  # K

    @property
    def name(self) -> str:
        model = "softmax" if not self.hidden else f"mlp{self.hidden}"
        return f"{model} n={self.clients} P={self.participants} b={self.batch or 'all'} K={self.local_steps}"

    @property
    def d(self) -> int:
        return 650 if not self.hidden else 65 * self.hidden + (self.hidden + 1) * 10


SIZES = (Size(10, 10, 0, 0, 1), Size(100, 20, 0, 10, 5), Size(20, 20, 0, 0, 5), Size(100, 20, 32, 10, 5),
         Size(100, 100, 32, 10, 5), Size(20, 20, 128, 0, 5))


def scaling_table(size: Size, rounds: int, out: str) -> dict:
    method = {"name": "fedavg", "local_steps": size.local_steps}
    problem = {"name": "softmax"} if not size.hidden else {"name": "mlp", "hidden": [size.hidden], "activation": "relu"}
    return {
        "run": {"name": "scaling", "n_workers": size.clients, "rounds": rounds, "eval_every": 10,
                "x0": "model" if size.hidden else "zeros"},
        "data": {"source": "digits", "split": "iid"},
        "problem": problem,
        "method": method,
        "compressor": {"name": "identity"},
        "federated": {"clients_per_round": size.participants, "batch_size": size.batch},
        "stepsize": {"rule": "constant", "value": 0.1},
        "output": {"path": f"{out}/scaling.h5", "exists": "overwrite"},
    }


def one_scaling_run(size: Size, rounds: int) -> Optional[dict]:
    """This process's share of one run under mpiexec: the figures on rank 0, None elsewhere."""
    comm = make_comm()
    out = comm.bcast(tempfile.mkdtemp(prefix="bench-fed-") if comm.rank == 0 else None)
    (prepared,) = session.prepare_all([cfg.validate(scaling_table(size, rounds, out))], comm, log=lambda *a: None)
    counter = comm.count_calls() if comm.size > 1 else None  # the run's own collectives, not its preparation's
    result = session.execute(prepared)
    wall = max(comm.allgather_objects(result.wall))
    if comm.rank:
        return None
    return {"seconds_per_round": wall / rounds, "calls_per_round": (counter.total / rounds) if counter else 0.0}


def balance_bound(size: Size, rounds: int, ranks: int) -> float:
    """The speed-up of the local steps on ``ranks`` ranks if only the sampling held it back: the P clients of
    each round on one rank against the most of them any one rank holds, summed over the run's rounds (its
    seed's draws; the clients lie in contiguous blocks, :class:`Layout`). What a node with a core per rank
    would give the local phase, an upper bound: the evaluation and the sum come on top."""
    seed = cfg.validate(scaling_table(size, rounds, tempfile.gettempdir())).run.seed
    owner = np.repeat(np.arange(ranks), Layout(size.clients, ranks).counts)
    most = sum(int(np.bincount(owner[sample_clients(seed, t, size.clients, size.participants)], minlength=ranks).max())
               for t in range(rounds))
    return size.participants * rounds / most


def spawn(mpiexec: str, ranks: int, size: Size, rounds: int) -> dict:
    script = os.path.abspath(__file__)
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", script, "--one", ",".join(map(str, size)),
           "--rounds", str(rounds)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    process = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"bench_fed.py: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, "process_seconds": process}


def scaling(args) -> int:
    mpiexec = args.mpiexec or next((p for p in (os.path.join(os.path.dirname(sys.executable), "mpiexec"),)
                                    if os.path.exists(p)), "mpiexec")
    print(f"FedAvg on digits, eval every 10 rounds, {args.rounds} rounds, 1 and 2 ranks alternated, median of "
          f"{args.repeat}; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'size':34s} {'d':>6s} {'1 rank ms':>10s} {'2 ranks ms':>11s} {'speed-up':>9s} {'calls/rnd':>10s} "
          f"{'process s 1/2':>14s}  {'balance bound 2/4/8 ranks':>25s}")
    rows = []
    for size in SIZES:
        runs = {1: [], 2: []}
        for _ in range(args.repeat):
            for ranks in (1, 2):
                runs[ranks].append(spawn(mpiexec, ranks, size, args.rounds))
        one, two = ({k: statistics.median(r[k] for r in runs[ranks]) for k in runs[ranks][0]} for ranks in (1, 2))
        speedup = one["seconds_per_round"] / two["seconds_per_round"]
        bounds = [balance_bound(size, args.rounds, ranks) for ranks in (2, 4, 8)]
        print(f"{size.name:34s} {size.d:6d} {1e3 * one['seconds_per_round']:10.3f} {1e3 * two['seconds_per_round']:11.3f} "
              f"{speedup:9.2f} {two['calls_per_round']:10.2f} {one['process_seconds']:6.2f}/{two['process_seconds']:.2f}  "
              f"{'/'.join(f'{b:.2f}' for b in bounds):>25s}")
        rows.append({"size": size.name, **size._asdict(), "d": size.d, "one_rank_s": one["seconds_per_round"],
                     "two_ranks_s": two["seconds_per_round"], "speedup": speedup,
                     "calls_per_round_2_ranks": two["calls_per_round"], "process_s_1": one["process_seconds"],
                     "process_s_2": two["process_seconds"], "balance_bound": dict(zip(("2", "4", "8"), bounds))})
    print(f"load after: {os.getloadavg()[0]:.2f}")
    write_json(args.json, {"rounds": args.rounds, "repeat": args.repeat, "load": os.getloadavg()[0], "rows": rows})
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the medians here")
    ap.add_argument("--scaling", action="store_true", help="FedAvg on 1 and 2 ranks at the sizes of SIZES (spawns mpiexec)")
    ap.add_argument("--mpiexec", default=None, help="the launcher for --scaling (default: the one beside this Python)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # one --scaling run, under mpiexec
    args = ap.parse_args(argv)
    if args.scaling:
        return scaling(args)
    if args.one:
        figures = one_scaling_run(Size(*map(int, args.one.split(","))), args.rounds)
        if figures is not None:
            print(json.dumps(figures), flush=True)
        return 0
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
