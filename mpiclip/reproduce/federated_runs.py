"""What the GradAlign page (mpiclip.reproduce.federated) reads from each run of its sweeps, and how it chooses.

Per run (a :class:`mpiclip.results.Run` of the columns in ``COLUMNS``): the test accuracy, gradient variance,
train loss, server and communication rounds and uplink bits per client of every row, the model, the clients
per round and the hyper-parameters. Per setting (sweep, model, clients per round): each method's best
configuration, the run with the best final test accuracy (seed 0; ties to the earlier run, a NaN accuracy never
wins: `mpiclip sweep best` with metric = "test_accuracy", criterion = "final"), with its reruns over seeds. And
the ``-seeds`` sweep files that rerun those configurations (``python -m mpiclip.reproduce.federated
--write-seeds``). Reads traces only (never mpi4py).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

import numpy as np

from mpiclip import config as cfg
from mpiclip import results
from mpiclip.plotting import paper_name
from mpiclip.reproduce import Family

# (tuning sweep, short name of its files, title); each has a "<sweep>-seeds" sweep
SWEEPS = (("fed-digits-oneclass", "oneclass", "Digits, one class per client"),
          ("fed-digits-pct0", "pct0", "Digits, percentage-iid 0"),
          ("fed-synthetic", "synthetic", "Synthetic(1, 1)"),
          ("fed-synthetic-samples", "synthetic-samples", "Synthetic(1, 1), sample-weighted averaging"))
METHODS = ("fedga", "gradalign", "lbsgd", "fedavg", "scaffold", "scaffold_stored", "fedprox")
TUNING = tuple(name for name, _, _ in SWEEPS)
MODELS = {"softmax": "softmax", "mlp": "MLP"}
ALIGNING = ("fedga", "gradalign")
SCALARS = ("test_accuracy", "grad_variance", "comm_rounds")
COLUMNS = ("rounds", "loss", *SCALARS, "bits/up/paper")  # all the page reads of a trace


# ---------------------------------------------------------------- one run
def accuracy(r) -> np.ndarray:
    return r.trace.metrics["test_accuracy"]


def variance(r) -> np.ndarray:
    """(1/n)Σ‖∇f_i(x) − ∇f(x)‖² over all clients, per row."""
    return r.trace.metrics["grad_variance"]


def loss(r) -> np.ndarray:
    return r.trace.loss


def comm(r) -> np.ndarray:
    """Communication rounds before each row, as the GradAlign code counts them."""
    return r.trace.metrics["comm_rounds"]


def rounds(r) -> np.ndarray:
    """Server rounds of the rows."""
    return r.trace.rounds.astype(float)


def bits(r) -> np.ndarray:
    """Uplink bits per client before each row: the papers' bits per worker (paper encoding)."""
    return r.trace.bits_per_worker("paper")


def model(r) -> str:
    return r.config.problem.name


def clients(r) -> int:
    """P, the clients sampled per round."""
    return r.section("federated").participants(r.config.run.n_workers)


def beta(r) -> float:
    return float(r.param("beta"))


def mu(r) -> float:
    return float(r.param("mu"))


def as_key(v: float):
    """A float as a dictionary key: None for NaN (a method without the parameter), else rounded to 12 digits."""
    return None if math.isnan(v) else round(v, 12)


def setting(r) -> tuple:
    return (model(r), clients(r))


def hyper(r) -> tuple:
    """Everything that defines a configuration but the seed."""
    return (model(r), clients(r), r.method, r.gamma, as_key(beta(r)), as_key(mu(r)), int(r.section("federated").batch_size))


def at(r, i: int) -> dict:
    return {"acc": float(accuracy(r)[i]), "var": float(variance(r)[i]), "loss": float(loss(r)[i]),
            "round": int(rounds(r)[i]), "comm": int(comm(r)[i]), "bits": float(bits(r)[i])}


def last_row(r) -> int:
    return len(r.trace.rounds) - 1


def row_at_round(r, t: int) -> int:
    """The row of server round t (the last row if the run is shorter)."""
    return min(int(np.searchsorted(rounds(r), t)), last_row(r))


def row_within_bits(r, budget: float) -> int:
    return max(int(np.searchsorted(bits(r), budget * (1 + 1e-9), side="right")) - 1, 0)


def tail_acc(r) -> float:
    """Mean test accuracy over the rows of the last 10% of the communication budget (steadier than the final row,
    which the selection rewards for luck when a run oscillates)."""
    return float(np.mean(accuracy(r)[comm(r) >= 0.9 * comm(r)[-1]]))


def param_text(r) -> str:
    extra = (f", β = {beta(r):g}" if r.method in ALIGNING else f", μ = {mu(r):g}" if r.method == "fedprox" else "")
    return f"γ = {r.gamma:g}{extra}"


# ---------------------------------------------------------------- choosing
def completed(sweep) -> tuple[list, int]:
    """(the completed runs of ``sweep`` with their test metrics, in sweep order; how many runs it has)."""
    runs = results.runs(sweep, COLUMNS, attrs=())  # status alone: the configs are the sweep's
    return [r for r in runs if len(r.trace.rounds) and all(k in r.trace.metrics for k in SCALARS)], len(sweep.runs)


def best_configurations(runs: list) -> dict:
    """(model, P, method) -> the run with the best final test accuracy (``runs`` in sweep order)."""
    return results.select(runs, lambda r: (model(r), clients(r), r.method), lambda r: -float(accuracy(r)[-1]))


def best_at_round(runs: list, t: int) -> dict:
    """method -> the seed-0 run with the best test accuracy at server round t."""
    return results.select([r for r in runs if r.seed == 0], lambda r: r.method,
                          lambda r: -float(accuracy(r)[row_at_round(r, t)]))


def pick(runs: list):
    """The run with the best final test accuracy; the first run when none has a finite one, so that every value
    of the grid has its row and point."""
    return results.select(runs, lambda r: 0, lambda r: -float(accuracy(r)[-1]), fallback=True)[0]


class Setting:
    """One (sweep, model, P): every run, the best configuration per method and its seeds."""

    def __init__(self, name: str, short: str, title: str, model: str, P: int, runs: list, best: dict, seeds: dict):
        self.name, self.short, self.model, self.P = name, short, model, P
        self.runs = runs
        self.best = best  # method -> Run (seed 0)
        self.seeds = seeds  # method -> [Run] (seed 0 first)
        self.n = runs[0].config.run.n_workers
        self.title = f"{title}, {MODELS.get(model, model)}, P = {P} of {self.n}"
        self.slug = f"{short}-{model}-P{P}"
        # the communication budget (400 in the shipped sweeps) and the equal-server-rounds row (200): its half
        self.budget = int(max(comm(r)[-1] for r in runs))
        self.server_rounds = self.budget // 2

    def methods(self):
        return [m for m in METHODS if m in self.best]


def settings_of(name: str, short: str, title: str, sweep, seeds_sweep) -> tuple[list, list]:
    """(the settings of a tuning sweep with their seeds, sentences for the page about what is missing)."""
    runs, total = completed(sweep)
    if not runs:
        return [], [f"`{name}`: none of its {total} runs has completed yet."]
    notes = []
    best = best_configurations(runs)
    extra: dict = defaultdict(list)
    stale = []
    if seeds_sweep is None:
        notes.append(f"`{name}-seeds` is not in this preset: seed 0 alone.")
    else:
        seeded, seeds_total = completed(seeds_sweep)
        for r in seeded:
            chosen = best.get((model(r), clients(r), r.method))
            if chosen is not None and hyper(chosen) == hyper(r) and r.seed != chosen.seed:
                extra[hyper(r)].append(r)
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
    for problem, P in sorted({setting(r) for r in runs}, key=lambda s: (list(MODELS).index(s[0]) if s[0] in MODELS
                                                                         else len(MODELS), s[0], -s[1])):
        here = [r for r in runs if setting(r) == (problem, P)]
        b = {m: best[(problem, P, m)] for m in METHODS if (problem, P, m) in best}
        s = {m: [r] + sorted(extra.get(hyper(r), []), key=lambda q: q.seed) for m, r in b.items()}
        out.append(Setting(name, short, title, problem, P, here, b, s))
    return out, notes


# ---------------------------------------------------------------- the seeds sweeps
def seeds_text(name: str, table: dict, sweep, seeds=(1, 2), output: str = "results/sweeps/{name}", path: str = "",
               report: str = "mpiclip reproduce fed --full --report-only", tuning: str = "") -> tuple[str, int, int]:
    """(the text of <name>-seeds.toml, configurations, groups without a completed run): the best configuration
    of every (model, P, method) of the tuning sweep ``sweep`` (read from ``table``) by its traces, rerun with
    run.seed in ``seeds``; everything else as in the tuning sweep. For its comments: ``path``, where the file
    goes; ``report``, the command that writes the page; ``tuning``, the tuning sweep's file."""
    chosen = best_configurations(completed(sweep)[0])
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
        lines += ["", f"[[grid]]                        # {MODELS.get(model(r), model(r))}, P = {clients(r)}: "
                      f"{paper_name(r.method)}"]
        lines += [f'"{k}" = [{cfg.toml_value(v)}]' for k, v in r.point.values if k != "run.seed"]
        lines += [f'"run.seed" = {cfg.toml_value(list(seeds))}']
    select = table.get("select", {})
    lines += ["", "[select]"] + [f"{k} = {cfg.toml_value(v)}" for k, v in select.items()]
    return "\n".join(lines) + "\n", len(best), missing


def write_seeds(out: str, preset: str = "full", traces: str | None = None, seeds=(1, 2), overwrite: bool = False,
                say=print, family: Family | None = None) -> list[str]:
    """out/<sweep>-seeds.toml for every tuning sweep of ``family`` (default: the fed family) at ``preset`` that has
    completed traces in ``traces`` (default: where `mpiclip reproduce fed` puts them); an existing file only
    with ``overwrite``. Returns the files written."""
    from mpiclip.reproduce import default_dirs, plan
    from mpiclip.reproduce import family as family_named

    traces = traces or default_dirs(["fed"], preset, None, None)[1]
    written = []
    for p in plan(family or family_named("fed"), preset, traces):
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
