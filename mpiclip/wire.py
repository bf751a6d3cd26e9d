"""What travels between workers, without the communicator: message layouts and deterministic sums.

Pure numpy (docs/design.md §2): the compressors build messages in these layouts, the methods sum what
arrived with these functions, and :mod:`mpiclip.comm` moves the bytes. Every sum here adds the
per-worker terms one after another in worker-id order, so a result has the same bits however the
workers are spread over ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

# Wildcards of the point-to-point calls. MPI's own values differ between libraries (MPICH's
# MPI_ANY_SOURCE is -2), so callers use these and MPIComm translates them.
ANY_SOURCE = -1
ANY_TAG = -1
INDEX_DTYPE = np.int32  # indices of sparse messages on the wire (d < 2**31)
ENTRY = np.dtype([("v", "<f8"), ("i", "<i4")])  # one sparse entry on the wire, 12 bytes, no padding


@dataclass(frozen=True)
class SparseGather:
    """Every worker's sparse payload in worker order: worker i owns its ``counts[i]`` entries in turn."""

    counts: np.ndarray  # (n,)
    values: np.ndarray  # (sum counts,)
    indices: np.ndarray  # (sum counts,)
    flags: Optional[np.ndarray]  # (n,) int8 or None

    def sum_into(self, target: np.ndarray, divisor: float = 1.0) -> None:
        """target += (sum of all payloads) / divisor, summed per coordinate in worker order."""
        add_sparse_sum(target, self.indices, self.values, divisor)


def add_sparse_sum(target: np.ndarray, indices: np.ndarray, values: np.ndarray, divisor: float = 1.0) -> None:
    """target += (Σ_j values[j] e_{indices[j]}) / divisor; each coordinate's terms are added in input order.

    ``np.bincount`` accumulates sequentially in input order, so the result does not depend on how the
    terms were grouped over ranks. Its dense form costs O(d), the unique-index form O(m log m); both give
    the same bits, so the cheaper one is used.
    """
    m, d = len(indices), len(target)
    if m == 0:
        return
    if m * 16 < d:
        uniq, inverse = np.unique(indices, return_inverse=True)
        target[uniq] += np.bincount(inverse, weights=values, minlength=len(uniq)) / divisor
    else:
        target += np.bincount(indices, weights=values, minlength=d) / divisor


# The widest rows that one np.add.reduce over axis 0 sums (sequential_sum); wider ones are added a row at a time
ROW_REDUCE_WIDTH = 8192


def sequential_sum(rows: np.ndarray, start: Optional[np.ndarray] = None) -> np.ndarray:
    """((start + rows[0]) + rows[1]) + ...: the worker-order sum, independent of any blocking.

    Short C-ordered float rows are summed by one ``np.add.reduce`` over axis 0 (a loop costs a call per worker,
    most of a recorded round's sum): its iterator keeps the rows' contiguous axis innermost, so each column is
    one running sum over the rows in order, the same additions. It starts from ``initial`` = −0.0, which is
    the identity of every float (+0.0, add's own, would turn a column of −0.0 into +0.0): −0.0 + rows[0] is
    rows[0] to the bit. A single column is left to the loop: contiguous along the summed axis, numpy would add
    it pairwise. tests/test_comm_serial.py pins the two together."""
    if (start is None and rows.ndim == 2 and 1 < rows.shape[1] <= ROW_REDUCE_WIDTH and len(rows)
            and rows.dtype == np.float64 and rows.flags.c_contiguous):
        return np.add.reduce(rows, axis=0, initial=-0.0)
    acc = rows[0].copy() if start is None else start + rows[0]
    for row in rows[1:]:
        acc += row
    return acc


def sequential_sum_of(rows: np.ndarray, senders: np.ndarray, n: int) -> np.ndarray:
    """The bits of ``sequential_sum`` over n workers' rows of which only ``senders`` (increasing worker ids) are
    not zero, ``rows[j]`` being worker ``senders[j]``'s, in O(len(senders)) row additions rather than n.

    Adding a zero row leaves every entry as it is but a −0.0, which becomes +0.0, and adding more zeros changes
    nothing more: so each run of skipped workers is one addition of +0.0, and a sum that starts on a skipped
    worker starts from +0.0 (rather than from the copy of worker 0's row that ``sequential_sum`` starts from)."""
    acc = np.zeros(rows.shape[1])
    after = 0  # the worker whose row comes next
    for worker, row in zip(senders, rows):
        if worker == 0:
            acc = row.copy()
        else:
            if worker > after:
                acc += 0.0
            acc += row
        after = worker + 1
    if after < n:
        acc += 0.0
    return acc


def sequential_sum_of_pieces(pieces: list, start: Optional[np.ndarray] = None, in_place: bool = False) -> np.ndarray:
    """``sequential_sum`` of the rows of ``np.hstack(pieces)`` (arrays with the same rows, side by side), without
    making that stack: each column's terms are added in the same order, so the bits are the same. ``in_place``: add
    into ``start`` itself (a running sum the caller owns) instead of a copy."""
    edges = np.cumsum([0] + [piece.shape[1] for piece in pieces])
    if start is None:
        acc, first = np.concatenate([piece[0] for piece in pieces]), 1
    else:
        acc, first = (start if in_place else start.copy()), 0
    for i in range(first, len(pieces[0])):
        for piece, lo, hi in zip(pieces, edges[:-1], edges[1:]):
            acc[lo:hi] += piece[i]
    return acc


# np.getbufsize()'s default (the project never changes it), a constant: asking numpy costs a call per use
EINSUM_BUFFER = 8192


def row_sq_norms(a: np.ndarray) -> np.ndarray:
    """‖a_i‖² of each row, with bits that depend on the row alone. numpy's einsum sums a stack of rows longer
    than its iterator buffer (``np.getbufsize()``, 8192) in buffer-sized pieces that straddle the rows, so a
    row's bits would depend on the rows stacked with it, i.e. on how the workers are spread over ranks."""
    if a.shape[1] <= EINSUM_BUFFER:
        return np.einsum("ij,ij->i", a, a)
    return np.array([np.einsum("j,j->", row, row) for row in a])


@dataclass(frozen=True)
class RowReduce:
    """The two cross-worker reductions a problem needs for its constants, given to it by the session.

    ``sum(rows)``: rows (n_local, m) of this rank's workers -> Σ over all workers, in worker order, the
    same on every rank. ``gather(rows)``: -> (n, m), every worker's row in worker order.
    """

    sum: Callable[[np.ndarray], np.ndarray]
    gather: Callable[[np.ndarray], np.ndarray]


# One process holding every worker: the reductions are local (tests and single-process tools).
ALL_LOCAL = RowReduce(sum=sequential_sum, gather=lambda rows: np.asarray(rows, dtype=np.float64))


@dataclass(frozen=True)
class Layout:
    """Contiguous blocks of workers per rank; the first ``n % P`` ranks hold one more."""

    n_workers: int
    n_ranks: int

    @property
    def counts(self) -> np.ndarray:
        base, extra = divmod(self.n_workers, self.n_ranks)
        return np.array([base + (r < extra) for r in range(self.n_ranks)], dtype=np.int64)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def workers_of(self, rank: int) -> np.ndarray:
        return np.arange(self.starts[rank], self.starts[rank] + self.counts[rank])
