"""Compression operators on the stacked vectors of a rank's workers (DESIGN §4).

``C(v)`` takes ``v`` of shape (n_local, d), one row per local worker, and returns a :class:`Message`:
the payload that goes on the wire and the bits each worker sent under every encoding. The operator
that builds a message counts its bits; nothing downstream guesses.

Encodings, per worker, for a sparse message of k values in dimension d (dense: k = d, no indices):
``paper`` 32·k (values only, the EF21 experiments' convention); ``coo32`` 32·k + 32·k indices;
``compact`` 32·k + min(k·⌈log2 d⌉, d) (indices or a bitmap, whichever is shorter); ``wire`` the bytes
handed to MPI × 8 (float64 values, int32 indices). Dense d-vectors cost 32·d in the first three.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from mpiclip.comm import INDEX_DTYPE
from mpiclip.errors import InputError
from mpiclip.params import at_least, param
from mpiclip.registry import Registry
from mpiclip.rng import WorkerRandomness

ENCODINGS = ("paper", "coo32", "compact", "wire")
VALUE_BYTES, INDEX_BYTES = 8, np.dtype(INDEX_DTYPE).itemsize


@dataclass(frozen=True)
class Message:
    """What the local workers send in one round.

    Dense: ``values`` is (n_local, d) and ``indices``/``counts`` are None. Sparse: worker i's entries are
    ``values[o_i:o_i+counts[i]]`` at coordinates ``indices[...]`` (increasing within a worker), flat in
    worker order. ``bits`` is (n_local, len(ENCODINGS)). ``flags`` carries one small integer per worker
    (e.g. EF21+'s choice); ``initial`` marks an initialisation round, whose bits the trace keeps apart.
    """

    values: np.ndarray
    bits: np.ndarray
    indices: Optional[np.ndarray] = None
    counts: Optional[np.ndarray] = None
    fixed_count: Optional[int] = None
    flags: Optional[np.ndarray] = None
    initial: bool = False

    @property
    def sparse(self) -> bool:
        return self.indices is not None

    def entry_rows(self) -> np.ndarray:
        return _rows_of(self.counts, self.fixed_count)

    def dense(self, shape: tuple[int, int]) -> np.ndarray:
        if not self.sparse:
            return self.values
        out = np.zeros(shape)
        out[self.entry_rows(), self.indices] = self.values
        return out

    def added_to(self, base: np.ndarray) -> np.ndarray:
        """base + C(v) as a new array (indices are unique within a worker)."""
        if not self.sparse:
            return base + self.values
        out = base.copy()
        out[self.entry_rows(), self.indices] += self.values
        return out

    def error_sq(self, v: np.ndarray, v_sq: Optional[np.ndarray] = None) -> np.ndarray:
        """‖C(v) − v‖² per worker (``v_sq`` = ‖v‖² per worker if known), without densifying a sparse message."""
        if not self.sparse:
            diff = self.values - v
            return np.einsum("ij,ij->i", diff, diff)
        kept = v[self.entry_rows(), self.indices]
        change = (self.values - kept) ** 2 - kept**2
        if self.fixed_count is not None:
            change = change.reshape(len(v), self.fixed_count).sum(axis=1)
        else:
            change = np.bincount(self.entry_rows(), change, minlength=len(v))
        return (np.einsum("ij,ij->i", v, v) if v_sq is None else v_sq) + change

    def replace(self, **changes) -> "Message":
        return dataclasses.replace(self, **changes)


@functools.lru_cache(maxsize=64)
def _fixed_rows(n_local: int, k: int) -> np.ndarray:
    rows = np.repeat(np.arange(n_local), k)
    rows.flags.writeable = False
    return rows


def _rows_of(counts: np.ndarray, fixed: Optional[int]) -> np.ndarray:
    return _fixed_rows(len(counts), fixed) if fixed is not None else np.repeat(np.arange(len(counts)), counts)


def sparse_bits_per_entry_count(k: float, d: int) -> np.ndarray:
    """Bits of one worker's sparse message of k entries, in ENCODINGS order."""
    position = min(k * math.ceil(math.log2(d)), d) if d > 1 and k > 0 else 0.0
    return np.array([32.0 * k, 64.0 * k, 32.0 * k + position, 8.0 * (VALUE_BYTES + INDEX_BYTES) * k])


@functools.lru_cache(maxsize=64)
def _uniform_bits(n_local: int, per_worker: tuple) -> np.ndarray:
    bits = np.tile(np.array(per_worker), (n_local, 1))
    bits.flags.writeable = False
    return bits


def dense_bits(n_local: int, d: int) -> np.ndarray:
    return _uniform_bits(n_local, (32.0 * d, 32.0 * d, 32.0 * d, 64.0 * d))


@functools.lru_cache(maxsize=64)
def _fixed_sparse_bits(n_local: int, k: int, d: int) -> np.ndarray:
    return _uniform_bits(n_local, tuple(sparse_bits_per_entry_count(k, d)))


def sparse_bits(counts: np.ndarray, d: int, fixed: Optional[int] = None) -> np.ndarray:
    if fixed is not None:
        return _fixed_sparse_bits(len(counts), fixed, d)
    return np.stack([sparse_bits_per_entry_count(float(k), d) for k in counts])


def dense_message(v: np.ndarray, **extra) -> Message:
    return Message(values=v, bits=dense_bits(*v.shape), **extra)


@functools.lru_cache(maxsize=64)
def _fixed_counts(n_local: int, k: int) -> np.ndarray:
    counts = np.full(n_local, k, dtype=np.int64)
    counts.flags.writeable = False
    return counts


def sparse_message(v: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: Optional[int] = None,
                   values: Optional[np.ndarray] = None) -> Message:
    """Entries (rows, cols) of v (row-major order); ``k`` if every worker sends exactly k entries."""
    n_local, d = v.shape
    counts = _fixed_counts(n_local, k) if k is not None else np.bincount(rows, minlength=n_local)
    vals = v[rows, cols] if values is None else values
    return Message(values=vals, bits=sparse_bits(counts, d, k), indices=cols.astype(INDEX_DTYPE), counts=counts,
                   fixed_count=k)


class Compressor:
    """Interface. ``alpha`` is the contraction constant (E‖C(x) − x‖² ≤ (1 − α)‖x‖²), None if C is not
    contractive; ``omega`` the variance constant of an unbiased C (E‖C(x) − x‖² ≤ ω‖x‖²), None if biased."""

    name = "?"
    randomized = False

    def __call__(self, v: np.ndarray, rng: WorkerRandomness) -> Message:
        raise NotImplementedError

    def alpha(self, d: int) -> Optional[float]:
        raise NotImplementedError

    def omega(self, d: int) -> Optional[float]:
        return None

    def validate(self, d: int) -> None:
        """Raise InputError if the compressor cannot act in dimension d."""


@dataclass(frozen=True)
class CompressorSpec:
    params: type
    build: Callable
    doc: str


COMPRESSORS: Registry[CompressorSpec] = Registry("compressor")


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass(frozen=True)
class KParams:
    k: int = param(1, "number of coordinates kept per worker (1 <= k <= d)", check=at_least(1))


class Identity(Compressor):
    name = "identity"

    def __call__(self, v, rng):
        return dense_message(v)

    def alpha(self, d):
        return 1.0

    def omega(self, d):
        return 0.0


class _KSparsifier(Compressor):
    def __init__(self, params: KParams):
        self.k = params.k

    def validate(self, d):
        if self.k > d:
            raise InputError("compressor.k", self.k, f"must be <= d = {d}")


class TopK(_KSparsifier):
    """Keep the k entries of largest magnitude of each worker's vector, with their signs.

    Ties are broken towards the smaller coordinate index, so the result is deterministic and does not
    depend on ``np.argpartition``'s internal order. α = k/d.
    """

    name = "topk"

    def __call__(self, v, rng):
        rows, cols = top_k_positions(v, self.k)
        return sparse_message(v, rows, cols, self.k)

    def alpha(self, d):
        return min(1.0, self.k / d)


def top_k_positions(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major (rows, cols) of the k largest |v| per row; ties go to the smaller column."""
    n, d = v.shape
    a = np.abs(v)
    if k >= d:
        return np.repeat(np.arange(n), d), np.tile(np.arange(d), n)
    if k == 1:
        cols = np.argmax(a, axis=1)  # first maximum: the smallest index among ties
        return np.arange(n), cols
    kth = np.partition(a, d - k, axis=1)[:, d - k : d - k + 1]
    greater = a > kth
    tie = a == kth
    room = k - greater.sum(axis=1, keepdims=True)
    mask = greater | (tie & (np.cumsum(tie, axis=1) <= room))
    rows, cols = np.nonzero(mask)
    if len(rows) != n * k:  # NaNs defeat the comparisons; fall back to a stable sort
        order = np.sort(np.argsort(-np.nan_to_num(a, nan=np.inf), axis=1, kind="stable")[:, :k], axis=1)
        rows, cols = np.repeat(np.arange(n), k), order.ravel()
    return rows, cols


class RandK(_KSparsifier):
    """k coordinates drawn uniformly without replacement per worker and round, unscaled: α = k/d."""

    name = "randk"
    randomized = True
    scale = 1.0

    def __call__(self, v, rng):
        n, d = v.shape
        cols = np.concatenate([np.sort(rng[i].choice(d, self.k, replace=False)) for i in range(n)])
        rows = np.repeat(np.arange(n), self.k)
        scale = self.scale_for(d)
        return sparse_message(v, rows, cols, self.k, values=v[rows, cols] * scale if scale != 1.0 else None)

    def scale_for(self, d):
        return 1.0

    def alpha(self, d):
        return min(1.0, self.k / d)


class RandKUnbiased(RandK):
    """Rand-k scaled by d/k: unbiased with ω = d/k − 1 (not contractive for k < d/2)."""

    name = "randk_unbiased"

    def scale_for(self, d):
        return d / self.k

    def alpha(self, d):
        return 1.0 if self.k >= d else None

    def omega(self, d):
        return d / self.k - 1.0


COMPRESSORS.register("identity")(CompressorSpec(NoParams, lambda p: Identity(), "no compression (dense, 32·d bits)"))
COMPRESSORS.register("topk")(CompressorSpec(KParams, TopK, "k largest magnitudes; ties to the smaller index; α = k/d"))
COMPRESSORS.register("randk")(CompressorSpec(KParams, RandK, "k uniform coordinates, unscaled; α = k/d"))
COMPRESSORS.register("randk_unbiased")(CompressorSpec(KParams, RandKUnbiased,
                                                      "k uniform coordinates scaled by d/k; ω = d/k − 1"))
