"""Linear models f_i(x) = (1/N_i) Σ_{j∈i} φ(a_jᵀx) + r(x) on a rank's rows, gradients of all workers at once.

For the linear models the rank's rows are one matrix, ``z = A x`` is one sparse product and the
per-worker gradients ``(1/N_i) Σ_{j∈i} φ'(z_j) a_j`` are a second one against a block-transposed copy
of A whose rows are (worker, feature) pairs. Both products add each worker's terms in sample order, so
a worker's gradient has the same bits whichever other workers share its rank.
"""

from __future__ import annotations

import copy
from typing import NamedTuple, Optional

import numpy as np
import scipy.sparse as sp

from mpiclip.data import Shard
from mpiclip.problems.base import Problem, Smoothness
from mpiclip.wire import RowReduce, row_sq_norms

GRAM_MAX_D = 1024  # above this, λ_max comes from Lanczos iterations instead of a dense Gram matrix

try:  # scipy's own kernels without the ~30 µs of checks around `A @ x` (a quarter of a9a's product)
    from scipy.sparse._sparsetools import csc_matvec as _csc_matvec
    from scipy.sparse._sparsetools import csr_matvec as _csr_matvec
except ImportError:  # pragma: no cover - scipy moved them; the public products give the same bits
    _csr_matvec = _csc_matvec = None


class CSRParts(NamedTuple):
    """A CSR matrix's arrays (one index dtype), for scipy's kernels directly: a gathered minibatch's matrices skip the
    ~25 µs of checks of a scipy matrix's construction, more than the minibatch's products cost."""

    shape: tuple
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    def matrix(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape, copy=False)


def _scipy(matrix):
    """A scipy matrix of a design's sparse A (or its shifted copy), for the operations the kernels do not cover."""
    return matrix.matrix() if isinstance(matrix, CSRParts) else matrix


def _scaled_rows(X, row_scale: np.ndarray) -> sp.csr_matrix:
    """diag(row_scale)·X as float64 CSR with sorted indices and no stored zeros. For a canonical X (sorted, no
    duplicates) whose scaled entries are all nonzero this is each entry times its row's scale, which are the bits
    scipy's product gives (one product per entry; it drops zeros and leaves rows unsorted), several times faster.
    (One new array per product: fresh memory's page faults are most of the cost of such an operation here.)"""
    X = sp.csr_matrix(X)
    if X.has_canonical_format:
        data = np.array(X.data, dtype=np.float64)
        data *= np.repeat(np.asarray(row_scale, dtype=np.float64), np.diff(X.indptr))
        if data.all():
            A = sp.csr_matrix((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)
            A.has_sorted_indices = True
            return A
    A = sp.csr_matrix(sp.diags(row_scale) @ X, dtype=np.float64)
    A.sort_indices()
    return A


class LinearDesign:
    """A = diag(row_scale)·X for the rank's rows, with per-worker mean products.

    Sparse A is kept once, as CSR, with a second column-index array in which worker w's columns are
    shifted by w·d: read as the transpose of an (n_local·d × rows) matrix, one scatter pass over it gives
    every worker's Σ_j s_j a_j at once, each summed in sample order.
    """

    def __init__(self, X, row_scale: np.ndarray, offsets: np.ndarray, targets: Optional[np.ndarray] = None):
        self.offsets = offsets
        self.sizes = np.diff(offsets).astype(np.float64)
        self.n_local, self.d = len(self.sizes), X.shape[1]
        self.targets = targets
        self.sparse = sp.issparse(X)
        if self.sparse:
            self.A = A = _scaled_rows(X, row_scale)
            index_type = np.int32 if self.n_local * self.d < 2**31 else np.int64
            worker_of_row = np.repeat(np.arange(self.n_local, dtype=index_type), np.diff(offsets))
            shifted = np.repeat(worker_of_row * index_type(self.d), np.diff(A.indptr))  # worker w's columns at w·d
            shifted += A.indices.astype(index_type, copy=False)
            self.shifted = sp.csr_matrix((A.data, shifted, A.indptr.astype(index_type)),
                                         shape=(A.shape[0], self.n_local * self.d))
            self._z = np.empty(A.shape[0])
        else:
            self.A = np.ascontiguousarray(row_scale[:, None] * X)

    def rows(self, w: int):
        return self.A[self.offsets[w] : self.offsets[w + 1]]

    def select(self, batches: list) -> "LinearDesign":
        """The same design restricted to rows ``batches[i]`` (local row numbers) of each worker."""
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in batches])]).astype(np.int64)
        rows = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])
        return self.pick(np.arange(self.n_local), offsets, rows)

    def pick(self, workers: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> "LinearDesign":
        """The design of local workers ``workers`` alone (its workers 0, 1, ... in that order), restricted to their rows
        ``rows[offsets[i]:offsets[i+1]]`` (local row numbers). One gather of the rows' entries whatever the number of
        workers (scipy's row indexing costs ~0.1 ms a call), in the same order as the rows: the same bits."""
        counts = np.diff(offsets)
        picked = np.repeat(self.offsets[workers], counts) + rows
        sub = object.__new__(LinearDesign)
        sub.offsets = offsets
        sub.sizes = counts.astype(np.float64)
        sub.n_local, sub.d, sub.sparse = len(workers), self.d, self.sparse
        sub.targets = None if self.targets is None else self.targets[picked]
        if not self.sparse:
            sub.A = self.A[picked]
            return sub
        A = self.A
        starts = A.indptr[picked]
        lengths = A.indptr[picked + 1] - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        entries = np.arange(indptr[-1]) + np.repeat(starts - indptr[:-1], lengths)
        indices, data = A.indices[entries], A.data[entries]
        sub.A = CSRParts((len(picked), self.d), indptr.astype(indices.dtype), indices, data)
        shift = np.repeat(np.repeat(np.arange(len(workers)) * self.d, counts), lengths)  # worker i's columns at i·d
        index_type = np.int32 if len(workers) * self.d < 2**31 and indptr[-1] < 2**31 else np.int64
        sub.shifted = CSRParts((len(picked), len(workers) * self.d), indptr.astype(index_type),
                               (indices + shift).astype(index_type), data)
        sub._z = np.empty(len(picked))
        return sub

    def worker(self, w: int) -> "LinearDesign":
        """The design of local worker w alone, sharing this one's arrays (no copy of the data)."""
        return self.workers(w, w + 1)

    def workers(self, lo: int, hi: int) -> "LinearDesign":
        """The design of local workers lo..hi−1 alone, sharing this one's data arrays; of several workers, only the
        column-shifted indices are new (shifted by lo·d less). Each worker's products and sums take its rows in the
        same order, so they have the bits they have here."""
        first, last = int(self.offsets[lo]), int(self.offsets[hi])
        sub = object.__new__(LinearDesign)
        sub.offsets = self.offsets[lo : hi + 1] - first
        sub.sizes = self.sizes[lo:hi]
        sub.n_local, sub.d, sub.sparse = hi - lo, self.d, self.sparse
        sub.targets = None if self.targets is None else self.targets[first:last]
        if self.sparse:
            A, B = self.A, self.shifted  # CSR arrays handed to scipy's kernels as they are (CSRParts)
            start, end = A.indptr[first], A.indptr[last]
            sub.A = CSRParts((last - first, self.d), A.indptr[first : last + 1] - start, A.indices[start:end],
                             A.data[start:end])
            sub.shifted = sub.A if hi - lo == 1 else CSRParts(  # one worker: no column shift
                (last - first, (hi - lo) * self.d), B.indptr[first : last + 1] - start,
                B.indices[start:end] - B.indices.dtype.type(lo * self.d), B.data[start:end])
            sub._z = np.empty(last - first)
        else:
            sub.A = self.A[first:last]
        return sub

    def products(self, x: np.ndarray) -> np.ndarray:
        """z = A x for every local row (a buffer reused by the next call)."""
        if not self.sparse:
            return np.concatenate([self.rows(w) @ x for w in range(self.n_local)])
        A, z = self.A, self._z
        if _csr_matvec is None:
            z[:] = _scipy(A) @ x
        else:
            z.fill(0.0)
            _csr_matvec(len(z), self.d, A.indptr, A.indices, A.data, x, z)  # A's shape, without scipy's property
        return z

    def row_sq_norms(self) -> np.ndarray:
        """‖a_j‖² of every row."""
        if self.sparse:
            A = _scipy(self.A)
            return np.asarray(A.multiply(A).sum(axis=1)).ravel()
        return row_sq_norms(self.A)

    def worker_sums(self, s: np.ndarray) -> np.ndarray:
        """(n_local, d): row i is Σ_{j in worker i} s_j a_j (a new array)."""
        if not self.sparse:
            return np.stack([self.rows(w).T @ s[self.offsets[w] : self.offsets[w + 1]] for w in range(self.n_local)])
        B = self.shifted
        if _csc_matvec is None:
            out = _scipy(B).T @ s
        else:
            out = np.zeros(self.n_local * self.d)
            _csc_matvec(len(out), len(s), B.indptr, B.indices, B.data, s, out)  # Bᵀ's shape
        return out.reshape(self.n_local, self.d)

    def worker_means(self, s: np.ndarray) -> np.ndarray:
        """(n_local, d): row i is (1/N_i) Σ_{j in worker i} s_j a_j (a new array)."""
        out = self.worker_sums(s)
        out /= self.sizes[:, None]
        return out

    def worker_average(self, values: np.ndarray) -> np.ndarray:
        """(n_local,) per-worker means of per-row values."""
        return np.add.reduceat(values, self.offsets[:-1]) / self.sizes

    def worker_lambda_max(self, w: int) -> float:
        """λ_max(A_iᵀA_i / N_i) of local worker w."""
        rows = self.rows(w)
        if self.sparse and self.d > GRAM_MAX_D:  # A_iᵀA_i is zero outside the columns the rows use: same spectrum
            used = np.unique(rows.indices)
            if len(used) == 0:
                return 0.0
            rows = rows[:, used]
        return _gram_top(rows) / self.sizes[w]

    def data_lambda_max(self, reduce: RowReduce, n_total: int) -> float:
        """λ_max(AᵀA / N) over the rows of all ranks, summed in worker order."""
        if self.d <= GRAM_MAX_D:
            grams = np.stack([_dense_gram(self.rows(w)).ravel() for w in range(self.n_local)])
            total = reduce.sum(grams).reshape(self.d, self.d)
            return _top_eigenvalue(total) / n_total
        used = self._columns_used_anywhere(reduce) if self.sparse else None
        if used is not None and len(used) <= GRAM_MAX_D:  # AᵀA is zero outside the columns some row uses
            if len(used) == 0:
                return 0.0
            grams = np.stack([_dense_gram(self.rows(w)[:, used]).ravel() for w in range(self.n_local)])
            return _top_eigenvalue(reduce.sum(grams).reshape(len(used), len(used))) / n_total
        # Lanczos on the columns some row uses (at d = 10^7 and 2·10^5 used columns, vectors 50x shorter)
        design = self if used is None else LinearDesign(self.A[:, used], np.ones(self.A.shape[0]), self.offsets)

        def matvec(v):
            return reduce.sum(design.worker_sums(design.products(np.ravel(v)).copy()))

        import scipy.sparse.linalg as spla  # imported here, as scipy.linalg below: a cached run never needs them

        op = spla.LinearOperator((design.d, design.d), matvec=matvec, dtype=np.float64)
        return _lanczos_top(op) / n_total

    def _columns_used_anywhere(self, reduce: RowReduce) -> Optional[np.ndarray]:
        """The columns any worker's rows use, the same on every rank; None if they may be nearly all d."""
        used = [np.unique(self.rows(w).indices) for w in range(self.n_local)]
        counts = reduce.gather(np.array([[len(u)] for u in used], dtype=np.float64))
        if counts.sum() >= self.d // 2:
            return None
        padded = np.full((self.n_local, max(int(counts.max()), 1)), -1.0)  # column numbers < 2^31 are exact as floats
        for w, u in enumerate(used):
            padded[w, : len(u)] = u
        everyone = reduce.gather(padded)
        return np.unique(everyone[everyone >= 0]).astype(np.int64)


def _dense_gram(rows) -> np.ndarray:
    if sp.issparse(rows):
        return (rows.T @ rows).toarray()
    return rows.T @ rows


def _gram_top(rows) -> float:
    """λ_max(rowsᵀ rows): from the smaller of the two dense Grams (rows·rowsᵀ has the same nonzero
    eigenvalues) when one is at most GRAM_MAX_D wide, else from Lanczos iterations."""
    n_rows, width = rows.shape
    if width <= GRAM_MAX_D:
        return _top_eigenvalue(_dense_gram(rows))
    if n_rows <= GRAM_MAX_D:
        return _top_eigenvalue(_dense_gram(rows.T))
    import scipy.sparse.linalg as spla

    return _lanczos_top(spla.LinearOperator((width, width), matvec=lambda v: rows.T @ (rows @ v), dtype=np.float64))


def _top_eigenvalue(sym: np.ndarray) -> float:
    import scipy.linalg

    d = sym.shape[0]
    return float(scipy.linalg.eigh(sym, eigvals_only=True, subset_by_index=[d - 1, d - 1])[0])


def _lanczos_top(op) -> float:
    import scipy.sparse.linalg as spla

    v0 = np.ones(op.shape[0]) / np.sqrt(op.shape[0])  # fixed start: every rank iterates in lockstep
    # 8 Lanczos vectors (not 20): at d = 10^6 each costs 8 MB of a rank's memory
    return float(spla.eigsh(op, k=1, which="LA", v0=v0, ncv=min(8, op.shape[0] - 1), tol=1e-10,
                            return_eigenvectors=False)[0])


class LinearModel(Problem):
    """f_i(x) = (1/N_i) Σ_{j∈i} φ(z_j) + r(x) with z = A x; subclasses give φ, φ' and r."""

    curvature: float  # sup φ''
    reg_L: float  # smoothness of r

    def __init__(self, shard: Shard, n_workers: int, row_scale: np.ndarray, targets: Optional[np.ndarray] = None):
        self.worker_ids = shard.worker_ids
        self.n_workers = n_workers
        self.design = LinearDesign(shard.X, row_scale, shard.offsets, targets)
        self.d = self.design.d
        self.local_sizes = shard.sizes

    def loss_grads(self, x, with_loss):
        return self._evaluate(self.design, x, with_loss)

    def minibatch_grads(self, x, batches):
        return self._evaluate(self.design.select(batches), x, False)[1]

    def workers(self, lo, hi):
        part = copy.copy(self)  # a subclass's own settings (λ, the regulariser) come along
        part.__dict__.pop("_single", None)  # worker_grad's designs are of this problem's workers
        part.design = self.design.workers(lo, hi)
        part.worker_ids, part.local_sizes = self.worker_ids[lo:hi], self.local_sizes[lo:hi]
        return part

    def worker_grad(self, x, local, rows=None, decay=True):
        if rows is not None:
            return self._evaluate(self.design.pick(np.array([local]), np.array([0, len(rows)]), rows), x, False)[1][0]
        designs = self.__dict__.setdefault("_single", {})
        if local not in designs:
            designs[local] = self.design.worker(local)
        return self._evaluate(designs[local], x, False)[1][0]

    def pooled_grad(self, x, picked):
        """One pass over every picked row: each worker's gradient summed in sample order (the bits of its
        ``worker_grad``), scaled by its row count and added in worker order (numpy adds the rows of an axis-0
        sum one after the other: tests/test_async.py pins it against the loop)."""
        grads = self._evaluate(self.design.pick(picked.workers, picked.offsets, picked.rows), x, False)[1]
        grads *= np.diff(picked.offsets)[:, None]
        return np.add.reduce(grads, axis=0, initial=0.0)

    def _evaluate(self, design: LinearDesign, x: np.ndarray, with_loss: bool):
        raise NotImplementedError

    def smoothness(self, reduce):
        local = np.array([[self.curvature * self.design.worker_lambda_max(w) + self.reg_L]
                          for w in range(self.n_local)])
        L_workers = reduce.gather(local)[:, 0]
        n_total = int(reduce.gather(self.local_sizes[:, None].astype(np.float64)).sum())
        L = self.curvature * self.design.data_lambda_max(reduce, n_total) + self.reg_L
        return Smoothness(L, L_workers, self._mu())

    def _mu(self) -> Optional[float]:
        return None
