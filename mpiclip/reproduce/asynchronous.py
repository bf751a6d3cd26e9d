"""Stragglers and clipping (Erickson & Johansson, "Clipping Makes Distributed and Federated Asynchronous SGD
Robust to Stragglers", arXiv 2606.13287, 2026; docs/algorithms.md §7): with constant step sizes, plain ASGD is
claimed to degrade with the maximum delay τ_max that a straggler causes, while Clipped ASGD depends only on
the concurrency τ_C. Tested in mpiclip's simulated asynchronous runner against the baselines
(delay-adaptive ASGD, minibatch SGD, Rennala SGD, Ringmaster ASGD), with worker n−1 s = 1, 10
and 100 times slower (the discussion of the full runs is docs/async/README.md).

For each data set (async-mushrooms, async-a9a: ‖∇f‖²; async-lsq: f − f*) the page shows:

* tables of each method's best run per slowdown s (best γ, and τ for Clipped ASGD, by the final value at
  the time budget, as `mpiclip sweep best`; and by the median over the last 10% of the budget, the "tail"),
  with the degradation ratio value(s)/value(1), τ_max, the mean and 99th-percentile delay and the share of
  gradients discarded; and the final value of every run against γ (the stable range against s);
* ``<set>-time``: the tail-selected runs against simulated time, one panel per s; ``<set>-work``: the same
  against gradients computed (arrivals at the server, applied or not) and bits sent per worker;
* ``<set>-delays``: ASGD's delays at each s with τ_C, the mean and τ_max marked; ``<set>-workers``: the
  updates ASGD applied per worker at s = 1 and s = 100.

The least-squares variants (async-lsq-*: random job assignment, homogeneous data, gradient noise, a distant
x⁰, a long budget, ten stragglers) get a table of best runs per variant, method and s (with async-lsq's
runs at the same grid points as the baseline when that sweep is in the preset), the final value of every
run, and a figure of ASGD and Clipped ASGD at s = 1 and s = 100 per variant. Reads traces only; what it reads
of each run (final value, tail median, divergence, settings) and how it chooses are in asynchronous_runs.py.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict

import numpy as np

from mpiclip import plotting
from mpiclip.plotting import paper_name
from mpiclip.reproduce import Cut, Family
from mpiclip.reproduce.asynchronous_runs import (
    attr,
    best_of,
    completed,
    diverged,
    final,
    ratio,
    runs_of,
    setting_text,
    slowdown,
    tail,
    tau_of,
    y,
)

METHODS = ("asgd", "clipped_asgd", "delay_adaptive_asgd", "ringmaster_asgd", "rennala_sgd", "minibatch_sgd")
DATASETS = ("async-mushrooms", "async-a9a", "async-lsq")
BASELINE = "async-lsq"  # the variants' baseline: its runs at the variants' grid points
AXES = {"time": "sim_time", "arrivals": "gradients", "bits": "bits"}  # mpiclip.plotting's x axes
X_LABEL = {"time": "simulated time", "arrivals": "gradients computed", "bits": "bits sent per worker"}
METRIC_LABEL = {"grad_norm_sq": r"$\|\nabla f(x^t)\|^2$", "gap": r"$f(x^t) - f^\star$"}
METRIC_TEXT = {"grad_norm_sq": "‖∇f‖²", "gap": "f − f*"}
WIDTH = plotting.SIZES["page"][0]


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "div"
    return f"{v:.{digits}g}"


def whole(v) -> str:
    """An integer attribute ('-' when the trace lacks it, e.g. a run that failed)."""
    v = float(v)
    return "-" if not np.isfinite(v) else str(int(v))


def decimal(v, spec: str) -> str:
    v = float(v)
    return "-" if not np.isfinite(v) else format(v, spec)


def updates(r) -> str:
    return whole(r.trace.rounds[-1]) if len(r.trace.rounds) else "-"


# ---------------------------------------------------------------- figures
def _figure(rows: int, cols: int, height: float, **kw):
    plt = plotting.pyplot()
    return plt.subplots(rows, cols, figsize=(WIDTH, height), layout="constrained", squeeze=False, **kw)


def _legend(fig, handles: dict) -> None:
    """One legend for the figure, below its panels (several panels share the page's width)."""
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(3, len(handles)),
               frameon=False)


def _title(fig, text: str) -> None:
    fig.suptitle(plotting.wrapped(text, WIDTH), fontsize=9)


def _same_y(axes, cols: int, lo: float, hi: float) -> None:
    """One log y range for every panel, its tick labels on the first column only (not matplotlib's sharey,
    whose hidden labels remain in the figure)."""
    from matplotlib.ticker import NullFormatter

    for i, ax in enumerate(axes.flat):
        ax.set_ylim(lo, hi)
        if i % cols:
            ax.yaxis.set_major_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())


def _range(runs) -> tuple[float, float]:
    """A log y range for ``runs``: from half the smallest positive value to 5x the largest first one."""
    finite = [v[(v > 0) & np.isfinite(v)] for v in map(y, runs)]
    lo = min((v.min() for v in finite if len(v)), default=1e-12)
    hi = max((v[0] for v in finite if len(v)), default=1.0)
    return lo / 2, hi * 5


def _positive(y: np.ndarray) -> tuple[np.ndarray, int]:
    """(the values a log axis shows, how many finite values it cannot)."""
    keep = np.isfinite(y) & (y > 0)
    return keep, int(np.sum(np.isfinite(y) & ~keep))


def curves(best: dict, metric: str, xs: tuple, title: str):
    """One column per slowdown, one row per x ('time', 'arrivals', 'bits'); every method's run in ``best``."""
    slows = sorted({s for _, s in best})
    fig, axes = _figure(len(xs), len(slows), 0.75 + 1.85 * len(xs))
    handles = {}
    for i, xname in enumerate(xs):
        for j, s in enumerate(slows):
            ax, dropped = axes[i, j], 0
            for m in METHODS:
                r = best.get((m, s))
                if r is None:
                    continue
                x = plotting.x_values(r.trace, AXES[xname], "paper", include_initial=False)
                keep, n = _positive(y(r))
                dropped += n
                (line,) = ax.plot(x[keep], y(r)[keep], lw=1.2, ms=3, markevery=0.1, **plotting.method_style(m))
                handles.setdefault(paper_name(m), line)
            ax.set_yscale("log")
            ax.set_xlabel(X_LABEL[xname])
            if j == 0:
                ax.set_ylabel(METRIC_LABEL[metric])
            if i == 0:
                ax.set_title(f"s = {s:g}")
            ax.grid(True, which="both", alpha=0.3)
            ax.xaxis.get_major_locator().set_params(nbins=4)
            plotting.log_note(ax, dropped)
    _same_y(axes, len(slows), *_range(best.values()))
    _title(fig, title)
    if handles:
        _legend(fig, handles)
    return fig


def delays(asgd: dict, title: str):
    """ASGD's delays per slowdown: arrivals per unit of delay in log-spaced bins (log axes), the straggler's
    arrivals stacked in red; τ_C, the mean and τ_max marked."""
    slows = sorted(asgd)
    fig, axes = _figure(1, len(slows), 2.9)
    tmax = max(int(attr(r, "tau_max")) for r in asgd.values())
    edges = np.unique(np.concatenate([np.arange(0, 10), np.geomspace(10, tmax + 2, 50).astype(int)])) - 0.5
    widths = np.diff(edges)
    centers = np.maximum(edges[:-1], 0.5)
    handles = {}
    for ax, s in zip(axes[0], slows):
        r = asgd[s]
        ev = r.trace.tables["events"]
        slow = np.isin(ev["worker"], list(r.config.section("async").slow_workers))
        fast_counts = np.histogram(ev["delay"][~slow], edges)[0] / widths
        slow_counts = np.histogram(ev["delay"][slow], edges)[0] / widths
        handles.setdefault("other workers", ax.bar(centers, fast_counts, width=widths, align="edge",
                                                   color="tab:blue", alpha=0.8))
        handles.setdefault("the straggler", ax.bar(centers, slow_counts, width=widths, bottom=fast_counts,
                                                   align="edge", color="tab:red"))
        tau_c, tau_max, mean = int(attr(r, "concurrency")), int(attr(r, "tau_max")), float(attr(r, "delay_mean"))
        handles.setdefault("τ_C (concurrency)", ax.axvline(tau_c, color="k", ls="--", lw=1))
        handles.setdefault("mean delay", ax.axvline(mean, color="tab:green", ls=":", lw=1.2))
        handles.setdefault("τ_max", ax.axvline(tau_max, color="tab:red", ls="-", lw=0.8))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.5, tmax * 1.5)
        ax.set_xlabel("delay (server updates)")
        if s == slows[0]:
            ax.set_ylabel("arrivals per unit of delay")
        ax.set_title(f"s = {s:g}: {len(ev['delay'])} arrivals\nτ_max = {tau_max}, mean {mean:.1f}")
        ax.grid(True, which="both", alpha=0.3)
    _title(fig, title)
    _legend(fig, handles)
    return fig


def workers(asgd: dict, title: str):
    """Updates applied per worker, ASGD at s = 1 and s = 100, and a sentence on the straggler's share."""
    fig, axes = _figure(1, 1, 2.4)
    ax = axes[0, 0]
    text = []
    for k, (s, color) in enumerate(((1.0, "0.55"), (100.0, "tab:blue"))):
        r = asgd.get(s)
        if r is None:
            continue
        ev = r.trace.tables["events"]
        n = int(attr(r, "n_workers"))
        counts = np.bincount(ev["worker"][ev["update"] >= 0].astype(int), minlength=n)
        ax.bar(np.arange(n) + (k - 0.5) * 0.4, counts, width=0.4, color=color, label=f"s = {s:g}")
        slow = int(r.config.section("async").slow_workers[0])
        share = counts[slow] / counts.sum()
        text.append(f"s = {s:g}: worker {slow} made {counts[slow]} of {counts.sum()} updates "
                    f"({100 * share:.2f}%, fair share {100 / n:.2f}%)")
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("worker")
    ax.set_ylabel("updates applied")
    ax.set_title(textwrap.fill(title, width=int(WIDTH * 9)))
    ax.grid(True, axis="y", which="both", alpha=0.3)
    plotting.legend(fig, 2, "page")
    return fig, "; ".join(text)


# ---------------------------------------------------------------- tables
def best_rows(best: dict, metric: str) -> list:
    rows = []
    for m in METHODS:
        base = best.get((m, 1.0))
        for s in sorted({s for _, s in best}):
            r = best.get((m, s))
            if r is None:
                continue
            other = (fmt(float(r.trace.grad_norm_sq[-1])) if metric == "gap" and len(r.trace.grad_norm_sq)
                     else fmt(float(r.trace.metrics["accuracy"][-1]), 4) if len(r.trace.metrics.get("accuracy", ())) else "-")
            rows.append([paper_name(m), f"{s:g}", f"{r.gamma:g}", f"{tau_of(r):g}" if m == "clipped_asgd" else "-",
                         fmt(final(r)), fmt(ratio(r, base, final), 2), fmt(tail(r)), other, updates(r),
                         whole(attr(r, "arrivals")), whole(attr(r, "tau_max")), decimal(attr(r, "delay_mean"), ".1f"),
                         whole(attr(r, "delay_p99")), decimal(attr(r, "discarded_fraction"), ".3f")])
    return rows


def tail_rows(best: dict) -> list:
    rows = []
    for m in METHODS:
        base = best.get((m, 1.0))
        for s in sorted({s for _, s in best}):
            r = best.get((m, s))
            if r is not None:
                rows.append([paper_name(m), f"{s:g}", f"{r.gamma:g}", f"{tau_of(r):g}" if m == "clipped_asgd" else "-",
                             fmt(tail(r)), fmt(ratio(r, base, tail), 2), fmt(final(r))])
    return rows


GAMMA_GROUPS = (("asgd", ("asgd", "delay_adaptive_asgd", "ringmaster_asgd")), ("clipped", ("clipped_asgd",)),
                ("batch", ("rennala_sgd", "minibatch_sgd")))


def gamma_tables(runs: list) -> list:
    """[(name, header, rows)]: the final value of every run, one row per (method, τ, s), one column per γ
    ('div' = failed or blew up), one table per family of methods with the same γ grid."""
    cells = defaultdict(dict)
    gammas = defaultdict(set)
    for r in runs:
        key = (METHODS.index(r.method), tau_of(r), slowdown(r))
        cells[key][r.gamma] = "div" if diverged(r) else fmt(final(r), 2)
        gammas[r.method].add(r.gamma)
    out = []
    for name, family in GAMMA_GROUPS:
        gs = sorted(set().union(*(gammas[m] for m in family)))
        if not gs:
            continue
        rows = []
        for key in sorted(k for k in cells if METHODS[k[0]] in family):
            m, tau, s = METHODS[key[0]], key[1], key[2]
            rows.append([paper_name(m) + (f", τ = {tau:g}" if m == "clipped_asgd" else ""), f"{s:g}"]
                        + [cells[key].get(g, "") for g in gs])
        out.append((name, ["method", "s"] + [f"γ = {g:g}" for g in gs], rows))
    return out


# ---------------------------------------------------------------- one data set
def dataset(page, name: str, sweep) -> None:
    label = name.removeprefix("async-")
    runs = runs_of(sweep)
    if not any(completed(r) for r in runs):
        page.text(f"No completed runs yet ({len(runs)} of {len(sweep.runs)} runs have a finished trace).")
        return
    metric = sweep.select.metric
    t = METRIC_TEXT[metric]
    best = best_of(runs, lambda r: (r.method, slowdown(r)))
    steady = best_of(runs, lambda r: (r.method, slowdown(r)), by=tail)
    bad = sum(diverged(r) for r in runs)
    page.text(f"{len(runs)} runs ({bad} diverged). Best γ (τ) per method and slowdown s by the final {t} at the "
              f"time budget {runs[0].config.section('async').max_time:g} (the sweep's [select], as `mpiclip sweep best`); "
              f"'tail median': the median of {t} over the last 10% of the budget:")
    page.table(f"{label}-best", ["method", "s", "best γ", "τ", f"final {t}", "final(s)/final(1)", "tail median",
                                 "final ‖∇f‖²" if metric == "gap" else "accuracy", "updates", "arrivals", "τ_max",
                                 "mean delay", "p99 delay", "discarded"], best_rows(best, metric))
    page.text("The last row of an oscillating run is partly luck; chosen instead by the tail median (the runs "
              "the figures show):")
    page.table(f"{label}-tail", ["method", "s", "γ", "τ", "tail median", "tail(s)/tail(1)", "final"], tail_rows(steady))
    page.text(f"Final {t} of every run ('div': diverged or ended above 10x its start):")
    for group, header, rows in gamma_tables(runs):
        page.table(f"{label}-gamma-{group}", header, rows, "l" + "r" * (len(header) - 1))  # 'div' is a value
    title = f"{label}: best-tuned runs (γ, τ by the tail median, as in the table above)"
    page.figure(f"{label}-time", curves(steady, metric, ("time",), f"{title} against simulated time; "
                                        "worker n−1 is s times slower"), f"{label}: best runs against time")
    page.figure(f"{label}-work", curves(steady, metric, ("arrivals", "bits"), f"{title} against gradients computed "
                                        "(arrivals at the server, applied or not) and bits sent per worker (paper "
                                        "encoding)"), f"{label}: best runs against work")
    asgd = {s: r for (m, s), r in steady.items() if m == "asgd" and completed(r)}
    if asgd:
        page.figure(f"{label}-delays", delays(asgd, f"{label}: delays of ASGD (the runs above; log-log)"),
                    f"{label}: delays of ASGD")
    if asgd.keys() & {1.0, 100.0}:
        fig, share = workers(asgd, f"{label}: updates applied per worker, ASGD (the runs above)")
        page.figure(f"{label}-workers", fig, f"{label}: updates per worker")
        page.text(f"Straggler's share of ASGD's updates: {share}.")


# ---------------------------------------------------------------- lsq variants
def variant_of(r, keys: tuple) -> str:
    parts = []
    for key in keys:
        k, v = key.partition(".")[2], r.value(key, None)
        parts.append(f"{k}={v if not isinstance(v, list) else (str(len(v)) + ' stragglers' if len(v) > 1 else v)}")
    return ", ".join(parts)


def variant_figure(name: str, steady: dict, metric: str):
    """ASGD and Clipped ASGD (every method there is) at s = 1 (solid) and the largest s (dashed), one panel
    per variant."""
    vs = sorted({k[0] for k in steady})
    top = max(k[2] for k in steady)
    cols = min(3, len(vs))
    rows = math.ceil(len(vs) / cols)
    fig, axes = _figure(rows, cols, 0.9 + 2.0 * rows)
    handles, shown = {}, []
    for i, ax in enumerate(axes.flat):
        if i >= len(vs):
            ax.set_axis_off()
            continue
        v, dropped = vs[i], 0
        for (vv, m, s), r in sorted(steady.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]), kv[0][2])):
            if vv != v or s not in (1.0, top):
                continue
            keep, n = _positive(y(r))
            dropped += n
            shown.append(r)
            (line,) = ax.plot(r.trace.metrics["sim_time"][keep], y(r)[keep], "-" if s == 1.0 else "--", lw=1.2, ms=3,
                              markevery=0.1, **plotting.method_style(m))
            handles.setdefault(f"{paper_name(m)}, s = {s:g}", line)
        ax.set_yscale("log")
        ax.set_xlabel("simulated time")
        if i % cols == 0:
            ax.set_ylabel(METRIC_LABEL[metric])
        ax.set_title(textwrap.fill(v, width=int(WIDTH / cols * 10)), fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.get_major_locator().set_params(nbins=4)
        plotting.log_note(ax, dropped)
    _same_y(axes, cols, *_range(shown))
    _title(fig, f"{name}: best-tuned runs (γ, τ by the tail median, as in the table)")
    if handles:
        _legend(fig, handles)
    return fig


def variants(page, name: str, keys: tuple, note: str, baseline: bool, sweeps: dict) -> None:
    sweep = sweeps[name]
    page.text(note)
    runs = runs_of(sweep)
    if not any(completed(r) for r in runs):
        page.text(f"No completed runs yet ({len(runs)} of {len(sweep.runs)} runs have a finished trace).")
        return
    if baseline and BASELINE in sweeps:  # the same grid points of async-lsq, where the varied keys have its values
        points, slows = {(r.method, r.gamma, tau_of(r)) for r in runs}, {slowdown(r) for r in runs} | {1.0}
        main = [r for r in runs_of(sweeps[BASELINE]) if (r.method, r.gamma, tau_of(r)) in points and slowdown(r) in slows]
        page.text(f"With the runs of {BASELINE} at the same grid points ({len(main)} runs) as the baseline.")
        runs = main + runs
    elif baseline:
        page.text(f"Without the baseline: {BASELINE} is not in this preset.")
    metric = sweep.select.metric
    key = lambda r: (variant_of(r, keys), r.method, slowdown(r))
    best = best_of(runs, key)
    steady = best_of(runs, key, by=tail)

    def base_of(table, v, m):
        base = table.get((v, m, 1.0))
        if base is None:  # at s = 1 the slow workers are not slow: any variant's s = 1 run is the baseline
            others = [q for (vv, mm, ss), q in table.items() if mm == m and ss == 1.0]
            base = others[0] if len(others) == 1 else None
        return base

    rows = []
    for (v, m, s), r in sorted(best.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]), kv[0][2])):
        q = steady[(v, m, s)]
        stable = [x.gamma for x in runs if key(x) == (v, m, s) and not diverged(x)]
        rows.append([v, paper_name(m), f"{s:g}", setting_text(r), fmt(final(r)), fmt(ratio(r, base_of(best, v, m), final), 2),
                     setting_text(q), fmt(tail(q)), fmt(ratio(q, base_of(steady, v, m), tail), 2),
                     f"{max(stable):g}" if stable else "none", updates(r), whole(attr(r, "tau_max")),
                     decimal(attr(r, "delay_mean"), ".1f"), decimal(attr(r, "discarded_fraction"), ".3f")])
    t = METRIC_TEXT[metric]
    page.text(f"{len(runs)} runs. Per variant, method and s: the best γ (/ τ) by the final {t} at time "
              f"{runs[-1].config.section('async').max_time:g} and by the median over the last 10% of the budget ('tail'); "
              "'stable γ': the largest γ of the grid (any τ) that did not diverge:")
    page.table(f"{name}-best", ["variant", "method", "s", "γ (final)", f"final {t}", "final ratio to s=1", "γ (tail)",
                                "tail median", "tail ratio to s=1", "stable γ", "updates", "τ_max", "mean delay",
                                "discarded"], rows)
    page.text(f"Final {t} of every run ('div': diverged or ended above 10x its start):")
    header, rows = gamma_table_variants(runs, keys)
    page.table(f"{name}-gamma", header, rows, "ll" + "r" * (len(header) - 2))
    page.figure(name, variant_figure(name, steady, metric), f"{name}: best runs per variant")


def gamma_table_variants(runs: list, keys: tuple) -> tuple[list, list]:
    cells, gs = defaultdict(dict), set()
    for r in runs:
        cells[(variant_of(r, keys), METHODS.index(r.method), tau_of(r), slowdown(r))][r.gamma] = \
            "div" if diverged(r) else fmt(final(r), 2)
        gs.add(r.gamma)
    gs = sorted(gs)
    rows = [[v, paper_name(METHODS[m]) + (f", τ = {tau:g}" if METHODS[m] == "clipped_asgd" else ""), f"{s:g}"]
            + [cells[(v, m, tau, s)].get(g, "") for g in gs] for (v, m, tau, s) in sorted(cells)]
    return ["variant", "method", "s"] + [f"γ = {g:g}" for g in gs], rows


# (sweep, the keys that tell its variants apart, what it tests, whether async-lsq's runs are its baseline)
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
     "A distant start: x⁰ ~ N(0, 10² I) against N(0, I) (the planted x* ~ N(0, I)).", True),
    ("async-lsq-long", ("async.max_time",),
     "A 5x longer time budget (1000): at s = 100 the straggler delivers a few gradients, thousands of updates "
     "stale, late in the run when the current gradients are small.", False),
    ("async-lsq-stragglers", ("async.slow_workers",),
     "Ten stragglers (workers 30-39) instead of one.", True),
)


def write(page, sweeps: dict) -> None:
    page.text("Does ASGD's accuracy at a fixed simulated time degrade with the maximum delay τ_max that one slow "
              "worker (s = 1, 10, 100 times slower) causes, while Clipped ASGD's depends only on the concurrency "
              "τ_C (Erickson & Johansson, docs/algorithms.md §7)? Against delay-adaptive ASGD, Ringmaster ASGD, Rennala "
              "SGD and minibatch SGD where the sweep has them. Ratios are relative to s = 1; compute times and "
              "noise are keyed by (worker, job), so the s = 1, 10, 100 runs are paired.")
    for name in DATASETS:
        if name in sweeps:
            page.heading(name)
            dataset(page, name, sweeps[name])
    for name, keys, note, baseline in VARIANTS:
        if name in sweeps:
            page.heading(name)
            variants(page, name, keys, note, baseline, sweeps)
    absent = [name for name in FAMILY.sweeps if name not in sweeps]
    if absent:
        page.heading("Not in this preset")
        page.text(", ".join(absent) + ": `mpiclip reproduce async --full` runs them.")


# The laptop preset: async-lsq and async-mushrooms at every s, ASGD and Clipped ASGD around their best γ (ASGD's
# largest γ diverges on lsq), minibatch SGD (which waits for the straggler) and on lsq Rennala SGD at the full
# sweeps' best γ (no delay-adaptive or Ringmaster ASGD); and two variants, random assignment and ten stragglers,
# at grid points of that async-lsq cut. 79 runs: about 4 minutes with `mpiexec -n 2` on two shared cores.
LSQ_ASGD = [0.71, 1.0, 1.41]
LSQ_CLIPPED = {"method.tau": [0.003, 0.03], "stepsize.value": [8.0, 16.0]}
FAMILY = Family(
    name="async", title="Straggler experiments: ASGD, Clipped ASGD and the baselines", page="RESULTS.md",
    docs="docs/async", write=write,
    sweeps=DATASETS + tuple(v[0] for v in VARIANTS),
    laptop={
        "async-mushrooms": Cut(grids=({"method.name": ["asgd"], "stepsize.value": [0.01, 0.03, 0.1]},
                                      {"method.tau": [0.1, 1.0], "stepsize.value": [0.03, 0.1]},
                                      {"method.name": ["minibatch_sgd"], "stepsize.value": [0.3, 1.0]})),
        "async-lsq": Cut(grids=({"method.name": ["asgd"], "stepsize.value": LSQ_ASGD}, LSQ_CLIPPED,
                                {"stepsize.value": [4.0]})),
        "async-lsq-assignment": Cut(grids=({"stepsize.value": LSQ_ASGD}, {"method.tau": [0.003],
                                                                            "stepsize.value": [8.0, 16.0]})),
        "async-lsq-stragglers": Cut(grids=({"stepsize.value": LSQ_ASGD}, {"method.tau": [0.003],
                                                                          "stepsize.value": [8.0, 16.0]})),
    },
)
