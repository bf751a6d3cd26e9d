"""A cache of parsed LibSVM files, so that a job parses a file once and every later job (and every
point of a sweep, every rank, every Slurm array task) maps the parsed rows from disk instead.

An entry is a directory named by the file's identity (real path, size, modification time in ns, inode,
and its first and last 64 kB) in ``$MPICLIP_CACHE`` (default ``$XDG_CACHE_HOME/mpiclip`` or
``~/.cache/mpiclip``; ``off`` disables it). It holds the raw CSR arrays (``indices.i32``,
``values.f64``), ``indptr.npy``, ``labels.npy`` and ``meta.json`` (shape, the file's SHA-256, the sizes
the arrays must have). A file that changes gets a new entry. The first process to miss an entry parses
the file holding the entry's lock, and the others (the node's other ranks, concurrent jobs) wait and map
its result; an entry is written under a temporary name and renamed whole, so no one sees half of one.
An entry is never trusted unchecked: ``meta.json`` records the CRC-32 of every array file and its own, and
an entry whose files do not match (a disk error, a hand edit, a cut copy) is removed and the file parsed
again (each process checks an entry once, a sequential read far cheaper than the parse). A cache that
cannot be written (read-only or full disk) only costs the parse.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

FORMAT = 2  # 2: meta.json holds the files' checksums
ARRAYS = ("labels.npy", "indptr.npy", "indices.i32", "values.f64")
EDGE = 1 << 16  # bytes read at each end of a file for its identity


def directory() -> Optional[str]:
    """Where entries live, or None when the cache is off."""
    setting = os.environ.get("MPICLIP_CACHE", "")
    if setting.lower() == "off":
        return None
    if setting:
        return os.path.join(setting, "libsvm")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mpiclip", "libsvm")


def _entry(path: str) -> Optional[str]:
    folder = directory()
    if folder is None:
        return None
    st = os.stat(path)
    identity = hashlib.sha256(f"{FORMAT}:{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode())
    with open(path, "rb") as f:  # the ends of the file too: a timestamp's granularity can be milliseconds
        identity.update(f.read(EDGE))
        f.seek(max(0, st.st_size - EDGE))
        identity.update(f.read(EDGE))
    return os.path.join(folder, identity.hexdigest()[:32])


@dataclass(frozen=True)
class Parsed:
    """A parsed file, its large arrays memory-mapped: only the rows asked for are read."""

    labels: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_features: int
    sha256: str

    def rows(self, rows: np.ndarray, n_features: int):
        """(CSR matrix, labels) of the given global row numbers."""
        import scipy.sparse as sp

        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.indptr[rows], self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # consecutive rows: one slice of the file
            picked = slice(int(starts[0]), int(starts[0] + indptr[-1]))
        else:
            picked = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        matrix = sp.csr_matrix((np.array(self.values[picked]), np.array(self.indices[picked]), indptr),
                               shape=(len(rows), n_features))
        return matrix, self.labels[rows]


@contextlib.contextmanager
def turn(path: str):
    """Hold the entry's lock while parsing, so that the ranks of a node (and concurrent jobs) parse a file
    once: the others wait, then map what the first published. Without a cache, or a lock that cannot be
    taken (some network file systems), everyone parses."""
    handle = None
    try:
        entry = _entry(path)
        if entry is not None:
            os.makedirs(os.path.dirname(entry), exist_ok=True)
            handle = open(entry + ".lock", "a")
            fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def load(path: str) -> Optional[Parsed]:
    """The entry of ``path``, or None (no cache, no entry, or a damaged one, which is removed so that the parse
    that follows publishes a sound one)."""
    try:
        entry = _entry(path)
        if entry is None or not os.path.isdir(entry):
            return None
    except OSError:
        return None
    try:
        return _checked(entry)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError):
        _discard(entry)
        return None


def _checked(entry: str) -> Parsed:
    with open(os.path.join(entry, "meta.json"), "rb") as f:
        meta = json.loads(f.read())
    if meta.get("check") != _meta_check(meta):
        raise ValueError("meta.json does not match its checksum")
    _verify(entry, tuple(sorted(meta["crc32"].items())), tuple(os.stat(os.path.join(entry, n)).st_mtime_ns for n in ARRAYS))
    nnz, n_rows = meta["nnz"], meta["n_rows"]
    labels = np.load(os.path.join(entry, "labels.npy"))
    indptr = np.load(os.path.join(entry, "indptr.npy"), mmap_mode="r")  # each load reads only what rows() needs
    if labels.shape != (n_rows,) or indptr.shape != (n_rows + 1,) or indptr[-1] != nnz:
        raise ValueError("arrays of the wrong shape")
    indices, values = (_map(os.path.join(entry, name), dtype, nnz) for name, dtype in
                       (("indices.i32", np.int32), ("values.f64", np.float64)))
    return Parsed(labels, indptr, indices, values, int(meta["n_features"]), str(meta["sha256"]))


def _meta_check(meta: dict) -> int:
    return zlib.crc32(json.dumps({k: v for k, v in meta.items() if k != "check"}, sort_keys=True).encode())


@functools.lru_cache(maxsize=8)
def _verify(entry: str, crcs: tuple, stamps: tuple) -> None:
    """Raise ValueError unless every array file has the CRC-32 meta.json records (once per process and entry
    version: ``stamps``, the files' times, make a replaced file a new check)."""
    for name, expected in crcs:
        if _crc32(os.path.join(entry, name)) != expected:
            raise ValueError(f"{name} does not match its checksum")
    if sorted(name for name, _ in crcs) != sorted(ARRAYS):
        raise ValueError("meta.json lacks checksums")


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


def _discard(entry: str) -> None:
    """Remove a damaged entry (renamed first, so that no one maps half of it while it goes)."""
    try:
        doomed = tempfile.mkdtemp(prefix=".damaged-", dir=os.path.dirname(entry))
        os.rename(entry, os.path.join(doomed, "entry"))
        shutil.rmtree(doomed, ignore_errors=True)
    except OSError:
        pass


def _map(path: str, dtype, count: int) -> np.ndarray:
    if os.path.getsize(path) != count * np.dtype(dtype).itemsize:
        raise ValueError(f"{path} is not {count} values long")
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype=dtype)


class Writer:
    """Streams a file's parsed blocks into a new entry; ``finish`` publishes it. Every error is swallowed:
    the cache is an optimisation, never a reason for a run to fail."""

    def __init__(self, path: str):
        self.tmp, self.entry, self.files, self.counts, self.crcs = None, None, [], [], [0, 0]
        try:
            self.entry = _entry(path)
            if self.entry is not None and not os.path.isdir(self.entry):
                os.makedirs(os.path.dirname(self.entry), exist_ok=True)
                self.tmp = tempfile.mkdtemp(prefix=".writing-", dir=os.path.dirname(self.entry))
                self.files = [open(os.path.join(self.tmp, name), "wb") for name in ("indices.i32", "values.f64")]
        except OSError:
            self.abandon()

    def add(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
        if self.tmp is None:
            return
        try:
            self.counts.append(np.diff(indptr))
            for i, array in enumerate((np.ascontiguousarray(indices, dtype=np.int32),
                                       np.ascontiguousarray(values, dtype=np.float64))):
                raw = array.tobytes()
                self.files[i].write(raw)
                self.crcs[i] = zlib.crc32(raw, self.crcs[i])
        except OSError:
            self.abandon()

    def finish(self, labels: np.ndarray, n_features: int, sha256: str) -> None:
        if self.tmp is None:
            return
        try:
            for f in self.files:
                f.close()
            indptr = np.concatenate([[0], np.cumsum(np.concatenate(self.counts or [np.zeros(0, np.int64)]))])
            np.save(os.path.join(self.tmp, "indptr.npy"), indptr.astype(np.int64))
            np.save(os.path.join(self.tmp, "labels.npy"), np.asarray(labels, dtype=np.float64))
            crcs = {"indices.i32": self.crcs[0], "values.f64": self.crcs[1],
                    **{name: _crc32(os.path.join(self.tmp, name)) for name in ("labels.npy", "indptr.npy")}}
            meta = {"format": FORMAT, "n_rows": len(labels), "nnz": int(indptr[-1]), "n_features": int(n_features),
                    "sha256": sha256, "crc32": crcs}
            meta["check"] = _meta_check(meta)
            with open(os.path.join(self.tmp, "meta.json"), "w") as f:
                json.dump(meta, f)
            os.rename(self.tmp, self.entry)  # fails if another job published the entry first: keep theirs
            self.tmp = None
        except OSError:
            pass
        self.abandon()

    def abandon(self) -> None:
        if self.tmp is not None:
            for f in self.files:
                with contextlib.suppress(OSError):
                    f.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
