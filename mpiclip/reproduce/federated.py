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
(never mpi4py): what the page reads of each run and how it chooses are in federated_runs.py, its figures in
federated_figures.py.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict

import numpy as np

from mpiclip.plotting import paper_name
from mpiclip.reproduce import Cut, Family
from mpiclip.reproduce.federated_figures import beta_figure, setting_figure
from mpiclip.reproduce.federated_runs import (
    ALIGNING,
    METHODS,
    SWEEPS,
    TUNING,
    Setting,
    accuracy,
    as_key,
    at,
    best_at_round,
    beta,
    bits,
    last_row,
    loss,
    mu,
    param_text,
    pick,
    row_at_round,
    row_within_bits,
    settings_of,
    tail_acc,
    variance,
    write_seeds,
)
from mpiclip.reproduce.page import Spread
from mpiclip.sweep import read_sweep


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
    scale = 100 if pct else 1
    low, high = (scale * (mean - std), scale * (mean + std)) if k > 1 else (None, None)
    if pct:
        return Spread(f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if k > 1 else ""), 100 * mean, low, high)
    return Spread(f"{mean:.{digits}g}" + (f" ± {std:.{digits - 1}g}" if k > 1 else ""), mean, low, high)


def fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


# ---------------------------------------------------------------- tables: (header, rows)
def table_a(s: Setting) -> tuple:
    rows = []
    for m in s.methods():
        rs = s.seeds[m]
        last = [at(r, last_row(r)) for r in rs]
        b = s.best[m]
        rows.append([paper_name(m), param_text(b), str(last[0]["round"]), str(last[0]["comm"]), f"{last[0]['bits']:.3g}",
                     str(len(rs)), pm([x["acc"] for x in last], pct=True), pm([tail_acc(r) for r in rs], pct=True),
                     pm([x["var"] for x in last]), pm([x["loss"] for x in last]), f"{100 * last[0]['acc']:.1f}"])
    return (["method", "best configuration", "server rounds", "comm rounds (code)", "uplink bits/client", "seeds",
             "test accuracy %", "last-10% mean acc %", "grad variance", "train loss f(x)", "seed 0 acc %"], rows)


def table_b(s: Setting) -> tuple:
    t = s.server_rounds
    rows, retuning = [], best_at_round(s.runs, t)
    for m in s.methods():
        rs = s.seeds[m]
        here = [at(r, row_at_round(r, t)) for r in rs]
        retuned = retuning.get(m)
        rt = at(retuned, row_at_round(retuned, t)) if retuned else None
        rows.append([paper_name(m), str(here[0]["round"]), str(here[0]["comm"]), pm([x["acc"] for x in here], pct=True),
                     pm([x["var"] for x in here]), pm([x["loss"] for x in here]),
                     param_text(retuned) if retuned else "-", f"{100 * rt['acc']:.1f}" if rt else "-",
                     fmt(rt["var"]) if rt else "-"])
    return (["method", "server rounds", "comm rounds (code)", "test accuracy %", "grad variance", "train loss",
             f"re-tuned at round {t} (seed 0)", "its acc %", "its grad variance"], rows)


def bits_budget(s: Setting) -> float:
    """FedAvg's final uplink bits per client (or the first method's, without FedAvg)."""
    ref = s.best.get("fedavg") or s.best[s.methods()[0]]
    return float(bits(ref)[-1])


def table_c(s: Setting) -> tuple:
    budget = bits_budget(s)
    rows = []
    for m in s.methods():
        rs = s.seeds[m]
        here = [at(r, row_within_bits(r, budget)) for r in rs]
        rows.append([paper_name(m), str(here[0]["round"]), str(here[0]["comm"]), f"{here[0]['bits']:.3g}",
                     pm([x["acc"] for x in here], pct=True), pm([x["var"] for x in here]), pm([x["loss"] for x in here])])
    return (["method", "server rounds", "comm rounds (code)", "uplink bits/client", "test accuracy %", "grad variance",
             "train loss"], rows)


def failed(runs: list) -> str:
    """The step sizes whose run collapsed (chance-level accuracy, e.g. the constant predictor) or diverged."""
    bad = [r.gamma for r in sorted(runs, key=lambda r: r.gamma)
           if not (np.isfinite(loss(r)[-1]) and loss(r)[-1] < loss(r)[0] and accuracy(r)[-1] >= 0.2)]
    return ", ".join(f"{g:g}" for g in bad) if bad else "none"


def sensitivity(s: Setting) -> tuple:
    """FedGA/GradAlign per β, FedProx per μ: the best γ of each value (final test accuracy, seed 0)."""
    rows = []
    for m, value_of, sym in (("fedga", beta, "β"), ("gradalign", beta, "β"), ("fedprox", mu, "μ")):
        groups = defaultdict(list)
        for r in s.runs:
            if r.method == m and r.seed == 0:
                groups[value_of(r)].append(r)
        for v in sorted(groups):
            b = pick(groups[v])
            i = last_row(b)
            rows.append([paper_name(m), f"{sym} = {v:g}", f"{b.gamma:g}", f"{100 * accuracy(b)[i]:.1f}", fmt(variance(b)[i]),
                         fmt(loss(b)[i]), failed(groups[v])])
    return (["method", "value", "best γ", "test acc %", "grad variance", "train loss",
             "γ that failed (final test acc < 20% or f above its start)"], rows)


def grid_table(s: Setting) -> tuple:
    """Final test accuracy (%) of every seed-0 run: rows method (β, μ), columns γ."""
    cells = defaultdict(dict)
    gammas = set()
    for r in s.runs:
        if r.seed != 0:
            continue
        extra = (f", β = {beta(r):g}" if r.method in ALIGNING else f", μ = {mu(r):g}" if r.method == "fedprox" else "")
        key = (METHODS.index(r.method), as_key(beta(r)) or 0.0, as_key(mu(r)) or 0.0, paper_name(r.method) + extra)
        a = accuracy(r)[-1]
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
            a_row.append(pm([float(accuracy(r)[row_of(s, r)]) for r in rs], pct=True) if rs else "-")
            v_row.append(pm([float(variance(r)[row_of(s, r)]) for r in rs], digits=2) if rs else "-")
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
            acc_a = np.array([100 * float(accuracy(r)[row_of(s, r)]) for r in a])
            acc_b = np.array([100 * float(accuracy(r)[row_of(s, r)]) for r in b])
            var_a = np.array([float(variance(r)[row_of(s, r)]) for r in a])
            var_b = np.array([float(variance(r)[row_of(s, r)]) for r in b])
            diff = acc_a.mean() - acc_b.mean()
            se = math.sqrt(sum(v.var(ddof=1) / len(v) if len(v) > 1 else 0.0 for v in (acc_a, acc_b)))
            word = "tie" if abs(diff) <= 2 * se or (se == 0 and diff == 0) else ("higher" if diff > 0 else "lower")
            vword = "lower" if var_a.max() < var_b.min() else "higher" if var_a.min() > var_b.max() else "overlap"
            row += [Spread(f"{diff:+.1f} ± {se:.1f} ({word})", diff, diff - se, diff + se),
                    f"{var_a.mean() / var_b.mean():.2f}x ({vword})"]
        rows.append(row)
    header = ["setting"]
    for m, base in pairs:
        a, b = paper_name(m), paper_name(base)
        header += [f"{a} − {b}: Δ acc (points)", f"{a} / {b}: variance ratio"]
    return header, rows


FINAL = lambda s, r: last_row(r)  # the row at equal communication (the last)
SERVER = lambda s, r: row_at_round(r, s.server_rounds)  # the row at equal server rounds


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
    page.table("overview-last-10pct-accuracy", *overview(everything, lambda rs: pm([tail_acc(r) for r in rs], pct=True)))
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
