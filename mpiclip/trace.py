"""HDF5 traces (docs/design.md §5, schema 2): written by rank 0 in chunks, readable after a crash, never lying
about status; read back by :func:`load_trace` (schema 1 and 2).

Schema 2 files are written with the HDF5 1.10 format bounds, so h5dump 1.10 and newer open them, and
switched to SWMR mode once laid out, so that whatever is flushed stays readable even if the process
is killed (open such a file with ``swmr=True``, as :func:`open_trace` does). Every dataset but the
scalar ones is chunked and compressed (gzip + shuffle; a vector over 2²⁰ values only if gzip shrinks
it) and carries a ``units`` attribute; the row index ``/rounds`` (and ``/events/update`` for
asynchronous runs) is an HDF5 dimension scale attached to the per-row datasets, and ``/worker`` to
their worker axis, so xarray reads them::

    xarray.open_dataset(path, engine="h5netcdf", phony_dims="access")                 # f, ‖∇f‖², time
    xarray.open_dataset(path, engine="h5netcdf", phony_dims="access", group="workers") # per-worker metrics

This module never imports mpi4py: analysis scripts use it directly.

Bits convention: row r (recorded at round t_r) holds the bits each worker sent in rounds
t_{r-1} .. t_r − 1, i.e. the communication that produced x^{t_r} from the previous recorded iterate.
The cumulative sum over rows is therefore the number of bits sent before x^t existed. An initial round
(EF21's uncompressed ∇f_i(x^0)) is kept apart in /bits/initial/up (and /bits/initial/down).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import time
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Optional

import h5py
import numpy as np

from mpiclip import SCHEMA_VERSION, __version__
from mpiclip.compressors import ENCODINGS
from mpiclip.errors import MpiclipError
from mpiclip.writer_lock import WriterLock, live_status

BITS_CONVENTION = ("row r holds the bits sent in rounds t_{r-1}..t_r-1 (cumsum = bits sent before x^t); "
                   "the initial round is in /bits/initial/up")
LIBVER = ("v110", "v110")  # h5dump 1.10 reads the file; SWMR needs at least v110
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
ROOM_MARGIN = 1 << 16  # bytes kept free for HDF5's metadata and the final status
LARGE_ARRAY, SAMPLE = 1 << 20, 1 << 16  # elements: arrays above LARGE_ARRAY are compressed if a sample shrinks
CHUNK_BYTES = 1 << 15  # rows per chunk: about 32 kB of a per-row dataset (an append rewrites its last, partial chunk)

UNITS = {"rounds": "round", "time": "s", "sim_time": "time unit (s in real mode)", "update": "update", "start": "update",
         "delay": "update",
         "worker": "worker id", "bits": "bit", "loss": "1", "grad_norm_sq": "1", "comm_rounds": "communication round",
         "sim_compute": "s", "sim_comm": "s", "sim_wait": "s", "sim_dropped": "client"}
FEDERATED_SCALARS = ("test_loss", "test_accuracy", "train_accuracy", "grad_variance", "comm_rounds")
# per-row scalars kept at the root rather than in /metrics: the federated ones, and the simulated clock's columns
# ([system]; mpiclip.system computes them): sim_time and its breakdown, cumulative seconds per recorded row
CLOCK_COLUMNS = ("sim_time", "sim_compute", "sim_comm", "sim_wait")
DROPPED = "sim_dropped"  # federated: clients dropped so far (offline, late, or beyond the first that finished)
ROOT_SCALARS = FEDERATED_SCALARS + CLOCK_COLUMNS + (DROPPED,)
RUN_ATTRS = ("stop_reason", "finished", "rounds_run", "wall_seconds", "timing")  # set when a run ends


def _chunk_rows(cols: int) -> int:
    rows = max(16, min(1024, CHUNK_BYTES // (8 * max(cols, 1))))
    return 1 << (rows.bit_length() - 1)


def _rows_dataset(group: h5py.Group, name: str, cols: Optional[int], dtype: str, units: str) -> h5py.Dataset:
    """A resizable per-row dataset: (rows,) or (rows, cols)."""
    shape, maxshape = ((0,), (None,)) if cols is None else ((0, cols), (None, cols))
    chunks = (_chunk_rows(1),) if cols is None else (_chunk_rows(cols), cols)
    ds = group.create_dataset(name, shape=shape, maxshape=maxshape, chunks=chunks, dtype=dtype,
                              fillvalue=np.nan if dtype == "f8" else 0, **COMPRESSION)
    ds.attrs["units"] = units
    return ds


def _array_dataset(group: h5py.Group, name: str, data, units: str = "1") -> h5py.Dataset:
    data = np.asarray(data)
    if data.ndim == 0:  # scalars cannot be chunked
        ds = group.create_dataset(name, data=data)
    else:  # an empty array gets an unlimited axis: HDF5 cannot chunk a fixed empty shape
        ds = group.create_dataset(name, data=data, chunks=True, maxshape=None if data.size else (None,) * data.ndim,
                                  **_compression_for(data))
    ds.attrs["units"] = units
    return ds


def _compression_for(data: np.ndarray) -> dict:
    """gzip, except for a large array that a strided sample shows gzip cannot shrink by a fifth: a random
    x⁰ of 10⁷ values is only 10 % smaller, at 16 times the time of storing it plain."""
    if data.size <= LARGE_ARRAY or data.dtype.kind not in "fiu":
        return COMPRESSION
    flat = data.ravel()
    sample = np.ascontiguousarray(flat[:: max(1, flat.size // SAMPLE)][:SAMPLE])
    shuffled = sample.view(np.uint8).reshape(-1, sample.itemsize).T.tobytes()  # as HDF5's shuffle filter
    return COMPRESSION if len(zlib.compress(shuffled, COMPRESSION["compression_opts"])) < 0.8 * len(shuffled) else {}


def _units(name: str) -> str:
    return UNITS.get(name.split("/")[-1], UNITS["bits"] if name.startswith("bits/") else "1")


class TraceWriter:
    """Rank 0's handle on one trace file.

    ``create`` lays out a new file; ``reopen`` continues one (a resumed run): the per-row datasets are
    cut back to the rows the checkpoint knows, the end-of-run attributes are removed and the status is
    ``running`` again. The writer holds the trace's lock (:mod:`mpiclip.writer_lock`) from before it
    touches the file until the final status is written; every flush renews the lock's heartbeat.
    """

    def __init__(self, path: str, f: h5py.File, n_workers: int, worker_metrics: tuple[str, ...], rows: int,
                 lock: WriterLock):
        self.path, self.f, self.n, self.worker_metrics, self.rows = path, f, n_workers, worker_metrics, rows
        self.lock = lock
        self._open: dict[str, h5py.Dataset] = {}

    @classmethod
    def create(cls, path: str, attrs: dict, n_workers: int, worker_metrics: tuple[str, ...],
               arrays: dict[str, np.ndarray], round_metrics: tuple[str, ...] = (), tables: tuple = ()) -> "TraceWriter":
        """``round_metrics``: per-row scalars of the runner, the method and the problem (/metrics/<name>; the
        federated names go to the root);
        ``tables``: (:class:`~mpiclip.runners.base.Table`, width) of the runner's tables (e.g. /events/ of an
        asynchronous run, /clients of a federated one; width: a 2-D table's values per row)."""
        lock = WriterLock(path).acquire()
        try:
            if os.path.exists(path):
                os.remove(path)
            f = h5py.File(path, "w", libver=LIBVER)
        except BaseException:
            lock.release()
            raise
        for key, value in {**attrs, "mpiclip_version": __version__, "schema_version": SCHEMA_VERSION,
                           "status": "running", "bits_convention": BITS_CONVENTION, "encodings": list(ENCODINGS),
                           "started": timestamp()}.items():
            f.attrs[key] = value
        rounds = _rows_dataset(f, "rounds", None, "i8", UNITS["rounds"])
        rounds.make_scale("rounds")
        worker = _array_dataset(f, "worker", np.arange(n_workers), UNITS["worker"])
        worker.make_scale("worker")
        per_row = [_rows_dataset(f, name, None, "f8", _units(name)) for name in ("time", "loss", "grad_norm_sq")]
        for e in ENCODINGS:
            per_row.append(_rows_dataset(f, f"bits/up/{e}", n_workers, "f8", "bit"))
            per_row.append(_rows_dataset(f, f"bits/down/{e}", None, "f8", "bit"))
            _array_dataset(f, f"bits/initial/up/{e}", np.zeros(n_workers), "bit").dims[0].attach_scale(worker)
            _array_dataset(f, f"bits/initial/down/{e}", 0.0, "bit")
        for name in round_metrics:
            per_row.append(_rows_dataset(f, _scalar_path(f"metrics/{name}"), None, "f8", _units(name)))
        for m in worker_metrics:
            per_row.append(_rows_dataset(f, f"workers/{m}", n_workers, "f8", "1"))
        for ds in per_row:
            ds.dims[0].attach_scale(rounds)
            if ds.ndim == 2:
                ds.dims[1].attach_scale(worker)
        for table, width in tables:
            _table_datasets(f, table, width)
        for name, value in arrays.items():
            _array_dataset(f, name, value, _units(name))
        f.swmr_mode = True
        f.flush()
        return cls(path, f, n_workers, worker_metrics, 0, lock)

    @classmethod
    def reopen(cls, path: str, run_id: str, rows: int, n_workers: int, worker_metrics: tuple[str, ...],
               attrs: dict, counts: Optional[dict] = None) -> "TraceWriter":
        """Continue the trace of run ``run_id`` after its first ``rows`` rows (``counts``: the lengths of
        tables with their own row index, such as events/update).

        The trace is copied, cut back to those rows, into a new file that then replaces it: a file whose
        writer was killed cannot be opened for writing again (its SWMR flags stay set), and the old trace
        stays whole until the new one is in place."""
        lock = WriterLock(path).acquire()
        try:
            return cls._reopen(path, run_id, rows, n_workers, worker_metrics, attrs, counts, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _reopen(cls, path, run_id, rows, n_workers, worker_metrics, attrs, counts, lock) -> "TraceWriter":
        tmp = temporary_beside(path, "resume")
        with open_trace(path) as old:
            if old.attrs.get("run_id") != run_id:
                raise ValueError(f"{path} belongs to run {old.attrs.get('run_id')!r}, not {run_id!r}")
            f = h5py.File(tmp, "w", libver=LIBVER)
            try:
                _copy_rows(old, f, {"rounds": rows, **(counts or {})})
                for key in RUN_ATTRS:
                    f.attrs.pop(key, None)
                for key, value in {**attrs, "status": "running"}.items():
                    f.attrs[key] = value
                f.flush()
                os.fsync(f.id.get_vfd_handle())
                os.replace(tmp, path)
                f.swmr_mode = True
            except BaseException:
                f.close()
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
        return cls(path, f, n_workers, worker_metrics, rows, lock)

    def append(self, scalars: dict[str, np.ndarray], bits_up: np.ndarray, bits_down: np.ndarray,
               workers: np.ndarray) -> None:
        """scalars: rounds/time/loss/grad_norm_sq/metrics (k,); bits_up (k, n, E); bits_down (k, E); workers (k, n, M)."""
        k = len(scalars["rounds"])
        if k == 0:
            return
        columns = [(_scalar_path(name), values) for name, values in scalars.items()]
        for j, e in enumerate(ENCODINGS):
            columns += [(f"bits/up/{e}", bits_up[:, :, j]), (f"bits/down/{e}", bits_down[:, j])]
        columns += [(f"workers/{m}", workers[:, :, j]) for j, m in enumerate(self.worker_metrics)]
        with self._writing(sum(np.asarray(v).nbytes for _, v in columns), len(columns)):
            lo, hi = self.rows, self.rows + k
            for name, values in columns:
                ds = self._dataset(name)
                ds.resize(hi, axis=0)
                ds[lo:hi] = values
            self.rows = hi
            self.f.flush()
            self.lock.beat()

    @contextlib.contextmanager
    def _writing(self, nbytes: int, datasets: int = 1):
        """Refuse a write that the disk or the file-size limit cannot take (before the file is touched, so
        that it stays readable with every earlier row), and turn write errors into :class:`TraceWriteError`.
        The bound: the data twice, a fresh chunk for every dataset written, and room for the final status."""
        need = 2 * nbytes + datasets * CHUNK_BYTES + ROOM_MARGIN
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            if st.f_bavail * st.f_frsize < need:
                raise TraceWriteError(f"no space left: the trace's file system has {st.f_bavail * st.f_frsize} bytes "
                                      f"free, the next rows need about {need}")
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            if limit != resource.RLIM_INFINITY and os.path.getsize(self.path) + need > limit:
                raise TraceWriteError(f"the file-size limit (ulimit -f) of {limit} bytes would be passed by the next rows "
                                      f"(the trace has {os.path.getsize(self.path)} bytes)")
            yield
        except TraceWriteError:
            raise
        except (OSError, RuntimeError) as e:
            raise TraceWriteError(getattr(e, "strerror", None) or str(e)) from None

    def _dataset(self, name: str) -> h5py.Dataset:
        """Open datasets are kept: looking one up by path costs more than writing a chunk of rows."""
        if name not in self._open:
            self._open[name] = self.f[name]
        return self._open[name]

    def append_table(self, group: str, columns: dict[str, np.ndarray]) -> None:
        """Append rows to a table with its own row count (``events``: one row per arrival; ``clients``)."""
        with self._writing(sum(np.asarray(v).nbytes for v in columns.values()), len(columns)):
            for name, values in columns.items():
                ds = self.f[f"{group}/{name}" if name else group]
                lo = ds.shape[0]
                ds.resize((lo + len(values),) + ds.shape[1:])
                ds[lo:] = values
            self.f.flush()
            self.lock.beat()  # a run whose tables grow between rows (real asynchrony's arrivals) is alive

    def set_initial_bits(self, up: np.ndarray, down: np.ndarray) -> None:
        """up: (n, E) and down: (E,) bits of the initial round."""
        with self._writing(up.nbytes + down.nbytes):
            for j, e in enumerate(ENCODINGS):
                self.f[f"bits/initial/up/{e}"][:] = up[:, j]
                self.f[f"bits/initial/down/{e}"][()] = down[j]
            self.f.flush()

    def sync(self) -> None:
        """Flush HDF5's buffers and the operating system's to the disk (before a checkpoint commits)."""
        with self._writing(0):
            self.f.flush()
            os.fsync(self.f.id.get_vfd_handle())

    def finish(self, status: str, attrs: dict, arrays: dict[str, np.ndarray]) -> None:
        """Leave SWMR mode, then write the final status and arrays."""
        try:
            self.f.close()
            with h5py.File(self.path, "r+", libver=LIBVER) as f:
                for name, value in arrays.items():
                    _array_dataset(f, name, value, _units(name))
                for key, value in attrs.items():
                    f.attrs[key] = value
                f.attrs["finished"] = timestamp()
                f.attrs["status"] = status
        except BaseException:
            self.lock.release(keep=bool(self.lock.failed))  # a noted status outlives the writer
            raise
        self.lock.release()

    def abandon(self, status: str) -> None:
        """Best effort after an unexpected error: record why the run stopped. If even the status cannot be
        written into the trace (a full disk), the lock file keeps it for the readers."""
        self.lock.note(status)
        try:
            self.finish(status, {}, {})
        except Exception:  # the original error matters more
            pass


class TraceWriteError(MpiclipError):
    """The trace cannot be written (no space, a file-size limit, an I/O error): the run fails honestly."""

    def __init__(self, reason: str):
        super().__init__(f"the trace cannot be written: {reason}")


def _table_datasets(f: h5py.File, table, width: int) -> None:
    """A runner's table: its columns, the first the row index (a dimension scale the others attach to), and
    its bits per encoding; or one 2-D dataset of ``width`` integers per row."""
    if table.per_round:
        _rows_dataset(f, table.name, width, "i8", table.units)
        return
    (first, dtype), *rest = table.columns
    index = _rows_dataset(f, table.index, None, dtype, _units(first))
    index.make_scale(first)
    columns = [_rows_dataset(f, f"{table.name}/{c}", None, dt, _units(c)) for c, dt in rest]
    if table.bits:
        columns += [_rows_dataset(f, f"{table.name}/bits/{e}", None, "f8", "bit") for e in ENCODINGS]
    for ds in columns:
        ds.dims[0].attach_scale(index)


def _scalar_path(name: str) -> str:
    """Where a recorder's per-row scalar lives: the federated metrics at the root (docs/design.md §5)."""
    leaf = name.removeprefix("metrics/")
    return leaf if leaf in ROOT_SCALARS else name


SCALE_ATTRS = ("DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME")  # HDF5's own bookkeeping of scales


def _copy_rows(old: h5py.File, new: h5py.File, lengths: dict) -> None:
    """Copy every object of ``old`` but /x_final into ``new``, per-row datasets cut to the length of their row
    index (their first dimension scale), and attach the dimension scales again."""
    for key, value in old.attrs.items():
        new.attrs[key] = value
    scales, attached = [], []

    def copy(name: str, obj) -> None:
        if isinstance(obj, h5py.Group):
            target = new.require_group(name)
        elif name == "x_final":
            return
        else:
            rows = None
            if obj.ndim and obj.maxshape[0] is None:
                index = name if obj.is_scale or not len(obj.dims[0]) else obj.dims[0][0].name.lstrip("/")
                rows = lengths.get(index)
            data = obj[()] if rows is None else obj[:rows]
            layout = {} if obj.chunks is None else {"chunks": obj.chunks, "maxshape": obj.maxshape,
                                                     "compression": obj.compression, "compression_opts": obj.compression_opts,
                                                     "shuffle": obj.shuffle}
            target = new.create_dataset(name, data=data, dtype=obj.dtype, fillvalue=obj.fillvalue, **layout)
            if obj.is_scale:
                scales.append((name, obj.attrs["NAME"]))
            attached.extend((name, dim, scale.name) for dim in range(obj.ndim) for scale in obj.dims[dim].values()
                            if not obj.is_scale)
        for key, value in obj.attrs.items():
            if key not in SCALE_ATTRS:
                target.attrs[key] = value

    old.visititems(copy)
    for name, label in scales:
        new[name].make_scale(label.decode() if isinstance(label, bytes) else label)
    for name, dim, scale in attached:
        new[name].dims[dim].attach_scale(new[scale])


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def temporary_beside(path: str, purpose: str) -> str:
    """A hidden file in ``path``'s directory, renamed over ``path`` once complete (same file system). The name is
    this process's (its callers hold the trace's lock): a symbolic link left there is removed, so that the file
    is made in the directory and not wherever the link points."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{purpose}-{os.getpid()}")
    if os.path.islink(tmp):
        os.unlink(tmp)
    return tmp


def remove_leftovers(path: str) -> None:
    """Remove the temporaries of ``path`` that a killed writer left behind; call it holding the trace's lock,
    which makes every temporary beside ``path`` a leftover."""
    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    pattern = re.compile(re.escape(f".{name}.") + r"[a-z]+-\d+$")
    for entry in os.listdir(folder):
        if pattern.match(entry):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))


# ------------------------------------------------------------------------------------ reading
CORRUPT = (OSError, KeyError, RuntimeError)  # what h5py raises for a file that is not a whole HDF5 file


def open_trace(path: str) -> h5py.File:
    """Open a trace for reading, also one whose writer is running or was killed (SWMR).

    SWMR mode is used only for a file whose superblock says a writer has it open: a SWMR reader skips
    HDF5's truncation check and retries a failed checksum for minutes, so a cut-short or corrupt closed
    file would hang it instead of failing at once."""
    if _open_for_writing(path):
        try:
            return h5py.File(path, "r", swmr=True)
        except OSError:
            pass
    return h5py.File(path, "r")


def _open_for_writing(path: str) -> bool:
    """The superblock's file-consistency flags (versions 2 and 3, the ones SWMR writes); raises OSError for
    a file shorter than its superblock records."""
    with open(path, "rb") as f:
        head = f.read(36)
    if len(head) < 36 or head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] < 2 or head[9] != 8:
        return False  # not HDF5 at offset 0, or an old superblock: HDF5 itself says what is wrong
    base, stored_eof = int.from_bytes(head[12:20], "little"), int.from_bytes(head[28:36], "little")
    size = os.path.getsize(path)
    if size + base < stored_eof:
        raise OSError(f"truncated file: {size} bytes of the {stored_eof - base} its superblock records")
    return head[11] != 0


class TraceError(OSError):
    """A file that is not a readable trace: missing, cut short, corrupt, or breaking the trace contract
    (:mod:`mpiclip.trace_contract`). ``reason`` says why in one line, naming the first bad dataset or attribute."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, " ".join(str(reason).split("\n"))
        super().__init__(f"{path}: {self.reason}")


def _unreadable(path: str, e: BaseException) -> TraceError:
    """The TraceError of what opening or reading ``path`` raised (h5py's words for a damaged file)."""
    if isinstance(e, TraceError):
        return e
    if isinstance(e, OSError) and not os.path.exists(path):
        return TraceError(path, "no such file")
    if isinstance(e, (KeyError, RuntimeError)):  # a damaged object header or heap
        return TraceError(path, f"corrupt: {e.args[0] if e.args else e}")
    return TraceError(path, str(e))


def trace_status(path: str) -> str:
    """'missing', 'unreadable: <reason>', or the trace's status (``failed: writer lost`` for a running trace whose
    writer is gone). The file is held to the trace contract from its metadata, as every reader holds it."""
    from mpiclip.trace_contract import layout, read_attributes

    if not os.path.exists(path):
        return "missing"
    try:
        with open_trace(path) as f:
            status = str(read_attributes(f, path, None)["status"])
            layout(f, path, None)
    except CORRUPT as e:
        return f"unreadable: {_unreadable(path, e).reason}"
    return live_status(path, status)


@dataclass
class Trace:
    path: str
    attrs: dict
    config: dict
    rounds: np.ndarray
    time: np.ndarray
    loss: np.ndarray
    grad_norm_sq: np.ndarray
    bits_up: dict  # encoding -> (T, n)
    bits_down: dict  # encoding -> (T,)
    bits_initial: dict  # encoding -> (n,)
    workers: dict  # metric -> (T, n)
    metrics: dict  # name -> (T,) the per-round scalars besides f and ‖∇f‖² (the runner's, the method's, the problem's)
    bits_initial_down: dict  # encoding -> float
    # every registered runner's tables (Runner.tables), empty where the run wrote none: a table of columns as
    # column -> (U,) with its bits as bits/<encoding>; a per-round table as one (R, width) array
    tables: dict = field(default_factory=dict)

    @property
    def schema(self) -> int:
        return int(self.attrs.get("schema_version", 1))

    @property
    def provenance(self) -> dict:
        return json.loads(self.attrs.get("provenance", "{}"))

    @property
    def status(self) -> str:
        return str(self.attrs.get("status", "?"))

    @property
    def label(self) -> str:
        return str(self.attrs.get("name", os.path.basename(self.path)))

    def bits_down_cumulative(self, encoding: str = "paper", include_initial: bool = False) -> np.ndarray:
        """Cumulative bits the server broadcast before each recorded x^t."""
        return np.cumsum(self.bits_down[encoding]) + (self.bits_initial_down.get(encoding, 0.0) if include_initial else 0.0)

    def bits_per_worker(self, encoding: str = "paper", include_initial: bool = False) -> np.ndarray:
        """Cumulative bits per worker (mean over workers) sent before each recorded x^t: the papers' #bits/n."""
        if encoding not in self.bits_up:
            raise KeyError(f"unknown encoding {encoding!r} (trace has {', '.join(self.bits_up)})")
        cumulative = np.cumsum(self.bits_up[encoding].mean(axis=1))
        if include_initial:
            cumulative = cumulative + self.bits_initial[encoding].mean()
        return cumulative


def load_trace(path: str, columns: Optional[Iterable[str]] = None, attrs: Optional[Iterable[str]] = None) -> Trace:
    """The attributes and the per-row arrays of a schema 1 or 2 trace (a running one too); :class:`TraceError` (an
    OSError) for a file that is not one, is cut short or corrupt, or breaks the trace contract
    (:mod:`mpiclip.trace_contract`: what is read is checked first). ``columns``: only these datasets, by their path in
    the file (``"loss"``, ``"test_accuracy"``, ``"metrics/accuracy"``, ``"bits/up/paper"``), or groups with all below
    them (``"workers"``, ``"events"``); ``attrs``: only these attributes and ``status``. What is left out is empty, as
    in a trace without it (reading a few columns of a trace is several times faster than reading it whole)."""
    try:
        return _load_trace(path, None if columns is None else tuple(c.strip("/") for c in columns),
                           None if attrs is None else ("status", *attrs))
    except CORRUPT as e:
        raise _unreadable(path, e) from None


def _load_trace(path: str, columns: Optional[tuple], names: Optional[tuple]) -> Trace:
    from mpiclip.trace_contract import layout, read_attributes, registered_tables

    with open_trace(path) as f:
        attrs = read_attributes(f, path, names)
        values = {name: ds[()] if rows is None else ds[:rows] for name, (ds, rows) in layout(f, path, columns).items()}
    if "status" in attrs:
        attrs["status"] = live_status(path, str(attrs["status"]))
    config = json.loads(attrs.get("config", "{}"))

    def read(name: str) -> np.ndarray:
        return values.get(name, np.zeros(0))

    def group(name: str) -> dict:  # the datasets read right below ``name``, in the file's order
        inside = len(name) + 1
        return {k[inside:]: v for k, v in values.items() if k.startswith(name + "/") and "/" not in k[inside:]}

    metrics = {**group("metrics"), **{n: values[n] for n in ROOT_SCALARS if n in values}}
    tables = {}
    for table in registered_tables():
        if table.per_round:
            tables[table.name] = values.get(table.name, np.zeros((0, 0), dtype=np.int64))
        else:
            tables[table.name] = {**group(table.name), **{f"bits/{k}": v for k, v in group(f"{table.name}/bits").items()}}
    return Trace(path, attrs, config, read("rounds"), read("time"), read("loss"), read("grad_norm_sq"),
                 group("bits/up"), group("bits/down"), group("bits/initial/up"), group("workers"), metrics,
                 {k: float(v) for k, v in group("bits/initial/down").items()}, tables)
