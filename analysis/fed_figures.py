#!/usr/bin/env python3
"""Tables and figures of the federated experiments (jobs/sweeps/fed-*.toml), into docs/fed/.

    python analysis/fed_figures.py [--out docs/fed]        # RESULTS.md and the PNGs
    python analysis/fed_figures.py --write-seeds           # jobs/sweeps/<sweep>-seeds.toml from the best runs

The question (ALGORITHMS §6): under label skew, do GradAlign / FedGA lower the gradient variance
(1/n)Σ‖∇f_i − ∇f‖² and raise the test accuracy over large-batch SGD and FedAvg at equal communication?

Settings: a sweep (digits one class per client, digits percentage-iid 0, Synthetic(1, 1) with the code's
uniform model averaging or with sample-weighted averaging) × a model (softmax, MLP) × P (clients per
round). In each, every method's best configuration is its run with the best final test accuracy at equal
communication (400 communication rounds as the GradAlign code counts them: 200 server rounds for FedGA,
GradAlign, SCAFFOLD; 400 for the others), seed 0, ties to the earlier run of the sweep: exactly
`mpiclip sweep best`. `--write-seeds` writes a sweep that reruns those
configurations with run.seed = 1 and 2; the tables report mean ± sample std over the seeds found.

Tables (RESULTS.md), per setting:

* A: equal communication rounds as the official code counts them (400; the runs' final rows);
* B: equal server rounds (200: the row at round 200 of the 400-round runs; same configurations), and the
  best over the grid re-chosen by the test accuracy at round 200 (seed 0);
* C: equal uplink bits per client (the budget: FedAvg's final bits; each run's last row within it);
* the β (FedGA, GradAlign) and μ (FedProx) sensitivity at the best γ per value, and the final test
  accuracy of every run of the grid.

Figures, per setting: test accuracy against communication rounds and against uplink bits per client,
gradient variance against server rounds (mean over the seeds, the band from the smallest to the largest);
per sweep: the final test accuracy and gradient variance against β.
Reads traces only (never imports mpi4py).
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

from mpiclip import config as cfg
from mpiclip.plotting import pyplot, save
from mpiclip.sweep import load_sweep
from mpiclip.trace import CORRUPT, open_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = (("fed-digits-oneclass", "oneclass", "Digits, one class per client"),
          ("fed-digits-pct0", "pct0", "Digits, percentage-iid 0"),
          ("fed-synthetic", "synthetic", "Synthetic(1, 1)"),
          ("fed-synthetic-samples", "synthetic-samples", "Synthetic(1, 1), sample-weighted averaging"))
METHODS = ("fedga", "gradalign", "lbsgd", "fedavg", "scaffold", "scaffold_stored", "fedprox")
NAMES = {"fedga": "FedGA", "gradalign": "GradAlign", "lbsgd": "LB-SGD", "fedavg": "FedAvg", "scaffold": "SCAFFOLD",
         "scaffold_stored": "SCAFFOLD (stored)", "fedprox": "FedProx"}
COLORS = {"fedga": "tab:red", "gradalign": "tab:orange", "lbsgd": "tab:gray", "fedavg": "tab:blue",
          "scaffold": "tab:green", "scaffold_stored": "tab:olive", "fedprox": "tab:purple"}
STYLES = {"fedga": "-", "gradalign": "-", "lbsgd": "--", "fedavg": "-", "scaffold": "-.", "scaffold_stored": ":",
          "fedprox": "--"}
MODELS = {"softmax": "softmax", "mlp": "MLP"}
SERVER_ROUNDS = 200  # the equal-server-rounds table


# ---------------------------------------------------------------- reading
ROWS = ("rounds", "loss", "test_accuracy", "grad_variance", "comm_rounds")


def read(path: str):
    """(status, {row dataset: values}, uplink bits per client) of a trace: only what the tables need
    (mpiclip.trace.load_trace reads every dataset, 10x slower over a thousand traces); None if unreadable."""
    try:
        with open_trace(path) as f:
            status = f.attrs.get("status", "?")
            status = status.decode() if isinstance(status, bytes) else str(status)
            if not status.startswith("completed") or any(k not in f for k in ROWS):
                return status, None, None
            rows = {k: f[k][()] for k in ROWS}
            # the papers' bits per worker: cumulative mean over the n clients (Trace.bits_per_worker)
            bits = np.cumsum(f["bits/up/paper"][()].mean(axis=1))
    except CORRUPT:  # being written by a running sweep, or damaged
        return "unreadable", None, None
    return status, rows, bits


class Run:
    """One completed trace of a sweep."""

    def __init__(self, sweep_run, rows: dict, bits: np.ndarray):
        c = sweep_run.config
        self.sweep_run, self.index, self.label = sweep_run, sweep_run.index, sweep_run.label
        self.values = dict(sweep_run.values)
        self.method = c.method.name
        self.model = c.problem.name
        self.P = c.federated.participants(c.run.n_workers)
        self.n = c.run.n_workers
        self.gamma = float(c.stepsize.value)
        self.beta = float(getattr(c.method.params, "beta", math.nan))
        self.mu = float(getattr(c.method.params, "mu", math.nan))
        self.batch = int(c.federated.batch_size)
        self.seed = int(c.run.seed)
        self.acc, self.var = rows["test_accuracy"], rows["grad_variance"]
        self.comm, self.rounds, self.loss = rows["comm_rounds"], rows["rounds"].astype(float), rows["loss"]
        self.bits = bits

    @property
    def setting(self) -> tuple:
        return (self.model, self.P)

    @property
    def hyper(self) -> tuple:
        """Everything that defines a configuration but the seed."""
        return (self.model, self.P, self.method, self.gamma, _key(self.beta), _key(self.mu), self.batch)

    def at(self, i: int) -> dict:
        return {"acc": float(self.acc[i]), "var": float(self.var[i]), "loss": float(self.loss[i]),
                "round": int(self.rounds[i]), "comm": int(self.comm[i]), "bits": float(self.bits[i])}

    def row_at_round(self, t: int) -> int:
        """The row of server round t (the last row if the run is shorter)."""
        i = int(np.searchsorted(self.rounds, t))
        return min(i, len(self.rounds) - 1)

    def tail_acc(self) -> float:
        """Mean test accuracy over the rows of the last 10% of the communication budget (steadier than the
        final row, which the selection rewards for luck when a run oscillates)."""
        keep = self.comm >= 0.9 * self.comm[-1]
        return float(np.mean(self.acc[keep]))

    def row_within_bits(self, budget: float) -> int:
        return max(int(np.searchsorted(self.bits, budget * (1 + 1e-9), side="right")) - 1, 0)

    def param_text(self) -> str:
        extra = (f", β = {self.beta:g}" if self.method in ("fedga", "gradalign")
                 else f", μ = {self.mu:g}" if self.method == "fedprox" else "")
        return f"γ = {self.gamma:g}{extra}"


def _key(v: float):
    return None if math.isnan(v) else round(v, 12)


def completed(sweep) -> list:
    out = []
    for run in sweep.runs:
        path = run.config.trace_path
        if not os.path.exists(path):
            continue
        status, rows, bits = read(path)
        if rows is not None and len(rows["rounds"]):
            out.append(Run(run, rows, bits))
    return out


def best_of(runs: list) -> dict:
    """(model, P, method) -> the run with the best final test accuracy, ties to the earlier run of the sweep:
    `mpiclip sweep best` with [select] metric = "test_accuracy", criterion = "final" (a NaN accuracy loses)."""
    best: dict = {}
    for r in sorted(runs, key=lambda r: r.index):
        a = float(r.acc[-1])
        key = (r.model, r.P, r.method)
        if np.isfinite(a) and (key not in best or a > float(best[key].acc[-1])):
            best[key] = r
    return best


def sweep_path(name: str) -> str:
    return os.path.join(ROOT, "jobs", "sweeps", f"{name}.toml")


# ---------------------------------------------------------------- the seeds sweep
def write_seeds(name: str, seeds=(1, 2)) -> None:
    """jobs/sweeps/<name>-seeds.toml: the best configuration of every group of <name>, with more seeds."""
    sweep = load_sweep(sweep_path(name))
    chosen = best_of(completed(sweep))
    groups = {(r.config.problem.name, r.config.federated.participants(r.config.run.n_workers), r.config.method.name)
              for r in sweep.runs}
    missing = len(groups - set(chosen))
    best = sorted(chosen.values(), key=lambda r: r.index)
    table, _ = cfg.read_source(sweep_path(name))
    lines = [f"# Generated by `python analysis/fed_figures.py --write-seeds` from the traces of {name}.toml: the",
             "# best configuration of every (model, P, method) by the final test accuracy (seed 0, as",
             f"# `mpiclip sweep best jobs/sweeps/{name}.toml`), rerun with run.seed = {', '.join(map(str, seeds))}"
             " (x0, client sampling",
             "# and minibatches change; the data and its split do not). Everything else as in the parent sweep.",
             f"#   OMP_NUM_THREADS=1 python -m mpiclip sweep run jobs/sweeps/{name}-seeds.toml",
             "#   python analysis/fed_figures.py",
             "[sweep]", f'name = "{name}-seeds"', f'base = "{table["sweep"]["base"]}"', 'output = "results/sweeps/{name}"',
             "", "[set]"]
    lines += [f'"{k}" = {cfg.toml_value(v)}' for k, v in table.get("set", {}).items()]
    for r in best:
        lines += ["", f"[[grid]]                        # {MODELS[r.model]}, P = {r.P}: {NAMES[r.method]}"]
        lines += [f'"{k}" = [{cfg.toml_value(v)}]' for k, v in r.sweep_run.values]
        lines += [f'"run.seed" = {cfg.toml_value(list(seeds))}']
    select = table.get("select", {})
    lines += ["", "[select]"] + [f"{k} = {cfg.toml_value(v)}" for k, v in select.items()]
    path = sweep_path(f"{name}-seeds")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{path}: {len(best)} configurations x {len(seeds)} seeds" + (f" ({missing} groups without runs)" if missing else ""))


# ---------------------------------------------------------------- statistics
def stats(values: list) -> tuple:
    v = np.array([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return (math.nan, math.nan, 0)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v))


def pm(values: list, digits: int = 3, pct: bool = False) -> str:
    mean, std, k = stats(values)
    if k == 0:
        return "-"
    scale = 100.0 if pct else 1.0
    if pct:
        text = f"{scale * mean:.1f}"
        return text + (f" ± {scale * std:.1f}" if k > 1 else "")
    text = f"{mean:.{digits}g}"
    return text + (f" ± {std:.{digits - 1}g}" if k > 1 else "")


def md_table(rows: list, header: list, align: str = "") -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    return "\n".join(["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
                     + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


# ---------------------------------------------------------------- one setting
class Setting:
    """One (sweep, model, P): every run, the best configuration per method and its seeds."""

    def __init__(self, name: str, short: str, title: str, model: str, P: int, runs: list, best: dict, seeds: dict):
        self.name, self.short, self.model, self.P = name, short, model, P
        self.runs = runs
        self.best = best  # method -> Run (seed 0)
        self.seeds = seeds  # method -> [Run] (seed 0 first)
        self.n = runs[0].n
        self.title = f"{title}, {MODELS.get(model, model)}, P = {P} of {self.n}"
        self.slug = f"{short}-{model}-P{P}"

    def methods(self):
        return [m for m in METHODS if m in self.best]


def settings_of(name: str, short: str, title: str) -> list:
    path = sweep_path(name)
    if not os.path.exists(path):
        return []
    sweep = load_sweep(path)
    runs = completed(sweep)
    if not runs:
        print(f"{name}: no traces yet", file=sys.stderr)
        return []
    best = best_of(runs)
    extra: dict = defaultdict(list)
    seeds_path = sweep_path(f"{name}-seeds")
    stale = []
    if os.path.exists(seeds_path):
        for r in completed(load_sweep(seeds_path)):
            chosen = best.get((r.model, r.P, r.method))
            if chosen is not None and chosen.hyper == r.hyper:
                extra[r.hyper].append(r)
            else:
                stale.append(r.label)
    if stale:
        print(f"{name}-seeds: {len(stale)} runs are not the current best configurations (rerun --write-seeds): "
              f"{stale[0]} ...", file=sys.stderr)
    out = []
    for model, P in sorted({r.setting for r in runs}, key=lambda s: (list(MODELS).index(s[0]), -s[1])):
        here = [r for r in runs if r.setting == (model, P)]
        b = {m: best[(model, P, m)] for m in METHODS if (model, P, m) in best}
        s = {m: [r] + sorted(extra.get(r.hyper, []), key=lambda q: q.seed) for m, r in b.items()}
        out.append(Setting(name, short, title, model, P, here, b, s))
    print(f"{name}: {len(runs)} runs, {sum(len(v) for v in extra.values())} seed reruns")
    return out


# ---------------------------------------------------------------- tables
def table_a(s: Setting) -> str:
    rows = []
    for m in s.methods():
        rs = s.seeds[m]
        last = [r.at(len(r.rounds) - 1) for r in rs]
        b = s.best[m]
        rows.append([NAMES[m], b.param_text(), str(last[0]["round"]), str(last[0]["comm"]), f"{last[0]['bits']:.3g}",
                     str(len(rs)), pm([x["acc"] for x in last], pct=True), pm([r.tail_acc() for r in rs], pct=True),
                     pm([x["var"] for x in last]), pm([x["loss"] for x in last]), f"{100 * last[0]['acc']:.1f}"])
    return md_table(rows, ["method", "best configuration", "server rounds", "comm rounds (code)", "uplink bits/client",
                           "seeds", "test accuracy %", "last-10% mean acc %", "grad variance", "train loss f(x)",
                           "seed 0 acc %"])


def table_b(s: Setting) -> str:
    rows = []
    for m in s.methods():
        rs = s.seeds[m]
        at = [r.at(r.row_at_round(SERVER_ROUNDS)) for r in rs]
        retuned = best_at_round(s, m, SERVER_ROUNDS)
        rt = retuned.at(retuned.row_at_round(SERVER_ROUNDS)) if retuned else None
        rows.append([NAMES[m], str(at[0]["round"]), str(at[0]["comm"]), pm([x["acc"] for x in at], pct=True),
                     pm([x["var"] for x in at]), pm([x["loss"] for x in at]),
                     retuned.param_text() if retuned else "-", f"{100 * rt['acc']:.1f}" if rt else "-",
                     fmt(rt["var"]) if rt else "-"])
    return md_table(rows, ["method", "server rounds", "comm rounds (code)", "test accuracy %", "grad variance",
                           "train loss", "re-tuned at round 200 (seed 0)", "its acc %", "its grad variance"])


def best_at_round(s: Setting, method: str, t: int):
    """The seed-0 run of the grid with the best test accuracy at round t (ties: the earlier run)."""
    best, score = None, -math.inf
    for r in s.runs:
        if r.method != method or r.seed != 0:
            continue
        a = float(r.acc[r.row_at_round(t)])
        if np.isfinite(a) and a > score:
            best, score = r, a
    return best


def bits_budget(s: Setting) -> float:
    ref = s.best.get("fedavg") or next(iter(s.best.values()))
    return float(ref.bits[-1])


def table_c(s: Setting) -> str:
    budget = bits_budget(s)
    rows = []
    for m in s.methods():
        rs = s.seeds[m]
        at = [r.at(r.row_within_bits(budget)) for r in rs]
        rows.append([NAMES[m], str(at[0]["round"]), str(at[0]["comm"]), f"{at[0]['bits']:.3g}",
                     pm([x["acc"] for x in at], pct=True), pm([x["var"] for x in at]), pm([x["loss"] for x in at])])
    return md_table(rows, ["method", "server rounds", "comm rounds (code)", "uplink bits/client", "test accuracy %",
                           "grad variance", "train loss"])


def sensitivity(s: Setting) -> str:
    """FedGA/GradAlign per β, FedProx per μ: the best γ of each value (final test accuracy, seed 0)."""
    rows = []
    for m, attr, sym in (("fedga", "beta", "β"), ("gradalign", "beta", "β"), ("fedprox", "mu", "μ")):
        groups = defaultdict(list)
        for r in s.runs:
            if r.method == m and r.seed == 0:
                groups[getattr(r, attr)].append(r)
        for v in sorted(groups):
            b = pick(groups[v])
            i = len(b.rounds) - 1
            rows.append([NAMES[m], f"{sym} = {v:g}", f"{b.gamma:g}", f"{100 * b.acc[i]:.1f}", fmt(b.var[i]),
                         fmt(b.loss[i]), failed(groups[v])])
    return md_table(rows, ["method", "value", "best γ", "test acc %", "grad variance", "train loss",
                           "γ that failed (final test acc < 20% or f above its start)"])


def pick(runs: list):
    """The best final test accuracy (ties: the earlier run of the sweep), as `sweep best`."""
    return max(runs, key=lambda r: (np.nan_to_num(r.acc[-1], nan=-1.0), -r.index))


def failed(runs: list) -> str:
    """The step sizes whose run collapsed (chance-level accuracy, e.g. the constant predictor) or diverged."""
    bad = [r.gamma for r in sorted(runs, key=lambda r: r.gamma)
           if not (np.isfinite(r.loss[-1]) and r.loss[-1] < r.loss[0] and r.acc[-1] >= 0.2)]
    return ", ".join(f"{g:g}" for g in bad) if bad else "none"


def grid_table(s: Setting) -> str:
    """Final test accuracy (%) of every seed-0 run: rows method (β, μ), columns γ."""
    cells = defaultdict(dict)
    gammas = set()
    for r in s.runs:
        if r.seed != 0:
            continue
        extra = (f", β = {r.beta:g}" if r.method in ("fedga", "gradalign")
                 else f", μ = {r.mu:g}" if r.method == "fedprox" else "")
        key = (METHODS.index(r.method), _key(r.beta) or 0.0, _key(r.mu) or 0.0, NAMES[r.method] + extra)
        a = r.acc[-1]
        cells[key][r.gamma] = f"{100 * a:.1f}" if np.isfinite(a) else "nan"
        gammas.add(r.gamma)
    gs = sorted(gammas)
    rows = [[k[3]] + [cells[k].get(g, "") for g in gs] for k in sorted(cells)]
    return md_table(rows, ["method"] + [f"γ = {g:g}" for g in gs])


def headline(settings: list, row_of=lambda r: len(r.rounds) - 1) -> tuple:
    """Two overview tables: mean test accuracy and mean gradient variance at the row ``row_of(run)`` (default:
    the final row, equal communication rounds)."""
    ms = [m for m in METHODS if any(m in s.best for s in settings)]
    acc, var = [], []
    for s in settings:
        a_row, v_row = [s.title], [s.title]
        for m in ms:
            rs = s.seeds.get(m)
            if not rs:
                a_row.append("-")
                v_row.append("-")
                continue
            a_row.append(pm([float(r.acc[row_of(r)]) for r in rs], pct=True))
            v_row.append(pm([float(r.var[row_of(r)]) for r in rs], digits=2))
        acc.append(a_row)
        var.append(v_row)
    header = ["setting"] + [NAMES[m] for m in ms]
    return md_table(acc, header), md_table(var, header)


def overview(settings: list, cell) -> str:
    """One row per setting, one column per method: cell(the method's runs over the seeds)."""
    ms = [m for m in METHODS if any(m in s.best for s in settings)]
    rows = [[s.title] + [cell(s.seeds[m]) if s.seeds.get(m) else "-" for m in ms] for s in settings]
    return md_table(rows, ["setting"] + [NAMES[m] for m in ms])


PAIRS = (("fedga", "fedavg"), ("gradalign", "lbsgd"), ("fedga", "lbsgd"), ("gradalign", "fedavg"))


def claim_table(settings: list, row_of, pairs=PAIRS) -> str:
    """The claim's comparisons: per setting and pair (method, baseline), the difference of mean test accuracy
    with its standard error over the seeds (sqrt(s1²/k1 + s2²/k2)) and the ratio of mean gradient variances.
    Verdicts: accuracy 'higher'/'lower' when |Δ| > 2 SE, else 'tie'; variance 'lower'/'higher' when the
    seeds' ranges do not overlap, else 'overlap'."""
    rows = []
    for s in settings:
        row = [s.title]
        for m, base in pairs:
            a, b = s.seeds.get(m), s.seeds.get(base)
            if not a or not b:
                row += ["-", "-"]
                continue
            acc_a = np.array([100 * float(r.acc[row_of(r)]) for r in a])
            acc_b = np.array([100 * float(r.acc[row_of(r)]) for r in b])
            var_a = np.array([float(r.var[row_of(r)]) for r in a])
            var_b = np.array([float(r.var[row_of(r)]) for r in b])
            diff = acc_a.mean() - acc_b.mean()
            se = math.sqrt(sum(v.var(ddof=1) / len(v) if len(v) > 1 else 0.0 for v in (acc_a, acc_b)))
            word = "tie" if abs(diff) <= 2 * se or (se == 0 and diff == 0) else ("higher" if diff > 0 else "lower")
            vword = "lower" if var_a.max() < var_b.min() else "higher" if var_a.min() > var_b.max() else "overlap"
            row += [f"{diff:+.1f} ± {se:.1f} ({word})", f"{var_a.mean() / var_b.mean():.2f}x ({vword})"]
        rows.append(row)
    header = ["setting"]
    for m, base in pairs:
        header += [f"{NAMES[m]} − {NAMES[base]}: Δ acc (points)", "variance ratio"]
    return md_table(rows, header)


# ---------------------------------------------------------------- figures
def _band(runs: list, x_of, y_of):
    """x of the first seed, and mean, min, max of y over the seeds (on the rows they share)."""
    k = min(len(r.rounds) for r in runs)
    x = x_of(runs[0])[:k]
    ys = np.array([y_of(r)[:k] for r in runs])
    return x, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def setting_figure(s: Setting, out: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.0))
    fig.subplots_adjust(left=0.045, right=0.99, top=0.91, bottom=0.2, wspace=0.22)  # (constrained layout: 3x slower)
    panels = ((lambda r: r.comm, lambda r: 100 * r.acc, "communication rounds (the GradAlign code's count)",
               "test accuracy (%)", False),
              (lambda r: r.bits, lambda r: 100 * r.acc, "uplink bits per client (mean over the n clients)",
               "test accuracy (%)", False),
              (lambda r: r.rounds, lambda r: r.var, "server rounds",
               r"gradient variance $\frac{1}{n}\sum_i\|\nabla f_i(x)-\nabla f(x)\|^2$", True))
    accs = []
    for ax, (x_of, y_of, xlabel, ylabel, log) in zip(axes, panels):
        for m in s.methods():
            rs = s.seeds[m]
            x, mean, lo, hi = _band(rs, x_of, y_of)
            label = f"{NAMES[m]} ({s.best[m].param_text()})"
            ax.plot(x, mean, STYLES[m], color=COLORS[m], lw=1.6, label=label)
            if len(rs) > 1:
                ax.fill_between(x, lo, hi, color=COLORS[m], alpha=0.12, lw=0)
            if not log:
                accs.append(mean)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if log:
            ax.set_yscale("log")
    late = np.concatenate([a[len(a) // 4:] for a in accs]) if accs else np.array([0.0])
    lo = max(0.0, float(np.nanpercentile(late, 2)) - 5.0)
    hi = min(100.0, float(np.nanmax(late)) + 2.0)
    for ax in axes[:2]:
        ax.set_ylim(lo, hi)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False)
    k = max(len(v) for v in s.seeds.values())
    fig.suptitle(f"{s.title}: each method's best configuration (final test accuracy at 400 communication rounds); "
                 f"mean over {k} seed(s), band min-max", fontsize=11)
    return save(fig, out, dpi=100)


def beta_figure(settings: list, out: str, title: str) -> str:
    """Per setting: the final test accuracy and gradient variance of FedGA/GradAlign at each β (best γ),
    with FedAvg, LB-SGD and SCAFFOLD (their best configuration, seed 0) as horizontal lines."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(settings), figsize=(max(4.2 * len(settings) + 1, 9.0), 7.6), squeeze=False)
    fig.subplots_adjust(left=0.07 if len(settings) > 1 else 0.1, right=0.99, top=0.89, bottom=0.12, wspace=0.3,
                        hspace=0.3)
    for j, s in enumerate(settings):
        for m, marker in (("fedga", "o"), ("gradalign", "s")):
            groups = defaultdict(list)
            for r in s.runs:
                if r.method == m and r.seed == 0:
                    groups[r.beta].append(r)
            if not groups:
                continue
            bs = sorted(groups)
            best = [pick(groups[b]) for b in bs]
            axes[0, j].plot(bs, [100 * r.acc[-1] for r in best], marker + "-", color=COLORS[m], label=NAMES[m])
            axes[1, j].plot(bs, [r.var[-1] for r in best], marker + "-", color=COLORS[m], label=NAMES[m])
        for m in ("fedavg", "lbsgd", "scaffold"):
            r = s.best.get(m)
            if r is None:
                continue
            axes[0, j].axhline(100 * r.acc[-1], ls=STYLES[m], color=COLORS[m], lw=1.2, label=NAMES[m])
            axes[1, j].axhline(r.var[-1], ls=STYLES[m], color=COLORS[m], lw=1.2, label=NAMES[m])
        for i in (0, 1):
            ax = axes[i, j]
            ax.set_xscale("log")
            ax.set_xlabel("β")
            ax.grid(True, which="both", alpha=0.3)
        axes[1, j].set_yscale("log")
        axes[0, j].set_title(f"{MODELS.get(s.model, s.model)}, P = {s.P}", fontsize=10)
        axes[0, j].set_ylabel("final test accuracy (%) at its best γ")
        axes[1, j].set_ylabel("final gradient variance")
        accs = [100 * r.acc[-1] for r in s.best.values()]
        axes[0, j].set_ylim(max(0.0, min(accs) - 15), min(100.0, max(accs) + 3))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"{title}: β sensitivity at 400 communication rounds (seed 0; FedGA/GradAlign at the best γ "
                 "for each β,\nthe other methods' best configuration as lines)", fontsize=11)
    return save(fig, out, dpi=100)


# ---------------------------------------------------------------- main
COUNTS = """Counts of communication used by the tables:

* **A, equal communication rounds as the official code counts them**: FedGA, GradAlign and SCAFFOLD
  (fresh control variates) spend 2 rounds per server round (the all-reduce of the full local gradients
  and the all-reduce of the models), FedAvg, FedProx and large-batch SGD 1, SCAFFOLD with stored
  variates 1 (it sends Δc_i beside its update in the same round). Budget 400 rounds: 200 server rounds
  for the aligning methods, 400 for the others. The best configuration is chosen here.
* **B, equal server rounds** (200): the aligning methods' final rows against the row at round 200 of the
  400-round runs, with the same configurations; the re-tuned columns choose again by the accuracy at
  round 200 (a run's first 200 rounds are exactly a 200-round run: nothing depends on run.rounds).
* **C, equal uplink bits per client** (FedAvg's final bits; 32 bits per float): the same as A for every
  method but SCAFFOLD (stored), which sends 2d floats per round and gets 200 server rounds.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "fed"))
    ap.add_argument("--tables", default=None, help="write the generated Markdown here (default: <out>/RESULTS.md)")
    ap.add_argument("--write-seeds", action="store_true",
                    help="write jobs/sweeps/<sweep>-seeds.toml from the current best runs and stop")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # the sweeps' outputs are relative to the repository
    if args.write_seeds:
        for name, _, _ in SWEEPS:
            if os.path.exists(sweep_path(name)):
                write_seeds(name)
        return 0
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    head = ["# GradAlign / FedGA under label skew: generated tables", "",
             "Made by `python analysis/fed_figures.py` from the traces of `jobs/sweeps/fed-*.toml` (the discussion "
             "is in [README.md](README.md)). Test accuracy in %, mean ± sample std over the seeds (seed 0 of the "
             "tuning sweep and seeds 1, 2 of the `-seeds` sweep); gradient variance (1/n)Σ‖∇f_i(x) − ∇f(x)‖² over "
             "all n clients and the train loss f(x) = (1/n)Σ f_i(x) (exact, with the weight decay) at the same row. "
             "Best configuration per method: the best final test accuracy at 400 communication rounds (seed 0).",
             "", COUNTS]
    lines: list = []
    everything = []
    for name, short, title in SWEEPS:
        settings = settings_of(name, short, title)
        if not settings:
            continue
        everything += settings
        lines += [f"## {title} (`{name}`)", ""]
        png = f"beta-{short}.png"
        beta_figure(settings, os.path.join(out, png), title)
        lines += [f"![β sensitivity, {title}]({png})", ""]
        for s in settings:
            png = f"{s.slug}.png"
            setting_figure(s, os.path.join(out, png))
            budget = bits_budget(s)
            lines += [f"### {s.title}", "", f"![{s.title}]({png})", "",
                      "**A. Equal communication rounds as the official code counts them (400):**", "", table_a(s), "",
                      f"**B. Equal server rounds ({SERVER_ROUNDS}):**", "", table_b(s), "",
                      f"**C. Equal uplink bits per client ({budget:.3g}):**", "", table_c(s), "",
                      "β and μ (best γ per value, seed 0, final rows):", "", sensitivity(s), "",
                      "Final test accuracy (%) of every run (seed 0):", "", grid_table(s), ""]
    if everything:
        acc, var = headline(everything)
        final, at_t = (lambda r: len(r.rounds) - 1), (lambda r: r.row_at_round(SERVER_ROUNDS))
        head += ["## The claim, comparison by comparison", "",
                 "Difference of the mean test accuracy (percentage points) ± its standard error over the seeds, "
                 "'higher'/'lower' when beyond 2 SE; the ratio of the mean gradient variances, 'lower'/'higher' "
                 "when the seeds' ranges do not overlap. The claim: FedGA/GradAlign higher accuracy and lower "
                 "variance than FedAvg and large-batch SGD.", "",
                 "At equal communication rounds as the official code counts them (400; FedGA/GradAlign 200 server "
                 "rounds, FedAvg/LB-SGD 400); the same at equal uplink bits per client:", "",
                 claim_table(everything, final), "",
                 f"At equal server rounds ({SERVER_ROUNDS}; FedGA/GradAlign then use twice the communication):", "",
                 claim_table(everything, at_t), ""]
        head += ["## Overview at equal communication rounds (the code's count, 400)", "",
                 "Final test accuracy (%), mean ± std over the seeds:", "", acc, "",
                 "Final gradient variance, mean ± std over the seeds:", "", var, ""]
        tail = overview(everything, lambda rs: pm([r.tail_acc() for r in rs], pct=True))
        head += ["Mean test accuracy (%) over the last 10% of the communication rounds (the rows after 360), "
                 "mean ± std over the seeds (the final row is partly luck for runs that oscillate):", "", tail, ""]
        acc, var = headline(everything, at_t)
        head += [f"## Overview at equal server rounds ({SERVER_ROUNDS}; the same configurations)", "",
                 f"Test accuracy (%) at server round {SERVER_ROUNDS}, mean ± std over the seeds:", "", acc, "",
                 f"Gradient variance at server round {SERVER_ROUNDS}, mean ± std over the seeds:", "", var, ""]
    with open(args.tables or os.path.join(out, "RESULTS.md"), "w") as f:
        f.write("\n".join(head + lines))
    print(f"-> {args.tables or os.path.join(out, 'RESULTS.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
