"""Checkpoints and trace compression: what they cost, measured side by side in one job.

    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py benchmarks/bench_checkpoint.py [--data a9a.txt] [--repeat 5] [--json PATH]

* a9a (EF21 Top-1, n = 20, 2000 rounds, every round recorded): the same run with ``checkpoint_every = 0``
  and ``= 100``, alternated ``--repeat`` times; prints the median loop time of each, the overhead, and one
  checkpoint's write time and size, and the share of the checkpointed run spent writing checkpoints
  (``timing["checkpoint"]`` / the loop's wall time, max over ranks).
* sparse d = 10^6 (EF21 Top-10, n = 20 workers, 300 rounds, ``checkpoint_every = 100``): write time and
  size of a checkpoint that holds 20 worker states of 8 MB each.
* the a9a trace written with and without gzip + shuffle (schema 2 compresses; schema 1 did not).

``--json`` writes the a9a medians: the loops without and with checkpoints, the overhead in %, one
checkpoint's write time in ms and the share of the run in checkpoint writes in %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from _shared import data_file, main_of, write_json

from mpiclip import config as cfg
from mpiclip import session, trace
from mpiclip.comm import make_comm


def one_run(comm, base: str, overrides: list[str]):
    (config,) = cfg.load(base, overrides)
    (prepared,) = session.prepare_all([config], comm, log=lambda *a: None)
    result = session.execute(prepared)
    walls = comm.allgather_objects(result.wall)
    return result, max(walls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="a9a.txt", help="found as `mpiclip run` finds it (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-sparse", action="store_true")
    ap.add_argument("--json", default=None, help="also write the a9a medians here")
    args = ap.parse_args()
    args.data = data_file(args.data)
    comm = make_comm()
    out = comm.bcast(tempfile.mkdtemp(prefix="mpiclip-ckpt-") if comm.rank == 0 else None)
    say = print if comm.rank == 0 else (lambda *a, **k: None)
    a9a = [f"data.path={args.data!r}", "run.n_workers=20", "run.rounds=2000", "stepsize.factor=64",
           "output.exists='overwrite'", f"output.path='{out}/{{name}}.h5'"]
    walls: dict = {0: [], 100: []}
    saves, shares = [], []
    for _ in range(args.repeat):
        for every in (0, 100):
            result, wall = one_run(comm, "ef21-libsvm", a9a + [f"run.name='a9a-{every}'", f"run.checkpoint_every={every}"])
            walls[every].append(wall)
            if every:
                saves.append(result.timing["checkpoint"] / 19)  # rounds 100, 200, ..., 1900
                shares.append(max(comm.allgather_objects(result.timing["checkpoint"] / result.wall)))
    plain, with_ckpt = statistics.median(walls[0]), statistics.median(walls[100])
    say(f"a9a, EF21 Top-1, 20 workers on {comm.size} rank(s), 2000 rounds, {args.repeat} paired repeats ({comm.library})")
    overhead, save, share = 100 * (with_ckpt / plain - 1), 1e3 * statistics.median(saves), 100 * statistics.median(shares)
    say(f"  loop without checkpoints {plain:.3f} s, with checkpoint_every = 100 {with_ckpt:.3f} s (medians): "
        f"overhead {overhead:+.1f} %")
    size = checkpoint_size(comm, "ef21-libsvm", a9a + ["run.name='a9a-size'", "run.rounds=150"])
    say(f"  one checkpoint: {save:.1f} ms (median; trace flush and fsync included), {size:.3f} MB; "
        f"{share:.2f} % of the run in checkpoint writes")
    if comm.rank == 0:
        write_json(args.json, {"loop": plain, "loop_checkpointed": with_ckpt, "overhead_percent": overhead,
                               "checkpoint_ms": save, "checkpoint_share_percent": share, "checkpoint_mb": size})

    if not args.skip_sparse:
        sparse = ["data.n_samples=20000", "data.n_features=1000000", "data.density=1e-5", "data.split='iid'",
                  "run.n_workers=20", "compressor.k=10", "stepsize.factor=1", "run.rounds=300", "run.eval_every=50",
                  "run.checkpoint_every=100", "output.exists='overwrite'", f"output.path='{out}/{{name}}.h5'",
                  "run.name='sparse'"]
        result, wall = one_run(comm, "synthetic-logreg", sparse)
        size = checkpoint_size(comm, "synthetic-logreg", sparse + ["run.rounds=150", "run.checkpoint_every=0"])
        say(f"sparse d = 10^6, EF21 Top-10, 20 workers on {comm.size} rank(s), 300 rounds: loop {wall:.2f} s; "
            f"2 checkpoints took {result.timing['checkpoint']:.2f} s ({500 * result.timing['checkpoint']:.0f} ms each), "
            f"{size:.1f} MB each")

    if comm.rank == 0:
        compressed = os.path.getsize(f"{out}/a9a-0.h5")
        saved = dict(trace.COMPRESSION)
        trace.COMPRESSION.clear()
        try:
            plain_comm = make_comm("serial")
            one_run(plain_comm, "ef21-libsvm", a9a + ["run.name='a9a-raw'", "run.checkpoint_every=0"])
        finally:
            trace.COMPRESSION.update(saved)
        raw = os.path.getsize(f"{out}/a9a-raw.h5")
        print(f"a9a trace (2001 rows x 20 workers): {raw / 1e6:.2f} MB uncompressed, {compressed / 1e6:.2f} MB with "
              f"gzip + shuffle ({raw / compressed:.1f}x smaller)")
    return 0


def checkpoint_size(comm, base: str, overrides: list[str]) -> float:
    """MB of the checkpoint a run leaves when SIGTERM stops it at round 120 (a finished run removes its own)."""
    import signal

    from mpiclip.runners.synchronous import SynchronousRunner

    original = SynchronousRunner.advance

    def advance(self, state):
        if state.t == 120 and comm.rank == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, state)

    SynchronousRunner.advance = advance
    try:
        (config,) = cfg.load(base, overrides)
        (prepared,) = session.prepare_all([config], comm, log=lambda *a: None)
        session.execute(prepared)
    finally:
        SynchronousRunner.advance = original
    return os.path.getsize(config.checkpoint_path) / 1e6 if comm.rank == 0 else 0.0


if __name__ == "__main__":
    sys.exit(main_of(main))
