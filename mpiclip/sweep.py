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
    criterion = "final"               # final | min | bits_to | time_to (with target)

This module never imports mpi4py: reading and reducing a sweep's traces needs no MPI.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any, Optional

import numpy as np

from mpiclip import config as cfg
from mpiclip import grid
from mpiclip.errors import InputError, did_you_mean
from mpiclip.params import param, parse_params, positive
from mpiclip.paths import check_printable, printable

SWEEP_KEYS = ("sweep", "set", "grid", "select")


@dataclass(frozen=True)
class SweepParams:
    name: str = param("sweep", "label of the sweep; {name} in output", check=printable)
    base: str = param("", "the config every run starts from: a preset name or a TOML file", check=printable)
    output: str = param("results/sweeps/{name}", "directory of the traces; {name} is the sweep's name", check=printable)


METRICS = ("grad_norm_sq", "gap", "loss", "test_loss", "test_accuracy", "train_accuracy", "grad_mapping_sq")


TARGET_AXES = {"bits_to": "bits", "time_to": "sim_time"}  # criterion -> the axis of mpiclip.results.AXES it counts on


def larger_is_better(metric: str) -> bool:
    return metric.endswith("accuracy")


@dataclass(frozen=True)
class SelectParams:
    group: tuple[str, ...] = param(("method.name",), "keys whose values make one curve each")
    criterion: str = param("final", "best run of a group: 'final' (best final value), 'min' (best value over "
                           "the run), 'bits_to' (fewest bits per worker to reach target; if no run of the group "
                           "reaches it, the smallest final value), 'time_to' (the same by simulated time, /sim_time: "
                           "a run without a clock never reaches the target)", choices=("final", "min", *TARGET_AXES))
    target: float = param(1e-7, "level of the metric for criterion = 'bits_to' or 'time_to'", check=positive)
    encoding: str = param("paper", "bit encoding of the bits axis and of 'bits_to'",
                          choices=("paper", "coo32", "compact", "wire"))
    metric: str = param("grad_norm_sq", "what is compared and plotted: ‖∇f‖², the gap f − f* (least squares, "
                        "quadratics), f, EF21-Prox's squared gradient mapping, or a classifier's test loss or accuracy "
                        "(accuracies: larger is better, and 'bits_to', 'time_to' mean reaching at least target)", choices=METRICS)


@dataclass(frozen=True)
class SweepRun:
    """A grid point of a sweep. Its trace path is known at once; its config is composed and validated when
    first asked for (a listing of 10^6 runs composes none)."""

    index: int
    label: str
    values: tuple  # ((key, value), ...) of the grid point
    trace_path: str
    compose: Any = field(repr=False, compare=False)  # the sweep's _Composer

    @cached_property
    def config(self) -> Any:
        """The validated Config."""
        return self.compose(self)


class _Composer:
    """Makes a run's config: the base, the sweep's [set], the command line's --set, then the point's values,
    its name and trace (picklable, unlike a closure). A config made is kept, so that readers passing over a
    sweep several times (reproduce pages) compose each once, as when the sweep held them all; a listing
    makes none."""

    def __init__(self, base: str, base_ref: str, sets: dict, extra: list, output: str):
        self.base, self.base_ref, self.sets, self.extra = base, base_ref, sets, list(extra)
        self.trace = os.path.join(output, "{name}.h5")
        self.made: dict[int, Any] = {}

    def trace_path(self, label: str) -> str:
        return self.trace.replace("{name}", label)

    def __call__(self, run: SweepRun) -> Any:
        if run.index not in self.made:
            self.made[run.index] = self._compose(run)
        return self.made[run.index]

    def _compose(self, run: SweepRun) -> Any:
        overrides = [f"{k}={cfg.toml_value(v)}" for k, v in list(self.sets.items()) + list(run.values)]
        # a point whose run was stopped resumes from its checkpoint; any other unfinished point starts again
        overrides += self.extra + [f"run.name={cfg.toml_value(run.label)}", f"output.path={cfg.toml_value(self.trace)}",
                                   "output.exists='overwrite'", "run.resume='auto'"]
        configs = cfg.load(self.base, overrides)
        if len(configs) != 1:
            raise InputError("sweep.base", self.base_ref, "must describe one run (a config with variants cannot be swept)")
        return configs[0]


class SweepRuns(grid.Indexed):
    """The runs of a sweep in order, grid after grid: counted, indexed and walked without expanding the grids
    (run i is decoded from i; a Slurm array task makes only its own)."""

    def __init__(self, grids: list[dict], compose: _Composer):
        self.keys = [list(g) for g in grids]
        self.points = grid.Chain([grid.Product([g[k] for k in g]) for g in grids])
        self.compose = compose

    def __len__(self) -> int:
        return len(self.points)

    def _item(self, i: int) -> SweepRun:
        part, j = self.points.locate(i)
        return self._run(i, part, self.points.parts[part][j])

    def __iter__(self):
        """The runs in order, walking the products rather than decoding each index."""
        points = ((part, combo) for part, product in enumerate(self.points.parts) for combo in product)
        return (self._run(i, part, combo) for i, (part, combo) in enumerate(points))

    def _run(self, i: int, part: int, combo: tuple) -> SweepRun:
        values = tuple(zip(self.keys[part], combo))
        label = cfg.label_of(values)
        return SweepRun(i, label, values, self.compose.trace_path(label), self.compose)

    def index_of(self, part: int, positions: list[int]) -> int:
        return self.points.starts[part] + self.points.parts[part].index_of(positions)

    def first_repeated(self) -> Optional[int]:
        """The first run whose label an earlier run has, or None; O(values of the axes), not O(runs). Labels are
        the keys and the values' texts: within a grid, a point repeats an earlier one iff one of its values
        repeats an earlier value's text on its axis (the earliest such point: the fastest such axis at its first
        repeat, the others at their first value); a grid repeats an earlier grid of the same keys iff each of
        its axes shares a text with that grid's (the earliest: each axis at its first shared value)."""
        texts = [[[cfg.value_text(v) for v in axis] for axis in product.axes] for product in self.points.parts]
        found = []
        for g, axes in enumerate(texts):
            for j in reversed(range(len(axes))):
                repeat = _first_repeat(axes[j])
                if repeat is not None:
                    found.append(self.index_of(g, [repeat if a == j else 0 for a in range(len(axes))]))
                    break
            for h in range(g):
                if self.keys[h] == self.keys[g]:
                    shared = [_first_index(axis, set(theirs).__contains__) for axis, theirs in zip(axes, texts[h])]
                    if None not in shared:
                        found.append(self.index_of(g, shared))
        return min(found, default=None)

    def each_value_once(self) -> list[int]:
        """Runs that between them hold every value of every axis (the others at their first value), in order:
        validating these finds any value that is bad on its own, in O(values of the axes) configs."""
        chosen = set()
        for g, product in enumerate(self.points.parts):
            chosen.add(self.index_of(g, [0] * len(product.axes)))
            for j, axis in enumerate(product.axes):
                chosen.update(self.index_of(g, [p if a == j else 0 for a in range(len(product.axes))])
                              for p in range(len(axis)))
        return sorted(chosen)


def _first_index(items: list, test) -> Optional[int]:
    return next((p for p, item in enumerate(items) if test(item)), None)


def _first_repeat(items: list) -> Optional[int]:
    """The first position whose item an earlier position holds."""
    seen = set()
    for p, item in enumerate(items):
        if item in seen:
            return p
        seen.add(item)
    return None


@dataclass(frozen=True)
class Sweep:
    path: str
    params: SweepParams
    select: SelectParams
    runs: SweepRuns

    @property
    def output(self) -> str:
        return self.params.output.replace("{name}", self.params.name)

    def trace_path(self, run: SweepRun) -> str:
        return run.trace_path


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
        raise InputError("sweep", ref, "is neither a sweep file nor a shipped sweep (`mpiclip sweep shipped` lists them)"
                         + did_you_mean(ref, shipped_sweeps()))
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
    """The sweep described by ``table`` (read from ``path``, against which a relative base is found). Its runs
    are made when asked for; here every value of every axis is validated once (a value bad with one other
    value only is found when that run's config is made: `sweep run` validates its slice before running)."""
    unknown = sorted(set(table) - set(SWEEP_KEYS))
    if unknown:
        raise InputError(unknown[0], table[unknown[0]], f"unknown sweep section (valid: {', '.join(SWEEP_KEYS)})"
                         + did_you_mean(unknown[0], SWEEP_KEYS))
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
    if not isinstance(grids, list):
        raise InputError("grid", grids, "must be one or more [[grid]] tables")
    for g, grid_table in enumerate(grids):
        if not isinstance(grid_table, dict):
            raise InputError(f"grid[{g}]", grid_table, "must be a table of section.key = [values]")
        for key, values in grid_table.items():
            if not isinstance(values, list) or not values:
                raise InputError(f"grid[{g}].{key}", values, "must be a non-empty list of values")
    base = params.base
    if base.endswith(".toml") and not os.path.isabs(base):
        base = os.path.join(os.path.dirname(os.path.abspath(path)), base)
    output = params.output.replace("{name}", params.name)
    runs = SweepRuns(grids, _Composer(base, params.base, sets, list(extra), output))
    repeated = runs.first_repeated()
    if repeated is not None:
        raise InputError("grid", runs[repeated].label, "appears twice; grid points must differ")
    for index in runs.each_value_once():
        check_printable("grid", runs[index].label)  # the run's name: a file name and a table cell
        runs[index].config  # noqa: B018 - composing validates
    for key in select.group:
        if not any(key in g for g in grids) and key.partition(".")[0] not in cfg.sections():
            raise InputError("select.group", key, "is not a config key")
    return Sweep(path, params, select, runs)


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
    """A sort key, smaller is better: (0, bits or simulated time to the target) for runs that reach it under
    'bits_to' or 'time_to', else (1, final or smallest value); (2, inf) for runs that did not complete."""
    if not trace.status.startswith("completed") or len(trace.grad_norm_sq) == 0:
        return (2, math.inf)
    from mpiclip.plotting import y_values
    from mpiclip.results import to_target

    try:
        g = y_values(trace, select.metric)
    except (KeyError, ValueError):  # a trace without the metric (e.g. no test set) cannot win
        return (2, math.inf)
    sign = -1.0 if larger_is_better(select.metric) else 1.0
    if select.criterion in TARGET_AXES:
        at = to_target(trace, select.target, TARGET_AXES[select.criterion], select.encoding, g, sign < 0)
        if not math.isnan(at):
            return (0, at)
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
    for grid_table in [grids] if isinstance(grids, dict) else grids:
        lines += ["", "[[grid]]"] + [f"{quoted(k)} = {cfg.toml_value(v)}" for k, v in grid_table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"
