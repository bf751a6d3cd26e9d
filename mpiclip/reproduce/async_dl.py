"""Clipped asynchronous SGD on a deep network (`mpiclip reproduce async-dl`): ASGD against clipped ASGD on
ResNet-20 / CIFAR-10 with one straggler 1×, 10× and 100× slower (Erickson & Johansson, arXiv 2606.13287)."""

from __future__ import annotations

import numpy as np

from mpiclip import plotting
from mpiclip.reproduce import Family
from mpiclip.reproduce.deep import comparison, costs, laptop, plotting_value


def label(b) -> str:
    method = b.values["method.name"]
    tau = f", τ = {plotting_value(b.values['method.tau'])}" if method == "clipped_asgd" else ""
    return f"{plotting.paper_name(method)}{tau}, straggler {b.values['async.slow_factor']:g}×"


def steadiness(tr) -> float:
    """The largest drop of test accuracy from one recorded row to the next: how unsteady a run is."""
    acc = tr.metrics["test_accuracy"]
    return float(max(0.0, -np.min(np.diff(acc)))) if len(acc) > 1 else 0.0


def write(page, sweeps: dict) -> None:
    page.text("Clipping was reported to steady asynchronous training when one worker straggles. The sweep runs ASGD "
              "and clipped ASGD (two thresholds) with one worker 1×, 10× and 100× slower than the others; the laptop "
              "preset does the same on scikit-learn's digits with a small CNN. Steadiness: the largest drop of test "
              "accuracy between recorded rows.")
    for name, sweep in sweeps.items():
        page.heading(name)
        best = comparison(page, name, sweep, "sim_time", label, split="async.slow_factor")
        rows, steadier = [], 0
        for factor in sorted({b.values["async.slow_factor"] for b in best}):
            runs = [b for b in best if b.traces and b.values["async.slow_factor"] == factor]
            plain = [b for b in runs if b.values["method.name"] == "asgd"]
            clipped = [b for b in runs if b.values["method.name"] == "clipped_asgd"]
            if plain and clipped:
                top = max(clipped, key=lambda b: b.score)
                drop = lambda b: np.mean([steadiness(tr) for tr in b.traces])
                steadier += drop(top) <= drop(plain[0])
                rows.append([f"{factor:g}×", f"{plain[0].score:.3f}", f"{drop(plain[0]):.3f}",
                             f"{top.score:.3f} (τ = {plotting_value(top.values['method.tau'])})", f"{drop(top):.3f}"])
        if rows:
            page.table(f"{name}-steadiness", ["straggler", "ASGD accuracy", "ASGD largest drop", "clipped ASGD accuracy",
                                               "clipped largest drop"], rows)
            page.text(f"Clipped ASGD is at least as steady as ASGD at {steadier} of {len(rows)} slowdowns: the claim "
                      f"that clipping steadies ASGD under stragglers {'shows' if steadier * 2 > len(rows) else 'does not show'}"
                      " at laptop size. At full size: ResNet-20 on CIFAR-10 with 8 workers for 20,000 updates.")
    costs(page, "async-dl", "cifar-10-batches-py in DIR")


FAMILY = Family(
    name="async-dl", title="Clipped asynchronous SGD on deep networks", docs="docs/async-dl", write=write, runs_per_task=1,
    sweeps=("async-dl-resnet20",),
    laptop={"async-dl-resnet20": laptop(grids=({"stepsize.value": [0.05]},), rounds=600, eval_every=30,
                                        keys={"run.n_workers": 5, "async.batch_size": 16})},
)
