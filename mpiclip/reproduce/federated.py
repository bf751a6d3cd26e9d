"""GradAlign / FedGA under label skew (Dandi, Barba, Jaggi, "Implicit Gradient Alignment in Distributed and
Federated Learning", AAAI 2022; docs/algorithms.md §8; the discussion of the results is docs/fed/README.md).

The question: under label skew, do GradAlign and FedGA lower the gradient variance (1/n)Σ‖∇f_i − ∇f‖² and
raise the test accuracy over large-batch SGD and FedAvg at equal communication? SCAFFOLD (fresh and stored
control variates) and FedProx are further baselines.

Settings: a sweep (digits with one class per client, digits percentage-iid 0, Synthetic(1, 1) with the
code's uniform model averaging or with sample-weighted averaging) × a model (softmax, MLP) × P (clients per
round). In each, a method's best configuration is its run with the best final test accuracy at equal
communication (400 communication rounds as the GradAlign code counts them: 200 server rounds for FedGA,
GradAlign and SCAFFOLD, 400 for the others), seed 0, ties to the earlier run of the sweep: exactly
`mpiclip sweep best`. The ``-seeds`` sweeps rerun those configurations with run.seed = 1 and 2; where their
traces exist the tables give the mean ± sample std over the seeds, else seed 0 alone.

The page (``RESULTS.md``; ``mpiclip reproduce fed --full --out docs/fed`` writes docs/fed/RESULTS.md):

* the claim, comparison by comparison (FedGA − FedAvg, GradAlign − LB-SGD, ...): accuracy differences with
  their standard errors and variance ratios, at equal communication and at equal server rounds;
* overviews (one row per setting, one column per method) of the final test accuracy, the gradient variance
  and the accuracy over the last 10% of the budget, and the same at equal server rounds;
* per sweep, the β sensitivity figure (FedGA/GradAlign's final accuracy and variance against β);
* per setting, its figure (test accuracy against communication rounds and uplink bits, gradient variance
  against server rounds) and its tables: A (equal communication rounds), B (equal server rounds, also
  re-tuned there), C (equal uplink bits per client), the β and μ sensitivity, and every run of the grid.

The laptop preset runs softmax with P = 10 of the percentage-iid 0 digits and of the sample-weighted
Synthetic(1, 1), for the four methods of the claim (FedGA, GradAlign, FedAvg, large-batch SGD) over a few β
and γ around the best ones of the full grids, at the full budget, and reruns the best configurations of the
full sweeps with seeds 1 and 2 (they are the laptop grid's best too, when the runs give the same numbers):
48 runs, about 4 minutes with ``mpiexec -n 2`` on a busy 2-core machine.

Writing the ``-seeds`` sweeps from the tuning sweeps' traces (after ``mpiclip reproduce fed --full`` or
``mpiclip sweep run`` of the four tuning sweeps)::

    python -m mpiclip.reproduce.federated --write-seeds DIR [--traces results/sweeps] [--laptop] [--overwrite]

writes DIR/<sweep>-seeds.toml for each tuning sweep with traces (an existing file only with --overwrite); run
them with ``mpiclip sweep run``. The page reads the -seeds sweeps the preset plans, i.e. the shipped
mpiclip/sweeps/fed-*-seeds.toml (the ones docs/fed used): new files count once they replace those
(``--write-seeds jobs/sweeps --overwrite``, as docs/fed/README.md does); runs of a -seeds sweep that are not
the tuning sweep's current best configurations are left out, and the page says so. Reads traces only
(never mpi4py).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict

import numpy as np

from mpiclip import config as cfg
from mpiclip import plotting
from mpiclip.plotting import paper_name
from mpiclip.reproduce import Cut, Family
from mpiclip.sweep import read_sweep
from mpiclip.trace import CORRUPT, open_trace

# (tuning sweep, short name of its files, title); each has a "<sweep>-seeds" sweep
SWEEPS = (("fed-digits-oneclass", "oneclass", "Digits, one class per client"),
          ("fed-digits-pct0", "pct0", "Digits, percentage-iid 0"),
          ("fed-synthetic", "synthetic", "Synthetic(1, 1)"),
          ("fed-synthetic-samples", "synthetic-samples", "Synthetic(1, 1), sample-weighted averaging"))
METHODS = ("fedga", "gradalign", "lbsgd", "fedavg", "scaffold", "scaffold_stored", "fedprox")
TUNING = tuple(name for name, _, _ in SWEEPS)
MODELS = {"softmax": "softmax", "mlp": "MLP"}
ALIGNING = ("fedga", "gradalign")
WIDTH = plotting.SIZES["page"][0]  # every figure has the width of a page



# ---------------------------------------------------------------- reading
ROWS = ("rounds", "loss", "test_accuracy", "grad_variance", "comm_rounds")


def read(path: str):
    """(status, {row dataset: values}, uplink bits per client) of a trace: only what the tables need
    (mpiclip.trace.load_trace reads every dataset, 10x slower over a thousand traces); rows None if the
    trace did not complete or cannot be read."""
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


def _key(v: float):
    return None if math.isnan(v) else round(v, 12)


class Run:
    """One completed trace of a sweep."""

    def __init__(self, sweep_run, rows: dict, bits: np.ndarray):
        c = sweep_run.config
        self.sweep_run, self.index, self.label = sweep_run, sweep_run.index, sweep_run.label
        self.values = dict(sweep_run.values)
        self.method = c.method.name
        self.model = c.problem.name
        self.P = c.section("federated").participants(c.run.n_workers)
        self.n = c.run.n_workers
        self.gamma = float(c.stepsize.value)
        self.beta = float(getattr(c.method.params, "beta", math.nan))
        self.mu = float(getattr(c.method.params, "mu", math.nan))
        self.batch = int(c.section("federated").batch_size)
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
        extra = (f", β = {self.beta:g}" if self.method in ALIGNING
                 else f", μ = {self.mu:g}" if self.method == "fedprox" else "")
        return f"γ = {self.gamma:g}{extra}"


def completed(sweep) -> tuple[list, int]:
    """(the completed runs of ``sweep``, how many runs it has)."""
    out = []
    for run in sweep.runs:
        path = run.config.trace_path
        if not os.path.exists(path):
            continue
        status, rows, bits = read(path)
        if rows is not None and len(rows["rounds"]):
            out.append(Run(run, rows, bits))
    return out, len(sweep.runs)


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


# ---------------------------------------------------------------- the seeds sweeps
def seeds_text(name: str, table: dict, sweep, seeds=(1, 2), output: str = "results/sweeps/{name}", path: str = "",
               report: str = "mpiclip reproduce fed --full --report-only", tuning: str = "") -> tuple[str, int, int]:
    """(the text of <name>-seeds.toml, configurations, groups without a completed run): the best configuration
    of every (model, P, method) of the tuning sweep ``sweep`` (read from ``table``) by its traces, rerun with
    run.seed in ``seeds``; everything else as in the tuning sweep. For its comments: ``path``, where the file
    goes; ``report``, the command that writes the page; ``tuning``, the tuning sweep's file."""
    chosen = best_of(completed(sweep)[0])
    groups = {(r.config.problem.name, r.config.section("federated").participants(r.config.run.n_workers), r.config.method.name)
              for r in sweep.runs}
    missing = len(groups - set(chosen))
    best = sorted(chosen.values(), key=lambda r: r.index)
    lines = [f"# Generated by `python -m mpiclip.reproduce.federated --write-seeds` from the traces of {name}: the",
             "# best configuration of every (model, P, method) by the final test accuracy (seed 0, as",
             f"# `mpiclip sweep best {tuning or name}`), rerun with run.seed = {', '.join(map(str, seeds))} (x0, client sampling",
             "# and minibatches change; the data and its split do not). Everything else as in the parent sweep.",
             f"#   OMP_NUM_THREADS=1 python -m mpiclip sweep run {path or name + '-seeds.toml'}",
             f"#   {report}      (the tables with the mean over the seeds)",
             "[sweep]", f'name = "{name}-seeds"', f'base = "{table["sweep"]["base"]}"', f"output = {cfg.toml_value(output)}",
             "", "[set]"]
    lines += [f'"{k}" = {cfg.toml_value(v)}' for k, v in table.get("set", {}).items()]
    for r in best:
        lines += ["", f"[[grid]]                        # {MODELS.get(r.model, r.model)}, P = {r.P}: {paper_name(r.method)}"]
        lines += [f'"{k}" = [{cfg.toml_value(v)}]' for k, v in r.sweep_run.values if k != "run.seed"]
        lines += [f'"run.seed" = {cfg.toml_value(list(seeds))}']
    select = table.get("select", {})
    lines += ["", "[select]"] + [f"{k} = {cfg.toml_value(v)}" for k, v in select.items()]
    return "\n".join(lines) + "\n", len(best), missing


def write_seeds(out: str, preset: str = "full", traces: str | None = None, seeds=(1, 2), overwrite: bool = False,
                say=print, family: Family | None = None) -> list[str]:
    """out/<sweep>-seeds.toml for every tuning sweep of ``family`` (default: this one) at ``preset`` that has
    completed traces in ``traces`` (default: where `mpiclip reproduce fed` puts them); an existing file only
    with ``overwrite``. Returns the files written."""
    from mpiclip.reproduce import default_dirs, plan

    traces = traces or default_dirs(["fed"], preset, None, None)[1]
    written = []
    for p in plan(family or FAMILY, preset, traces):
        name = p.sweep.params.name
        if name not in TUNING:
            continue
        path = os.path.join(out, f"{name}-seeds.toml")
        report = "mpiclip reproduce fed" + (" --full" if preset == "full" else "") + " --report-only"
        text, count, missing = seeds_text(name, cfg.tomllib.loads(p.text), p.sweep, seeds, os.path.join(traces, "{name}"),
                                          path, report, p.path)
        if count == 0:
            say(f"{name}: no completed traces in {os.path.join(traces, name)}; nothing written")
            continue
        if os.path.exists(path) and not overwrite:
            say(f"{path} exists; not written (--overwrite replaces it)")
            continue
        os.makedirs(out, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        written.append(path)
        say(f"{path}: {count} configurations x {len(seeds)} seeds" + (f" ({missing} groups without runs)" if missing else ""))
    return written


# ---------------------------------------------------------------- statistics
def stats(values: list) -> tuple:
    v = np.array([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return (math.nan, math.nan, 0)
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v))


def pm(values: list, digits: int = 3, pct: bool = False) -> str:
    """'mean ± sample std' (the mean alone for one value), in % with one decimal if ``pct``."""
    mean, std, k = stats(values)
    if k == 0:
        return "-"
    if pct:
        return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if k > 1 else "")
    return f"{mean:.{digits}g}" + (f" ± {std:.{digits - 1}g}" if k > 1 else "")


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
        # the communication budget (400 in the shipped sweeps) and the equal-server-rounds row (200): its half
        self.budget = int(max(r.comm[-1] for r in runs))
        self.server_rounds = self.budget // 2

    def methods(self):
        return [m for m in METHODS if m in self.best]


def settings_of(name: str, short: str, title: str, sweep, seeds_sweep) -> tuple[list, list]:
    """(the settings of a tuning sweep with their seeds, sentences for the page about what is missing)."""
    runs, total = completed(sweep)
    if not runs:
        return [], [f"`{name}`: none of its {total} runs has completed yet."]
    notes = []
    best = best_of(runs)
    extra: dict = defaultdict(list)
    stale = []
    if seeds_sweep is None:
        notes.append(f"`{name}-seeds` is not in this preset: seed 0 alone.")
    else:
        seeded, seeds_total = completed(seeds_sweep)
        for r in seeded:
            chosen = best.get((r.model, r.P, r.method))
            if chosen is not None and chosen.hyper == r.hyper and r.seed != chosen.seed:
                extra[r.hyper].append(r)
            else:
                stale.append(r.label)
        if not seeded:
            notes.append(f"`{name}-seeds`: none of its {seeds_total} runs has completed yet: seed 0 alone.")
        if stale:
            notes.append(f"`{name}-seeds`: {len(stale)} of its completed runs are not the best configurations of "
                         f"`{name}` (left out; `python -m mpiclip.reproduce.federated --write-seeds` writes the "
                         f"current ones), e.g. {stale[0]}.")
    if len(runs) < total:
        notes.append(f"`{name}`: {len(runs)} of its {total} runs have completed; the best configurations are "
                     "those of the completed runs.")
    out = []
    for model, P in sorted({r.setting for r in runs}, key=lambda s: (list(MODELS).index(s[0]) if s[0] in MODELS
                                                                       else len(MODELS), s[0], -s[1])):
        here = [r for r in runs if r.setting == (model, P)]
        b = {m: best[(model, P, m)] for m in METHODS if (model, P, m) in best}
        s = {m: [r] + sorted(extra.get(r.hyper, []), key=lambda q: q.seed) for m, r in b.items()}
        out.append(Setting(name, short, title, model, P, here, b, s))
    return out, notes


# ---------------------------------------------------------------- tables: (header, rows)
def table_a(s: Setting) -> tuple:
    rows = []
    for m in s.methods():
        rs = s.seeds[m]
        last = [r.at(len(r.rounds) - 1) for r in rs]
        b = s.best[m]
        rows.append([paper_name(m), b.param_text(), str(last[0]["round"]), str(last[0]["comm"]), f"{last[0]['bits']:.3g}",
                     str(len(rs)), pm([x["acc"] for x in last], pct=True), pm([r.tail_acc() for r in rs], pct=True),
                     pm([x["var"] for x in last]), pm([x["loss"] for x in last]), f"{100 * last[0]['acc']:.1f}"])
    return (["method", "best configuration", "server rounds", "comm rounds (code)", "uplink bits/client", "seeds",
             "test accuracy %", "last-10% mean acc %", "grad variance", "train loss f(x)", "seed 0 acc %"], rows)


def best_at_round(s: Setting, method: str, t: int):
    """The seed-0 run of the grid with the best test accuracy at round t (ties: the earlier run)."""
    best, score = None, -math.inf
    for r in sorted(s.runs, key=lambda r: r.index):
        if r.method != method or r.seed != 0:
            continue
        a = float(r.acc[r.row_at_round(t)])
        if np.isfinite(a) and a > score:
            best, score = r, a
    return best


def table_b(s: Setting) -> tuple:
    t = s.server_rounds
    rows = []
    for m in s.methods():
        rs = s.seeds[m]
        at = [r.at(r.row_at_round(t)) for r in rs]
        retuned = best_at_round(s, m, t)
        rt = retuned.at(retuned.row_at_round(t)) if retuned else None
        rows.append([paper_name(m), str(at[0]["round"]), str(at[0]["comm"]), pm([x["acc"] for x in at], pct=True),
                     pm([x["var"] for x in at]), pm([x["loss"] for x in at]),
                     retuned.param_text() if retuned else "-", f"{100 * rt['acc']:.1f}" if rt else "-",
                     fmt(rt["var"]) if rt else "-"])
    return (["method", "server rounds", "comm rounds (code)", "test accuracy %", "grad variance", "train loss",
             f"re-tuned at round {t} (seed 0)", "its acc %", "its grad variance"], rows)


def bits_budget(s: Setting) -> float:
    """FedAvg's final uplink bits per client (or the first method's, without FedAvg)."""
    ref = s.best.get("fedavg") or s.best[s.methods()[0]]
    return float(ref.bits[-1])


def table_c(s: Setting) -> tuple:
    budget = bits_budget(s)
    rows = []
    for m in s.methods():
        rs = s.seeds[m]
        at = [r.at(r.row_within_bits(budget)) for r in rs]
        rows.append([paper_name(m), str(at[0]["round"]), str(at[0]["comm"]), f"{at[0]['bits']:.3g}",
                     pm([x["acc"] for x in at], pct=True), pm([x["var"] for x in at]), pm([x["loss"] for x in at])])
    return (["method", "server rounds", "comm rounds (code)", "uplink bits/client", "test accuracy %", "grad variance",
             "train loss"], rows)


def pick(runs: list):
    """The best final test accuracy (ties: the earlier run of the sweep), as `sweep best`."""
    return max(runs, key=lambda r: (np.nan_to_num(r.acc[-1], nan=-1.0), -r.index))


def failed(runs: list) -> str:
    """The step sizes whose run collapsed (chance-level accuracy, e.g. the constant predictor) or diverged."""
    bad = [r.gamma for r in sorted(runs, key=lambda r: r.gamma)
           if not (np.isfinite(r.loss[-1]) and r.loss[-1] < r.loss[0] and r.acc[-1] >= 0.2)]
    return ", ".join(f"{g:g}" for g in bad) if bad else "none"


def sensitivity(s: Setting) -> tuple:
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
            rows.append([paper_name(m), f"{sym} = {v:g}", f"{b.gamma:g}", f"{100 * b.acc[i]:.1f}", fmt(b.var[i]),
                         fmt(b.loss[i]), failed(groups[v])])
    return (["method", "value", "best γ", "test acc %", "grad variance", "train loss",
             "γ that failed (final test acc < 20% or f above its start)"], rows)


def grid_table(s: Setting) -> tuple:
    """Final test accuracy (%) of every seed-0 run: rows method (β, μ), columns γ."""
    cells = defaultdict(dict)
    gammas = set()
    for r in s.runs:
        if r.seed != 0:
            continue
        extra = (f", β = {r.beta:g}" if r.method in ALIGNING else f", μ = {r.mu:g}" if r.method == "fedprox" else "")
        key = (METHODS.index(r.method), _key(r.beta) or 0.0, _key(r.mu) or 0.0, paper_name(r.method) + extra)
        a = r.acc[-1]
        cells[key][r.gamma] = f"{100 * a:.1f}" if np.isfinite(a) else "nan"
        gammas.add(r.gamma)
    gs = sorted(gammas)
    return (["method"] + [f"γ = {g:g}" for g in gs], [[k[3]] + [cells[k].get(g, "") for g in gs] for k in sorted(cells)])


def _methods(settings: list) -> list:
    return [m for m in METHODS if any(m in s.best for s in settings)]


def headline(settings: list, row_of) -> tuple:
    """Two overview tables: mean test accuracy and mean gradient variance at the row ``row_of(setting, run)``."""
    ms = _methods(settings)
    acc, var = [], []
    for s in settings:
        a_row, v_row = [s.title], [s.title]
        for m in ms:
            rs = s.seeds.get(m)
            a_row.append(pm([float(r.acc[row_of(s, r)]) for r in rs], pct=True) if rs else "-")
            v_row.append(pm([float(r.var[row_of(s, r)]) for r in rs], digits=2) if rs else "-")
        acc.append(a_row)
        var.append(v_row)
    header = ["setting"] + [paper_name(m) for m in ms]
    return (header, acc), (header, var)


def overview(settings: list, cell) -> tuple:
    """One row per setting, one column per method: cell(the method's runs over the seeds)."""
    ms = _methods(settings)
    return (["setting"] + [paper_name(m) for m in ms],
            [[s.title] + [cell(s.seeds[m]) if s.seeds.get(m) else "-" for m in ms] for s in settings])


PAIRS = (("fedga", "fedavg"), ("gradalign", "lbsgd"), ("fedga", "lbsgd"), ("gradalign", "fedavg"))


def claim_table(settings: list, row_of, pairs=PAIRS) -> tuple:
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
            acc_a = np.array([100 * float(r.acc[row_of(s, r)]) for r in a])
            acc_b = np.array([100 * float(r.acc[row_of(s, r)]) for r in b])
            var_a = np.array([float(r.var[row_of(s, r)]) for r in a])
            var_b = np.array([float(r.var[row_of(s, r)]) for r in b])
            diff = acc_a.mean() - acc_b.mean()
            se = math.sqrt(sum(v.var(ddof=1) / len(v) if len(v) > 1 else 0.0 for v in (acc_a, acc_b)))
            word = "tie" if abs(diff) <= 2 * se or (se == 0 and diff == 0) else ("higher" if diff > 0 else "lower")
            vword = "lower" if var_a.max() < var_b.min() else "higher" if var_a.min() > var_b.max() else "overlap"
            row += [f"{diff:+.1f} ± {se:.1f} ({word})", f"{var_a.mean() / var_b.mean():.2f}x ({vword})"]
        rows.append(row)
    header = ["setting"]
    for m, base in pairs:
        a, b = paper_name(m), paper_name(base)
        header += [f"{a} − {b}: Δ acc (points)", f"{a} / {b}: variance ratio"]
    return header, rows


FINAL = lambda s, r: len(r.rounds) - 1  # the row at equal communication (the last)
SERVER = lambda s, r: r.row_at_round(s.server_rounds)  # the row at equal server rounds


# ---------------------------------------------------------------- figures
def _band(runs: list, x_of, y_of):
    """x of the first seed, and mean, min, max of y over the seeds (on the rows they share)."""
    k = min(len(r.rounds) for r in runs)
    x = x_of(runs[0])[:k]
    ys = np.array([y_of(r)[:k] for r in runs])
    return x, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def _title(text: str, fontsize: float = 9) -> str:
    return plotting.wrapped(text, WIDTH, fontsize)


def _legend(fig, axes, ncols: int) -> None:
    """One legend below the axes, each label once (the curves of every panel are the same methods)."""
    seen = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(ncols, len(seen)), frameon=False)



def setting_figure(s: Setting):
    """Test accuracy against communication rounds and against uplink bits per client, gradient variance against
    server rounds: each method's best configuration, the mean over the seeds with a band from min to max."""
    plt = plotting.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 3.7), layout="constrained")
    panels = ((lambda r: r.comm, lambda r: 100 * r.acc, "communication rounds\n(the GradAlign code's count)",
               "test accuracy (%)", False),
              (lambda r: r.bits, lambda r: 100 * r.acc, "uplink bits per client\n(mean over the n clients)",
               "test accuracy (%)", False),
              (lambda r: r.rounds, lambda r: r.var, "server rounds", "gradient variance", True))
    accs = []
    for ax, (x_of, y_of, xlabel, ylabel, log) in zip(axes, panels):
        dropped = 0
        for m in s.methods():
            rs = s.seeds[m]
            x, mean, lo, hi = _band(rs, x_of, y_of)
            keep = np.isfinite(mean) & ((mean > 0) if log else True)
            dropped += int(np.sum(np.isfinite(mean) & ~keep))
            style = plotting.method_style(m)
            ax.plot(x[keep], mean[keep], lw=1.2, ms=3.5, markevery=0.1, label=f"{paper_name(m)} ({s.best[m].param_text()})",
                    **style)
            if len(rs) > 1:
                band = keep & np.isfinite(lo) & ((lo > 0) if log else True)
                ax.fill_between(x[band], lo[band], hi[band], color=style["color"], alpha=0.15, lw=0)
            if not log:
                accs.append(mean)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.get_major_locator().set_params(nbins=4)
        if log:
            ax.set_yscale("log")
            plotting.log_note(ax, dropped)
    late = np.concatenate([a[len(a) // 4:] for a in accs]) if accs else np.array([0.0])
    late = late[np.isfinite(late)] if np.isfinite(late).any() else np.array([0.0])
    lo, hi = max(0.0, float(np.percentile(late, 2)) - 5.0), min(100.0, float(np.max(late)) + 2.0)
    for ax in axes[:2]:
        ax.set_ylim(lo, max(hi, lo + 1.0))
    k = max(len(v) for v in s.seeds.values())
    fig.suptitle(_title(f"{s.title}: each method's best configuration (final test accuracy at {s.budget} communication "
                        f"rounds); mean over {k} seed{'s' if k > 1 else ''}" + (", band from min to max" if k > 1 else "")),
                 fontsize=9)
    _legend(fig, axes, 3)
    return fig


def beta_figure(settings: list, title: str):
    """Per setting: the final test accuracy and gradient variance of FedGA/GradAlign at each β (best γ), with
    FedAvg, large-batch SGD and SCAFFOLD (their best configuration, seed 0) as horizontal lines. Two rows
    (accuracy, variance) of one column per setting; one setting: the two panels side by side."""
    plt = plotting.pyplot()
    one = len(settings) == 1
    fig, axes = plt.subplots(1 if one else 2, 2 if one else len(settings), squeeze=False, layout="constrained",
                             figsize=(WIDTH, 3.3 if one else 5.2))
    pairs = [(axes[0, 0], axes[0, 1])] if one else [(axes[0, j], axes[1, j]) for j in range(len(settings))]
    for j, (s, (top, bottom)) in enumerate(zip(settings, pairs)):
        dropped = 0
        for m in ALIGNING:
            groups = defaultdict(list)
            for r in s.runs:
                if r.method == m and r.seed == 0:
                    groups[r.beta].append(r)
            if not groups:
                continue
            bs = sorted(groups)
            best = [pick(groups[b]) for b in bs]
            style = plotting.method_style(m)
            top.plot(bs, [100 * r.acc[-1] for r in best], lw=1.2, ms=4, label=paper_name(m), **style)
            var = np.array([r.var[-1] for r in best], dtype=float)
            keep = np.isfinite(var) & (var > 0)
            dropped += int(np.sum(np.isfinite(var) & ~keep))
            bottom.plot(np.array(bs)[keep], var[keep], lw=1.2, ms=4, label=paper_name(m), **style)
        for m in ("fedavg", "lbsgd", "scaffold"):
            r = s.best.get(m)
            if r is None:
                continue
            color = plotting.method_style(m)["color"]
            top.axhline(100 * r.acc[-1], ls="--", color=color, lw=1.0, label=f"{paper_name(m)} (best γ)")
            if np.isfinite(r.var[-1]) and r.var[-1] > 0:
                bottom.axhline(r.var[-1], ls="--", color=color, lw=1.0, label=f"{paper_name(m)} (best γ)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xlabel("β")
            ax.grid(True, which="both", alpha=0.3)
        bottom.set_yscale("log")
        plotting.log_note(bottom, dropped)
        panel = f"{MODELS.get(s.model, s.model)}, P = {s.P}"
        top.set_title(panel)
        if one:
            bottom.set_title(panel)
        if j == 0 or one:
            top.set_ylabel("final test accuracy (%)")
            bottom.set_ylabel("final gradient variance")
        accs = [100 * r.acc[-1] for r in s.best.values() if np.isfinite(r.acc[-1])]
        if accs:
            top.set_ylim(max(0.0, min(accs) - 15), min(100.0, max(accs) + 3))
    fig.suptitle(_title(f"{title}: β sensitivity at {settings[0].budget} communication rounds (seed 0; FedGA and "
                        "GradAlign at the best γ of each β, the other methods' best configuration as dashed lines)"),
                 fontsize=9)
    _legend(fig, [a for pair in pairs for a in pair], 5)
    return fig


# ---------------------------------------------------------------- the page
def _counts(settings: list) -> str:
    budgets = sorted({s.budget for s in settings})
    b = "/".join(map(str, budgets))
    half = "/".join(str(x // 2) for x in budgets)
    return f"""Counts of communication used by the tables:

* **A, equal communication rounds as the official code counts them**: FedGA, GradAlign and SCAFFOLD
  (fresh control variates) spend 2 rounds per server round (the all-reduce of the full local gradients
  and the all-reduce of the models), FedAvg, FedProx and large-batch SGD 1, SCAFFOLD with stored
  variates 1 (it sends Δc_i beside its update in the same round). Budget {b} rounds: {half} server rounds
  for the aligning methods, {b} for the others. The best configuration is chosen here.
* **B, equal server rounds** ({half}): the aligning methods' final rows against the row at round {half} of the
  {b}-round runs, with the same configurations; the re-tuned columns choose again by the accuracy at
  round {half} (a run's first {half} rounds are exactly a {half}-round run: nothing depends on run.rounds).
* **C, equal uplink bits per client** (FedAvg's final bits; 32 bits per float): the same as A for every
  method but SCAFFOLD (stored), which sends 2d floats per round and gets {half} server rounds."""


def write(page, sweeps: dict) -> None:
    absent = [name for name in TUNING if name not in sweeps]
    found = []  # (name, title, settings, notes)
    for name, short, title in SWEEPS:
        if name in sweeps:
            settings, notes = settings_of(name, short, title, sweeps[name], sweeps.get(f"{name}-seeds"))
            found.append((name, title, settings, notes))
    orphans = [s for s in sweeps if s.endswith("-seeds") and s[:-len("-seeds")] not in sweeps]
    everything = [s for _, _, settings, _ in found for s in settings]
    page.text("Test accuracy in %, mean ± sample std over the seeds (seed 0 of the tuning sweep and seeds 1, 2 of "
              "its `-seeds` sweep, where they have run); gradient variance (1/n)Σ‖∇f_i(x) − ∇f(x)‖² over all n "
              "clients and the train loss f(x) = (1/n)Σ f_i(x) (exact, with the weight decay) at the same row. "
              "Best configuration per method: the best final test accuracy at equal communication (seed 0), as "
              "`mpiclip sweep best`. The discussion of the full results is in docs/fed/README.md.")
    if absent:
        page.text("Not in this preset: " + ", ".join(f"`{n}`" for n in absent) + " (`--full` runs every sweep).")
    if orphans:
        page.text("Left out: " + ", ".join(f"`{n}`" for n in orphans) + " (its tuning sweep is not in this preset).")
    if not everything:
        page.text("No completed runs yet: nothing to show.")
        for _, _, _, notes in found:
            page.text(*notes)
        return
    page.text(_counts(everything))
    page.heading("The claim, comparison by comparison")
    page.text("Difference of the mean test accuracy (percentage points) ± its standard error over the seeds, "
              "'higher'/'lower' when beyond 2 SE; the ratio of the mean gradient variances, 'lower'/'higher' when "
              "the seeds' ranges do not overlap. The claim: FedGA/GradAlign higher accuracy and lower variance than "
              "FedAvg and large-batch SGD.",
              "At equal communication rounds as the official code counts them (FedGA/GradAlign half the server rounds "
              "of FedAvg/large-batch SGD); the same at equal uplink bits per client:")
    page.table("claim-equal-communication", *claim_table(everything, FINAL), align="l" + "r" * 2 * len(PAIRS))
    half = "/".join(sorted({str(s.server_rounds) for s in everything}))
    page.text(f"At equal server rounds ({half}; FedGA/GradAlign then use twice the communication):")
    page.table("claim-equal-server-rounds", *claim_table(everything, SERVER), align="l" + "r" * 2 * len(PAIRS))
    page.heading("Overview at equal communication rounds (the code's count)")
    acc, var = headline(everything, FINAL)
    page.text("Final test accuracy (%), mean ± std over the seeds:")
    page.table("overview-accuracy", *acc)
    page.text("Final gradient variance, mean ± std over the seeds:")
    page.table("overview-variance", *var)
    page.text("Mean test accuracy (%) over the last 10% of the communication rounds, mean ± std over the seeds "
              "(the final row is partly luck for runs that oscillate):")
    page.table("overview-last-10pct-accuracy", *overview(everything, lambda rs: pm([r.tail_acc() for r in rs], pct=True)))
    page.heading(f"Overview at equal server rounds ({half}; the same configurations)")
    acc, var = headline(everything, SERVER)
    page.text(f"Test accuracy (%) at server round {half}, mean ± std over the seeds:")
    page.table("overview-server-rounds-accuracy", *acc)
    page.text(f"Gradient variance at server round {half}, mean ± std over the seeds:")
    page.table("overview-server-rounds-variance", *var)
    for name, title, settings, notes in found:
        page.heading(f"{title} (`{name}`)")
        page.text(*notes)
        if not settings:
            continue
        short = settings[0].short
        if any(r.method in ALIGNING for s in settings for r in s.runs):
            page.figure(f"beta-{short}", beta_figure(settings, title), f"β sensitivity, {title}")
        for s in settings:
            page.heading(s.title, 3)
            if not s.best:
                page.text(f"None of its {len(s.runs)} completed runs has a finite final test accuracy.")
                continue
            page.figure(s.slug, setting_figure(s), s.title)
            page.text(f"**A. Equal communication rounds as the official code counts them ({s.budget}):**")
            page.table(f"{s.slug}-A", *table_a(s))
            page.text(f"**B. Equal server rounds ({s.server_rounds}):**")
            page.table(f"{s.slug}-B", *table_b(s))
            page.text(f"**C. Equal uplink bits per client ({bits_budget(s):.3g}):**")
            page.table(f"{s.slug}-C", *table_c(s))
            header, rows = sensitivity(s)
            if rows:
                page.text("β and μ (best γ per value, seed 0, final rows):")
                page.table(f"{s.slug}-beta-mu", header, rows)
            page.text("Final test accuracy (%) of every run (seed 0):")
            page.table(f"{s.slug}-grid", *grid_table(s))


# ---------------------------------------------------------------- the family
def _seed_grids(name: str, model: str, P: int, methods: tuple) -> tuple:
    """The laptop cut of a shipped -seeds sweep: its grids of ``model`` at P clients per round for ``methods``."""
    table, _ = read_sweep(name)
    sets = table.get("set", {})
    keep = []
    for grid in table["grid"]:
        value = {**sets, **{key: values[0] for key, values in grid.items()}}
        ok = value.get("problem.name") == model and value.get("federated.clients_per_round") == P and \
            value.get("method.name") in methods
        keep.append({} if ok else None)
    return tuple(keep)


CLAIM = ("fedga", "gradalign", "fedavg", "lbsgd")
_SOFTMAX_P10 = {"problem.name": ["softmax"], "federated.clients_per_round": [10]}
LAPTOP = {
    # softmax, P = 10; the four methods of the claim over a few β and γ around the full grid's best (FedGA β = 4,
    # γ = 0.5; GradAlign β = 0.1, γ = 2; FedAvg γ = 0.1; large-batch SGD γ = 2); the full budget (400 rounds)
    "fed-digits-pct0": Cut(grids=(
        {**_SOFTMAX_P10, "method.beta": [0.1, 1.0], "stepsize.value": [0.5, 1.0]},  # FedGA
        None,  # SCAFFOLD
        {**_SOFTMAX_P10, "method.beta": [0.1, 1.0], "stepsize.value": [1.0, 2.0]},  # GradAlign
        {**_SOFTMAX_P10, "method.name": ["fedavg"], "stepsize.value": [0.05, 0.1, 0.2]},
        None,  # FedProx
        {**_SOFTMAX_P10, "stepsize.value": [1.0, 2.0, 5.0]},  # large-batch SGD
        {"federated.clients_per_round": [10], "method.beta": [4.0], "stepsize.value": [0.5, 1.0]},  # FedGA, β = 4
        None)),
    "fed-digits-pct0-seeds": Cut(grids=_seed_grids("fed-digits-pct0-seeds", "softmax", 10, CLAIM)),
    # the same for Synthetic(1, 1) with sample-weighted averaging (best: FedGA β = 0.1, γ = 0.1; GradAlign
    # β = 0.01, γ = 0.1; FedAvg γ = 0.03; large-batch SGD γ = 0.03)
    "fed-synthetic-samples": Cut(grids=(
        {"method.beta": [0.01, 0.1, 1.0], "stepsize.value": [0.03, 0.1]},
        None,
        {"method.beta": [0.01, 0.1], "stepsize.value": [0.1, 0.3]},
        {"method.name": ["fedavg"], "stepsize.value": [0.01, 0.03, 0.1]},
        None,
        {"stepsize.value": [0.01, 0.03, 0.1]})),
    "fed-synthetic-samples-seeds": Cut(grids=_seed_grids("fed-synthetic-samples-seeds", "softmax", 10, CLAIM)),
}

FAMILY = Family(
    name="fed", title="GradAlign / FedGA under label skew", page="RESULTS.md", docs="docs/fed", write=write,
    sweeps=tuple(n for name in TUNING for n in (name, f"{name}-seeds")),
    laptop=LAPTOP,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mpiclip.reproduce.federated",
        description="Write <sweep>-seeds.toml for each tuning sweep of the fed family: its best configurations by "
        "the traces (as `mpiclip sweep best`), rerun with more seeds. The pages: `mpiclip reproduce fed`.")
    ap.add_argument("--write-seeds", metavar="DIR", required=True, help="the directory of the -seeds sweep files")
    ap.add_argument("--traces", metavar="DIR", help="the traces of the tuning sweeps, as `mpiclip reproduce --traces` "
                    "(default: results/sweeps, or results/sweeps/laptop with --laptop)")
    ap.add_argument("--laptop", action="store_true", help="the laptop preset's tuning sweeps (default: the full ones)")
    ap.add_argument("--seeds", default="1,2", help="the seeds of the reruns (default 1,2)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = ap.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    written = write_seeds(args.write_seeds, "laptop" if args.laptop else "full", args.traces, seeds, args.overwrite)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
