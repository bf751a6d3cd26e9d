#!/usr/bin/env python3
"""Figures and tables of the Clip21 experiments (jobs/sweeps/clip21-*.toml), into docs/clip21/.

    python analysis/clip21_figures.py [--out docs/clip21]

* counterexample, mushrooms, w8a: ‖∇f(x^t)‖² against rounds for GD, Clip-GD and Clip21-GD at several τ,
  the final values for every τ, and the clipping activity (worker × round) of one Clip21 run;
* dp-mushrooms: the privacy-utility trade-off at equal (ε, δ): per method and ε, the mean over seeds at
  the best τ (final ‖∇f‖² and training accuracy), and the same at a common τ.
Reads traces only (never imports mpi4py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict

import numpy as np

try:
    import mpiclip  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpiclip import plotting
from mpiclip.report import table
from mpiclip.sweep import load_sweep
from mpiclip.trace import load_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def traces_of(name: str) -> list:
    sweep = load_sweep(os.path.join(ROOT, "jobs", "sweeps", f"{name}.toml"))
    out = []
    for run in sweep.runs:
        if os.path.exists(run.config.trace_path):
            tr = load_trace(run.config.trace_path)
            if tr.status == "completed":
                out.append((dict(run.values), run.config, tr))
    return out


def convergence(name: str, taus: tuple, out: str, lines: list) -> None:
    runs = traces_of(name)
    if not runs:
        print(f"{name}: no traces yet", file=sys.stderr)
        return
    rows, chosen = [], []
    for _, config, tr in runs:
        method = config.method.name
        tau = getattr(config.method.params, "tau", None)
        rows.append([method, "-" if tau is None else f"{tau:g}", f"{tr.grad_norm_sq[-1]:.3g}", f"{tr.loss[-1]:.6g}",
                     f"{tr.metrics['accuracy'][-1]:.4f}" if "accuracy" in tr.metrics else "-",
                     f"{np.nanmean(tr.workers['clip_active'][-2]):.2f}" if "clip_active" in tr.workers else "-"])
        if tau is None or tau in taus:
            tr.attrs["name"] = method if tau is None else f"{method}, τ = {tau:g}"
            chosen.append(tr)
    chosen.sort(key=lambda tr: tr.attrs["name"])
    figure = os.path.join(out, f"{name}.png")
    plotting.plot(chosen, figure, x="rounds", title=name, xmax=None)
    activity = next((tr for values, config, tr in runs if config.method.name == "clip21_gd"
                     and config.method.params.tau == taus[0]), None)
    lines += [f"## {name}", "", "Final values after the round budget (clipping active: the share of workers "
              "clipped in the last round):", "", "```",
              table(rows, ["method", "τ", "final ‖∇f‖²", "final f", "accuracy", "clipping active"]), "```", "",
              f"![{name}]({name}.png)", ""]
    if activity is not None:
        heat = os.path.join(out, f"{name}-activity.png")
        plotting.activity(activity, heat, title=f"{name}: Clip21-GD, τ = {taus[0]:g}, clipping active")
        lines += [f"![{name} activity]({name}-activity.png)", ""]
    print(f"{name}: {figure}")


def privacy(name: str, out: str, lines: list) -> None:
    runs = traces_of(name)
    if not runs:
        print(f"{name}: no traces yet", file=sys.stderr)
        return
    groups = defaultdict(list)  # (method, ε, τ, factor) -> traces over seeds
    for _, config, tr in runs:
        p = config.method.params
        groups[(config.method.name, p.target_epsilon, p.tau, config.stepsize.factor)].append(tr)
    mean = lambda trs, key: float(np.mean([(tr.metrics[key] if key in tr.metrics else getattr(tr, key))[-1] for tr in trs]))
    best = {}
    for (method, eps, tau, factor), trs in groups.items():
        score = mean(trs, "grad_norm_sq")
        if (method, eps) not in best or score < best[(method, eps)][0]:
            best[(method, eps)] = (score, (tau, factor), trs)
    rows = []
    for (method, eps), (score, (tau, factor), trs) in sorted(best.items()):
        rows.append([method, f"{eps:g}", f"{tau:g}", f"{factor:g}", f"{score:.3g}", f"{mean(trs, 'accuracy'):.4f}",
                     f"{np.mean([tr.workers['noise_scale'][0, 0] for tr in trs]):.3g}"])
    common = (0.03, 0.3)
    same = [[m, f"{e:g}", f"{mean(t, 'grad_norm_sq'):.3g}", f"{mean(t, 'accuracy'):.4f}"]
            for (m, e, tau, factor), t in sorted(groups.items()) if (tau, factor) == common]
    for y, label in (("grad_norm_sq", "grad"), ("accuracy", "accuracy")):
        chosen = [tr for (_, _, trs) in best.values() for tr in trs]
        plotting.privacy_utility(chosen, os.path.join(out, f"{name}-{label}.png"), y=y,
                                 title=f"{name}: best τ and γ per method and ε, mean of 3 seeds")
    lines += [f"## {name}", "", "At equal (ε, δ = 1e-5) after 300 rounds, the best τ and step-size factor per method "
              "and ε (mean final ‖∇f‖² over 3 seeds; σ is the noise the target required):", "", "```",
              table(rows, ["method", "ε", "best τ", "factor", "final ‖∇f‖²", "accuracy", "σ"]), "```", "",
              f"At a common τ = {common[0]:g} and factor {common[1]:g}:", "", "```",
              table(same, ["method", "ε", "final ‖∇f‖²", "accuracy"]), "```", "",
              f"![{name}]({name}-grad.png)", f"![{name} accuracy]({name}-accuracy.png)", ""]
    print(f"{name}: {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "clip21"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    lines = ["# Clip21 experiments", "", "Made by `python analysis/clip21_figures.py` from the traces of "
             "`jobs/sweeps/clip21-*.toml`.", ""]
    convergence("clip21-counterexample", (0.5, 1.2, 2.0), args.out, lines)
    convergence("clip21-mushrooms", (0.01, 0.1, 1.0), args.out, lines)
    convergence("clip21-w8a", (0.01, 0.1, 1.0), args.out, lines)
    privacy("clip21-dp-mushrooms", args.out, lines)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
