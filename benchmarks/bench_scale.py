"""Per-round time split of EF21 Top-k on a high-dimensional sparse problem and on a9a.

    OMP_NUM_THREADS=1 mpiexec -n P python -m mpi4py benchmarks/bench_scale.py [--problem sparse|a9a|both]

``sparse``: synthetic CSR logistic regression with d = 10^6 features, 10 nonzeros per sample, N = 20,000
samples, 4 workers, Top-10. ``a9a``: the EF21 setting (n = 20, Top-1). Prints, per rank, milliseconds
per round in gradient, compression, communication and update (evaluation every --eval-every rounds,
reported apart), the peak resident memory, and the bytes each rank handed to MPI for messages per round
(which grow with P·k, not P·d).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import make_comm
from mpiclip.runners.synchronous import SynchronousRunner

PHASES = SynchronousRunner.phases

HERE = os.path.dirname(os.path.abspath(__file__))
A9A = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "datasets", "a9a.txt"))

PROBLEMS = {
    "sparse": ("synthetic-logreg", ["data.n_samples=20000", "data.n_features=1000000", "data.density=1e-5",
                                    "data.split='iid'", "run.n_workers=4", "compressor.k=10", "stepsize.factor=1"]),
    "a9a": ("ef21-libsvm", [f"data.path={A9A!r}", "run.n_workers=20", "compressor.k=1", "stepsize.factor=64"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", choices=("sparse", "a9a", "both"), default="both")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=50)
    args = ap.parse_args()
    comm = make_comm()
    out = comm.bcast(tempfile.mkdtemp(prefix="mpiclip-scale-") if comm.rank == 0 else None)
    for name in (("sparse", "a9a") if args.problem == "both" else (args.problem,)):
        base, overrides = PROBLEMS[name]
        overrides = overrides + [f"run.rounds={args.rounds}", f"run.eval_every={args.eval_every}",
                                 f"output.path='{out}/{name}.h5'", "output.exists='overwrite'", "run.check_every=100"]
        (config,) = cfg.load(base, overrides)
        (run,) = session.prepare_all([config], comm, log=lambda *a: None)
        result = session.execute(run)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows = comm.allgather_objects([result.timing[p] for p in PHASES] + [result.wall, rss])
        wire = result.bits_per_worker["wire"] / 8 / max(1, result.rounds - 1)
        if comm.rank == 0:
            d, n = run.d, config.run.n_workers
            print(f"\n{name}: d = {d}, n = {n} workers on {comm.size} rank(s), {result.rounds} rounds, "
                  f"Top-{config.compressor.params.k}; final ‖∇f‖² = {result.grad_norm_sq:.4g}")
            print(f"message bytes per worker per round: {wire:.0f} (a dense d-vector would be {8 * d})")
            print("rank  " + "  ".join(f"{p:>13s}" for p in PHASES) + "   (ms per round)   peak RSS MB")
            for r, row in enumerate(rows):
                per = [1e3 * v / result.rounds for v in row[: len(PHASES)]]
                print(f"{r:4d}  " + "  ".join(f"{v:13.3f}" for v in per) + f"   loop {row[-2]:.2f} s   {row[-1]:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
