"""The trace contract (docs/design.md §5): what a file must be before a reader trusts a value of it.

A trace is input like any other file: copied, edited, cut or written by another program. :func:`read_attributes`
and :func:`layout` hold a file to the contract from its metadata alone (no dataset's values are read, so checking a
status costs little), and raise :class:`~mpiclip.trace.TraceError` naming the file and the first bad attribute or
dataset; every reader (``mpiclip info``, ``mpiclip sweep``, mpiclip.results, mpiclip.frames) then lists the file as
``unreadable: <reason>`` and goes on with the good ones.

* Attributes: ``status`` is there; each one that readers use, where present, has its type (text, an integer, a real
  number, a flag, JSON; ``config`` is a JSON table of sections).
* Datasets: each one that :func:`~mpiclip.trace.load_trace` reads holds real numbers (integers where the writer
  writes integers), never text, complex numbers, records or variable-length objects; it has its place's number of
  dimensions; its rows agree with its row index (``/rounds``, or a table's first column) and its worker axis with
  ``n_workers``; the per-row datasets every trace has are there; the groups are groups.

A file that a writer holds, or held when it was killed (one opened in SWMR mode), may show one column a few rows
ahead of another: its columns are cut to the rows they all have, as the writer's next flush would have made them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import h5py
import numpy as np

from mpiclip.compressors import ENCODINGS
from mpiclip.trace import ROOT_SCALARS, TraceError

REAL, INTEGER = "biuf", "biu"  # numpy dtype kinds
KIND_WORDS = {"b": "flags", "i": "integers", "u": "integers", "f": "real numbers", "c": "complex numbers",
              "S": "byte strings", "U": "text", "O": "variable-length values (text, sequences or references)",
              "V": "records or opaque bytes", "M": "dates", "m": "time spans"}
SHAPES = {0: "one value", 1: "one value per row", 2: "a row of values per row"}
REQUIRED = ("rounds", "time", "loss", "grad_norm_sq") + tuple(
    f"bits/{where}/{e}" for e in ENCODINGS for where in ("up", "down", "initial/up", "initial/down"))  # since schema 1
GROUPS = ("bits/up", "bits/down", "bits/initial/up", "bits/initial/down", "workers", "metrics")  # read whole


# ------------------------------------------------------------------------------------------------ attributes
def _text(v) -> Optional[str]:
    return None if isinstance(v, str) else "not text"


def _integer(v) -> Optional[str]:
    return None if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) else "not an integer"


def _count(v) -> Optional[str]:
    return _integer(v) or (None if v >= 1 else "not a positive integer")


def _real(v) -> Optional[str]:
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    return None if ok else "not a real number"


def _flag(v) -> Optional[str]:
    return None if isinstance(v, (bool, np.bool_)) else "not true or false"


def _json(kind: type, word: str) -> Callable:
    def check(v) -> Optional[str]:
        if not isinstance(v, str):
            return "not text"
        try:
            value = json.loads(v)
        except ValueError as e:
            return f"not JSON ({e})"
        return None if isinstance(value, kind) else f"not a JSON {word}"
    return check


def _config(v) -> Optional[str]:
    problem = _json(dict, "object")(v)
    if problem:
        return problem
    section = next((k for k, s in json.loads(v).items() if not isinstance(s, dict)), None)
    return None if section is None else f"not a table of sections ({section} is not a table)"


def _texts(v) -> Optional[str]:
    ok = np.ndim(v) == 1 and all(isinstance(x, (str, bytes)) for x in np.asarray(v, dtype=object))
    return None if ok else "not a list of text"


TEXT = ("status", "name", "run_id", "runner", "method", "compressor", "problem", "config_hash", "config_toml",
        "command", "stepsize_rule", "dataset", "dataset_checksum", "mpi_library", "hostnames", "mpiclip_version",
        "bits_convention", "started", "finished", "stop_reason", "timing", "server_optimizer")
INTEGERS = ("n_ranks", "d", "seed", "schema_version", "rounds_run", "tau_max", "delay_p99", "concurrency", "arrivals",
            "stopped_jobs", "clients_per_round", "comm_rounds")
REALS = ("gamma", "stepsize_factor", "L", "L_tilde", "mu", "f_star", "wall_seconds", "delay_mean",
         "discarded_fraction", "sim_time")
ATTRIBUTES: dict[str, Callable] = {  # name -> its check (a reason, or None); names not here are read unchecked
    **dict.fromkeys(TEXT, _text), **dict.fromkeys(INTEGERS, _integer), **dict.fromkeys(REALS, _real),
    "n_workers": _count, "deterministic": _flag, "config": _config, "provenance": _json(dict, "object"),
    "resumed": _json(list, "list"), "encodings": _texts,
}
REQUIRED_ATTRIBUTES = ("status",)  # the others have defaults where readers use them


def shown(name: str) -> str:
    """A name in a one-line message: as it is if printable, else quoted with escapes."""
    return name if name.isprintable() else repr(name)


def _value(v) -> str:
    text = repr(v.item() if isinstance(v, np.generic) else v)
    return text if len(text) <= 60 else text[:57] + "..."


def read_attributes(f: h5py.File, path: str, names: Optional[tuple]) -> dict:
    """The root attributes ``names`` (None: all), text decoded, each checked against the contract."""
    stored = f.attrs  # h5py makes a new manager at every f.attrs
    if not len(stored) and not len(f):
        raise TraceError(path, "an empty HDF5 file (no attributes, no datasets): not a trace")
    keys = list(stored) if names is None else [k for k in dict.fromkeys(names) if k in stored]
    for key in REQUIRED_ATTRIBUTES:
        if (names is None or key in names) and key not in stored:
            raise TraceError(path, f"attribute {key}: missing")
    attrs = {}
    for key in keys:
        try:
            value = stored[key]
        except (OSError, KeyError, RuntimeError, TypeError, ValueError) as e:
            raise TraceError(path, f"attribute {shown(key)}: cannot be read ({e})") from None
        value = value.decode(errors="replace") if isinstance(value, bytes) else value
        problem = ATTRIBUTES[key](value) if key in ATTRIBUTES else None
        if problem:
            raise TraceError(path, f"attribute {key} = {_value(value)}: {problem}")
        attrs[key] = value
    return attrs


# ------------------------------------------------------------------------------------------------ datasets
@dataclass(frozen=True)
class Column:
    """A dataset's place in the contract."""

    ndim: int  # 0: one value; 1: one per row; 2: a row of values per row
    index: Optional[str] = "rounds"  # the dataset whose length is its row count (None: rows of its own)
    workers: bool = False  # its last axis holds one value per worker
    kinds: str = REAL


@lru_cache(maxsize=1)
def registered_tables() -> tuple:
    """Every registered runner's tables (Runner.tables), each once."""
    from mpiclip.runners import runner_facts  # late: the runners' package imports what writes traces

    return tuple({t.name: t for runner in runner_facts().values() for t in runner.tables}.values())


@lru_cache(maxsize=1)
def _places() -> tuple:
    """(pattern, Column) of every dataset load_trace reads, the first match deciding."""
    places = [("rounds", Column(1, kinds=INTEGER)), ("|".join(("time", "loss", "grad_norm_sq") + ROOT_SCALARS), Column(1)),
              ("metrics/[^/]+", Column(1)), ("bits/up/[^/]+", Column(2, workers=True)), ("bits/down/[^/]+", Column(1)),
              ("bits/initial/up/[^/]+", Column(1, None, workers=True)), ("bits/initial/down/[^/]+", Column(0, None)),
              ("workers/[^/]+", Column(2, workers=True))]
    for table in registered_tables():
        name = re.escape(table.name)
        if table.per_round:
            places.append((name, Column(2, None, kinds=INTEGER)))
            continue
        for column, dtype in table.columns:
            kinds = INTEGER if np.dtype(dtype).kind in "iu" else REAL
            places.append((f"{name}/{re.escape(column)}", Column(1, table.index, kinds=kinds)))
        places += [(f"{name}/bits/[^/]+", Column(1, table.index)), (f"{name}/[^/]+", Column(1, table.index))]
    return tuple((re.compile(f"(?:{pattern})\\Z"), column) for pattern, column in places)


def place(name: str) -> Column:
    return next(column for pattern, column in _places() if pattern.match(name))


def _words(kinds: str) -> str:
    return {REAL: "real numbers", INTEGER: "integers"}[kinds]


def _dtype(dtype: np.dtype) -> str:
    words = KIND_WORDS.get(dtype.kind, "values")
    return words if dtype.kind == "O" else f"{words} ({dtype})"


def _get(f: h5py.File, path: str, name: str, parent=None):
    """The object at ``name`` in ``parent`` (the file), None where there is none; every object on its way must be a
    group."""
    obj, walked = (f, []) if parent is None else (parent, [parent.name.strip("/")])
    for part in name.split("/"):
        if not isinstance(obj, h5py.Group):
            raise TraceError(path, f"/{shown('/'.join(walked))}: a dataset, where a trace holds a group")
        walked.append(part)
        try:
            obj = obj.get(part)
        except (OSError, KeyError, RuntimeError, ValueError) as e:  # a dangling external link, a damaged header
            raise TraceError(path, f"/{shown('/'.join(walked))}: cannot be opened ({e})") from None
        if obj is None:
            return None
    return obj


def _check(path: str, name: str, obj) -> Column:
    column, where = place(name), f"/{shown(name)}"
    if not isinstance(obj, h5py.Dataset):
        raise TraceError(path, f"{where}: a {type(obj).__name__.lower()}, where a trace holds a dataset")
    if obj.shape is None:
        raise TraceError(path, f"{where}: an empty dataspace, where a trace holds {SHAPES[column.ndim]}")
    kind = obj.dtype.kind
    if kind not in column.kinds or obj.dtype.subdtype is not None:
        raise TraceError(path, f"{where}: {_dtype(obj.dtype)}, where a trace holds {_words(column.kinds)}")
    if obj.ndim != column.ndim:
        raise TraceError(path, f"{where}: {obj.ndim}-d of shape {obj.shape}, where a trace holds {SHAPES[column.ndim]} "
                         f"({column.ndim}-d)")
    return column


def _selected(f: h5py.File, path: str, columns: Optional[tuple]) -> dict:
    """name -> dataset of what load_trace reads for ``columns``, in its order (groups in HDF5's name order)."""
    wanted = lambda name: columns is None or any(name == c or name.startswith(c + "/") for c in columns)
    tables = registered_tables()
    groups = GROUPS + tuple(g for t in tables if not t.per_round for g in (t.name, f"{t.name}/bits"))
    roots = ("rounds", "time", "loss", "grad_norm_sq") + ROOT_SCALARS + tuple(t.name for t in tables if t.per_round)
    out = {name: obj for name in roots if wanted(name) and (obj := _get(f, path, name)) is not None}
    for name in groups:
        inside = len(name) + 1
        keys = None if wanted(name) else [c[inside:] for c in columns if c.startswith(name + "/") and "/" not in c[inside:]]
        g = _get(f, path, name) if keys != [] else None
        if g is None:
            continue
        if not isinstance(g, h5py.Group):
            raise TraceError(path, f"/{name}: a dataset, where a trace holds a group")
        for key in list(g) if keys is None else keys:
            full = f"{name}/{key}"
            if full not in groups and (obj := _get(f, path, key, g)) is not None:
                out[full] = obj
    missing = next((name for name in REQUIRED if wanted(name) and name not in out), None)
    if missing:
        raise TraceError(path, f"/{missing}: missing")
    return out


def layout(f: h5py.File, path: str, columns: Optional[tuple]) -> dict[str, tuple]:
    """The datasets :func:`~mpiclip.trace.load_trace` reads for ``columns`` (None: all), each checked: name ->
    (the dataset, the rows to read: None for all of it, fewer where a live writer's columns disagree)."""
    chosen = _selected(f, path, columns)
    rows: dict[str, dict[str, int]] = {}  # row index -> {dataset: its rows}
    workers: Optional[tuple] = None  # (the dataset that set the worker count, the count)
    n = f.attrs.get("n_workers")
    if _count(n) is None:
        workers = ("attribute n_workers", int(n))
    for name, obj in chosen.items():
        column = _check(path, name, obj)
        if column.index is not None:
            rows.setdefault(column.index, {})[name] = obj.shape[0]
        if column.workers:
            if workers is None:
                workers = (f"/{name}", obj.shape[-1])
            elif obj.shape[-1] != workers[1]:
                raise TraceError(path, f"/{name}: {obj.shape[-1]} workers, where {workers[0]} says {workers[1]}")
    cut = {}
    for index, lengths in rows.items():
        if index not in lengths:  # the row index is checked even where only its columns are read
            obj = _get(f, path, index)
            if obj is None:
                raise TraceError(path, f"/{index}: missing (the row index of /{next(iter(lengths))})")
            _check(path, index, obj)
            lengths = {index: obj.shape[0], **lengths}
        bad = next((name for name, length in lengths.items() if length != lengths[index]), None)
        if bad is None:
            continue
        if not f.swmr_mode:
            raise TraceError(path, f"/{bad}: {lengths[bad]} rows, where /{index} has {lengths[index]}")
        common = min(lengths.values())
        cut.update({name: common for name in lengths if name in chosen})
    return {name: (obj, cut.get(name)) for name, obj in chosen.items()}
