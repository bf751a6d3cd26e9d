"""Identity, Top-k and Rand-k (scaled, unscaled, and with positions from a shared seed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiclip.compressors.base import COMPRESSORS, Compressor
from mpiclip.compressors.message import Cost, dense_message, sparse_message
from mpiclip.errors import InputError
from mpiclip.params import at_least, param


@dataclass(frozen=True)
class KParams:
    k: int = param(1, "number of coordinates kept per worker (1 <= k <= d)", check=at_least(1))


@dataclass(frozen=True)
class SharedParams:
    k: int = param(1, "number of coordinates kept per worker (1 <= k <= d)", check=at_least(1))
    unbiased: bool = param(False, "scale the kept values by d/k (unbiased, ω = d/k − 1) instead of α = k/d")


@COMPRESSORS.register("identity")
class Identity(Compressor):
    """No compression: a dense message of 32·d bits."""

    exact_values = True

    def __call__(self, v, rng):
        return dense_message(v)

    def alpha(self, d):
        return 1.0

    def omega(self, d):
        return 0.0


class _KSparsifier(Compressor):
    params = KParams

    def __init__(self, params):
        self.k = params.k

    def validate(self, d):
        if self.k > d:
            raise InputError("compressor.k", self.k, f"must be <= d = {d}")


@COMPRESSORS.register("topk")
class TopK(_KSparsifier):
    """Top-k: the k entries of largest magnitude of each worker's vector; ties to the smaller index; α = k/d.

    Ties are broken towards the smaller coordinate index, so the result is deterministic and does not
    depend on ``np.argpartition``'s internal order.
    """

    exact_values = True

    def __call__(self, v, rng):
        rows, cols = top_k_positions(v, self.k)
        return sparse_message(v, rows, cols, self.k)

    def alpha(self, d):
        return min(1.0, self.k / d)


def top_k_positions(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major (rows, cols) of the k largest |v| per row; ties go to the smaller column.

    ``argpartition`` picks k candidates in O(d); they are the answer unless the k-th largest magnitude is
    tied with coordinates it left out, and only such rows are redone with the exact tie rule.
    """
    n, d = v.shape
    if n == 0:  # a rank whose workers all sit the round out
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    if k >= d:
        return np.repeat(np.arange(n), d), np.tile(np.arange(d), n)
    if d >= 1 << 16 and k <= d >> 6:  # long rows: one row's magnitudes at a time, no second (n, d) array
        return np.repeat(np.arange(n), k), np.concatenate([_top_k_large(row, k) for row in v])
    a = np.abs(v)
    if k == 1:
        return np.arange(n), a.argmax(axis=1)  # the first maximum: the smallest index among ties (np.argmax, unwrapped)
    cols = np.argpartition(a, d - k, axis=1)[:, d - k :]
    chosen = np.take_along_axis(a, cols, axis=1)
    kth = chosen.min(axis=1, keepdims=True)
    ambiguous = np.flatnonzero((a == kth).sum(axis=1) != (chosen == kth).sum(axis=1))
    for r in ambiguous:  # ties at the threshold (or NaNs): take the smaller indices
        cols[r] = _exact_top_k(a[r], k)
    cols.sort(axis=1)
    return np.repeat(np.arange(n), k), cols.ravel()


def _top_k_large(row: np.ndarray, k: int) -> np.ndarray:
    """Top-k of one long row with small k: a threshold from a fixed strided sample of the magnitudes keeps a few
    times k candidates in one pass, and the exact rule runs on those. Every coordinate left out is at most the
    threshold, below every candidate, so the result is exactly the full rule's (a fixed sample keeps it
    deterministic). The row's magnitudes are never made whole (a d-vector at the peak of a chunked round):
    |r| <= t is r <= t and r >= −t for t >= 0 or NaN, NaN r included."""
    d = len(row)
    step = max(1, d // 16384)
    sample = np.abs(row[::step])
    rank = min(len(sample) - 1, max(1, (4 * k * len(sample)) // d))
    threshold = np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank]
    within = row <= threshold
    within &= row >= -threshold
    candidates = np.flatnonzero(np.logical_not(within, out=within))  # NaN ranks first, as in the exact rule
    del within
    if len(candidates) >= k:
        return np.sort(candidates[_exact_top_k(np.abs(row[candidates]), k)])
    # Fewer than k above the threshold (e.g. an EF21 difference that is zero almost everywhere): they all
    # belong, and the rest are the coordinates equal to the threshold, smallest indices first; the
    # threshold is one of the magnitudes, so nothing left out lies between.
    a = np.abs(row)
    tied = np.flatnonzero(a == threshold)[: k - len(candidates)]
    if len(candidates) + len(tied) < k:  # a NaN threshold
        return np.sort(_exact_top_k(a, k))
    return np.sort(np.concatenate([candidates, tied]))


def _exact_top_k(a: np.ndarray, k: int) -> np.ndarray:
    """The positions (in no particular order) of the k largest entries of a ≥ 0, NaN ranked as +inf and
    ties to the smaller index: those above the k-th largest value, then the smallest-index ones equal to it."""
    a = np.nan_to_num(a, nan=np.inf)
    if len(a) <= max(256, 4 * k):
        return np.argsort(-a, kind="stable")[:k]  # stable: ties keep index order
    kth = np.partition(a, len(a) - k)[len(a) - k]
    above = np.flatnonzero(a > kth)
    return np.concatenate([above, np.flatnonzero(a == kth)[: k - len(above)]])


def rand_k_positions(rng, n: int, d: int, k: int) -> np.ndarray:
    """(n, k) sorted positions, k drawn uniformly without replacement per worker from ``rng[i]``."""
    return np.stack([np.sort(rng[i].choice(d, k, replace=False)) for i in range(n)]) if n else np.zeros((0, k), int)


@COMPRESSORS.register("randk")
class RandK(_KSparsifier):
    """Rand-k: k coordinates drawn uniformly without replacement per worker and round, unscaled; α = k/d."""

    randomized = True
    exact_values = True

    def __call__(self, v, rng):
        n, d = v.shape
        cols = rand_k_positions(rng, n, d, self.k).ravel()
        rows = np.repeat(np.arange(n), self.k)
        return sparse_message(v, rows, cols, self.k)

    def alpha(self, d):
        return min(1.0, self.k / d)


@COMPRESSORS.register("randk_unbiased")
class RandKUnbiased(_KSparsifier):
    """Rand-k scaled by d/k: unbiased with ω = d/k − 1 (not contractive for k < d/2)."""

    randomized = True

    def __call__(self, v, rng):
        n, d = v.shape
        cols = rand_k_positions(rng, n, d, self.k).ravel()
        rows = np.repeat(np.arange(n), self.k)
        return sparse_message(v, rows, cols, self.k, values=v[rows, cols] * (d / self.k))

    def alpha(self, d):
        return 1.0 if self.k >= d else None

    def omega(self, d):
        return d / self.k - 1.0


@COMPRESSORS.register("randk_shared")
class RandKShared(_KSparsifier):
    """Rand-k with positions from a seed the receiver shares: only the k values are sent.

    The receiver regenerates worker i's positions from (run seed, worker id, round), the same draw the
    worker made, so the message costs 32·k bits in every encoding but ``wire`` (64·k). Unscaled (α = k/d),
    or scaled by d/k with ``unbiased = true`` (ω = d/k − 1).
    """

    params = SharedParams
    randomized = True
    positions_sent = False

    def __init__(self, params: SharedParams):
        super().__init__(params)
        self.unbiased = params.unbiased
        self.exact_values = not params.unbiased

    def __call__(self, v, rng):
        n, d = v.shape
        cols = rand_k_positions(rng, n, d, self.k).ravel()
        rows = np.repeat(np.arange(n), self.k)
        values = v[rows, cols] * (d / self.k) if self.unbiased else None

        def regenerate(worker_ids: np.ndarray) -> np.ndarray:
            return rand_k_positions(rng.for_workers(worker_ids), len(worker_ids), d, self.k).ravel()

        return sparse_message(v, rows, cols, self.k, values=values, cost=Cost(positions=False), regenerate=regenerate)

    def alpha(self, d):
        return (1.0 if self.k >= d else None) if self.unbiased else min(1.0, self.k / d)

    def omega(self, d):
        return d / self.k - 1.0 if self.unbiased else None



@dataclass(frozen=True)
class RatioParams:
    ratio: float = param(0.01, "share of the coordinates kept: k = max(1, floor(ratio·d)), of each part with per_layer",
                         check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    per_layer: bool = param(False, "keep that share of every part of x (a network's tensors) instead of the whole vector")


@COMPRESSORS.register("topk_ratio")
class TopKRatio(Compressor):
    """Top-k at a share of the coordinates: k = max(1, ⌊ratio·d⌋), of every part of x with per_layer; α = min k/d.

    A network's parts are its parameter tensors, so ``per_layer = true`` is the layer-wise Top-k of the EF21
    Bells & Whistles code (``top_k_opt``: ``max(1, floor(d·h))`` per tensor), and ``per_layer = false`` the
    global Top-K of the EF21 code at a share that does not depend on the model (K = 100,000 is 0.9 % of
    ResNet-18). A problem without parts is one part. The message is a Top-K message with K = Σ k_l, positions
    counted in the whole vector.
    """

    params = RatioParams
    exact_values = True

    def __init__(self, params: RatioParams):
        self.params, self.blocks = params, None

    def for_blocks(self, blocks):
        bound = TopKRatio(self.params)
        if self.params.per_layer and blocks is not None:
            bound.blocks = np.asarray(blocks, dtype=np.int64)
        return bound

    def _parts(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(sizes d_l, kept k_l) of the parts of a d-vector."""
        sizes = np.array([d], dtype=np.int64) if self.blocks is None else self.blocks
        return sizes, np.maximum(1, np.floor(self.params.ratio * sizes)).astype(np.int64)

    def validate(self, d):
        if int(self._parts(d)[0].sum()) != d:
            raise InputError("compressor.per_layer", True, f"the problem's parts cover {int(self.blocks.sum())} "
                             f"coordinates, not d = {d}")

    def __call__(self, v, rng):
        n, d = v.shape
        sizes, ks = self._parts(d)
        cols, at = np.empty((n, int(ks.sum())), dtype=np.intp), 0
        for start, size, k in zip(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes, ks):
            cols[:, at : at + k] = top_k_positions(v[:, start : start + size], int(k))[1].reshape(n, k) + start
            at += k
        return sparse_message(v, np.repeat(np.arange(n), cols.shape[1]), cols.ravel(), cols.shape[1])

    def alpha(self, d):
        sizes, ks = self._parts(d)
        return float(np.min(ks / sizes))
