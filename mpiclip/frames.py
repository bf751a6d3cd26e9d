"""Traces as pandas DataFrames, for comparing many runs (``pip install 'mpiclip[analysis]'``).

    from mpiclip import frames
    table = frames.runs("results/sweeps/ef21-logreg-a9a", levels=[1e-7])     # one row per trace
    best = frames.best(table, by=["method.name"], metric="bits_to_1e-07")     # the best run of each method
    fastest = frames.best(table, by=["method.name"], metric="time_to_1e-07")  # ... by simulated time to 1e-7
    curves = frames.rounds(best["path"])                                         # long form: one row per recorded x^t
    arrivals = frames.events("results/async")                                    # asynchronous runs: one row per update

``runs`` has the trace's identity (path, name, run_id, config_hash), its status (``status`` is the first
word: completed, failed, interrupted, running, unreadable; ``status_detail`` the whole, for an unreadable trace
``unreadable: <reason>`` naming the first bad dataset or attribute; ``failed`` is True
for anything but completed), the final and smallest values, the bits per worker, the wall time, and
every config key flattened to a column (``method.name``, ``compressor.k``, ``stepsize.factor``, ...); with
``levels``, how far each run went before ‖∇f‖² first reached each level, by bits, simulated time and rounds. A
trace that cannot be read is a row with status ``unreadable``, not an exception: one damaged file must
not hide two hundred good ones. Nothing here imports mpi4py.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Iterable

import numpy as np

from mpiclip.results import Paths, select, to_target, trace_files
from mpiclip.trace import TraceError, load_trace


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("mpiclip.frames needs pandas: pip install 'mpiclip[analysis]'") from None
    return pandas


def flatten(table: dict, prefix: str = "") -> dict:
    """{'method': {'name': 'ef21'}} -> {'method.name': 'ef21'}; lists become tuples (hashable for groupby)."""
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _last(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) else math.nan


TO_TARGET = {"bits": "bits_to", "sim_time": "time_to", "rounds": "rounds_to"}  # mpiclip.results.AXES -> column


def _row(path: str, encoding: str, levels: Iterable[float]) -> dict:
    try:
        tr = load_trace(path)
    except TraceError as e:
        return {"path": path, "name": os.path.splitext(os.path.basename(path))[0], "status": "unreadable",
                "status_detail": f"unreadable: {e.reason}", "failed": True}
    detail = tr.status
    a = tr.attrs
    row = {
        "path": path, "name": tr.label, "status": detail.split(":")[0], "status_detail": detail,
        "failed": not detail.startswith("completed"), "run_id": str(a.get("run_id", "")),
        "config_hash": str(a.get("config_hash", "")), "runner": str(a.get("runner", "synchronous")),
        "n_ranks": int(a.get("n_ranks", 1)), "d": int(a.get("d", 0)), "gamma": float(a.get("gamma", math.nan)),
        "rounds": int(tr.rounds[-1]) if len(tr.rounds) else 0, "rows": len(tr.rounds),
        "loss": _last(tr.loss), "grad_norm_sq": _last(tr.grad_norm_sq),
        "grad_norm_sq_min": float(np.nanmin(tr.grad_norm_sq)) if len(tr.grad_norm_sq) else math.nan,
        "bits_per_worker": _last(tr.bits_per_worker(encoding)) if len(tr.rounds) else 0.0,
        "wall_seconds": float(a.get("wall_seconds", math.nan)),
    }
    for name, values in tr.metrics.items():
        row[f"final.{name}"] = _last(values)
    for level in levels:
        for axis, column in TO_TARGET.items():
            row[f"{column}_{level:g}"] = to_target(tr, level, axis, encoding)
    row.update(flatten(json.loads(a.get("config", "{}"))))
    return row


def runs(paths: Paths, encoding: str = "paper", levels: Iterable[float] = ()):
    """One row per trace (see the module's docstring); ``final.sim_time`` is the simulated clock at the last row (NaN
    for a trace without one). ``levels``: add bits_to_<level>, time_to_<level> and rounds_to_<level> columns, the bits
    per worker (in ``encoding``), the simulated time and the round at which ‖∇f‖² first reached each level (NaN where
    it never did; time_to also where the trace has no simulated time)."""
    pd = _pandas()
    levels = tuple(levels)
    frame = pd.DataFrame([_row(p, encoding, levels) for p in trace_files(paths)])
    if frame.empty:
        return frame
    frame["failed"] = frame["failed"].astype(bool)
    for column in ("rounds", "rows", "n_ranks", "d"):  # integers, missing (<NA>) for unreadable traces
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def _readable(paths: Paths):
    """The traces of ``paths`` that can be read; each one that cannot is named in a warning and left out."""
    for path in trace_files(paths):
        try:
            yield load_trace(path)
        except TraceError as e:
            warnings.warn(f"mpiclip.frames: left out {path}: unreadable: {e.reason}", stacklevel=3)


def rounds(paths: Paths, encoding: str = "paper"):
    """Long form: one row per recorded x^t of every readable trace (an unreadable one is named in a warning), with
    its run's name and path, the round, wall time, f, ‖∇f‖², the cumulative bits per worker (in ``encoding``) and
    down, and the per-row scalars of the method and runner (``metrics/*`` in the trace)."""
    pd = _pandas()
    frames = []
    for tr in _readable(paths):
        path = tr.path
        columns = {"round": tr.rounds.astype(np.int64), "time": tr.time, "loss": tr.loss, "grad_norm_sq": tr.grad_norm_sq,
                   "bits_per_worker": tr.bits_per_worker(encoding), "bits_down": tr.bits_down_cumulative(encoding),
                   **{name: values for name, values in tr.metrics.items()}}
        frame = pd.DataFrame(columns)
        frame.insert(0, "path", path)
        frame.insert(0, "run", tr.label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def events(paths: Paths):
    """Asynchronous runs: one row per server update (the trace's ``events`` table) with its run and path; an
    unreadable trace is named in a warning and left out."""
    pd = _pandas()
    frames = []
    for tr in _readable(paths):
        path = tr.path
        if not tr.tables["events"]:
            continue
        frame = pd.DataFrame(tr.tables["events"])
        frame.insert(0, "path", path)
        frame.insert(0, "run", tr.label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def best(frame, by: Iterable[str], metric: str = "grad_norm_sq", larger_is_better: bool = False):
    """The best completed run of each group of ``by`` columns by ``metric``, one row per group, sorted by ``by``:
    mpiclip.results.select's rule (a value that is not finite, NaN or inf, never wins; ties: the earlier row)."""
    pd = _pandas()
    by = list(by)
    missing = lambda v: not isinstance(v, tuple) and pd.isna(v)  # NaN, None and <NA> make one group, as in groupby
    keys = list(zip(*(frame[c].map(lambda v: None if missing(v) else v) for c in by)))
    values, failed, sign = frame[metric].to_numpy(), frame["failed"].to_numpy(), -1.0 if larger_is_better else 1.0
    score = lambda i: math.nan if failed[i] or missing(values[i]) else sign * float(values[i])
    chosen = select(range(len(frame)), lambda i: keys[i], score)
    return frame.iloc[sorted(chosen.values())].sort_values(by, kind="stable").reset_index(drop=True)
