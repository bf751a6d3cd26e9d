"""The benchmark suite: whole processes, timed side by side in one sitting, as ratios.

    python benchmarks/suite.py [--data-dir ../shared/datasets] [--ranks 2] [--repeat 5] [--json out.json]

Each figure is the median of ``--repeat`` runs of a whole ``mpiexec -n P python -m mpi4py -m mpiclip``
process (launch to exit), so it holds what a user waits for:

- ``startup``: EF21 on a9a with 0 rounds (imports, MPI, the data, the smoothness constants, an empty
  trace), with the parsed-data cache warm and with it off (``MPICLIP_CACHE=off``: every rank parses).
- ``loop``: EF21 Top-1 on a9a's round loop (``bench_ef21_a9a.py``) against its bound, the slowest rank's
  gradients plus communication.
- ``ef21_a9a``: EF21 Top-1, n = 20, 2000 rounds, every round recorded, against the dense single-process
  simulation of the official EF21 code (``benchmarks/bench_ef21_a9a.py --reference-only``, the same
  trajectory) — the issue's 10x target.
- ``sweep``: K short points of one data set in one ``sweep run`` job against K separate launches, and what
  each point after the first costs the job besides its own loop (the data and the smoothness constants
  are the first point's).

Prints a table and writes it as JSON (results/benchmarks.json) with the machine and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)


def mpiexec(ranks: int) -> list[str]:
    launcher = os.path.join(BIN, "mpiexec") if os.path.exists(os.path.join(BIN, "mpiexec")) else "mpiexec"
    return [launcher, "-n", str(ranks), sys.executable, "-m", "mpi4py"]


def timed(cmd: list[str], env: dict, cwd: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds


def median_of(repeat: int, cmd: list[str], env: dict, cwd: str) -> float:
    return statistics.median(timed(cmd, env, cwd) for _ in range(repeat))


def ef21_a9a(data: str, rounds: int) -> list[str]:
    return ["-m", "mpiclip", "run", "ef21-libsvm", "-q", "--set", f"data.path={data!r}", "--set", f"run.rounds={rounds}",
            "--set", "stepsize.factor=64", "--set", "output.path='a9a.h5'", "--set", "output.exists='overwrite'"]


def factor(i: int) -> float:
    """The step-size factor of sweep point i: 1 .. 2048, then again a little larger (distinct points)."""
    return 2.0 ** (i % 12) * (1 + i // 12 / 100)


def sweep_file(folder: str, data: str, points: int, rounds: int) -> str:
    factors = ", ".join(str(factor(i)) for i in range(points))
    path = os.path.join(folder, "sweep.toml")
    with open(path, "w") as f:
        f.write(f'[sweep]\nname = "bench"\nbase = "ef21-libsvm"\noutput = "{folder}/points"\n\n'
                f'[set]\n"data.path" = {json.dumps(data)}\n"run.rounds" = {rounds}\n"run.eval_every" = 10\n\n'
                f'[[grid]]\n"stepsize.factor" = [{factors}]\n')
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets")))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--points", type=int, default=100, help="points of the sweep comparison")
    ap.add_argument("--json", default=os.path.join(ROOT, "results", "benchmarks.json"),
                    help="where the table goes as JSON (default: %(default)s)")
    args = ap.parse_args()
    a9a, mushrooms = (os.path.join(args.data_dir, f) for f in ("a9a.txt", "mushrooms.txt"))
    for path in (a9a, mushrooms):
        if not os.path.exists(path):
            raise SystemExit(f"benchmarks: {path} not found (set --data-dir to the LibSVM files)")
    work = tempfile.mkdtemp(prefix="mpiclip-suite-")
    # a warm start: compiled modules on disk (some machines set PYTHONDONTWRITEBYTECODE) and the data cached
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "OMP_NUM_THREADS": "1",
           "MPICLIP_CACHE": os.path.join(work, "cache")}
    cold = {**env, "MPICLIP_CACHE": "off"}
    run = mpiexec(args.ranks)
    rows = []

    def row(name, value, unit, against=None, target=None, note=""):
        ratio = value / against if against else None
        rows.append({"name": name, "value": value, "unit": unit, "ratio": ratio, "target": target, "note": note})

    timed(run + ef21_a9a(a9a, 0), env, work)  # fills the caches
    warm = median_of(args.repeat, run + ef21_a9a(a9a, 0), env, work)
    parse = median_of(args.repeat, run + ef21_a9a(a9a, 0), cold, work)
    bare = median_of(args.repeat, run + ["-c", "import numpy, scipy.sparse, h5py"], env, work)
    row("startup, a9a, cache warm (launch to exit, 0 rounds)", warm, "s", target="<= 0.2 s")
    row("startup, a9a, cache off (every rank parses)", parse, "s", against=warm, note="ratio: cache off / warm")
    row("launch + import numpy, scipy.sparse, h5py only", bare, "s", against=warm, note="the floor under startup")

    split = os.path.join(work, "split.json")
    timed(run + [os.path.join(HERE, "bench_ef21_a9a.py"), "--data", a9a, "--json", split], env, work)
    with open(split) as f:
        loop = json.load(f)
    row("EF21 a9a round loop (best of 3, max over ranks)", loop["loop"], "s")
    row("its bound: the slowest rank's gradients + communication", loop["bound"], "s", against=None)
    row("round loop / bound", loop["loop"] / loop["bound"], "x", target="<= 1.10")

    ours = median_of(args.repeat, run + ef21_a9a(a9a, 2000), env, work)
    reference = median_of(max(1, args.repeat // 2), [sys.executable, os.path.join(HERE, "bench_ef21_a9a.py"),
                                                     "--reference-only", "--data", a9a], env, work)
    row("EF21 Top-1 a9a n=20 2000 rounds, whole process", ours, "s")
    row("dense single-process reference (official code's arithmetic)", reference, "s", against=ours,
        target=">= 10x", note="ratio: reference / ours")

    points, rounds = args.points, 100

    def sweep_job(k: int) -> tuple[float, float]:
        """(seconds of a `sweep run` job of the first k points, the sum of their loops' wall times); every point
        on all the ranks, one after another, as the separate launches run them."""
        shutil.rmtree(os.path.join(work, "points"), ignore_errors=True)
        seconds = timed(run + ["-m", "mpiclip", "sweep", "run", sweep_file(work, mushrooms, k, rounds),
                               "--ranks-per-run", str(args.ranks)], env, work)
        folder = os.path.join(work, "points")
        return seconds, sum(_attr(os.path.join(folder, f), "wall_seconds") for f in os.listdir(folder) if f.endswith(".h5"))

    one_job, loops = sweep_job(points)
    first_job, first_loop = sweep_job(1)
    separate = 0.0
    for i in range(points):
        separate += timed(run + ["-m", "mpiclip", "run", "ef21-libsvm", "-q", "--set", f"data.path={mushrooms!r}",
                                 "--set", f"run.rounds={rounds}", "--set", "run.eval_every=10", "--set",
                                 f"stepsize.factor={factor(i)}", "--set", "output.path='single.h5'",
                                 "--set", "output.exists='overwrite'"], env, work)
    row(f"sweep: {points} points of mushrooms ({rounds} rounds) in one job", one_job, "s")
    row(f"sweep: the same {points} points as separate launches", separate, "s", against=one_job, target=">= 5x",
        note="ratio: separate / one job")
    overhead = ((one_job - loops) - (first_job - first_loop)) / (points - 1)
    row("sweep: overhead of each further point in one job (besides its loop)", overhead, "s", target="<= 0.05 s",
        note=f"job start-up and first point {first_job - first_loop:.2f} s")

    versions = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                "node": platform.node()}
    for module in ("numpy", "scipy", "h5py", "mpi4py"):
        versions[module] = __import__(module).__version__
    from mpi4py import MPI

    versions["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    print(f"mpiclip benchmark suite, {args.ranks} ranks, median of {args.repeat}; " +
          ", ".join(f"{k} {v}" for k, v in versions.items()))
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        ratio = f"{r['ratio']:7.2f}x" if r["ratio"] else " " * 8
        print(f"{r['name']:{width}s}  {r['value']:9.3f} {r['unit']:2s} {ratio}  {r['target'] or '':10s} {r['note']}")
    out = args.json
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"versions": versions, "ranks": args.ranks, "repeat": args.repeat, "rows": rows}, f, indent=1)
    print(f"written: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _attr(path: str, name: str) -> float:
    import h5py

    with h5py.File(path, "r") as f:
        return float(f.attrs[name])


if __name__ == "__main__":
    sys.exit(main())
