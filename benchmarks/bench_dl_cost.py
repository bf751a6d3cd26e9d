"""The cost of the deep-learning families at the papers' sizes on this machine: measured per sample, extrapolated
to every run of every sweep, written to mpiclip/reproduce/dl_costs.json (the families' pages show it).

    OMP_NUM_THREADS=1 python benchmarks/bench_dl_cost.py [--repeat 3] [--out mpiclip/reproduce/dl_costs.json]

The data sets are not here, so each model is timed on generated inputs of the data's shape and classes: the
seconds of a forward and backward pass per sample at the sweep's batch size (one core, float32, the median of
``--repeat`` passes), and per sample of DP-SGD's per-example clipped sums. A run's cost is then

    rounds × (samples a round computes × seconds per sample) + rows × (N_train + N_test/3) × seconds per sample,

with the samples of a round from the method's rule (synchronous: n · int(batch·N_i) minibatch rows; federated:
P clients × (K · min(batch, N_i) local rows, + N_i for the methods that align, or N_i for large-batch SGD);
asynchronous: one minibatch per update) and a recorded row costing one forward and backward pass over the
training rows (f, ∇f) and a forward pass over the test rows (a third of a pass). The first round's full
gradients and the trace are left out. Sizes: CIFAR-10 50,000 + 10,000, EMNIST-balanced 112,800 + 18,800, MNIST
60,000 + 10,000, LEAF's Shakespeare 4,226,158 samples of 1,129 roles with LEAF's 90/10 split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
from bench_networks import shard

from mpiclip import reproduce
from mpiclip.data import Shard
from mpiclip.data.layout import Layout
from mpiclip.methods import METHODS
from mpiclip.nn.backend import configure
from mpiclip.problems import PROBLEMS
from mpiclip.rng import drawn

FAMILIES = ("ef21-dl", "clip21-dl", "dp-dl", "fed-dl", "async-dl")
SIZES = {  # (source, path) -> (training rows, test rows, input shape, classes, kind)
    "cifar10": (50000, 10000, (3, 32, 32), 10, "image"),
    "emnist": (112800, 18800, (1, 28, 28), 47, "image"),
    "mnist": (60000, 10000, (1, 28, 28), 10, "image"),
    "shakespeare": (3803542, 422616, (80,), 100, "tokens"),
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_of(config) -> tuple:
    source = config.data.common.source
    return SIZES["cifar10" if source == "cifar10" else os.path.basename(config.data.source.path)]


def tokens(n: int, length: int, vocab: int) -> Shard:
    X = np.random.default_rng(0).integers(0, vocab, (n, length)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, vocab, n).astype(np.float64)
    return Shard(np.arange(1), np.array([0, n]), X, y, vocab, storage="dense", layout=Layout("tokens", (length,), vocab=vocab))


def seconds_per_sample(config, batch: int, per_example: bool, repeat: int) -> float:
    """One core's seconds per sample of a forward and backward pass (or of per-example clipped sums) of the run's
    model at this batch size (at most 256, or 64 per example), on generated inputs of the data's shape."""
    _, _, shape, classes, kind = data_of(config)
    batch = max(1, min(batch, 64 if per_example else 256))
    data = tokens(batch, shape[0], classes) if kind == "tokens" else shard(shape, classes, batch, 1)
    params = dataclasses.replace(config.problem.params, device="cpu")
    problem = PROBLEMS.get(config.problem.name, "problem.name").build(params, data, data.worker_ids, 1)
    x = problem.net.flat()
    rows = drawn(np.arange(batch), 0, 1, 0, 0)
    step = (lambda: problem.clipped_example_sums(x, [rows], 1.0)) if per_example else (lambda: problem.worker_grad(x, 0, rows))
    step()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / batch


def pass_batch(config, n_train: int) -> int:
    """The rows of one gradient pass of the run's method: its minibatch, or a worker's whole shard."""
    rows = n_train // config.run.n_workers
    if config.section("federated") is not None:
        return min(config.section("federated").batch_size or rows, rows)
    if config.section("async") is not None:
        return config.section("async").batch_size
    return int(config.method.params.batch * rows)


def samples_per_round(config, n_train: int) -> tuple[float, bool]:
    """(samples a round computes, whether they are per-example gradients), from the method's rule."""
    n = config.run.n_workers
    rows = n_train / n
    method = METHODS.get(config.method.name, "method.name")
    p = config.method.params
    if method.runner == "federated":
        fed = config.section("federated")
        clients = fed.participants(n)
        local = rows if fed.batch_size == 0 else min(fed.batch_size, rows)
        if not method.payloads:  # large-batch SGD: every sampled client's full gradient
            return clients * rows, False
        return clients * (p.local_steps * local + (rows if method.alignment else 0)), False
    if method.runner == "asynchronous":
        return config.section("async").batch_size, False
    return n * int(p.batch * rows), method.example_gradients


def recorded_rows(run) -> int:
    return len(range(0, run.rounds + 1, run.eval_every)) + (run.rounds % run.eval_every != 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "mpiclip", "reproduce", "dl_costs.json"))
    args = parser.parse_args()
    configure(1)
    timed: dict = {}  # (problem params, data, batch, per-example) -> seconds per sample
    out = []
    for family in FAMILIES:
        fam = reproduce.family(family)
        for planned in reproduce.plan(fam, "full", "/nonexistent"):
            per_round, per_row, models = [], [], set()
            for run in planned.sweep.runs:
                c = run.config
                n_train, n_test, *_ = data_of(c)
                samples, per_example = samples_per_round(c, n_train)
                batch = pass_batch(c, n_train)
                key = (c.problem.name, c.problem.params, data_of(c), batch, per_example)
                if key not in timed:
                    timed[key] = seconds_per_sample(c, batch, per_example, args.repeat)
                    print(f"  {c.problem.name:10} {data_of(c)[2]} batch {batch:5} {'per-example ' if per_example else ''}"
                          f"{1e3 * timed[key]:.3f} ms per sample", flush=True)
                plain = (c.problem.name, c.problem.params, data_of(c), batch, False)
                if plain not in timed:
                    timed[plain] = seconds_per_sample(c, batch, False, args.repeat)
                per_round.append(samples * timed[key])
                per_row.append((n_train + n_test / 3) * timed[plain])
                models.add(c.problem.name)
            first = planned.sweep.runs[0].config.run
            row = {"family": family, "sweep": planned.sweep.params.name, "model": ", ".join(sorted(models)),
                   "runs": len(planned.sweep.runs), "rounds": first.rounds, "seconds_per_round": float(np.mean(per_round)),
                   "evaluations": recorded_rows(first), "seconds_per_evaluation": float(np.mean(per_row))}
            row["core_hours"] = row["runs"] * (row["rounds"] * row["seconds_per_round"]
                                               + row["evaluations"] * row["seconds_per_evaluation"]) / 3600
            print(f"{row['sweep']:22} {row['runs']:4} runs  {row['seconds_per_round']:9.3g} s/round  "
                  f"{row['seconds_per_evaluation']:9.3g} s/row  {row['core_hours']:12,.0f} core-hours", flush=True)
            out.append(row)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {__import__('torch').__version__}"
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "measured": time.strftime("%Y-%m-%d") + " by benchmarks/bench_dl_cost.py",
                   "sweeps": out}, f, indent=1)
        f.write("\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
