"""Asynchronous runs: simulated updates per second and what the event loop costs beyond the arithmetic.

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py benchmarks/bench_async.py [--data a9a.txt] [--repeat 3] [--json PATH]
    OMP_NUM_THREADS=1 mpiexec -n 8 python -m mpi4py benchmarks/bench_async.py --real   # 1, 3 and 7 worker ranks

Simulated mode (a9a, ASGD with full local gradients, exponential compute times, one row per 1000
updates): updates per second with 20 and 1000 workers, and the loop's cost per update against the bare
arithmetic measured in the same job: one worker's gradient (``Problem.worker_grad``) plus the step
x ← x − γ g, for the same workers in the same order. The target is ≤ 1.2×: the clock, the queue, the
broadcast of the arriving gradient and the bookkeeping must not cost more than a fifth of the arithmetic.
``--json`` writes, per number of workers, the medians of updates per second and of loop / bare.

Real mode (``--real``): server updates per second with 1, 3 and 7 worker ranks (sub-communicators of
the job's ranks), no artificial sleep. On a machine with fewer cores than ranks the ranks share them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from _shared import data_file, main_of, write_json

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import make_comm

LOOP = ("gradient", "upload", "communication", "update")


def prepared_run(comm, overrides: list[str]):
    (config,) = cfg.load("ef21-libsvm", overrides)
    (prepared,) = session.prepare_all([config], comm, log=lambda *a: None)
    return prepared


def simulated(comm, data: str, n: int, updates: int, out: str) -> tuple[float, float]:
    """(updates per second of the loop, loop seconds / bare-arithmetic seconds)."""
    overrides = [f"data.path={data!r}", "method={name='asgd'}", "compressor={name='identity'}", f"run.n_workers={n}",
                 f"run.rounds={updates}", "run.eval_every=1000", "stepsize.factor=1", "output.exists='overwrite'",
                 f"output.path='{out}/{{name}}.h5'", f"run.name='sim{n}'", "run.check_every=100000"]
    prepared = prepared_run(comm, overrides)
    result = session.execute(prepared)
    loop = max(comm.allgather_objects(sum(result.timing[k] for k in LOOP)))
    # the bare arithmetic of the same updates: the workers' gradients in the trace's order, and the step
    from mpiclip.trace import load_trace

    workers = comm.bcast(load_trace(result.path).tables["events"]["worker"] if comm.rank == 0 else None)
    problem, first = prepared.problem, int(prepared.worker_ids[0])
    mine = [int(w) - first for w in workers if first <= w < first + len(prepared.worker_ids)]
    x = prepared.x0.copy()
    comm.sum_rows(np.zeros((len(prepared.worker_ids), 1)), True)  # start together
    t0 = time.perf_counter()
    for i in mine:
        g = problem.worker_grad(x, i)
    local = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in workers:
        x = x - result.gamma * g
    bare = max(comm.allgather_objects(local)) + time.perf_counter() - t0
    return updates / loop, loop / bare


def real(comm, data: str, workers: int, updates: int, out: str) -> float:
    overrides = [f"data.path={data!r}", "method={name='asgd'}", "compressor={name='identity'}",
                 f"run.n_workers={max(workers, comm.size)}", f"run.rounds={updates}", "run.eval_every=100000",
                 "async.mode='real'", "stepsize.factor=1", "output.exists='overwrite'", f"output.path='{out}/{{name}}.h5'",
                 f"run.name='real{comm.size}'"]
    result = session.execute(prepared_run(comm, overrides))
    return updates / max(comm.allgather_objects(result.timing["asynchronous"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="a9a.txt", help="found as `mpiclip run` finds it (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--real", action="store_true", help="real mode with 1, 3 and 7 worker ranks")
    ap.add_argument("--json", default=None, help="also write the simulated mode's medians here")
    args = ap.parse_args()
    args.data = data_file(args.data)
    world = make_comm()
    out = world.bcast(tempfile.mkdtemp(prefix="mpiclip-async-") if world.rank == 0 else None)
    say = print if world.rank == 0 else (lambda *a, **k: None)
    if args.real:
        for ranks in (r for r in (2, 4, 8) if r <= world.size):
            comm = world.split(0 if world.rank < ranks else 1)
            if world.rank < ranks:
                rates = [real(comm, args.data, 20, 3000, out) for _ in range(args.repeat)]
                say(f"real mode, a9a, ASGD, 20 workers, {ranks - 1} worker rank(s): {statistics.median(rates):,.0f} "
                    f"server updates/s (median of {args.repeat}; {os.cpu_count()} cores)")
        return 0
    figures = []
    for n, updates in ((20, 20000), (1000, 20000)):
        rates, ratios = [], []
        for _ in range(args.repeat):
            rate, ratio = simulated(world, args.data, n, updates, out)
            rates.append(rate)
            ratios.append(ratio)
        rate, ratio = statistics.median(rates), statistics.median(ratios)
        say(f"simulated, a9a, ASGD, {n} workers on {world.size} rank(s), {updates} updates: "
            f"{rate:,.0f} updates/s; loop / bare arithmetic = {ratio:.2f} (median of {args.repeat})")
        figures.append({"workers": n, "updates": updates, "updates_per_second": rate, "ratio": ratio})
    if world.rank == 0:
        write_json(args.json, {"simulated": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main_of(main))
