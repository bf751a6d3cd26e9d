"""The system model ([system], docs/algorithms.md §12) against real runs on this machine: docs/time's "How close is
the model".

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py benchmarks/bench_time_model.py [--data mushrooms.txt] [--json PATH]

1. α and β of this machine's MPI: a ping-pong between ranks 0 and 1 (half the round trip of 8 B … 2 MiB,
   α the 8-byte one, β from the least-squares slope of t against m).
2. Asynchronous real mode (rank 0 the server, one worker on each other rank, ASGD with exponential compute times
   and a worker 3× slower) with ``time_unit`` sleeps, against the simulated run of the same config and seed: the
   simulated clock × time_unit predicts the wall time of the asynchronous phase.
3. Synchronous rounds on 2 ranks (one worker each) with [system] set to the measured α, β and the measured time of
   a worker's gradient: the trace's simulated time per round against its wall time per round. (The synchronous
   runner has no hook that sleeps; the compute model here is what the gradient really took.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from _shared import data_file, main_of, write_json

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import make_comm


def ping_pong(world, sizes=tuple(8 * 4**i for i in range(10)), repeat: int = 200) -> tuple[float, float]:
    """(α seconds, β bytes/s) between ranks 0 and 1 from half round trips of numpy buffers (the others wait)."""
    from mpi4py import MPI

    raw = MPI.COMM_WORLD
    halves = []
    for m in sizes:
        buf = np.zeros(m, dtype=np.uint8)
        raw.Barrier()
        reps = max(10, repeat // (1 + m // 65536))
        t0 = time.perf_counter()
        for _ in range(reps):
            if raw.rank == 0:
                raw.Send(buf, 1)
                raw.Recv(buf, 1)
            elif raw.rank == 1:
                raw.Recv(buf, 0)
                raw.Send(buf, 0)
        halves.append((time.perf_counter() - t0) / reps / 2)
    sizes_a, t = np.array(sizes, dtype=float), raw.bcast(np.array(halves), 0)
    slope, _ = np.polyfit(sizes_a, t, 1)  # β from the fit (the large messages weigh in); α: the 8-byte half trip
    return float(t[0]), 1.0 / float(slope)


def run(comm, overrides: list[str]):
    (config,) = cfg.load("ef21-libsvm", overrides)
    (prepared,) = session.prepare_all([config], comm, log=lambda *a: None)
    return prepared, session.execute(prepared)


def async_check(world, data: str, out: str, time_unit: float, updates: int, concurrency: int) -> dict:
    """Real mode on all ranks (n = ranks workers, the last 3× slower) against the simulated run of the same config.
    With concurrency 1 one job is in flight, given to a random worker: the wall time is the jobs' sum, whichever
    rank computes them. With every worker busy (0), rank 1 holds workers 0 and 1 (n ≥ ranks is required, rank 0
    computes nothing) and computes their jobs one after the other, where the simulation runs them side by side."""
    n = world.size
    factors = [1.0] * (n - 1) + [3.0]
    common = [f"data.path={data!r}", "method={name='asgd'}", "compressor={name='identity'}", f"run.n_workers={n}",
              f"run.rounds={updates}", f"run.eval_every={updates}", "stepsize.factor=1", "output.exists='overwrite'",
              f"output.path='{out}/{{name}}.h5'", "async.compute_time='exponential'", "async.mean_time=1.0",
              f"async.factors={factors}", f"async.time_unit={time_unit}", f"async.concurrency={concurrency}",
              f"async.assignment={'random' if concurrency == 1 else 'finisher'!r}"]
    from mpiclip.trace import load_trace

    _, real = run(world, common + ["async.mode='real'", "run.name='real'"])
    _, sim = run(world, common + ["run.name='simulated'"])
    if world.rank != 0:
        return {}
    traces = {name: load_trace(r.path) for name, r in (("real", real), ("simulated", sim))}
    wall = float(traces["real"].metrics["sim_time"][-1])  # real mode: the server's wall time since the start
    predicted = float(traces["simulated"].metrics["sim_time"][-1]) * time_unit
    share = {name: float(np.mean(tr.tables["events"]["worker"] == n - 1)) for name, tr in traces.items()}
    return {"workers": n, "concurrency": concurrency, "time_unit": time_unit, "updates": updates,
            "predicted_s": predicted, "wall_s": wall,
            "ratio": wall / predicted, "slow_share_real": share["real"], "slow_share_simulated": share["simulated"]}


def gradient_seconds(prepared, repeat: int = 50) -> float:
    """Median seconds of this rank's worker gradient at x0 (what a round's worker_step computes)."""
    x = prepared.x0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        prepared.problem.worker_grad(x, 0)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bare_collective(comm, d: int, collective: str, repeat: int = 2000) -> float:
    """Median seconds of the runner's own collective on one d-vector per rank, the ranks started together by a
    barrier each time: what the exchange costs without waiting for a late rank."""
    rows = np.ones((1, d))
    call = (lambda: comm.sum_rows(rows, True)) if collective == "ring_allreduce" else (lambda: comm.allgather_rows(rows))
    times = []
    for _ in range(repeat):
        comm.sum_rows(np.zeros((1, 1)), False)  # a barrier
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sync_check(comm, data: str, out: str, alpha: float, beta: float, method: list[str], collective: str,
               rounds: int) -> dict:
    """One synchronous run on ``comm`` (one worker per rank) whose [system] is this machine's measured numbers."""
    base = [f"data.path={data!r}", f"run.n_workers={comm.size}", f"run.rounds={rounds}", f"run.eval_every={rounds}",
            "output.exists='overwrite'", f"output.path='{out}/{{name}}.h5'", "run.name='sync'", *method]
    prepared, _ = run(comm, base)  # the same run without a system model: it loads the problem
    grad = max(comm.allgather_objects(gradient_seconds(prepared)))
    system = (f"system={{latency={alpha!r}, bandwidth_up={beta!r}, bandwidth_down={beta!r}, collective={collective!r}, "
              f"compute_time='constant', mean_time={grad!r}, encoding='wire'}}")
    prepared, result = run(comm, base + [system])
    from mpiclip.trace import load_trace

    bare = bare_collective(comm, len(prepared.x0), collective)
    if comm.rank != 0:
        return {}
    tr = load_trace(result.path)
    spent = result.timing
    loop = sum(spent[k] for k in ("gradient", "compression", "communication", "update"))
    return {"method": method[0].split("'")[1], "collective": collective, "rounds": rounds, "gradient_model_s": grad,
            "model_s_per_round": float(tr.metrics["sim_time"][-1]) / rounds,
            "model_comm_s_per_round": float(tr.metrics["sim_comm"][-1]) / rounds,
            "wall_s_per_round": loop / rounds, "wall_gradient_s_per_round": spent["gradient"] / rounds,
            "wall_comm_s_per_round": spent["communication"] / rounds, "bare_collective_s": bare,
            "wall_other_s_per_round": (spent["compression"] + spent["update"]) / rounds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mushrooms.txt", help="found as `mpiclip run` finds it (default: %(default)s)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    args.data = data_file(args.data)
    world = make_comm()
    if world.size < 2:
        print("bench_time_model.py: error: ranks = 1: run it under mpiexec -n 2 or more (real mode needs a server "
              "and a worker rank)", file=sys.stderr)
        return 2
    out = world.bcast(tempfile.mkdtemp(prefix="mpiclip-time-") if world.rank == 0 else None)
    say = print if world.rank == 0 else (lambda *a, **k: None)
    alpha, beta = ping_pong(world)
    say(f"ping-pong, ranks 0 and 1 ({os.cpu_count()} cores): α = {alpha * 1e6:.2f} µs, β = {beta / 1e9:.2f} GB/s")
    figures = {"alpha_s": alpha, "beta_bytes_per_s": beta, "async": [], "sync": []}
    for time_unit, updates, concurrency in ((0.002, 1000, 1), (0.01, 200, 1), (0.05, 40, 1), (0.01, 400, 0)):
        a = async_check(world, args.data, out, time_unit, updates, concurrency)
        if a:
            figures["async"].append(a)
            say(f"async real mode, {a['workers']} workers (one 3x slower), {concurrency or a['workers']} job(s) in flight, "
                f"time_unit {time_unit} s, {updates} updates: "
                f"predicted {a['predicted_s']:.3f} s, wall {a['wall_s']:.3f} s ({a['ratio']:.3f}x, "
                f"{(a['wall_s'] - a['predicted_s']) / updates * 1e3:.1f} ms more per update); slow worker's share "
                f"of updates {a['slow_share_real']:.3f} real, {a['slow_share_simulated']:.3f} simulated")
    pair = world.split(0 if world.rank < 2 else 1)
    if world.rank < 2:
        for method, collective in ((["method={name='gd'}", "compressor={name='identity'}"], "ring_allreduce"),
                                   (["method={name='ef21'}", "compressor={name='topk', k=1}"], "ring_allgather")):
            s = sync_check(pair, args.data, out, alpha, beta, method, collective, 2000)
            if s:
                figures["sync"].append(s)
                say(f"sync {s['method']}, 2 ranks, {collective}: model {s['model_s_per_round'] * 1e6:.1f} µs/round "
                    f"(gradient {s['gradient_model_s'] * 1e6:.1f}, comm {s['model_comm_s_per_round'] * 1e6:.2f}); wall "
                    f"{s['wall_s_per_round'] * 1e6:.1f} µs/round (gradient {s['wall_gradient_s_per_round'] * 1e6:.1f}, "
                    f"comm {s['wall_comm_s_per_round'] * 1e6:.1f} of which the bare collective "
                    f"{s['bare_collective_s'] * 1e6:.1f}, compression + update "
                    f"{s['wall_other_s_per_round'] * 1e6:.1f})")
    if world.rank == 0:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main_of(main))
