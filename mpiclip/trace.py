"""HDF5 traces (DESIGN §5): written by rank 0 in chunks, readable after a crash, never lying about status.

The file is created with every dataset resizable and then switched to SWMR mode, so that whatever is
flushed stays readable even if the process is killed (open such a file with ``swmr=True``, as
:func:`open_trace` does). The final status is written after leaving SWMR mode. This module never
imports mpi4py: analysis scripts use it directly.

Bits convention: row r (recorded at round t_r) holds the bits each worker sent in rounds
t_{r-1} .. t_r − 1, i.e. the communication that produced x^{t_r} from the previous recorded iterate.
The cumulative sum over rows is therefore the number of bits sent before x^t existed. An initial round
(EF21's uncompressed ∇f_i(x^0)) is kept apart in /bits/initial/up (and /bits/initial/down).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Optional

import h5py
import numpy as np

from mpiclip import SCHEMA_VERSION, __version__
from mpiclip.compressors import ENCODINGS

BITS_CONVENTION = ("row r holds the bits sent in rounds t_{r-1}..t_r-1 (cumsum = bits sent before x^t); "
                   "the initial round is in /bits/initial/up")
CHUNK_ROWS = 1024


def _resizable(group, name, cols: Optional[int], dtype="f8"):
    shape, maxshape, chunks = ((0,), (None,), (CHUNK_ROWS,)) if cols is None else ((0, cols), (None, cols), (CHUNK_ROWS, cols))
    return group.create_dataset(name, shape=shape, maxshape=maxshape, chunks=chunks, dtype=dtype,
                                fillvalue=np.nan if dtype == "f8" else 0)


class TraceWriter:
    """Rank 0's handle on one trace file."""

    def __init__(self, path: str, attrs: dict, n_workers: int, worker_metrics: tuple[str, ...],
                 arrays: dict[str, np.ndarray], extra: tuple[str, ...] = ()):
        self.path, self.n = path, n_workers
        self.worker_metrics = worker_metrics
        self.rows = 0
        if os.path.exists(path):
            os.remove(path)
        self.f = h5py.File(path, "w", libver="latest")
        f = self.f
        for key, value in {**attrs, "mpiclip_version": __version__, "schema_version": SCHEMA_VERSION,
                           "status": "running", "bits_convention": BITS_CONVENTION, "encodings": list(ENCODINGS),
                           "started": _now()}.items():
            f.attrs[key] = value
        for name, cols, dtype in (("rounds", None, "i8"), ("time", None, "f8"), ("loss", None, "f8"),
                                  ("grad_norm_sq", None, "f8")):
            _resizable(f, name, cols, dtype)
        for e in ENCODINGS:
            _resizable(f, f"bits/up/{e}", n_workers)
            _resizable(f, f"bits/down/{e}", None)
            f.create_dataset(f"bits/initial/up/{e}", data=np.zeros(n_workers))
            f.create_dataset(f"bits/initial/down/{e}", data=0.0)
        for name in extra:
            _resizable(f, f"metrics/{name}", None)
        for m in worker_metrics:
            _resizable(f, f"workers/{m}", n_workers)
        for name, value in arrays.items():
            f.create_dataset(name, data=value)
        f.swmr_mode = True
        f.flush()

    def append(self, scalars: dict[str, np.ndarray], bits_up: np.ndarray, bits_down: np.ndarray,
               workers: np.ndarray) -> None:
        """scalars: rounds/time/loss/grad_norm_sq (k,); bits_up (k, n, E); bits_down (k, E); workers (k, n, M)."""
        k = len(scalars["rounds"])
        if k == 0:
            return
        lo, hi = self.rows, self.rows + k
        f = self.f
        for name, values in scalars.items():
            f[name].resize((hi,))
            f[name][lo:hi] = values
        for j, e in enumerate(ENCODINGS):
            f[f"bits/up/{e}"].resize((hi, self.n))
            f[f"bits/up/{e}"][lo:hi] = bits_up[:, :, j]
            f[f"bits/down/{e}"].resize((hi,))
            f[f"bits/down/{e}"][lo:hi] = bits_down[:, j]
        for j, m in enumerate(self.worker_metrics):
            f[f"workers/{m}"].resize((hi, self.n))
            f[f"workers/{m}"][lo:hi] = workers[:, :, j]
        self.rows = hi
        f.flush()

    def set_initial_bits(self, up: np.ndarray, down: np.ndarray) -> None:
        """up: (n, E) and down: (E,) bits of the initial round."""
        for j, e in enumerate(ENCODINGS):
            self.f[f"bits/initial/up/{e}"][:] = up[:, j]
            self.f[f"bits/initial/down/{e}"][()] = down[j]
        self.f.flush()

    def finish(self, status: str, attrs: dict, arrays: dict[str, np.ndarray]) -> None:
        """Leave SWMR mode, then write the final status and arrays."""
        self.f.close()
        with h5py.File(self.path, "r+") as f:
            for name, value in arrays.items():
                f.create_dataset(name, data=value)
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs["finished"] = _now()
            f.attrs["status"] = status

    def abandon(self, status: str) -> None:
        """Best effort after an unexpected error: record why the run stopped."""
        try:
            self.finish(status, {}, {})
        except Exception:  # the original error matters more
            pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ------------------------------------------------------------------------------------ reading
def open_trace(path: str) -> h5py.File:
    """Open a trace for reading, also one whose writer was killed (SWMR)."""
    try:
        return h5py.File(path, "r", swmr=True)
    except OSError:
        return h5py.File(path, "r")


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
    metrics: dict  # name -> (T,) the method's extra per-round scalars
    bits_initial_down: dict  # encoding -> float

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


def load_trace(path: str) -> Trace:
    with open_trace(path) as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        config = json.loads(attrs.get("config", "{}"))
        read = lambda name: f[name][()] if name in f else np.zeros(0)
        group = lambda name: {k: f[name][k][()] for k in f[name]} if name in f else {}
        return Trace(path, attrs, config, read("rounds"), read("time"), read("loss"), read("grad_norm_sq"),
                     group("bits/up"), group("bits/down"), group("bits/initial/up"), group("workers"),
                     group("metrics"), {k: float(v) for k, v in group("bits/initial/down").items()})
