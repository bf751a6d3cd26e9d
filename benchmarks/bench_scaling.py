"""Strong scaling of synchronous EF21: the same run on 1 and 2 ranks, where 2 start to win, and a cluster model.

    python benchmarks/bench_scaling.py [--data a9a.txt] [--repeat 3] [--rounds 1000] [--check 4,8] [--json PATH]

Every figure comes from whole ``mpiexec -n P python -m mpi4py -m mpiclip run`` processes, alternated
(1 rank, 2 ranks, 1 rank, ...), medians of ``--repeat``: the loop's wall time (the trace's
``wall_seconds``) and the process's, launch to exit. The sizes: EF21 Top-1 on a9a with n = 20 and 100
workers (every round recorded), and on synthetic sparse logistic regression with a9a's width (d = 123,
11 % dense, 20 workers) at 2,000 to 128,000 rows, which brackets the size where 2 ranks start to win.

``--check`` reruns the a9a case on those rank counts (oversubscribed where the machine has fewer cores)
and checks that their traces equal the 1-rank trace in every dataset (a check of correctness; their times
mean nothing here).

The cluster model: from the 1-rank run, the gradients' seconds per round G and the rest O (the loop's
per-round time the gradient does not explain: Python overhead, compression, bookkeeping, which every rank
pays whatever its share), and the collectives' latency α and inverse bandwidth β (``--alpha``,
``--beta``; defaults: an InfiniBand-class node, 2 µs and 0.1 ns/byte), a round on P ranks costs
G/P + O + 2·α·⌈log₂ P⌉ + β·bytes (two collectives on a recorded round: the metrics and the messages).
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
from _shared import data_file, main_of, write_json

from mpiclip.errors import InputError

BIN = os.path.dirname(sys.executable)


def cases(data: str, rounds: int) -> list[tuple[str, list[str], int, int]]:
    """(label, `mpiclip run` arguments, workers, d) of every size, smallest first within each family."""
    common = ["--set", f"run.rounds={rounds}", "--set", "output.exists='overwrite'", "-q"]
    out = []
    for n in (20, 100):
        out.append((f"a9a, n = {n}", ["ef21-libsvm", "--set", f"data.path={data!r}", "--set", f"run.n_workers={n}",
                                      "--set", "stepsize.factor=64", *common], n, 123))
    for rows in (2000, 8000, 32000, 128000):
        out.append((f"synthetic d = 123, {rows:,} rows, n = 20",
                    ["synthetic-logreg", "--set", f"data.n_samples={rows}", "--set", "data.n_features=123",
                     "--set", "data.density=0.11", "--set", "data.split='iid'", *common], 20, 123))
    return out


def launch(ranks: int, args: list[str], trace: str, env: dict) -> tuple[float, float, dict]:
    """(process seconds, loop seconds, rank 0's phase split) of one whole run."""
    mpiexec = os.path.join(BIN, "mpiexec") if os.path.exists(os.path.join(BIN, "mpiexec")) else "mpiexec"
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "mpiclip", "run", *args,
           "--set", f"output.path={trace!r}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_scaling: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    with h5py.File(trace, "r") as f:
        return seconds, float(f.attrs["wall_seconds"]), ast.literal_eval(f.attrs["timing"])  # a dict written by str()


def same_trace(a: str, b: str) -> bool:
    """Every dataset of trace ``b`` equals trace ``a``'s, bit for bit (the wall times aside)."""
    def datasets(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out

    x, y = datasets(a), datasets(b)
    volatile = {"time"}  # seconds since the start: differ from run to run
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k], equal_nan=True) for k in x if k not in volatile)


def model(single: dict, rounds: int, alpha: float, beta: float, workers: int, d: int) -> dict:
    """The predicted speed-up on P ranks of a cluster node from the 1-rank split: every rank receives every
    worker's metric row (d + 6 values) and its Top-1 entry (12 bytes) on a recorded round."""
    gradient = single["timing"]["gradient"] / rounds
    rest = single["loop"] / rounds - gradient - single["timing"]["communication"] / rounds
    received = workers * (8 * (d + 6) + 12)
    speedup = {p: (gradient + rest) / (gradient / p + rest + 2 * alpha * math.ceil(math.log2(p)) + beta * received)
               for p in (2, 4, 8, 16, 32)}
    return {"gradient_s": gradient, "rest_s": rest, "alpha_s": alpha, "beta_s_per_byte": beta, "predicted_speedup": speedup}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="a9a.txt", help="found as `mpiclip run` finds it (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--check", default="4,8", help="rank counts whose a9a trace must equal 1 rank's ('' for none)")
    ap.add_argument("--alpha", type=float, default=2e-6, help="the model's collective latency, s (default %(default)s)")
    ap.add_argument("--beta", type=float, default=1e-10, help="the model's seconds per byte (default %(default)s)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    for option, value in (("--repeat", args.repeat), ("--rounds", args.rounds)):
        if value < 1:
            raise InputError(option, value, "must be at least 1")
    try:
        checks = [int(p) for p in args.check.split(",") if p.strip()]
    except ValueError:
        checks = [0]
    if any(p < 2 for p in checks):
        raise InputError("--check", args.check, "must be a comma list of rank counts of at least 2 (or '')")
    args.data = data_file(args.data)
    work = tempfile.mkdtemp(prefix="mpiclip-scaling-")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPICLIP_CACHE": os.path.join(work, "cache")}
    rows = []
    for label, run_args, workers, d in cases(args.data, args.rounds):
        launch(1, run_args, os.path.join(work, "warm.h5"), env)  # fills the data cache
        samples: dict = {1: [], 2: []}
        for _ in range(args.repeat):
            for ranks in (1, 2):
                samples[ranks].append(launch(ranks, run_args, os.path.join(work, f"p{ranks}.h5"), env))
        figures = {}
        for ranks, runs in samples.items():
            figures[ranks] = {"process": statistics.median(r[0] for r in runs), "loop": statistics.median(r[1] for r in runs),
                              "timing": runs[len(runs) // 2][2]}
        row = {"case": label, "rounds": args.rounds, "loop_1": figures[1]["loop"], "loop_2": figures[2]["loop"],
               "process_1": figures[1]["process"], "process_2": figures[2]["process"],
               "loop_speedup": figures[1]["loop"] / figures[2]["loop"],
               "process_speedup": figures[1]["process"] / figures[2]["process"]}
        row["model"] = model(figures[1], args.rounds, args.alpha, args.beta, workers, d)
        rows.append(row)
        predicted = ", ".join(f"{p}: {v:.2f}x" for p, v in row["model"]["predicted_speedup"].items())
        print(f"{label:40s} loop 1 rank {row['loop_1']:7.3f} s, 2 ranks {row['loop_2']:7.3f} s: {row['loop_speedup']:.2f}x; "
              f"process {row['process_1']:.2f} s / {row['process_2']:.2f} s: {row['process_speedup']:.2f}x; "
              f"cluster model {predicted}", flush=True)
    checked = {}
    if checks:
        label, run_args, _, _ = cases(args.data, min(args.rounds, 200))[0]
        reference = os.path.join(work, "check1.h5")
        launch(1, run_args, reference, env)
        for ranks in checks:
            path = os.path.join(work, f"check{ranks}.h5")
            launch(ranks, run_args, path, env)
            checked[ranks] = same_trace(reference, path)
            print(f"{label}, {ranks} ranks (oversubscribed on {os.cpu_count()} cores): trace "
                  f"{'identical to' if checked[ranks] else 'DIFFERS from'} 1 rank's")
    wins = next((r["case"] for r in rows if r["loop_speedup"] > 1), None)
    print(f"2 ranks beat 1 from: {wins or 'none of these sizes'} ({os.cpu_count()} cores)")
    write_json(args.json, {"rows": rows, "identical_on": {str(k): v for k, v in checked.items()}, "cpus": os.cpu_count()})
    return 0 if all(checked.values()) else 1


if __name__ == "__main__":
    sys.exit(main_of(main))
