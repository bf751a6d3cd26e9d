"""Results: the runs of a sweep read back from their traces, and the one rule that picks the best of them.

Every summary of many traces goes through here: `mpiclip sweep best` (mpiclip.sweep.best_runs), the reproduce
pages and the DataFrames of mpiclip.frames::

    from mpiclip import results
    done = results.runs(sweep, columns=("rounds", "test_accuracy"))   # completed runs, in sweep order
    best = results.select(done, lambda r: r.method, lambda r: -r.trace.metrics["test_accuracy"][-1])

* :func:`runs` reads a sweep's traces with :func:`mpiclip.trace.load_trace`, only the ``columns`` asked for
  (a page over a thousand traces reads what its tables need, not every dataset).
* :class:`Run` is one run of a sweep with its trace: the grid point (``index`` in sweep order, ``label``,
  ``values``), the validated config read generically (``run.method``, ``run.gamma``, ``run.param("beta")``,
  ``run.section("async").slow_factor``, ``run.value("data.split")``) and the sweep's ``[select]``.
* :func:`to_target` (:func:`bits_to`, :func:`time_to`, :func:`rounds_to`): the bits per worker, simulated time or
  rounds at which a trace first reached a target, by one rule (:func:`first_reaching`); :func:`sim_time` is a
  trace's simulated clock, None for a trace without one.
* :func:`select` is the selection rule: per group the item with the smallest score, ties to the earlier item,
  a score that is not finite never winning.

Nothing here imports mpi4py.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Optional, Union

import numpy as np

from mpiclip.trace import Trace, TraceError, load_trace

if TYPE_CHECKING:
    from mpiclip.sweep import SelectParams, Sweep, SweepRun

Paths = Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]


# ---------------------------------------------------------------- reading
def trace_files(paths: Paths) -> list[str]:
    """The trace files of ``paths`` (a file, a directory or a list of them): a directory stands for its
    ``*.h5`` traces in name order, checkpoints (``*.ckpt.h5``) and hidden temporaries left out."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out = []
    for item in map(os.fspath, items):
        if os.path.isdir(item):
            out += [os.path.join(item, f) for f in sorted(os.listdir(item))
                    if f.endswith(".h5") and not f.endswith(".ckpt.h5") and not f.startswith(".")]
        else:
            out.append(item)
    return out


@dataclass(frozen=True, eq=False)
class Run:
    """A run of a sweep and its trace (all of it, or the columns read); the config's values read generically. A run
    whose trace is there but cannot be read has no trace, and ``unreadable`` says why."""

    point: "SweepRun"  # the sweep's grid point: index, label, values, config
    trace: Optional[Trace]
    select: "SelectParams"  # the sweep's [select]: what its runs are compared by
    unreadable: str = ""  # why the trace cannot be read (TraceError.reason), where it cannot

    @property
    def index(self) -> int:
        """The run's place in its sweep: the order of ties."""
        return self.point.index

    @property
    def label(self) -> str:
        return self.point.label

    @property
    def values(self) -> dict:
        """The grid point: config key -> value."""
        return dict(self.point.values)

    @property
    def config(self) -> Any:
        """The validated config (mpiclip.config.Config)."""
        return self.point.config

    @property
    def method(self) -> str:
        return self.config.method.name

    @property
    def gamma(self) -> float:
        """The configured step size, stepsize.value (γ of the constant rule)."""
        return float(self.config.stepsize.value)

    @property
    def seed(self) -> int:
        return int(self.config.run.seed)

    def param(self, name: str, default: Any = math.nan) -> Any:
        """The method's parameter ``name`` (``method.<name>``), or ``default`` for a method without it."""
        return getattr(self.config.method.params, name, default)

    def section(self, name: str) -> Any:
        """A runner's section of the config (``run.section("async").slow_factor``), None where it has none."""
        return self.config.section(name)

    def value(self, key: str, default: Any = "-") -> Any:
        """The value of a dotted config key (``"data.split"``), ``default`` where its section has no such key."""
        return config_value(self.config, key, default)

    @property
    def status(self) -> str:
        return f"unreadable: {self.unreadable}" if self.trace is None else self.trace.status

    @property
    def completed(self) -> bool:
        return self.status.startswith("completed")


def config_value(config, key: str, default: Any = "-") -> Any:
    """A config's value of a dotted key (``"method.beta"``, every default filled in), ``default`` where its
    section has no such key."""
    section, _, name = key.partition(".")
    return config.as_table().get(section, {}).get(name, default)


def runs(sweep: "Sweep", columns: Optional[Iterable[str]] = None, attrs: Optional[Iterable[str]] = None,
         statuses: Optional[tuple] = ("completed",)) -> list[Run]:
    """The runs of ``sweep`` whose trace has one of ``statuses`` (None: any status), in sweep order, each with
    its trace (only ``columns`` and ``attrs`` of it: see load_trace). A missing trace is left out, as not run; so is
    a running one, unless ``statuses`` asks for it. A trace that is there but cannot be read (cut short, corrupt,
    breaking the trace contract) is a run with status ``unreadable: <reason>`` and no trace, where ``statuses`` is
    None or names ``unreadable``: one bad file never hides the others."""
    columns, attrs = (None if c is None else tuple(c) for c in (columns, attrs))
    out = []
    for point in sweep.runs:
        path = point.config.trace_path
        try:
            run = Run(point, load_trace(path, columns, attrs), sweep.select)
        except TraceError as e:
            if not os.path.exists(path):
                continue
            run = Run(point, None, sweep.select, e.reason)
        if statuses is None or run.status.startswith(statuses):
            out.append(run)
    return out


# ---------------------------------------------------------------- to a target: bits, simulated time, rounds
NO_SIM_TIME = "no simulated time (/sim_time)"  # what a reader says of a trace whose runner kept no clock


def sim_time(trace: Trace) -> Optional[np.ndarray]:
    """The simulated clock at each recorded row (``/sim_time``: asynchronous runs, and any run given a system model),
    None for a trace without one (or read without that column)."""
    return trace.metrics.get("sim_time")


def sim_time_unit(trace: Trace) -> str:
    """The unit of a trace's ``/sim_time``: seconds for a run with a system model ([system]) or an asynchronous run in
    real mode (the server's wall clock); otherwise the asynchronous model's time units (a gradient takes
    async.mean_time of them on average)."""
    real = trace.config.get("async", {}).get("mode") == "real"
    return "s" if "system" in trace.config or real else "model time units"


def first_reaching(values: np.ndarray, axis: np.ndarray, target: float, larger_is_better: bool = False) -> float:
    """``axis`` at the first row where ``values`` reached ``target`` (≤ it, or ≥ it where larger is better), nan where
    they never did: the one rule of bits, simulated time and rounds to a target (a NaN value never reaches it)."""
    reached = np.flatnonzero(values >= target if larger_is_better else values <= target)
    return float(axis[reached[0]]) if len(reached) else math.nan


# the axes a target is reached on: trace, encoding -> (T,) values, None where the trace has no such axis
AXES: dict[str, Callable[[Trace, str], Optional[np.ndarray]]] = {
    "bits": lambda trace, encoding: trace.bits_per_worker(encoding),  # per worker, the papers' #bits/n
    "sim_time": lambda trace, encoding: sim_time(trace),
    "rounds": lambda trace, encoding: trace.rounds.astype(float),
}


def to_target(trace: Trace, level: float, axis: str = "bits", encoding: str = "paper",
              values: Optional[np.ndarray] = None, larger_is_better: bool = False) -> float:
    """The ``axis`` (AXES: bits per worker in ``encoding``, simulated time, rounds) at which ``values`` (default
    ‖∇f(x^t)‖²) first reached ``level``; nan if they never did or the trace has no such axis (no simulated time)."""
    xs = AXES[axis](trace, encoding)
    if xs is None:
        return math.nan
    return first_reaching(trace.grad_norm_sq if values is None else values, xs, level, larger_is_better)


def bits_to(trace: Trace, level: float, encoding: str = "paper") -> float:
    """Bits per worker sent before ‖∇f(x^t)‖² first reached ``level`` (nan if it never did)."""
    return to_target(trace, level, "bits", encoding)


def time_to(trace: Trace, level: float) -> float:
    """Simulated time at which ‖∇f(x^t)‖² first reached ``level`` (nan if it never did, or the trace has no
    simulated time: see :func:`sim_time`)."""
    return to_target(trace, level, "sim_time")


def rounds_to(trace: Trace, level: float) -> float:
    """The round t at which ‖∇f(x^t)‖² first reached ``level`` (nan if it never did)."""
    return to_target(trace, level, "rounds")


# ---------------------------------------------------------------- the selection rule
def finite(score) -> bool:
    """Whether a score (a number, or a tuple of numbers compared in order) is finite in every part."""
    return all(math.isfinite(part) for part in (score if isinstance(score, tuple) else (score,)))


def select(items: Iterable, group: Callable[[Any], Hashable], score: Callable[[Any], Any],
           fallback: bool = False) -> dict:
    """group(item) -> the item with the smallest ``score(item)`` (smaller is better: negate a value where larger
    is better), ties to the earlier item in the order given (the callers give sweep order); groups in the order
    of their first entry.

    A score that is not finite (NaN or ±inf in any part: a run that failed, diverged or lacks the measure) never
    wins, so a group whose items all score so has no entry. ``fallback`` gives such a group its first item
    instead, for a page that shows the group as diverged rather than leave it out."""
    best: dict = {}
    scores: dict = {}
    for item in items:
        key, value = group(item), score(item)
        if finite(value):
            if key not in scores or value < scores[key]:
                best[key], scores[key] = item, value
        elif fallback and key not in best:
            best[key] = item
    return best
