"""Networks: a worker's gradient through mpiclip's torch backend against a bare torch forward + backward of the
same model and batch, per-example clipped sums against the batch gradient, and the memory a rank's workers add.

    OMP_NUM_THREADS=1 python benchmarks/bench_networks.py [--repeat 15] [--json PATH]

One process, one torch thread (as a rank runs). Models: ``cnn_mnist`` on 1×28×28 images (47 classes, batch 64)
and ``resnet20`` (BatchNorm) on 3×32×32 images (10 classes, batch 32), float32, generated images. Rows, timed
alternately, medians of ``--repeat``:

- ``gradient``: ``Problem.worker_grad`` on a drawn minibatch (x in, the float64 gradient out, BatchNorm statistics
  updated) against the bare step ``model.zero_grad(); cross_entropy(model(X), y).backward()`` with the
  parameters in the module. Target ≤ 1.15×.
- ``per-example``: ``clipped_example_sums`` on the same batch (vmap of per-example gradients, clipped and
  summed) against the backend's batch gradient. Target ≤ 3× (for ResNet-20 with GroupNorm: BatchNorm has no
  per-example gradients).
- ``memory``: the peak resident memory of a full pass of 8 workers over that of 1 worker on the same rows (fresh
  processes), per extra worker, against one float64 gradient row (8·d bytes): the network is one model whatever
  the number of workers, and a worker adds its flat state (its gradient row and its BatchNorm statistics).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from _shared import write_json

from mpiclip import config as cfg
from mpiclip.data import Shard
from mpiclip.data.layout import image_layout
from mpiclip.nn.backend import configure
from mpiclip.problems import PROBLEMS
from mpiclip.rng import drawn

CASES = {
    "cnn_mnist": ((1, 28, 28), 47, 64, {}),
    "resnet20": ((3, 32, 32), 10, 32, {"norm": "batch"}),
    "resnet20-group": ((3, 32, 32), 10, 32, {"norm": "group"}),
}


def shard(shape: tuple, classes: int, rows: int, workers: int) -> Shard:
    rng = np.random.default_rng(0)
    X = rng.random((rows, int(np.prod(shape))), dtype=np.float32)
    y = rng.integers(0, classes, rows).astype(np.float64)
    offsets = np.linspace(0, rows, workers + 1).astype(np.int64)
    return Shard(np.arange(workers), offsets, X, y, classes, storage="dense", layout=image_layout(X, shape))


def problem(name: str, data: Shard, keys: dict):
    cls = PROBLEMS.get(name.split("-")[0], "problem.name")
    params = cfg.parse_params(cls.params, keys, "problem")
    return cls.build(params, data, data.worker_ids, len(data.worker_ids)), cls, params


def alternate(a, b, repeat: int) -> tuple[float, float]:
    """Medians of a and b run one after the other, repeat times (so that drifts of the machine hit both)."""
    ta, tb = [], []
    a(), b()
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ta), 1e3 * statistics.median(tb)


def bench(name: str, repeat: int) -> dict:
    shape, classes, batch, keys = CASES[name]
    data = shard(shape, classes, 4 * batch, 1)
    p, cls, params = problem(name, data, keys)
    x = p.net.flat()
    rows = drawn(np.sort(np.random.default_rng(1).choice(4 * batch, batch, replace=False)), 0, 1, 0, 0)
    module = p.net.module  # the same model with x in its own parameters: the bare torch step
    X, y = p._rows(0, rows)

    def bare():
        module.zero_grad(set_to_none=True)
        F.cross_entropy(module(X), y).backward()

    out = {"model": name, "d": p.d, "batch": batch}
    out["bare_ms"], out["gradient_ms"] = alternate(bare, lambda: p.worker_grad(x, 0, rows), repeat)
    out["gradient_ratio"] = out["gradient_ms"] / out["bare_ms"]
    if cls.example_gradients(params) is None:
        batch_ms, example_ms = alternate(lambda: p.worker_grad(x, 0, rows), lambda: p.clipped_example_sums(x, [rows], 1.0),
                                         repeat)
        out.update(per_example_ms=example_ms, per_example_ratio=example_ms / batch_ms)
    return out


def peak_after_pass(name: str, workers: int) -> float:
    """Peak resident bytes of a fresh process that builds the problem of ``workers`` workers on 256 rows and makes
    one full pass (micro-batches of 32 rows, so the activations are those of one micro-batch either way)."""
    shape, classes, _, keys = CASES[name]
    p, _, _ = problem(name, shard(shape, classes, 256, workers), dict(keys, chunk=32))
    p.loss_grads(p.net.flat(), True)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def memory(name: str) -> dict:
    """``peak_after_pass`` of 8 workers over 1 worker, per extra worker (each in a fresh process)."""
    peak = {}
    for workers in (1, 8):
        out = subprocess.run([sys.executable, __file__, "--peak", name, str(workers)], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        peak[workers] = float(out.stdout.split()[-1])
    d = problem(name, shard(CASES[name][0], CASES[name][1], 8, 1), CASES[name][3])[0].d
    extra = (peak[8] - peak[1]) / 7
    return {"model": name, "d": d, "peak_1_worker": peak[1], "peak_8_workers": peak[8], "bytes_per_extra_worker": extra,
            "bound_bytes": 8.0 * d, "ratio": extra / (8.0 * d)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", default=None)
    parser.add_argument("--peak", nargs=2, metavar=("MODEL", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure(1)
    if args.peak:
        print(peak_after_pass(args.peak[0], int(args.peak[1])))
        return
    rows = [bench(name, args.repeat) for name in CASES]
    print(f"{'model':16} {'d':>9} {'batch':>5} {'bare ms':>8} {'ours ms':>8} {'ratio':>6} {'per-ex ms':>9} {'ratio':>6}")
    for r in rows:
        example = f"{r['per_example_ms']:9.1f} {r['per_example_ratio']:6.2f}" if "per_example_ms" in r else f"{'—':>9} {'—':>6}"
        print(f"{r['model']:16} {r['d']:9,} {r['batch']:5} {r['bare_ms']:8.2f} {r['gradient_ms']:8.2f} "
              f"{r['gradient_ratio']:6.3f} {example}")
    mem = memory("resnet20")
    print(f"memory (resnet20, d = {mem['d']:,}): peak {mem['peak_1_worker'] / 2**20:.1f} MiB with 1 worker, "
          f"{mem['peak_8_workers'] / 2**20:.1f} MiB with 8: {mem['bytes_per_extra_worker'] / 2**20:.2f} MiB per extra worker "
          f"= {mem['ratio']:.2f}× one float64 gradient row")
    write_json(args.json, {"rows": rows, "memory": mem, "torch": torch.__version__})


if __name__ == "__main__":
    main()
