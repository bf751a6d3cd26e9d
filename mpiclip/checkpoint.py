"""Checkpoints: a :class:`~mpiclip.runners.base.RunState` in one HDF5 file beside the trace, and back.

Writing is collective: rank 0 lays out a temporary file, every per-worker array arrives from its rank
block by block (:meth:`Comm.stream_to_root`, so rank 0 never holds every worker's state), and rank 0
then fsyncs it and renames it over the previous checkpoint: the rename is the one commit point, so a
checkpoint on disk is always complete. The file is stamped with the config hash, the run id, the
runner and the rank/worker layout, and reading it back checks all of them.

Layout::

    / attrs      format; stamp (JSON: run_id, config_hash, runner, method, n_workers, n_ranks, deterministic,
                 t, rows, created, mpiclip_version); state (JSON: elapsed, loss, grad_norm_sq, status, rngs,
                 ``extra``: the JSON-able part of the runner's data (RunState.runner_data), whether
                 initial-round bits are still to be written to the trace)
    /x           (d,)
    /workers/    the method's worker state: one row per worker (n, ...) for each field, a field the state
                 class lists in ``replicated`` as one copy; attrs ``type`` (module:qualname, for a reader's
                 information: states are read back into the classes the run starts from) or none
    /server/     the replicated server state, the same way
    /ledger/     sent_up, initial_up, pending_up (n, E); pending_down, initial_down (E,)
    /extra/      the arrays of the runner's data (RunState.runner_data; the file keeps the name ``extra``)
    /problem     (n, m) the problem's per-worker state, for problems that keep one (BatchNorm statistics)

Each rank reads back only its own workers' rows, so a run may resume on another number of ranks. Before
anything is read, :func:`validate` checks every dataset's shape and dtype kind against the layout the run
expects (a cut or rewritten array is refused in one line naming it, instead of failing the resumed run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import h5py
import numpy as np

from mpiclip import __version__
from mpiclip.errors import InputError, RunFailed
from mpiclip.runners.base import E, Ledger, RunState
from mpiclip.trace import CORRUPT, LIBVER, temporary_beside, timestamp

FORMAT = 1
STAMP_FIELDS = ("run_id", "config_hash", "runner", "method", "n_workers", "n_ranks", "deterministic", "t", "rows")
STAMP_TYPES = {"run_id": str, "config_hash": str, "runner": str, "method": str, "n_workers": int, "n_ranks": int,
               "deterministic": bool, "t": int, "rows": int}
KINDS = {"f": "floating-point", "i": "integer", "u": "integer", "b": "boolean", "O": "text", "S": "text", "U": "text"}


@dataclass(frozen=True)
class Stamp:
    """A checkpoint's identity, readable without loading its arrays (and without any collective)."""

    path: str
    run_id: str
    config_hash: str
    runner: str
    method: str
    n_workers: int
    n_ranks: int
    deterministic: bool
    t: int
    rows: int
    tables: dict = dataclasses.field(default_factory=dict)  # rows of the runner's event tables (/events) it counts
    dataset_checksum: str = ""  # of the data the run began on ("": a checkpoint of an earlier version)


def inspect(path: str, config_hash: str) -> Stamp:
    """The stamp of the checkpoint at ``path``; InputError (one line) if it cannot be resumed from."""
    if not os.path.exists(path):
        raise InputError("checkpoint", path, "does not exist: nothing to resume from")
    try:
        with _open(path) as f:
            a = f.attrs
            if a.get("format") != FORMAT:
                raise InputError("checkpoint", path, f"has format {a.get('format')!r}; this mpiclip reads {FORMAT}")
            head = json.loads(a["stamp"])
            for name, kind in STAMP_TYPES.items():
                value = head[name]
                if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
                    raise InputError("checkpoint", path, f"stamp field {name} = {value!r} is not a valid {kind.__name__}")
            stamp = Stamp(path, *(head[f] for f in STAMP_FIELDS), table_rows(json.loads(a["state"])["extra"]),
                          str(head.get("dataset_checksum", "")))
            missing = [name for name in ("x", "workers", "server", "ledger") if name not in f]
            if missing:
                raise InputError("checkpoint", path, f"is incomplete (no /{missing[0]})")
    except (*CORRUPT, ValueError, TypeError) as e:
        raise InputError("checkpoint", path, f"is not a readable checkpoint (truncated or corrupt: {e})") from None
    if stamp.config_hash != config_hash:
        raise InputError("checkpoint", path, f"belongs to another config (hash {stamp.config_hash[:12]}…, this config "
                         f"{config_hash[:12]}…); resume with the config that wrote it, or start again")
    return stamp


Layout = dict  # dataset path -> (shape, dtype kind); a shape entry None takes any length


def expected_layout(like: tuple[Any, Any], n_workers: int, d: int, extra: Optional[Layout] = None) -> Layout:
    """What a checkpoint of a run with ``n_workers`` workers and d coordinates holds: ``like`` are the
    (workers, server) records the run starts from, built for no worker (``Runner.initial_states(..., 0)``), so a
    per-worker field has n_workers rows and the template's other axes; ``extra``: the runner's arrays
    (``Runner.checkpoint_arrays``)."""
    layout: Layout = {"x": ((d,), "f")}
    workers, server = like
    _tree_layout(layout, "workers", workers, n_workers)
    _tree_layout(layout, "server", server, None)
    for name in Ledger.per_worker:
        layout[f"ledger/{name}"] = ((n_workers, E), "f")
    for name in ("pending_down", "initial_down"):
        layout[f"ledger/{name}"] = ((E,), "f")
    for name, (shape, kind) in (extra or {}).items():
        layout[f"extra/{name}"] = (tuple(n_workers if s == "n" else s for s in shape), kind)
    return layout


def _tree_layout(layout: Layout, where: str, node: Any, n_workers: Optional[int]) -> None:
    """The datasets ``_write_tree`` and the per-worker blocks make of a record (nested records are written whole)."""
    if node is None or not hasattr(node, "_fields"):
        return
    replicated = getattr(node, "replicated", ())
    for name, value in zip(node._fields, node):
        if hasattr(value, "_fields") or value is None:
            _tree_layout(layout, f"{where}/{name}", value, None)
            continue
        value = np.asarray(value)
        # an empty axis of a replicated template is filled as the run goes (EF21+'s server keeps every g_i once it
        # has them): any length
        shape = tuple(None if s == 0 else s for s in value.shape)
        if n_workers is not None and name not in replicated:
            shape = (n_workers,) + shape[1:]
        layout[f"{where}/{name}"] = (shape, value.dtype.kind)


def validate(path: str, like: tuple[Any, Any], n_workers: int, d: int, extra: Optional[Layout] = None) -> None:
    """InputError naming ``path`` and the first thing in it that is not what the run keeps: a state record with
    other fields, a dataset missing or of another shape or dtype kind (:func:`expected_layout`), per-worker arrays
    outside the layout (the problem's state, generator states) without one row per worker. Reads metadata only:
    cheap on every rank, before anything is restored."""
    try:
        with _open(path) as f:
            for group, node in zip(("workers", "server"), like):
                _check_fields(f[group], node, group)
            for name, (shape, kind) in expected_layout(like, n_workers, d, extra).items():
                if name not in f or not isinstance(f[name], h5py.Dataset):
                    raise InputError("checkpoint", path, f"has no dataset /{name}, which this run keeps")
                ds = f[name]
                if len(ds.shape) != len(shape) or any(s is not None and s != h for s, h in zip(shape, ds.shape)):
                    want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
                    raise InputError("checkpoint", path, f"/{name} has shape {ds.shape}, where this run keeps {want}")
                if KINDS.get(ds.dtype.kind, ds.dtype.kind) != KINDS.get(kind, kind):
                    raise InputError("checkpoint", path, f"/{name} has dtype {ds.dtype}, where this run keeps "
                                     f"{KINDS.get(kind, kind)} values")
            for name in ("problem", "worker_rngs"):
                if name in f and (not isinstance(f[name], h5py.Dataset) or not f[name].shape
                                  or f[name].shape[0] != n_workers):
                    raise InputError("checkpoint", path, f"/{name} has shape {getattr(f[name], 'shape', None)}, where "
                                     f"this run keeps one row per worker ({n_workers})")
    except ValueError as e:
        raise InputError("checkpoint", path, str(e)) from None
    except CORRUPT as e:
        raise InputError("checkpoint", path, f"is not a readable checkpoint (truncated or corrupt: {e})") from None


def _check_fields(group: h5py.Group, like: Any, where: str) -> None:
    """ValueError if the record stored in ``group`` has other fields than ``like`` (nested records too)."""
    if group.attrs.get("type") == "none":
        if like is not None and hasattr(like, "_fields"):
            raise ValueError(f"{where} holds no state record, where this method keeps {type(like).__name__}")
        return
    if not hasattr(like, "_fields"):
        raise ValueError(f"{where} holds a state record ({group.attrs.get('type')}) where this method keeps none")
    stored = sorted(group)
    if stored != sorted(like._fields):
        raise ValueError(f"{where} holds the fields ({', '.join(stored)}), where this method keeps ({', '.join(like._fields)})")
    for name, template in zip(like._fields, like):
        if isinstance(group[name], h5py.Group):
            _check_fields(group[name], template, f"{where}/{name}")


def table_rows(runner_data: dict) -> dict:
    """The rows of the runner's tables that a checkpoint's runner data counts (``runner_data["tables"]``;
    checkpoints of earlier versions counted /events alone, as ``runner_data["events"]``)."""
    if "tables" in runner_data:
        return {name: int(rows) for name, rows in runner_data["tables"].items()}
    return {"events": int(runner_data["events"])} if "events" in runner_data else {}


def write(path: str, state: RunState, comm: Any, stamp: dict) -> None:
    """Collective: write ``state`` (this rank's workers) to ``path`` atomically; rank 0 writes the file.

    ``stamp`` holds run_id, config_hash, runner, method, n_workers, deterministic. A write error on rank 0
    (disk full, quota) is raised on every rank as RunFailed after the collective part has finished, so
    no rank is left waiting; the previous checkpoint then stays in place."""
    sink = _Sink(path if comm.rank == 0 else None)
    try:
        sink.run(lambda f: _write_head(f, state, comm.size, stamp))
        workers = state.workers
        sink.run(lambda f: _write_tree(f.create_group("workers"), workers, per_worker=True))
        for name in getattr(workers, "_fields", ()):
            if name not in getattr(workers, "replicated", ()):
                _write_block(sink, comm, f"workers/{name}", getattr(workers, name))
        for name in Ledger.per_worker:
            _write_block(sink, comm, f"ledger/{name}", getattr(state.ledger, name))
        if state.problem is not None:  # problems with per-worker state only (the same on every rank of a run)
            _write_block(sink, comm, "problem", state.problem)
        if state.worker_rngs:  # runners with per-worker generators only (the same on every rank of a run)
            _write_block(sink, comm, "worker_rngs", np.array([json.dumps(s) for s in state.worker_rngs], dtype=object))
        sink.commit()
    except BaseException:  # e.g. aborted by a second signal: the previous checkpoint stays, the temporary goes
        sink.discard()
        raise
    comm.agree(sink.error)


class _Sink:
    """Rank 0's temporary checkpoint file; the first OSError is kept and later writes are skipped, so that
    the ranks still go through every collective step together."""

    def __init__(self, path: Optional[str]):
        self.path, self.f, self.error = path, None, None
        if path is not None:
            self.tmp = temporary_beside(path, "tmp")
            self.run(lambda _: setattr(self, "f", h5py.File(self.tmp, "w", libver=LIBVER)), need_file=False)

    def run(self, action: Callable[[h5py.File], None], need_file: bool = True) -> None:
        if self.path is None or self.error is not None or (need_file and self.f is None):
            return
        try:
            action(self.f)
        except OSError as e:
            self.error = RunFailed(f"checkpoint {self.path} cannot be written: {e}")

    def commit(self) -> None:
        """fsync, then rename over the previous checkpoint: the one moment the new checkpoint exists."""
        if self.path is None:
            return

        def close(f: h5py.File) -> None:
            f.flush()
            os.fsync(f.id.get_vfd_handle())
            f.close()
            os.replace(self.tmp, self.path)
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

        self.run(close)
        if self.error is not None:
            self.discard()

    def discard(self) -> None:
        """Close and remove the temporary file, if it is still there."""
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            if self.f is not None and self.f.id.valid:
                self.f.close()
        with contextlib.suppress(OSError):
            os.remove(self.tmp)


def read(path: str, worker_ids: np.ndarray, like: tuple[Any, Any]) -> RunState:
    """The run state of this rank's workers (worker ids are contiguous). ``like``: the (workers, server) records
    the run would start from (``Runner.initial_states``); the saved state is read back into records of their
    classes, after checking that the file holds the same fields (ValueError naming them if not)."""
    lo, hi = int(worker_ids[0]), int(worker_ids[-1]) + 1
    with _open(path) as f:
        head, a = json.loads(f.attrs["stamp"]), json.loads(f.attrs["state"])
        ledger = Ledger(*(f[f"ledger/{name}"][lo:hi] for name in Ledger.per_worker),
                        f["ledger/pending_down"][()], f["ledger/initial_down"][()], a["initial_unwritten"])
        rngs = [json.loads(s) for s in f["worker_rngs"].asstr()[lo:hi]] if "worker_rngs" in f else []
        runner_data = {**a["extra"], **{k: v[()] for k, v in f["extra"].items()}} if "extra" in f else a["extra"]
        problem = f["problem"][lo:hi] if "problem" in f else None
        workers, server = like
        return RunState(head["t"], f["x"][()], _read_tree(f["workers"], workers, "workers", (lo, hi)),
                        _read_tree(f["server"], server, "server"), ledger,
                        head["rows"], a["elapsed"], a["loss"], a["grad_norm_sq"], a["status"], a["rngs"], runner_data, rngs,
                        problem)


# ------------------------------------------------------------------------------------ writing
def _write_head(f: h5py.File, state: RunState, n_ranks: int, stamp: dict) -> None:
    """Two JSON attributes rather than twenty: a checkpoint every few rounds must be cheap to write."""
    arrays = {k: v for k, v in state.runner_data.items() if isinstance(v, np.ndarray)}
    head = {**stamp, "n_ranks": n_ranks, "t": state.t, "rows": state.rows, "created": timestamp(),
            "mpiclip_version": __version__}
    body = {"elapsed": state.elapsed, "loss": state.loss, "grad_norm_sq": state.grad_norm_sq, "status": state.status,
            "rngs": state.rngs, "extra": {k: v for k, v in state.runner_data.items() if k not in arrays},
            "initial_unwritten": state.ledger.initial_unwritten}
    f.attrs["format"] = FORMAT
    f.attrs["stamp"] = json.dumps(head)
    f.attrs["state"] = json.dumps(body)
    f.create_dataset("x", data=state.x)
    _write_tree(f.create_group("server"), state.server)
    f.create_dataset("ledger/pending_down", data=state.ledger.pending_down)
    f.create_dataset("ledger/initial_down", data=state.ledger.initial_down)
    for key, value in arrays.items():
        f.create_dataset(f"extra/{key}", data=value)


def _write_tree(group: h5py.Group, node: Any, per_worker: bool = False) -> None:
    """A NamedTuple of arrays (or None) as a group; with ``per_worker`` only its replicated fields (the
    per-worker ones arrive block by block)."""
    if node is None:
        group.attrs["type"] = "none"
        return
    cls = type(node)
    group.attrs["type"] = f"{cls.__module__}:{cls.__qualname__}"
    replicated = getattr(node, "replicated", ())
    for name, value in zip(node._fields, node):
        if per_worker and name not in replicated:
            continue
        if hasattr(value, "_fields") or value is None:
            _write_tree(group.create_group(name), value)
        else:
            group.create_dataset(name, data=np.asarray(value))


def _write_block(sink: _Sink, comm: Any, name: str, block: np.ndarray) -> None:
    """Collective: every rank's rows of one per-worker array into the rows of one dataset on rank 0."""
    block = np.asarray(block)
    n = int(comm.workers_per_rank.sum())
    if block.dtype.kind in "OU":  # strings (generator states as JSON) do not travel as buffers: few and small
        rows = [s for part in comm.allgather_objects(list(block)) for s in part]
        sink.run(lambda f: f.create_dataset(name, data=np.array(rows, dtype=object), dtype=h5py.string_dtype()))
        return
    sink.run(lambda f: f.create_dataset(name, shape=(n,) + block.shape[1:], dtype=block.dtype))

    def put(first: int, rows: np.ndarray) -> None:
        sink.run(lambda f: f[name].write_direct(np.ascontiguousarray(rows), dest_sel=np.s_[first : first + len(rows)]))

    comm.stream_to_root(block, put)


# ------------------------------------------------------------------------------------ reading
def _read_tree(group: h5py.Group, like: Any, where: str, rows: Optional[tuple[int, int]] = None) -> Any:
    """The record written by ``_write_tree``, rebuilt as the class of ``like`` (the stored class name is not
    used: a state class may move or be renamed between versions); ``rows`` selects the local workers of
    per-worker fields."""
    if group.attrs["type"] == "none":
        return None
    if not hasattr(like, "_fields"):
        raise ValueError(f"{where} holds a state record ({group.attrs['type']}) where this method keeps none")
    cls = type(like)
    stored = sorted(group)
    if stored != sorted(cls._fields):
        raise ValueError(f"{where} holds the fields ({', '.join(stored)}), where this method keeps "
                         f"({', '.join(cls._fields)})")
    replicated = getattr(cls, "replicated", ())
    values = []
    for name, template in zip(cls._fields, like):
        item = group[name]
        if isinstance(item, h5py.Group):
            values.append(_read_tree(item, template, f"{where}/{name}"))
        elif rows is not None and name not in replicated:
            values.append(item[rows[0] : rows[1]])
        else:
            values.append(item[()])
    return cls(*values)


def _open(path: str) -> h5py.File:
    # the file never changes once renamed into place: no lock, so every rank can read it at once (also on NFS)
    return h5py.File(path, "r", locking=False)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
