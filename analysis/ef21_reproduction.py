#!/usr/bin/env python3
"""Compare the EF21 reproduction sweeps (jobs/sweeps/ef21-*.toml) with the paper (ALGORITHMS §2.8).

    python analysis/ef21_reproduction.py [--out docs/reproduction]

For each sweep whose traces exist: the best run per method (the sweep's own criterion), the runs at the
(k, factor) the paper reports as best, with bits per worker to reach 1e-3 / 1e-5 / 1e-7 (logistic
regression: ‖∇f‖²) or the final f − f* (least squares), and the paper-style figure of the best runs.
Writes <out>/README.md and <out>/<sweep>.png. Never imports mpi4py.
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import mpiclip  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpiclip import plotting
from mpiclip.report import bits_to, table
from mpiclip.sweep import best_runs, load_sweep
from mpiclip.trace import load_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (method, k, factor) of the curves in the EF21 poster, and what they show (ALGORITHMS §2.8, read by eye, ±2×)
PAPER = {
    "ef21-logreg-phishing": [("ef21", 1, 16, "≈1e-7 at ≈13k bits"), ("ef14", 1, 16, "plateau ≈3e-5 after ≈12k"),
                             ("ef21_plus", 1, 256, "≈1e-5 at 20k, still decreasing"), ("gd", None, 1, "≈1e-2")],
    "ef21-logreg-mushrooms": [("ef21", 2, 1024, "oscillates, then ≈1e-7 at ≈140k"), ("ef14", 2, 64, "plateau ≈2e-4"),
                              ("ef21_plus", 1, 4096, "≈1e-7 at ≈40k"), ("gd", None, 4, "≈1e-2 at 200k")],
    "ef21-logreg-a9a": [("ef21", 4, 64, "≈1e-7 at ≈32k"), ("ef14", 4, 64, "plateau ≈2e-5"),
                        ("ef21_plus", 1, 2048, "<1e-6 at ≈23k"), ("gd", None, 2, "≈1e-1")],
    "ef21-logreg-w8a": [("ef21", 1, 64, "≈1e-7 at ≈90k"), ("ef14", 1, 32, "≈1e-3 at 130k, slightly rising"),
                        ("ef21_plus", 1, 2048, "≈1e-7 at ≈75k"), ("gd", None, 4, "≈2e-2")],
    "ef21-lsq-w8a": [("ef21", 1, 1024, "f−f* ≈3e-2 at 100k"), ("ef14", 1, 8192, "plateau ≈1e-1 (noisy)"),
                     ("ef21_plus", 1, 8192, "≈1e-3 at 100k"), ("gd", None, 2, "≈10 at 170k")],
    "ef21-lsq-a9a": [("ef21", 1, 1024, "same ordering as w8a"), ("ef14", 1, 8192, "noisy, above EF21"),
                     ("ef21_plus", 1, 8192, "below EF21"), ("gd", None, 2, "highest")],
}


def find(sweep, method, k, factor):
    for run in sweep.runs:
        values = dict(run.values)
        if values.get("method.name") == method and values.get("stepsize.factor") == factor and \
                (k is None or values.get("compressor.k") == k):
            return run
    return None


def _num(v: float, spec: str) -> str:
    return "-" if v != v else format(v, spec)


def describe(trace, lsq: bool) -> list[str]:
    """final value, bits per worker; then bits to 1e-5 and 1e-7 (‖∇f‖²) or f − f* at 100k bits (least squares)."""
    bits = trace.bits_per_worker("paper")
    if lsq:
        gap = plotting.y_values(trace, "gap")
        at = gap[bits <= 1e5][-1] if (bits <= 1e5).any() else float("nan")
        return [f"{gap[-1]:.3g}", f"{bits[-1]:.4g}", _num(at, ".3g"), ""]
    return [f"{trace.grad_norm_sq[-1]:.3g}", f"{bits[-1]:.4g}"] + [_num(bits_to(trace, level), ".4g") for level in (1e-5, 1e-7)]


def short_label(values) -> str:
    """The grid point without the method and the bookkeeping keys."""
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in values
                    if k not in ("method.name", "compressor.name", "run.eval_every", "stepsize.rule"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "reproduction"))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    lines = ["# EF21 reproduction", "",
             "Made by `python analysis/ef21_reproduction.py` from the traces of `jobs/sweeps/ef21-*.toml` run on",
             "the shared LibSVM files; paper values are read from the EF21 poster (ALGORITHMS.md §2.8, ±2×).", ""]
    for name in PAPER:
        path = os.path.join(ROOT, "jobs", "sweeps", f"{name}.toml")
        sweep = load_sweep(path)
        if not any(os.path.exists(r.config.trace_path) for r in sweep.runs):
            print(f"{name}: no traces yet (run the sweep first)", file=sys.stderr)
            continue
        lsq = sweep.select.metric == "gap"
        metric = "final f − f*" if lsq else "final ‖∇f‖²"
        extra_head = ["f − f* at 100k bits", ""] if lsq else ["bits to 1e-5", "bits to 1e-7"]
        head = ["method", "run", metric, "bits/worker"] + extra_head
        best_rows = []
        chosen = []
        for b in best_runs(sweep):
            if b.trace is None:
                best_rows.append([b.group, "none completed", "", "", "", ""])
                continue
            label = short_label(b.run.values)
            best_rows.append([b.group, label] + describe(b.trace, lsq))
            b.trace.attrs["name"] = f"{b.group}: {label}"
            chosen.append(b.trace)
        paper_rows = []
        for method, k, factor, says in PAPER[name]:
            run = find(sweep, method, k, float(factor)) or find(sweep, method, k, factor)
            label = (f"k={k}, " if k else "") + f"{factor}×"
            if run is None or not os.path.exists(run.config.trace_path):
                paper_rows.append([method, label, says, "not run", "", "", ""])
                continue
            tr = load_trace(run.config.trace_path)
            status = "" if tr.status == "completed" else f" ({tr.status.split(':')[0]})"
            paper_rows.append([method, label, says] + [d + status if i == 0 else d for i, d in enumerate(describe(tr, lsq))])
        figure = os.path.join(args.out, f"{name}.png")
        plotting.plot(chosen, figure, y=sweep.select.metric, title=name, xmax=None)
        lines += [f"## {name}", "", f"Best run per method ({sweep.select.criterion}):", "", "```",
                  table(best_rows, head), "```", "", "At the paper's (k, factor):", "", "```",
                  table(paper_rows, ["method", "paper's run", "paper shows", metric, "bits/worker"] + extra_head),
                  "```", "", f"![{name}]({name}.png)", ""]
        print(f"{name}: {figure}")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
