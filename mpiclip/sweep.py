"""Sweeps: a grid over config keys, expanded to runs, run locally or as a Slurm job array, and reduced
to the best run per group (the papers tune the step-size factor and k, then plot each method's best).

A sweep file is TOML::

    [sweep]
    name = "ef21-a9a"                 # traces go to <output>/<run label>.h5
    base = "ef21-libsvm"              # a preset or a config file (relative to the sweep file)
    output = "results/sweeps/{name}"  # relative to the current directory
    [set]                             # overrides for every run
    "data.path" = "a9a.txt"
    [[grid]]                          # one or more grids; each is a Cartesian product
    "method.name" = ["ef21", "ef14"]
    "stepsize.factor" = [1, 2, 4]
    [select]
    group = ["method.name"]           # one curve per distinct value of these keys
    criterion = "final"               # final | min | bits_to (with target)

This module never imports mpi4py: reading and reducing a sweep's traces needs no MPI.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any, Optional

import numpy as np

from mpiclip import config as cfg
from mpiclip.errors import InputError
from mpiclip.params import param, parse_params, positive

SWEEP_KEYS = ("sweep", "set", "grid", "select")


@dataclass(frozen=True)
class SweepParams:
    name: str = param("sweep", "label of the sweep; {name} in output")
    base: str = param("", "the config every run starts from: a preset name or a TOML file")
    output: str = param("results/sweeps/{name}", "directory of the traces; {name} is the sweep's name")


METRICS = ("grad_norm_sq", "gap", "loss", "test_loss", "test_accuracy", "train_accuracy")


def larger_is_better(metric: str) -> bool:
    return metric.endswith("accuracy")


@dataclass(frozen=True)
class SelectParams:
    group: tuple[str, ...] = param(("method.name",), "keys whose values make one curve each")
    criterion: str = param("final", "best run of a group: 'final' (best final value), 'min' (best value over "
                           "the run), 'bits_to' (fewest bits per worker to reach target; if no run of the group "
                           "reaches it, the smallest final value)", choices=("final", "min", "bits_to"))
    target: float = param(1e-7, "level of the metric for criterion = 'bits_to'", check=positive)
    encoding: str = param("paper", "bit encoding of the bits axis and of 'bits_to'",
                          choices=("paper", "coo32", "compact", "wire"))
    metric: str = param("grad_norm_sq", "what is compared and plotted: ‖∇f‖², the gap f − f* (least squares, "
                        "quadratics), f, or a classifier's test loss or accuracy (accuracies: larger is better, "
                        "and 'bits_to' means reaching at least target)", choices=METRICS)


@dataclass(frozen=True)
class SweepRun:
    index: int
    label: str
    values: tuple  # ((key, value), ...) of the grid point
    config: Any  # the validated Config


@dataclass(frozen=True)
class Sweep:
    path: str
    params: SweepParams
    select: SelectParams
    runs: tuple

    @property
    def output(self) -> str:
        return self.params.output.replace("{name}", self.params.name)

    def trace_path(self, run: SweepRun) -> str:
        return run.config.trace_path


def shipped_sweeps() -> list[str]:
    """Names of the sweep files that come with mpiclip (mpiclip/sweeps, also reached as jobs/sweeps)."""
    return sorted(p.name[:-5] for p in resources.files("mpiclip.sweeps").iterdir() if p.name.endswith(".toml"))


def sweep_file(ref: str) -> str:
    """The path of a sweep: ``ref`` itself when it is a path (it has a directory or ends in .toml), else the
    shipped sweep named ``ref`` (``ef21-logreg-a9a``), else ``ref``.toml in the current directory."""
    candidates = [ref] if ref.endswith(".toml") else [ref + ".toml", ref]
    if os.sep in ref or ref.endswith(".toml"):
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            raise InputError("sweep", ref, "no such file")
        return found
    if ref in shipped_sweeps():
        return str(resources.files("mpiclip.sweeps").joinpath(ref + ".toml"))
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise InputError("sweep", ref, "is neither a sweep file nor a shipped sweep (`mpiclip sweep shipped` lists them)")
    return found


def sweep_name(ref: str) -> str:
    """The name of a sweep given by name or by file (its file name without .toml)."""
    base = os.path.basename(ref)
    return base[:-5] if base.endswith(".toml") else base


def read_sweep(ref: str) -> tuple[dict, str]:
    """(raw table, path) of a sweep file or a shipped sweep."""
    path = sweep_file(ref)
    table, _ = cfg.read_source(path)
    return table, path


def load_sweep(path: str, extra: list[str] = ()) -> Sweep:
    """Read and validate a sweep file (or a shipped sweep by name); every run's config is validated too.
    ``extra`` are --set overrides applied to every run after the sweep's own."""
    table, path = read_sweep(path)
    return sweep_of(table, path, extra)


def sweep_of(table: dict, path: str, extra: list[str] = ()) -> Sweep:
    """The sweep described by ``table`` (read from ``path``, against which a relative base is found)."""
    unknown = sorted(set(table) - set(SWEEP_KEYS))
    if unknown:
        raise InputError(unknown[0], table[unknown[0]], f"unknown sweep section (valid: {', '.join(SWEEP_KEYS)})")
    params = parse_params(SweepParams, table.get("sweep", {}), "sweep")
    if not params.base:
        raise InputError("sweep.base", params.base, "a sweep needs a base config (a preset or a .toml file)")
    select = parse_params(SelectParams, table.get("select", {}), "select")
    sets = table.get("set", {})
    if not isinstance(sets, dict):
        raise InputError("set", sets, "must be a table of section.key = value")
    grids = table.get("grid", [{}])
    if isinstance(grids, dict):
        grids = [grids]
    points = []
    for g, grid in enumerate(grids):
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise InputError(f"grid[{g}].{key}", values, "must be a non-empty list of values")
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            points.append(tuple(zip(keys, combo)))
    base = params.base
    if base.endswith(".toml") and not os.path.isabs(base):
        base = os.path.join(os.path.dirname(os.path.abspath(path)), base)
    output = params.output.replace("{name}", params.name)
    runs, seen = [], set()
    for index, values in enumerate(points):
        label = cfg.label_of(values)
        if label in seen:
            raise InputError("grid", label, "appears twice; grid points must differ")
        seen.add(label)
        overrides = [f"{k}={cfg.toml_value(v)}" for k, v in list(sets.items()) + list(values)]
        trace = cfg.toml_value(os.path.join(output, "{name}.h5"))
        # a point whose run was stopped resumes from its checkpoint; any other unfinished point starts again
        overrides += list(extra) + [f"run.name={cfg.toml_value(label)}", f"output.path={trace}", "output.exists='overwrite'",
                                    "run.resume='auto'"]
        configs = cfg.load(base, overrides)
        if len(configs) != 1:
            raise InputError("sweep.base", params.base, "must describe one run (a config with variants cannot be swept)")
        runs.append(SweepRun(index, label, values, configs[0]))
    for key in select.group:
        if not any(key == k for point in points for k, _ in point) and key.partition(".")[0] not in cfg.sections():
            raise InputError("select.group", key, "is not a config key")
    return Sweep(path, params, select, tuple(runs))


def group_of(sweep: Sweep, run: SweepRun) -> str:
    table = run.config.as_table()
    parts = []
    for key in sweep.select.group:
        section, _, name = key.partition(".")
        parts.append(f"{cfg.value_text(table.get(section, {}).get(name, '-'))}")
    return "/".join(parts)


def status_of(path: str) -> str:
    """'missing', 'unreadable: <reason>', or the trace's status (mpiclip.trace.trace_status)."""
    from mpiclip.trace import trace_status

    return trace_status(path)


def score(trace, select: SelectParams) -> tuple[int, float]:
    """A sort key, smaller is better: (0, bits to the target) for runs that reach it under 'bits_to', else
    (1, final or smallest value); (2, inf) for runs that did not complete."""
    if not trace.status.startswith("completed") or len(trace.grad_norm_sq) == 0:
        return (2, math.inf)
    from mpiclip.plotting import y_values

    try:
        g = y_values(trace, select.metric)
    except (KeyError, ValueError):  # a trace without the metric (e.g. no test set) cannot win
        return (2, math.inf)
    sign = -1.0 if larger_is_better(select.metric) else 1.0
    if select.criterion == "bits_to":
        reached = np.flatnonzero(sign * g <= sign * select.target)
        if len(reached):
            return (0, float(trace.bits_per_worker(select.encoding)[reached[0]]))
    value = float(np.nanmin(sign * g)) if select.criterion == "min" else sign * float(g[-1])
    return (1, value if np.isfinite(value) else math.inf)


@dataclass(frozen=True)
class Best:
    group: str
    run: Optional[SweepRun]
    score: tuple
    trace: Any
    tried: int
    failed: int
    unreadable: tuple = ()  # (run label, reason) of the group's traces that cannot be read


def best_runs(sweep: Sweep) -> list[Best]:
    """The best completed run of each group by the sweep's criterion (:func:`mpiclip.results.select`: ties to the
    earlier run; a score that is not finite never wins), groups in the order of their first run; a trace that
    cannot be read cannot win and is named in its group's ``unreadable``."""
    from mpiclip import results

    every = results.runs(sweep, statuses=None)  # every trace there is: the failed and unreadable ones are counted
    done = [r for r in every if r.trace is not None]
    chosen = results.select(done, lambda r: group_of(sweep, r.point), lambda r: score(r.trace, sweep.select))
    tried, failed, unreadable = Counter(group_of(sweep, run) for run in sweep.runs), Counter(), {}
    for r in every:
        failed[group_of(sweep, r.point)] += r.status.startswith("failed")
        if r.trace is None:
            unreadable.setdefault(group_of(sweep, r.point), []).append((r.label, r.unreadable))
    out = []
    for group in tried:
        best, bad = chosen.get(group), tuple(unreadable.get(group, ()))
        out.append(Best(group, best.point, score(best.trace, sweep.select), best.trace, tried[group], failed[group], bad)
                   if best else Best(group, None, (2, math.inf), None, tried[group], failed[group], bad))
    return out


def sweep_text(table: dict, header: str = "") -> str:
    """A sweep file's text for ``table`` (the inverse of reading one); ``header`` becomes its first comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    quoted = lambda key: cfg.toml_value(key) if "." in key else key
    for section in ("sweep", "set", "select"):
        if table.get(section):
            lines += ["", f"[{section}]"] + [f"{quoted(k)} = {cfg.toml_value(v)}" for k, v in table[section].items()]
    grids = table.get("grid", [])
    for grid in [grids] if isinstance(grids, dict) else grids:
        lines += ["", "[[grid]]"] + [f"{quoted(k)} = {cfg.toml_value(v)}" for k, v in grid.items()]
    return "\n".join(lines).lstrip("\n") + "\n"
