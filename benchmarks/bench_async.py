"""Asynchronous runs: simulated updates per second, what the event loop costs beyond the arithmetic, and scaling.

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py benchmarks/bench_async.py [--data a9a.txt] [--repeat 3] [--json PATH]
    python benchmarks/bench_async.py --scaling [--repeat 3] [--json PATH]   # spawns mpiexec -n 1 and -n 2 itself
    OMP_NUM_THREADS=1 mpiexec -n 8 python -m mpi4py benchmarks/bench_async.py --real   # 1, 3 and 7 worker ranks

Simulated mode (a9a, ASGD, exponential compute times, one row per 1000 updates), two oracles: each
worker's full local gradient, and homogeneous data with minibatches of 64 rows drawn across all workers.
With 20 and 1000 workers, on rank 0 alone (the other ranks wait without spinning) and on all the job's
ranks, alternated: updates per second and the loop against the bare arithmetic measured in the same job.
The loop is the run's wall time less its evaluations and trace writes. The bare arithmetic on one rank is
the run replayed without the runner: the same gradients at the same iterates in the trace's order, each
followed by its step x ← x − γ g (the jobs in flight at the end included), checked to end at the run's x to
the bit; on several ranks, each job's gradient on its worker's rank at the run's last iterate, the slowest
rank's, plus the steps (a replay would need every worker's data on one rank). The target is ≤ 1.2× on one
rank: the clock, the queue, the broadcast of the arriving gradient and the bookkeeping must not cost more
than a fifth of the arithmetic. ``--json`` writes, per case, workers and ranks, the medians of updates per second and of
loop / bare.

Scaling (``--scaling``): the seconds of the same run (synthetic logistic regression, full local
gradients, 2000 updates) on 1 and on 2 ranks at a few sizes (workers, d, rows per gradient), whole
processes alternated, medians of ``--repeat``; and, as a model of a node with a free core per rank, the
2-rank loop less the time its ranks waited in broadcasts (on a shared machine a waiting rank's partner
is often not running at all). ``--json`` writes the table.

Real mode (``--real``): server updates per second with 1, 3 and 7 worker ranks (sub-communicators of
the job's ranks), no artificial sleep. On a machine with fewer cores than ranks the ranks share them.
"""

from __future__ import annotations

import argparse
import functools
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


# the oracle settings of the cases measured: every worker's full gradient of its own shard, and a minibatch of 64 rows
# drawn across the whole data set (homogeneous data: one gather of the rows, whichever workers they belong to)
CASES = {"full": [], "homogeneous-minibatch": ["async.data='homogeneous'", "async.oracle='minibatch'", "async.batch_size=64"]}


def simulated(comm, data: str, n: int, updates: int, out: str, case: str = "full") -> tuple[float, float]:
    """(updates per second of the loop, loop seconds / bare-arithmetic seconds). The loop is the run's wall time
    but its evaluations and trace writes: the clock, the queue, the uploads, the broadcasts and the bookkeeping
    besides the arithmetic."""
    overrides = [f"data.path={data!r}", "method={name='asgd'}", "compressor={name='identity'}", f"run.n_workers={n}",
                 f"run.rounds={updates}", "run.eval_every=1000", "stepsize.factor=1", "output.exists='overwrite'",
                 f"output.path='{out}/{{name}}.h5'", f"run.name='sim{n}{comm.size}'", "run.check_every=100000",
                 *CASES[case]]
    prepared = prepared_run(comm, overrides)
    result = session.execute(prepared)
    spent = result.wall - sum(result.timing.get(k, 0.0) for k in ("evaluation", "trace", "checkpoint"))
    loop = max(comm.allgather_objects(spent))
    from mpiclip.oracles import JobOracle
    from mpiclip.trace import load_trace

    events = comm.bcast(load_trace(result.path).tables["events"] if comm.rank == 0 else None)
    problem = prepared.jobs if prepared.jobs is not None else prepared.problem
    oracle = JobOracle(problem, prepared.config.section("async"), prepared.config.run.seed)
    if comm.size == 1:
        bare = replayed(prepared, oracle, events["worker"].tolist(), events["job"].tolist(), result.gamma)
    else:
        bare = at_last_iterate(comm, prepared, oracle, events, updates, n, result.gamma)
    return updates / loop, loop / bare


def replayed(prepared, oracle, workers: list, jobs: list, gamma: float) -> float:
    """Seconds of the run's arithmetic replayed bare on one rank, in the trace's order: every worker's job 0 at x⁰, then
    per arrival x ← x − γ g and the worker's next job at the new x (the jobs in flight at the end included): the
    same gradients at the same iterates as the run. The replay must end at the run's x, to the bit."""
    x = prepared.x0.copy()
    start = time.perf_counter()
    pending = [oracle.gradient(x, w, w, 0, 0) for w in range(len(prepared.worker_ids))]
    for t, (w, k) in enumerate(zip(workers, jobs)):
        x = x - gamma * pending[w]
        pending[w] = oracle.gradient(x, w, w, k + 1, t + 1)
    seconds = time.perf_counter() - start
    if not np.array_equal(x, prepared.state.x):
        raise SystemExit("bench_async.py: error: the bare replay does not end at the run's x; it is not the same arithmetic")
    return seconds


def at_last_iterate(comm, prepared, oracle, events, updates: int, n: int, gamma: float) -> float:
    """Seconds of the run's arithmetic on several ranks, approximated: each job's gradient (the oracle's, as the run
    computes it) on the rank of its worker, in the trace's order, the slowest rank's, plus the steps x ← x − γ g on
    every rank; at the run's last iterate (replaying the trajectory would need every worker's data on one rank)."""
    first, n_local = int(prepared.worker_ids[0]), len(prepared.worker_ids)
    # the jobs that arrived, and those still in flight at the end (computed too: one per worker, its next job index)
    jobs = list(zip(range(len(events["worker"])), events["worker"].tolist(), events["job"].tolist()))
    jobs += [(updates, w, k) for w, k in enumerate(np.bincount(events["worker"], minlength=n).tolist())]
    mine = [(t, w, k) for t, w, k in jobs if first <= w < first + n_local]
    x = prepared.state.x.copy()
    comm.sum_rows(np.zeros((n_local, 1)), True)  # start together
    t0 = time.perf_counter()
    for t, w, k in mine:
        g = oracle.gradient(x, w - first, w, k, t)
    local = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in events["worker"]:
        x = x - gamma * g
    return max(comm.allgather_objects(local)) + time.perf_counter() - t0


def alone(world, measure):
    """``measure(comm)`` on rank 0 alone while the other ranks wait without spinning (an MPI wait would take a core)."""
    from mpi4py import MPI

    comm = world.split(0 if world.rank == 0 else 1)
    value = measure(comm) if world.rank == 0 else None
    request = MPI.COMM_WORLD.Ibarrier()
    while not request.Test():
        time.sleep(0.001)
    return world.bcast(value)


def real(comm, data: str, workers: int, updates: int, out: str) -> float:
    overrides = [f"data.path={data!r}", "method={name='asgd'}", "compressor={name='identity'}",
                 f"run.n_workers={max(workers, comm.size)}", f"run.rounds={updates}", "run.eval_every=100000",
                 "async.mode='real'", "stepsize.factor=1", "output.exists='overwrite'", f"output.path='{out}/{{name}}.h5'",
                 f"run.name='real{comm.size}'"]
    result = session.execute(prepared_run(comm, overrides))
    return updates / max(comm.allgather_objects(result.timing["asynchronous"]))


# --scaling: ASGD with full local gradients of synthetic logistic regression (5 % of the features in a row), the same
# run on 1 rank and on 2, as whole mpiexec processes alternated; (workers, d, rows per gradient)
SCALING_SIZES = [(16, 100, 10), (16, 100, 100), (16, 100, 1000), (16, 1000, 100), (16, 1000, 1000)]
SCALING_UPDATES = 2000


def scaling_run(comm, workers: int, d: int, rows: int, out: str) -> tuple[float, float]:
    """(seconds of the run's loop: its wall time less evaluations and trace writes, max over ranks; the same less the
    time each rank waited for the others' broadcasts, max over ranks: what a node with a free core per rank would
    take, as a model, where another job's processes share the cores)."""
    overrides = ["data.source='synthetic'", f"data.n_samples={workers * rows}", f"data.n_features={d}",
                 "data.density=0.05", "problem={name='logreg'}", "method={name='asgd'}", "compressor={name='identity'}",
                 f"run.n_workers={workers}", f"run.rounds={SCALING_UPDATES}", "run.eval_every=500", "stepsize.factor=1",
                 "output.exists='overwrite'", f"output.path='{out}/{{name}}.h5'", f"run.name='scale{comm.size}'"]
    (config,) = cfg.load("synthetic-logreg", overrides)
    (prepared,) = session.prepare_all([config], comm, log=lambda *a: None)
    result = session.execute(prepared)
    spent = result.wall - sum(result.timing.get(k, 0.0) for k in ("evaluation", "trace", "checkpoint"))
    return max(comm.allgather_objects(spent)), max(comm.allgather_objects(spent - result.timing["communication"]))


def scaling(args) -> int:
    """The table of --scaling: whole processes of 1 and 2 ranks, alternated, medians of --repeat."""
    import json
    import subprocess

    here = os.path.abspath(__file__)
    launcher = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows, out = [], tempfile.mkdtemp(prefix="mpiclip-async-scaling-")
    print(f"simulated ASGD, synthetic logreg (5 % dense), {SCALING_UPDATES} updates: loop seconds, median of {args.repeat}")
    print(f"{'workers':>7} {'d':>6} {'rows':>6} {'1 rank':>8} {'2 ranks':>8} {'1 / 2':>6} {'2, busy':>8} {'1 / busy':>8}")
    for workers, d, n_rows in SCALING_SIZES:
        seconds: dict = {1: [], 2: [], "busy": []}
        for _ in range(args.repeat):
            for ranks in (1, 2):
                cmd = [launcher if os.path.exists(launcher) else "mpiexec", "-n", str(ranks), sys.executable, "-m", "mpi4py",
                       here, "--scaling-run", f"{workers},{d},{n_rows}", "--out", out]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"bench_async.py: error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
                measured = json.loads(proc.stdout.strip().splitlines()[-1])
                seconds[ranks].append(measured["seconds"])
                if ranks == 2:
                    seconds["busy"].append(measured["busy"])
        one, two, busy = (statistics.median(seconds[k]) for k in (1, 2, "busy"))
        rows.append({"workers": workers, "d": d, "rows": n_rows, "updates": SCALING_UPDATES, "seconds_1": one,
                     "seconds_2": two, "speedup": one / two, "busy_2": busy, "model_speedup": one / busy})
        print(f"{workers:>7} {d:>6} {n_rows:>6} {one:>8.3f} {two:>8.3f} {one / two:>6.2f} {busy:>8.3f} {one / busy:>8.2f}",
              flush=True)
    for key, what in (("speedup", "measured"), ("model_speedup", "modelled (a free core per rank)")):
        wins = [r for r in rows if r[key] > 1]
        print(f"2 ranks win ({what}) at: " + (", ".join(f"(workers {r['workers']}, d {r['d']}, rows {r['rows']})"
                                                         for r in wins) or "none of these sizes"))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    write_json(args.json, {"scaling": rows, "load": os.getloadavg()})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="a9a.txt", help="found as `mpiclip run` finds it (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--real", action="store_true", help="real mode with 1, 3 and 7 worker ranks")
    ap.add_argument("--json", default=None, help="also write the simulated mode's medians here")
    ap.add_argument("--scaling", action="store_true", help="seconds of the same run on 1 and 2 ranks at a few sizes "
                    "(whole processes, alternated; run it without mpiexec)")
    ap.add_argument("--scaling-run", default=None, help=argparse.SUPPRESS)  # one run of --scaling: workers,d,rows
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scaling:
        return scaling(args)
    if args.scaling_run:
        comm = make_comm()
        seconds, busy = scaling_run(comm, *(int(v) for v in args.scaling_run.split(",")), args.out)
        if comm.rank == 0:
            print(f'{{"seconds": {seconds}, "busy": {busy}}}')
        return 0
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
    sizes = sorted({1, world.size})
    for case in CASES:
        for n, updates in ((20, 20000), (1000, 20000)):
            if case != "full":
                updates //= 4
            measured = {ranks: ([], []) for ranks in sizes}
            for _ in range(args.repeat):  # 1 rank and all ranks alternated
                for ranks in sizes:
                    run = functools.partial(simulated, data=args.data, n=n, updates=updates, out=out, case=case)
                    rate, ratio = run(world) if ranks == world.size else alone(world, run)
                    measured[ranks][0].append(rate)
                    measured[ranks][1].append(ratio)
            for ranks in sizes:
                rate, ratio = (statistics.median(v) for v in measured[ranks])
                say(f"simulated, a9a, ASGD {case}, {n} workers on {ranks} rank(s), {updates} updates: "
                    f"{rate:,.0f} updates/s; loop / bare arithmetic = {ratio:.2f} (median of {args.repeat})")
                figures.append({"case": case, "workers": n, "ranks": ranks, "updates": updates,
                                "updates_per_second": rate, "ratio": ratio})
    if world.rank == 0:
        write_json(args.json, {"simulated": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main_of(main))
