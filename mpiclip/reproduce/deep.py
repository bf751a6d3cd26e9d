"""What the families of the papers' deep-learning experiments share (``ef21-dl``, ``clip21-dl``, ``dp-dl``,
``fed-dl``, ``async-dl``).

Each family's shipped sweeps hold the papers' sizes (their model, data set, worker counts, batch and step
counts; what is guessed is said in each sweep file). Its laptop preset runs the same method comparison cut
to a few grid values, with every run moved to scikit-learn's digits (1×8×8 images, a fifth held out) and a
small CNN (:func:`laptop`): minutes on two cores. A page tunes every method over its grid (the best mean
final test accuracy over seeds), tabulates and draws the best runs, says in numbers whether the paper's
claim shows, and gives the papers' sizes' commands and cost, measured per round on this machine by
``benchmarks/bench_dl_cost.py`` (``dl_costs.json`` beside this module) and extrapolated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Optional

import numpy as np

from mpiclip import plotting, results
from mpiclip.reproduce import Cut
from mpiclip.sweep import Sweep, larger_is_better

LAPTOP_DATA = {"source": "digits", "split": "iid", "test_fraction": 0.2}
LAPTOP_CNN = {"name": "cnn_mnist", "padding": 2, "channels": [8, 16]}  # 8×8 images; d = 5,258 for 10 classes


def laptop(grids: tuple = (), rounds: int = 300, eval_every: int = 20, data: Optional[dict] = None,
           problem: Optional[dict] = None, keys: Optional[dict] = None) -> Cut:
    """A laptop cut: the grids kept as given (subsets of the paper's values), every run on the digits and the
    small CNN (or ``data`` and ``problem``) for ``rounds`` rounds, and ``keys`` set in every run."""
    sets = {"data": data or LAPTOP_DATA, "problem": problem or LAPTOP_CNN, "run.rounds": rounds,
            "run.eval_every": eval_every, **(keys or {})}
    return Cut(grids=grids, set=sets)


@dataclass
class Tuned:
    """A group's best setting: the group's values (``select.group`` key -> value), the setting (the grid's keys
    outside the group, seeds aside), its completed runs (one per seed) and their mean final metric; how many
    runs the group had and how many failed."""

    values: dict
    settings: tuple = ()
    traces: list = field(default_factory=list)
    score: float = float("nan")
    tried: int = 0
    failed: int = 0


def tuned(sweep: Sweep) -> list[Tuned]:
    """Per group of the sweep's ``select.group``, the setting with the best mean final ``select.metric`` over its
    seeds; a setting with a run that did not complete is not eligible."""
    metric, sign = sweep.select.metric, 1.0 if larger_is_better(sweep.select.metric) else -1.0
    read = {r.index: r for r in results.runs(sweep, statuses=None)}  # every trace there is: failed ones are counted
    groups: dict = {}  # group values -> (Tuned, {setting: [trace or None per seed]})
    for run in sweep.runs:
        values = {k: results.config_value(run.config, k) for k in sweep.select.group}
        entry, settings = groups.setdefault(tuple(values.values()), (Tuned(values), {}))
        entry.tried += 1
        done = read.get(run.index)
        entry.failed += done is not None and done.status.startswith("failed")
        setting = tuple((k, v) for k, v in run.values if "." in k and k not in sweep.select.group and k != "run.seed")
        settings.setdefault(setting, []).append(done.trace if done is not None and done.completed else None)
    for entry, settings in groups.values():
        eligible = [(setting, runs, float(np.mean([final(tr, metric) for tr in runs])))
                    for setting, runs in settings.items() if all(tr is not None for tr in runs)]
        best = results.select(eligible, lambda _: 0, lambda e: -sign * e[2]).get(0)  # smaller is better
        if best is not None:
            entry.settings, entry.traces, entry.score = best
    return [entry for entry, _ in groups.values()]


def lookup(best: list[Tuned], **values) -> Optional[Tuned]:
    """The tuned group whose values match (keys with '__' for '.', e.g. method__name="ef21_sgd"), if it ran."""
    wanted = {k.replace("__", "."): v for k, v in values.items()}
    return next((b for b in best if b.traces and all(str(b.values.get(k)) == str(v) for k, v in wanted.items())), None)


def final(tr, metric: str) -> float:
    return float(plotting.y_values(tr, metric)[-1]) if len(tr.rounds) else float("nan")


def settings_text(settings: tuple) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]} {plotting_value(v)}" for k, v in settings) or "-"


def plotting_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


X_COLUMN = {"bits": ("bits per worker", lambda tr: f"{tr.bits_per_worker('paper')[-1]:.3g}"),
            "rounds": ("rounds", lambda tr: str(int(tr.rounds[-1]))),
            "comm_rounds": ("communication rounds", lambda tr: str(int(tr.metrics["comm_rounds"][-1]))),
            "sim_time": ("simulated time", lambda tr: f"{tr.metrics['sim_time'][-1]:.4g}")}


def comparison(page, name: str, sweep: Sweep, x: str, label, split: Optional[str] = None) -> list[Tuned]:
    """The sweep's best setting per group as a table, and its test accuracy and loss against ``x`` (one figure
    per value of the group key ``split``). ``label(tuned)`` names a group in the table and the legends."""
    best = tuned(sweep)
    if not any(b.traces for b in best):
        page.text("No completed runs yet.")
        return best
    column, at_end = X_COLUMN[x]
    mean = lambda b, f: np.mean([f(tr) for tr in b.traces])
    rows = [[label(b), settings_text(b.settings), len(b.traces), f"{b.score:.4f}" if b.traces else "-",
             f"{mean(b, lambda tr: final(tr, 'test_loss')):.4g}" if b.traces else "-",
             f"{mean(b, lambda tr: tr.loss[-1]):.4g}" if b.traces else "-",
             at_end(b.traces[0]) if b.traces else "-", f"{b.tried} ({b.failed})"] for b in best]
    page.text(f"The best setting of each method by the mean final {metric_name(sweep.select.metric)} over its seeds "
              "(runs: tried, in brackets those that failed, e.g. diverged):")
    page.table(name, ["method", "best setting", "seeds", f"final {metric_name(sweep.select.metric)}", "final test loss",
                      "final f (train loss)", column, "runs"], rows)
    parts = sorted({b.values[split] for b in best}, key=str) if split else [None]
    for part in parts:
        chosen = [b for b in best if b.traces and (split is None or b.values[split] == part)]
        if not chosen:
            continue
        suffix = "" if part is None else f"-{split.rsplit('.', 1)[-1]}-{plotting_value(part)}"
        where = "" if part is None else f", {split.rsplit('.', 1)[-1]} = {plotting_value(part)}"
        styles = [{"color": plotting.COLORS[i % len(plotting.COLORS)],  # one colour per curve, a marker per method
                   "marker": plotting.method_style(b.values.get("method.name", ""))["marker"]} for i, b in enumerate(chosen)]
        for y, what in (("test_accuracy", "accuracy"), ("loss", "loss")):
            fig = plotting.draw([b.traces[0] for b in chosen], x=x, y=y, xmax=None, logx=x == "bits",
                                labels=[label(b) for b in chosen], styles=styles,
                                title=f"{name}{where}: {plotting.Y_LABEL.get(y, y)} of each method's best setting "
                                      f"(seed {chosen[0].traces[0].config['run']['seed']})")
            page.figure(f"{name}{suffix}-{what}", fig)
    return best


def metric_name(metric: str) -> str:
    return metric.replace("_", " ")


def score(b: Optional[Tuned]) -> str:
    return "not run" if b is None else f"{b.score:.3f}"


COSTS = "dl_costs.json"


def costs(page, family: str, data: str) -> None:
    """The papers' sizes: the command and the cost of each sweep (``dl_costs.json``, made by
    benchmarks/bench_dl_cost.py)."""
    page.heading("At the papers' size")
    page.text("The papers' own accuracy tables could not be read where these pages were made (only their code, "
              "abstracts and posters could), so no reported numbers stand beside the ones above; the sweep files say "
              "which settings come from the papers' code and which are guessed.")
    page.text(f"`mpiclip reproduce {family} --full --slurm --gpus 1 --data-dir DIR` submits every sweep as a Slurm "
              f"job array and this page's job after them ({data}); without `--slurm` the runs share the ranks of "
              "the job (`mpiexec -n P python -m mpi4py -m mpiclip reproduce ...`). `--full --slurm --dry-run` prints "
              "the arrays without submitting them.")
    table = json.loads(resources.files("mpiclip.reproduce").joinpath(COSTS).read_text())
    rows = [[r["sweep"], r["model"], r["runs"], f"{r['seconds_per_round']:.3g}", r["rounds"],
             f"{r['seconds_per_evaluation']:.3g}", r["evaluations"], f"{r['core_hours']:.0f}"]
            for r in table["sweeps"] if r["family"] == family]
    if rows:
        page.text(f"Cost on this machine's CPU ({table['machine']}, one core per run, float32; {table['measured']}): "
                  "seconds per round and per recorded row (f, ∇f and the test set over every row) measured on "
                  "stand-in data of the papers' shapes and sizes, times the rounds and rows of every run. A GPU "
                  "takes these runs from core-days to GPU-hours.")
        page.table(f"{family}-cost", ["sweep", "model", "runs", "s per round", "rounds", "s per row", "rows per run",
                                      "core-hours"], rows)
