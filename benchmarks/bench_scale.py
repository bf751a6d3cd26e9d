"""Per-round time split of EF21 Top-k on high-dimensional sparse problems and on a9a, and their memory.

    OMP_NUM_THREADS=1 mpiexec -n P python -m mpi4py benchmarks/bench_scale.py [--problem NAME|both] [--json PATH]

``sparse``: synthetic CSR logistic regression with d = 10^6 features, 10 nonzeros per sample, N = 20,000
samples, 4 workers, Top-10. ``a9a``: the EF21 setting (n = 20, Top-1). ``d1e7``: d = 10^7, 10 nonzeros
per sample, N = 20,000, 20 workers, Top-10, 10 rounds. ``w1000``: d = 10^5, 10 nonzeros per sample,
N = 20,000, 1000 workers, Top-10, 20 rounds. ``both`` runs sparse and a9a. Prints, per rank, milliseconds
per round in gradient, compression, communication and update (evaluation every --eval-every rounds,
reported apart), the bytes each rank handed to MPI for messages per round (which grow with P·k, not P·d),
and the memory: the peak resident set (ru_maxrss), the resident set at the start of the script (after
the imports, before anything is built), and the bound a rank should stay under, its shard's CSR arrays
plus (its workers + 2) d-vectors of float64; the ratio is (peak − start) / bound. The peak is the
process's, so the memory of a second problem in the same process includes the first's: run one problem
per process for its memory. ``--json`` writes, per problem, these figures per rank, the loop's seconds
per round and the whole process's seconds so far (from its start, imports included), maxima over ranks.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile

from _shared import data_file, main_of, write_json

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import make_comm
from mpiclip.runners.synchronous import SynchronousRunner

PHASES = SynchronousRunner.phases


SYNTHETIC = ["data.n_samples=20000", "data.split='iid'", "compressor.k=10", "stepsize.factor=1"]
PROBLEMS = {  # name: (preset, overrides, default rounds, default eval_every)
    "sparse": ("synthetic-logreg", SYNTHETIC + ["data.n_features=1000000", "data.density=1e-5", "run.n_workers=4"], 200, 50),
    "a9a": ("ef21-libsvm", ["data.path=A9A", "run.n_workers=20", "compressor.k=1", "stepsize.factor=64"], 200, 50),
    "d1e7": ("synthetic-logreg", SYNTHETIC + ["data.n_features=10000000", "data.density=1e-6", "run.n_workers=20"], 10, 5),
    "w1000": ("synthetic-logreg", SYNTHETIC + ["data.n_features=100000", "data.density=1e-4", "run.n_workers=1000"], 20, 10),
}


def rss_now() -> int:
    """Bytes resident now (VmRSS)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def process_seconds() -> float:
    """Seconds since this process started (the kernel's start time, to a clock tick)."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    start_rss = rss_now()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", choices=(*PROBLEMS, "both"), default="both")
    ap.add_argument("--rounds", type=int, default=None, help="default: 200 (sparse, a9a), 10 (d1e7), 20 (w1000)")
    ap.add_argument("--eval-every", type=int, default=None, help="default: 50 (sparse, a9a), 5 (d1e7), 10 (w1000)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    names = ("sparse", "a9a") if args.problem == "both" else (args.problem,)
    a9a = data_file("a9a.txt", "data set") if "a9a" in names else None  # before anything runs
    comm = make_comm()
    out = comm.bcast(tempfile.mkdtemp(prefix="mpiclip-scale-") if comm.rank == 0 else None)
    figures = {}
    for name in names:
        base, overrides, rounds, eval_every = PROBLEMS[name]
        overrides = [f"data.path={a9a!r}" if o == "data.path=A9A" else o for o in overrides]
        overrides = overrides + [f"run.rounds={args.rounds or rounds}", f"run.eval_every={args.eval_every or eval_every}",
                                 f"output.path='{out}/{name}.h5'", "output.exists='overwrite'", "run.check_every=100"]
        (config,) = cfg.load(base, overrides)
        (run,) = session.prepare_all([config], comm, log=lambda *a: None)
        result = session.execute(run)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        A = run.problem.design.A
        shard = A.data.nbytes + A.indices.nbytes + A.indptr.nbytes if hasattr(A, "indptr") else A.nbytes
        bound = shard + (len(run.worker_ids) + 2) * run.d * 8
        memory = {"workers": len(run.worker_ids), "shard_bytes": shard, "start_rss": start_rss, "peak_rss": peak,
                  "bound": bound, "ratio": (peak - start_rss) / bound}
        rows = comm.allgather_objects([result.timing[p] for p in PHASES] + [result.wall, memory, process_seconds()])
        wire = result.bits_per_worker["wire"] / 8 / max(1, result.rounds - 1)
        if comm.rank == 0:
            d, n = run.d, config.run.n_workers
            print(f"\n{name}: d = {d}, n = {n} workers on {comm.size} rank(s), {result.rounds} rounds, "
                  f"Top-{config.compressor.params.k}; final ‖∇f‖² = {result.grad_norm_sq:.4g}")
            print(f"message bytes per worker per round: {wire:.0f} (a dense d-vector would be {8 * d})")
            print("rank  " + "  ".join(f"{p:>13s}" for p in PHASES) + "   (ms per round)   "
                  "peak RSS MB  start MB  bound MB  (peak - start) / bound")
            for r, row in enumerate(rows):
                per = [1e3 * v / result.rounds for v in row[: len(PHASES)]]
                m = row[-2]
                print(f"{r:4d}  " + "  ".join(f"{v:13.3f}" for v in per) + f"   loop {row[-3]:.2f} s   "
                      f"{m['peak_rss'] / 2**20:10.0f}  {m['start_rss'] / 2**20:8.0f}  {m['bound'] / 2**20:8.0f}  "
                      f"{m['ratio']:.3f}")
            seconds = max(row[-1] for row in rows)
            print(f"whole process so far: {seconds:.1f} s")
            figures[name] = {"d": d, "n_workers": n, "n_ranks": comm.size, "rounds": result.rounds,
                             "loop_seconds_per_round": max(row[-3] for row in rows) / result.rounds,
                             "process_seconds": seconds, "ratio": max(row[-2]["ratio"] for row in rows),
                             "ranks": [row[-2] for row in rows]}
    if comm.rank == 0:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main_of(main))
