#!/usr/bin/env python3
"""Figures and tables of the straggler experiments (jobs/sweeps/async-*.toml), into docs/async/.

    python analysis/async_figures.py [--out docs/async]

For each data set (mushrooms, a9a: ‖∇f‖²; lsq: f − f*), with worker n−1 1x, 10x, 100x slower:

* ``<set>-time.png``: each method's best-tuned run (best γ, and τ for Clipped ASGD, by the final value at
  the time budget) against simulated time, one panel per slowdown s;
* ``<set>-work.png``: the same runs against gradients computed (arrivals at the server, applied or not)
  and against bits sent per worker;
* ``<set>-delays.png``: the delays of ASGD at s = 1, 10, 100 with τ_C and τ_max marked;
* ``<set>-workers.png``: updates applied per worker, ASGD at s = 1 and s = 100;
* a table per data set: best γ (τ), final value, the degradation ratio final(s)/final(1), τ_max, mean
  delay, discarded fraction; and a table of the final value at every γ (the stable range against s).

The lsq variant sweeps (async-lsq-*.toml) get a table of best runs per variant and one figure each.
Reads traces only (never imports mpi4py). The best run of a group is chosen as `mpiclip sweep best`
does it (smallest final value among completed runs).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict

import numpy as np

try:
    import mpiclip  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpiclip.plotting import pyplot, save, x_values
from mpiclip.report import table
from mpiclip.sweep import load_sweep
from mpiclip.trace import load_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("asgd", "clipped_asgd", "delay_adaptive_asgd", "ringmaster_asgd", "rennala_sgd", "minibatch_sgd")
NAMES = {"asgd": "ASGD", "clipped_asgd": "Clipped ASGD", "delay_adaptive_asgd": "Delay-adaptive ASGD",
         "minibatch_sgd": "Minibatch SGD", "rennala_sgd": "Rennala SGD", "ringmaster_asgd": "Ringmaster ASGD"}
COLORS = {"asgd": "tab:blue", "clipped_asgd": "tab:red", "delay_adaptive_asgd": "tab:green",
          "ringmaster_asgd": "tab:purple", "rennala_sgd": "tab:orange", "minibatch_sgd": "tab:gray"}
STYLES = {"asgd": "-", "clipped_asgd": "-", "delay_adaptive_asgd": "--", "ringmaster_asgd": "-.",
          "rennala_sgd": ":", "minibatch_sgd": ":"}
SLOW = (1.0, 10.0, 100.0)
AXES = {"time": "sim_time", "arrivals": "gradients", "bits": "bits"}  # mpiclip.plotting's x axes
METRIC_LABEL = {"grad_norm_sq": r"$\|\nabla f(x^t)\|^2$", "gap": r"$f(x^t) - f^\star$"}
METRIC_TEXT = {"grad_norm_sq": "‖∇f‖²", "gap": "f − f*"}


# ---------------------------------------------------------------- reading
class Run:
    """One trace of a sweep with the settings the analysis needs."""

    def __init__(self, values: dict, config, tr, metric: str):
        self.values, self.config, self.tr = values, config, tr
        self.method = config.method.name
        self.gamma = float(config.stepsize.value)
        self.tau = float(getattr(config.method.params, "tau", 0.0) or 0.0)
        self.slow = float(config.asynchrony.slow_factor)
        self.metric = metric
        self.y = values_of(tr, metric)
        self.completed = tr.status.startswith("completed") and len(self.y) > 0
        final = float(self.y[-1]) if len(self.y) else math.inf
        self.final = final if self.completed and np.isfinite(final) else math.inf
        self.diverged = not self.completed or not np.isfinite(final) or final > 10 * float(self.y[0])
        # a steadier figure of merit than the last row: the median over the last 10% of the time budget
        times = tr.metrics.get("sim_time", np.zeros(0))
        budget = float(config.asynchrony.max_time) or (float(times[-1]) if len(times) else 0.0)
        last = self.y[times >= 0.9 * budget] if len(times) == len(self.y) else self.y[-1:]
        tail = float(np.median(last)) if len(last) else final
        self.tail = tail if self.completed and np.isfinite(tail) and not self.diverged else math.inf

    def attr(self, key, default=np.nan):
        return self.tr.attrs.get(key, default)


def values_of(tr, metric: str) -> np.ndarray:
    if metric == "gap":
        return tr.loss - float(tr.attrs.get("f_star", np.nan))
    return tr.grad_norm_sq


def runs_of(name: str) -> tuple:
    """(sweep, [Run]) of the completed or failed traces of a sweep file; ([], None) if it has none."""
    path = os.path.join(ROOT, "jobs", "sweeps", f"{name}.toml")
    if not os.path.exists(path):
        return None, []
    sweep = load_sweep(path)
    out = []
    for run in sweep.runs:
        trace = run.config.trace_path
        if not os.path.exists(trace):
            continue
        tr = load_trace(trace)
        if tr.status == "running" or tr.status.startswith("interrupted"):
            continue
        out.append(Run(dict(run.values), run.config, tr, sweep.select.metric))
    return sweep, out


def best_of(runs: list, key, by: str = "final") -> dict:
    """key(run) -> the run with the smallest final value (ties: the earlier run, as `sweep best`), or the
    smallest median over the last 10% of the time budget (by = "tail")."""
    best = {}
    for r in runs:
        k = key(r)
        if k not in best or getattr(r, by) < getattr(best[k], by):
            best[k] = r
    return best


def fmt(v: float, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "div"
    return f"{v:.{digits}g}"


# ---------------------------------------------------------------- figures
def _label(r: Run) -> str:
    extra = f", τ = {r.tau:g}" if r.method == "clipped_asgd" else ""
    return f"{NAMES[r.method]} (γ = {r.gamma:g}{extra})"


def curves(best: dict, metric: str, x: str, out: str, title: str) -> None:
    """One panel per slowdown; every method's best run against x ('time', 'arrivals' or 'bits')."""
    plt = pyplot()
    rows = [x] if x != "work" else ["arrivals", "bits"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(15, 4.6 * len(rows)), constrained_layout=True, squeeze=False)
    finite = [r.y[(r.y > 0) & np.isfinite(r.y)] for r in best.values()]
    lo = min((v.min() for v in finite if len(v)), default=1e-12)
    hi = max((v[0] for v in finite if len(v)), default=1.0)
    for i, xname in enumerate(rows):
        for j, s in enumerate(SLOW):
            ax = axes[i, j]
            for m in METHODS:
                r = best.get((m, s))
                if r is None:
                    continue
                xs = x_values(r.tr, AXES[xname], "paper", include_initial=False)
                keep = np.isfinite(r.y) & (r.y > 0)
                ax.plot(xs[keep], r.y[keep], STYLES[m], color=COLORS[m], lw=1.6, label=_label(r))
            ax.set_yscale("log")
            ax.set_ylim(lo / 2, hi * 5)
            ax.set_xlabel({"time": "simulated time", "arrivals": "gradients computed (arrivals at the server)",
                           "bits": "bits sent per worker (paper encoding)"}[xname])
            ax.set_ylabel(METRIC_LABEL[metric])
            ax.set_title(f"s = {s:g}: worker n−1 is {s:g}x slower")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    fig.suptitle(title)
    save(fig, out, dpi=110)


def delays(asgd: dict, out: str, title: str) -> None:
    """ASGD's delays per slowdown: arrivals per unit of delay in log-spaced bins (log axes), the straggler's
    arrivals stacked in red; τ_C, the mean and τ_max marked."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    tmax = max(int(r.attr("tau_max")) for r in asgd.values())
    edges = np.unique(np.concatenate([np.arange(0, 10), np.geomspace(10, tmax + 2, 50).astype(int)])) - 0.5
    widths = np.diff(edges)
    for ax, s in zip(axes, SLOW):
        r = asgd.get(s)
        if r is None:
            continue
        ev = r.tr.events
        slow = np.isin(ev["worker"], list(r.config.asynchrony.slow_workers))
        fast_counts = np.histogram(ev["delay"][~slow], edges)[0] / widths
        slow_counts = np.histogram(ev["delay"][slow], edges)[0] / widths
        centers = np.maximum(edges[:-1], 0.5)
        ax.bar(centers, fast_counts, width=widths, align="edge", color="tab:blue", alpha=0.8, label="other workers")
        ax.bar(centers, slow_counts, width=widths, bottom=fast_counts, align="edge", color="tab:red",
               label=f"straggler ({int(slow.sum())} arrivals)")
        tau_c, tau_max, mean = int(r.attr("concurrency")), int(r.attr("tau_max")), float(r.attr("delay_mean"))
        ax.axvline(tau_c, color="k", ls="--", label=f"τ_C = {tau_c}")
        ax.axvline(mean, color="tab:green", ls=":", label=f"mean = {mean:.1f}")
        ax.axvline(tau_max, color="tab:red", ls="-", lw=0.8, label=f"τ_max = {tau_max}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.5, tmax * 1.5)
        ax.set_xlabel("delay (server updates)")
        ax.set_ylabel("arrivals per unit of delay")
        ax.set_title(f"ASGD, s = {s:g} ({len(ev['delay'])} arrivals)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    save(fig, out, dpi=110)


def workers(asgd: dict, out: str, title: str) -> str:
    """Updates applied per worker, ASGD at s = 1 and s = 100; returns a sentence on the straggler's share."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.8), constrained_layout=True)
    text = []
    for k, (s, color) in enumerate(((1.0, "tab:gray"), (100.0, "tab:blue"))):
        r = asgd.get(s)
        if r is None:
            continue
        ev = r.tr.events
        n = int(r.attr("n_workers"))
        counts = np.bincount(ev["worker"][ev["update"] >= 0].astype(int), minlength=n)
        ax.bar(np.arange(n) + (k - 0.5) * 0.4, counts, width=0.4, color=color, label=f"s = {s:g}")
        slow = int(r.config.asynchrony.slow_workers[0])
        share = counts[slow] / counts.sum()
        text.append(f"s = {s:g}: worker {slow} made {counts[slow]} of {counts.sum()} updates "
                    f"({100 * share:.2f}%, fair share {100 / n:.2f}%)")
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("worker")
    ax.set_ylabel("updates applied")
    ax.set_title(title + "\n" + "\n".join(text), fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(loc="lower left")
    save(fig, out, dpi=110)
    return "; ".join(text)


# ---------------------------------------------------------------- tables
def _ratio(r, base, by: str) -> float:
    a, b = getattr(r, by), getattr(base, by) if base is not None else np.nan
    return a / b if np.isfinite(b) and b > 0 else np.nan


def best_table(best: dict, metric: str) -> str:
    rows = []
    for m in METHODS:
        base = best.get((m, 1.0))
        for s in SLOW:
            r = best.get((m, s))
            if r is None:
                continue
            other = (fmt(float(r.tr.grad_norm_sq[-1])) if metric == "gap"
                     else fmt(float(r.tr.metrics["accuracy"][-1]), 4) if "accuracy" in r.tr.metrics else "-")
            rows.append([NAMES[m], f"{s:g}", f"{r.gamma:g}", f"{r.tau:g}" if m == "clipped_asgd" else "-",
                         fmt(r.final), fmt(_ratio(r, base, "final"), 2), fmt(r.tail), other,
                         str(int(r.tr.rounds[-1])), str(int(r.attr("arrivals"))), str(int(r.attr("tau_max"))),
                         f"{float(r.attr('delay_mean')):.1f}", str(int(r.attr("delay_p99"))),
                         f"{float(r.attr('discarded_fraction')):.3f}"])
    other = "final ‖∇f‖²" if metric == "gap" else "accuracy"
    t = METRIC_TEXT[metric]
    return table(rows, ["method", "s", "best γ", "τ", f"final {t}", "final(s)/final(1)", "tail median", other,
                        "updates", "arrivals", "τ_max", "mean delay", "p99 delay", "discarded"])


def tail_table(best: dict) -> str:
    rows = []
    for m in METHODS:
        base = best.get((m, 1.0))
        for s in SLOW:
            r = best.get((m, s))
            if r is not None:
                rows.append([NAMES[m], f"{s:g}", f"{r.gamma:g}", f"{r.tau:g}" if m == "clipped_asgd" else "-",
                             fmt(r.tail), fmt(_ratio(r, base, "tail"), 2), fmt(r.final)])
    return table(rows, ["method", "s", "γ", "τ", "tail median", "tail(s)/tail(1)", "final"])


def gamma_table(runs: list) -> str:
    """Final value of every run: one row per (method, τ, s), one column per γ ('div' = failed or blew up)."""
    cells = defaultdict(dict)
    gammas = defaultdict(set)
    for r in runs:
        key = (METHODS.index(r.method), r.tau, r.slow)
        cells[key][r.gamma] = "div" if r.diverged else fmt(r.final, 2)
        gammas[r.method].add(r.gamma)
    out = []
    for family in (("asgd", "delay_adaptive_asgd", "ringmaster_asgd"), ("clipped_asgd",), ("rennala_sgd", "minibatch_sgd")):
        gs = sorted(set().union(*(gammas[m] for m in family)))
        if not gs:
            continue
        rows = []
        for key in sorted(k for k in cells if METHODS[k[0]] in family):
            m, tau, s = METHODS[key[0]], key[1], key[2]
            rows.append([NAMES[m] + (f", τ = {tau:g}" if m == "clipped_asgd" else ""), f"{s:g}"]
                        + [cells[key].get(g, "") for g in gs])
        out.append(table(rows, ["method", "s"] + [f"γ = {g:g}" for g in gs]))
    return "\n\n".join(out)


# ---------------------------------------------------------------- one data set
def dataset(name: str, out: str, lines: list, facts: dict) -> None:
    sweep, runs = runs_of(f"async-{name}")
    if not runs:
        print(f"async-{name}: no traces yet", file=sys.stderr)
        return
    metric = sweep.select.metric
    best = best_of(runs, lambda r: (r.method, r.slow))
    steady = best_of(runs, lambda r: (r.method, r.slow), by="tail")
    asgd = {s: r for (m, s), r in steady.items() if m == "asgd"}
    title = f"{name}: best-tuned runs (γ, τ by the median over the last 10% of the time budget)"
    curves(steady, metric, "time", os.path.join(out, f"{name}-time.png"), f"{title}, against simulated time")
    curves(steady, metric, "work", os.path.join(out, f"{name}-work.png"),
           f"{title}, against gradients computed and bits sent")
    lines += [f"## {name}", ""]
    if asgd:
        delays(asgd, os.path.join(out, f"{name}-delays.png"), f"{name}: delays of ASGD (log-log)")
        share = workers(asgd, os.path.join(out, f"{name}-workers.png"), f"{name}: updates applied per worker (ASGD)")
        facts[name] = {"share": share}
    bad = sum(r.diverged for r in runs)
    t = METRIC_TEXT[metric]
    lines += [f"{len(runs)} runs ({bad} diverged). Best γ (τ) per method and slowdown s by the final {t} at the "
              f"time budget {runs[0].config.asynchrony.max_time:g} (the sweep's [select], as `mpiclip sweep best`); "
              f"'tail median': the median of {t} over the last 10% of the budget:", "", "```",
              best_table(best, metric), "```", "",
              "The last row of an oscillating run is partly luck; chosen instead by the tail median (the runs "
              "the figures show):", "", "```", tail_table(steady), "```", "",
              f"Final {METRIC_TEXT[metric]} of every run ('div': diverged or ended above 10x its start):", "", "```",
              gamma_table(runs), "```", "",
              f"![{name} time]({name}-time.png)", "", f"![{name} work]({name}-work.png)", ""]
    if asgd:
        lines += [f"![{name} delays]({name}-delays.png)", "", f"![{name} workers]({name}-workers.png)", "",
                  f"Straggler's share of ASGD's updates: {facts[name]['share']}.", ""]
    print(f"async-{name}: {len(runs)} runs -> {out}")


# ---------------------------------------------------------------- lsq variants
VARIANT_KEYS = ("async.data", "async.assignment", "async.oracle", "async.noise_theta", "run.x0_scale",
                "async.slow_workers")


def variant_of(r: Run, keys: tuple) -> str:
    table_ = r.config.as_table()
    parts = []
    for key in keys:
        section, _, k = key.partition(".")
        v = table_.get(section, {}).get(k)
        parts.append(f"{k}={v if not isinstance(v, list) else (str(len(v)) + ' stragglers' if len(v) > 1 else v)}")
    return ", ".join(parts)


def variants(name: str, keys: tuple, out: str, lines: list, note: str, baseline: bool) -> None:
    sweep, runs = runs_of(name)
    if not runs:
        print(f"{name}: no traces yet", file=sys.stderr)
        return
    if baseline:  # the same grid points of async-lsq, where the varied keys have their async-lsq values
        points, slows = {(r.method, r.gamma, r.tau) for r in runs}, {r.slow for r in runs} | {1.0}
        _, main = runs_of("async-lsq")
        runs = [r for r in main if (r.method, r.gamma, r.tau) in points and r.slow in slows] + runs
    metric = sweep.select.metric
    best = best_of(runs, lambda r: (variant_of(r, keys), r.method, r.slow))
    steady = best_of(runs, lambda r: (variant_of(r, keys), r.method, r.slow), by="tail")
    def base_of(table_, v, m):
        base = table_.get((v, m, 1.0))
        if base is None:  # at s = 1 the slow workers are not slow: any variant's s = 1 run is the baseline
            others = [q for (vv, mm, ss), q in table_.items() if mm == m and ss == 1.0]
            base = others[0] if len(others) == 1 else None
        return base

    rows = []
    for (v, m, s), r in sorted(best.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]), kv[0][2])):
        q = steady[(v, m, s)]
        stable = [x.gamma for x in runs if (variant_of(x, keys), x.method, x.slow) == (v, m, s) and not x.diverged]
        rows.append([v, NAMES[m], f"{s:g}", f"{r.gamma:g}" + (f" / {r.tau:g}" if m == "clipped_asgd" else ""),
                     fmt(r.final), fmt(_ratio(r, base_of(best, v, m), "final"), 2),
                     f"{q.gamma:g}" + (f" / {q.tau:g}" if m == "clipped_asgd" else ""), fmt(q.tail),
                     fmt(_ratio(q, base_of(steady, v, m), "tail"), 2), f"{max(stable):g}" if stable else "none",
                     str(int(r.attr("updates", r.tr.rounds[-1]))), str(int(r.attr("tau_max"))),
                     f"{float(r.attr('delay_mean')):.1f}", f"{float(r.attr('discarded_fraction')):.3f}"])
    # figure: ASGD and Clipped ASGD at s = 1 and the largest s, one panel per variant
    plt = pyplot()
    vs = sorted({k[0] for k in best})
    fig, axes = plt.subplots(1, len(vs), figsize=(max(5.4 * len(vs), 9.0), 4.6), constrained_layout=True, squeeze=False)
    for ax, v in zip(axes[0], vs):
        for (vv, m, s), r in sorted(steady.items()):
            if vv != v or s not in (1.0, max(SLOW)):
                continue
            keep = np.isfinite(r.y) & (r.y > 0)
            ax.plot(r.tr.metrics["sim_time"][keep], r.y[keep], "-" if s == 1.0 else "--", color=COLORS[m], lw=1.5,
                    label=f"{NAMES[m]}, s = {s:g} (γ = {r.gamma:g}{f', τ = {r.tau:g}' if m == 'clipped_asgd' else ''})")
        ax.set_yscale("log")
        ax.set_xlabel("simulated time")
        ax.set_ylabel(METRIC_LABEL[metric])
        ax.set_title(v, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: best-tuned runs (γ, τ by the median over the last 10% of the time budget)", fontsize=11)
    save(fig, os.path.join(out, f"{name}.png"), dpi=110)
    t = METRIC_TEXT[metric]
    lines += [f"## {name}", "", note, "", f"{len(runs)} runs. Per variant, method and s: the best γ (/ τ) by the final "
              f"{t} at time {runs[0].config.asynchrony.max_time:g} and by the median over the last 10% of the budget "
              "('tail'); 'stable γ': the largest γ of the grid (any τ) that did not diverge:", "", "```",
              table(rows, ["variant", "method", "s", "γ (final)", f"final {t}", "ratio to s=1", "γ (tail)", "tail median",
                           "ratio to s=1", "stable γ", "updates", "τ_max", "mean delay", "discarded"]), "```", "",
              f"Final {METRIC_TEXT[metric]} of every run:", "", "```", gamma_table_variants(runs, keys), "```", "",
              f"![{name}]({name}.png)", ""]
    print(f"{name}: {len(runs)} runs -> {out}")


def gamma_table_variants(runs: list, keys: tuple) -> str:
    cells, gs = defaultdict(dict), set()
    for r in runs:
        cells[(variant_of(r, keys), METHODS.index(r.method), r.tau, r.slow)][r.gamma] = "div" if r.diverged else fmt(r.final, 2)
        gs.add(r.gamma)
    gs = sorted(gs)
    rows = [[v, NAMES[METHODS[m]] + (f", τ = {tau:g}" if METHODS[m] == "clipped_asgd" else ""), f"{s:g}"]
            + [cells[(v, m, tau, s)].get(g, "") for g in gs] for (v, m, tau, s) in sorted(cells)]
    return table(rows, ["variant", "method", "s"] + [f"γ = {g:g}" for g in gs])


VARIANTS = (
    ("async-lsq-assignment", ("async.assignment",),
     "Heterogeneous shards, jobs handed to the finisher (as in async-lsq) or to a uniformly random worker "
     "(Koloskova et al.): with random assignment the straggler gets its fair share of jobs, which queue at it.", True),
    ("async-lsq-homogeneous", ("async.data",),
     "Every worker's gradient is the full ∇f (homogeneous) against its own shard's ∇f_i (heterogeneous), "
     "at time budget 100.", False),
    ("async-lsq-noise", ("async.oracle", "async.noise_theta"),
     "Exact shard gradients plus sub-Weibull noise of scale σ = 0.01 (the typical mid-run gradient norm) and "
     "tail θ = 0.5 (sub-Gaussian), 1 (sub-exponential), 2 (heavier); oracle = full is async-lsq.", True),
    ("async-lsq-x0", ("run.x0_scale",),
     "A distant start: x^0 ~ N(0, 10² I) against N(0, I) (the planted x* ~ N(0, I)).", True),
    ("async-lsq-long", ("async.max_time",),
     "A 5x longer time budget (1000): at s = 100 the straggler delivers 9 gradients, 819-9037 updates stale, "
     "late in the run when the current gradients are small.", False),
    ("async-lsq-stragglers", ("async.slow_workers",),
     "Ten stragglers (workers 30-39) instead of one.", True),
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "async"))
    ap.add_argument("--tables", default=None, help="write the generated Markdown here (default: <out>/RESULTS.md)")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    os.chdir(ROOT)  # the sweeps' outputs are relative to the repository
    lines = ["# Straggler experiments: generated tables", "",
             "Made by `python analysis/async_figures.py` from the traces of `jobs/sweeps/async-*.toml` "
             "(the discussion is in README.md).", ""]
    facts: dict = {}
    for name in ("mushrooms", "a9a", "lsq"):
        dataset(name, out, lines, facts)
    for name, keys, note, baseline in VARIANTS:
        variants(name, keys, out, lines, note, baseline)
    with open(args.tables or os.path.join(out, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
