"""Loss/gradient oracles for the workers of one rank, and their smoothness constants.

A problem holds every local worker at once and returns all their gradients from one pass: for the
linear models the rank's rows are one matrix, ``z = A x`` is one sparse product and the per-worker
gradients ``(1/N_i) Σ_{j∈i} φ'(z_j) a_j`` are a second one against a block-transposed copy of A
whose rows are (worker, feature) pairs. Both products add each worker's terms in sample order, so a
worker's gradient has the same bits whichever other workers share its rank.

Conventions (ALGORITHMS §2.6, §8): f = (1/n) Σ_i f_i is the mean over *workers*; L_i = λ_max of
f_i's curvature bound on worker i's rows; L uses the whole data set (not the L_i); L̃ = sqrt(mean L_i²).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from mpiclip.comm import Comm
from mpiclip.data import Shard
from mpiclip.errors import InputError
from mpiclip.params import at_least, nonnegative, param, positive
from mpiclip.registry import Registry

GRAM_MAX_D = 1024  # above this, λ_max comes from Lanczos iterations instead of a dense Gram matrix

try:  # scipy's own kernels without the ~30 µs of checks around `A @ x` (a quarter of a9a's product)
    from scipy.sparse._sparsetools import csc_matvec as _csc_matvec
    from scipy.sparse._sparsetools import csr_matvec as _csr_matvec
except ImportError:  # pragma: no cover - scipy moved them; the public products give the same bits
    _csr_matvec = _csc_matvec = None


@dataclass(frozen=True)
class Smoothness:
    """A problem's constants: smoothness, and where the problem knows them μ and the optimal value f*."""

    L: float
    L_workers: np.ndarray  # (n,) L_i of every worker
    mu: Optional[float] = None  # strong convexity / PL constant where the problem defines one
    f_star: Optional[float] = None  # min f where it has a closed form (least squares, quadratics)

    @property
    def L_tilde(self) -> float:
        return float(np.sqrt(np.mean(self.L_workers**2)))


class Problem:
    """Interface: per-worker losses and gradients of the local workers."""

    d: int
    worker_ids: np.ndarray
    local_sizes: np.ndarray  # (n_local,) samples per local worker

    def minibatch_grads(self, x: np.ndarray, batches: list) -> np.ndarray:
        """(n_local, d): worker i's mean gradient over its rows ``batches[i]`` (local row numbers)."""
        raise NotImplementedError

    @property
    def n_local(self) -> int:
        return len(self.worker_ids)

    def loss_grads(self, x: np.ndarray, with_loss: bool) -> tuple[Optional[np.ndarray], np.ndarray]:
        """(losses (n_local,) or None, gradients (n_local, d)) of the local workers at x."""
        raise NotImplementedError

    def smoothness(self, comm: Comm) -> Smoothness:
        """Collective over all ranks; identical on every rank and for any number of ranks."""
        raise NotImplementedError

    score_names: tuple[str, ...] = ()  # per-worker scores of the last evaluation with losses (trace /metrics)

    def scores(self) -> np.ndarray:
        """(n_local, len(score_names)) from the last ``loss_grads(x, with_loss=True)``."""
        return np.zeros((len(self.worker_ids), 0))


@dataclass(frozen=True)
class ProblemSpec:
    params: type
    labels: Optional[str]  # 'pm1' / 'raw' for data-driven problems, None if the problem makes its own
    build: Callable  # (params, shard or None, worker_ids, n_workers) -> Problem
    doc: str
    check: Optional[Callable] = None  # (params, n_workers) -> None, raises InputError; before any collective


PROBLEMS: Registry[ProblemSpec] = Registry("problem")


# --------------------------------------------------------------------------- linear models
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
            A = sp.csr_matrix(sp.diags(row_scale) @ X, dtype=np.float64)
            A.sort_indices()
            self.A = A
            worker_of_row = np.repeat(np.arange(self.n_local), np.diff(offsets))
            shift = np.repeat(worker_of_row * self.d, np.diff(A.indptr))
            index_type = np.int32 if self.n_local * self.d < 2**31 else np.int64
            self.shifted = sp.csr_matrix((A.data, (A.indices + shift).astype(index_type), A.indptr.astype(index_type)),
                                         shape=(A.shape[0], self.n_local * self.d))
            self._z = np.empty(A.shape[0])
        else:
            self.A = np.ascontiguousarray(row_scale[:, None] * X)

    def rows(self, w: int):
        return self.A[self.offsets[w] : self.offsets[w + 1]]

    def select(self, batches: list) -> "LinearDesign":
        """The same design restricted to rows ``batches[i]`` (local row numbers) of each worker."""
        rows = np.concatenate([self.offsets[w] + np.asarray(b, dtype=np.int64) for w, b in enumerate(batches)])
        sub = object.__new__(LinearDesign)
        sub.offsets = np.concatenate([[0], np.cumsum([len(b) for b in batches])])
        sub.sizes = np.diff(sub.offsets).astype(np.float64)
        sub.n_local, sub.d, sub.sparse = self.n_local, self.d, self.sparse
        sub.targets = None if self.targets is None else self.targets[rows]
        sub.A = self.A[rows]
        if self.sparse:
            sub.shifted = self.shifted[rows]
            sub._z = np.empty(len(rows))
        return sub

    def products(self, x: np.ndarray) -> np.ndarray:
        """z = A x for every local row (a buffer reused by the next call)."""
        if not self.sparse:
            return np.concatenate([self.rows(w) @ x for w in range(self.n_local)])
        A, z = self.A, self._z
        if _csr_matvec is None:
            z[:] = A @ x
        else:
            z.fill(0.0)
            _csr_matvec(A.shape[0], A.shape[1], A.indptr, A.indices, A.data, x, z)
        return z

    def worker_sums(self, s: np.ndarray) -> np.ndarray:
        """(n_local, d): row i is Σ_{j in worker i} s_j a_j (a new array)."""
        if not self.sparse:
            return np.stack([self.rows(w).T @ s[self.offsets[w] : self.offsets[w + 1]] for w in range(self.n_local)])
        B = self.shifted
        if _csc_matvec is None:
            out = B.T @ s
        else:
            out = np.zeros(B.shape[1])
            _csc_matvec(B.shape[1], B.shape[0], B.indptr, B.indices, B.data, s, out)
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
        if self.d <= GRAM_MAX_D:
            return _top_eigenvalue(_dense_gram(rows)) / self.sizes[w]
        op = spla.LinearOperator((self.d, self.d), matvec=lambda v: rows.T @ (rows @ v), dtype=np.float64)
        return _lanczos_top(op) / self.sizes[w]

    def data_lambda_max(self, comm: Comm, n_total: int) -> float:
        """λ_max(AᵀA / N) over the rows of all ranks, summed in worker order."""
        if self.d <= GRAM_MAX_D:
            grams = np.stack([_dense_gram(self.rows(w)).ravel() for w in range(self.n_local)])
            total = comm.sum_rows(grams, ordered=True).reshape(self.d, self.d)
            return _top_eigenvalue(total) / n_total

        def matvec(v):
            return comm.sum_rows(self.worker_sums(self.products(np.ravel(v)).copy()), ordered=True)

        op = spla.LinearOperator((self.d, self.d), matvec=matvec, dtype=np.float64)
        return _lanczos_top(op) / n_total


def _dense_gram(rows) -> np.ndarray:
    if sp.issparse(rows):
        return (rows.T @ rows).toarray()
    return rows.T @ rows


def _top_eigenvalue(sym: np.ndarray) -> float:
    d = sym.shape[0]
    return float(scipy.linalg.eigh(sym, eigvals_only=True, subset_by_index=[d - 1, d - 1])[0])


def _lanczos_top(op) -> float:
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

    def _evaluate(self, design: LinearDesign, x: np.ndarray, with_loss: bool):
        raise NotImplementedError

    def smoothness(self, comm):
        local = np.array([[self.curvature * self.design.worker_lambda_max(w) + self.reg_L]
                          for w in range(self.n_local)])
        L_workers = comm.allgather_rows(local)[:, 0]
        n_total = int(comm.allgather_rows(self.local_sizes[:, None].astype(np.float64)).sum())
        L = self.curvature * self.design.data_lambda_max(comm, n_total) + self.reg_L
        return Smoothness(L, L_workers, self._mu())

    def _mu(self) -> Optional[float]:
        return None


@dataclass(frozen=True)
class LogRegParams:
    lam: float = param(0.1, "regularisation strength λ", check=nonnegative)
    regularizer: str = param("nonconvex", "'nonconvex': λ Σ x²/(1+x²) (EF21 papers); 'l2': (λ/2)‖x‖²; 'none'",
                             choices=("nonconvex", "l2", "none"))


class LogisticRegression(LinearModel):
    """Logistic loss log(1 + exp(-y aᵀx)) with labels ±1, plus a regulariser (EF21 paper eq. (8)).

    With z = y aᵀx and e = exp(z): ∇ = −(1/N_i) Σ y a /(1 + e) as in the official code, and the loss is
    log1p(e) − z, accurate to an absolute ulp(z) (the stable log1p(exp(−|z|)) + max(−z, 0) takes over for a
    worker where e overflows). L_i = λ_max(A_iᵀA_i/(4N_i)) + 2λ for the nonconvex regulariser
    (ALGORITHMS §2.6); for the official EF21+ step-size rule, μ = λ.
    """

    curvature = 0.25
    score_names = ("accuracy",)

    def __init__(self, params: LogRegParams, shard: Shard, n_workers: int):
        super().__init__(shard, n_workers, shard.y)
        self._accuracy = np.full(self.n_local, np.nan)
        self.lam, self.kind = params.lam, params.regularizer
        self.reg_L = {"nonconvex": 2 * self.lam, "l2": self.lam, "none": 0.0}[self.kind]

    def _evaluate(self, design, x, with_loss):
        z = design.products(x)
        with np.errstate(over="ignore"):
            e = np.exp(z)
        r = e + 1.0
        np.reciprocal(r, out=r)  # σ(−z)
        grads = design.worker_sums(r)
        grads /= -design.sizes[:, None]
        reg, reg_grad = self._regulariser(x)
        grads += reg_grad
        if not with_loss:
            return None, grads
        if design is self.design:  # training accuracy: sign(aᵀx) = y exactly when the margin z is positive
            self._accuracy = design.worker_average((z > 0).astype(np.float64))
        return self._losses(design, z, e) + reg, grads

    def scores(self):
        return self._accuracy[:, None]

    @staticmethod
    def _losses(design: LinearDesign, z: np.ndarray, e: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            terms = np.log1p(e)
        terms -= z
        sums = np.add.reduceat(terms, design.offsets[:-1])
        for w in np.flatnonzero(~np.isfinite(sums)):
            zw = z[design.offsets[w] : design.offsets[w + 1]]
            sums[w] = np.sum(np.log1p(np.exp(-np.abs(zw))) + np.maximum(-zw, 0.0))
        return sums / design.sizes

    def _regulariser(self, x) -> tuple[float, np.ndarray | float]:
        """(r(x), ∇r(x)): λ Σ x²/(1+x²) and λ·2x/(1+x²)², or (λ/2)‖x‖² and λx, or nothing."""
        if self.kind == "nonconvex":
            square = x * x
            one_plus = 1.0 + square
            return self.lam * float(np.sum(square / one_plus)), self.lam * 2.0 * x / (one_plus * one_plus)
        if self.kind == "l2":
            return 0.5 * self.lam * float(x @ x), self.lam * x
        return 0.0, 0.0

    def _mu(self):
        return self.lam if self.lam > 0 else None


@dataclass(frozen=True)
class LeastSquaresParams:
    pass


class LeastSquares(LinearModel):
    """f_i(x) = (1/(2N_i)) ‖A_i x − b_i‖², so ∇f_i = (1/N_i) A_iᵀ(A_i x − b_i) and L_i = λ_max(A_iᵀA_i/N_i).

    This fixes the EF21 repository's mixed convention (its gradient is that of 1/(2N) but its loss uses
    1/N; ALGORITHMS §2.6 B): here loss and gradient agree.
    """

    curvature = 1.0
    reg_L = 0.0

    def __init__(self, params: LeastSquaresParams, shard: Shard, n_workers: int):
        super().__init__(shard, n_workers, np.ones(len(shard.y)), targets=shard.y)

    def smoothness(self, comm):
        """Also μ, the smallest positive eigenvalue of ∇²f = (1/n) Σ A_iᵀA_i/N_i (the PL constant; the
        official scripts use σ_min(A)² with or without 1/N, ALGORITHMS §2.6 B), and f* from the normal
        equations; both only for d <= GRAM_MAX_D (None above)."""
        s = super().smoothness(comm)
        if self.d > GRAM_MAX_D:
            return s
        design = self.design
        rows = []
        for w in range(self.n_local):
            A, b = design.rows(w), design.targets[design.offsets[w] : design.offsets[w + 1]]
            rows.append(np.concatenate([(_dense_gram(A) / design.sizes[w]).ravel(), A.T @ b / design.sizes[w]]))
        total = comm.sum_rows(np.stack(rows), ordered=True) / self.n_workers
        H, r = total[: self.d**2].reshape(self.d, self.d), total[self.d**2 :]
        eig = scipy.linalg.eigh(H, eigvals_only=True)
        positive = eig[eig > 1e-10 * eig[-1]]
        x_star = scipy.linalg.lstsq(H, r)[0]
        losses = self.loss_grads(x_star, True)[0]
        f_star = float(comm.sum_rows(losses[:, None], ordered=True)[0] / self.n_workers)
        return Smoothness(s.L, s.L_workers, float(positive[0]) if len(positive) else None, f_star)

    def _evaluate(self, design, x, with_loss):
        residual = design.products(x) - design.targets
        grads = design.worker_means(residual)
        return (0.5 * design.worker_average(residual * residual) if with_loss else None), grads


PROBLEMS.register("logreg")(ProblemSpec(LogRegParams, "pm1", lambda p, s, ids, n: LogisticRegression(p, s, n),
                                        "logistic regression, labels ±1, with a (nonconvex) regulariser"))
PROBLEMS.register("least_squares")(ProblemSpec(LeastSquaresParams, "raw", lambda p, s, ids, n: LeastSquares(p, s, n),
                                               "least squares (1/(2N_i))‖A_i x − b_i‖²"))


# --------------------------------------------------------------------------- clipping counterexample
@dataclass(frozen=True)
class CounterexampleParams:
    d: int = param(2, "dimension", check=at_least(1))
    s: float = param(1.0, "distance of the two workers' minimisers ±s·e_1 from 0", check=positive)
    kappa: float = param(3.0, "curvature of worker 1 (worker 0 has 1)", check=positive)


class Counterexample(Problem):
    """Two workers where clipped gradients cancel away from the optimum (Clip21's Example 1.1 type, built
    here): f_0(x) = ½‖x − c‖², f_1(x) = (κ/2)‖x + c‖², c = s·e_1. At x = 0 the gradients −c and κc are
    antiparallel; once both norms exceed τ their clipped versions sum to 0, so Clip-GD does not move,
    although ∇f(0) = (κ − 1)c/2 ≠ 0. f is (1+κ)/2-smooth and strongly convex; x* = c(1 − κ)/(1 + κ)."""

    def __init__(self, params: CounterexampleParams, worker_ids: np.ndarray, n_workers: int):
        self.params, self.worker_ids, self.d = params, np.asarray(worker_ids), params.d
        self.local_sizes = np.ones(len(self.worker_ids), dtype=np.int64)
        c = np.zeros(params.d)
        c[0] = params.s
        self.centres = np.stack([c if w == 0 else -c for w in self.worker_ids])
        self.curv = np.array([1.0 if w == 0 else params.kappa for w in self.worker_ids])

    def loss_grads(self, x, with_loss):
        diff = x - self.centres
        grads = self.curv[:, None] * diff
        losses = 0.5 * self.curv * np.einsum("ij,ij->i", diff, diff) if with_loss else None
        return losses, grads

    def smoothness(self, comm):
        k = self.params.kappa
        x_star = np.zeros(self.d)
        x_star[0] = self.params.s * (1 - k) / (1 + k)
        f_star = 0.25 * ((x_star[0] - self.params.s) ** 2 + k * (x_star[0] + self.params.s) ** 2)
        return Smoothness((1 + k) / 2, np.array([1.0, k]), (1 + k) / 2, f_star)


def _two_workers(params, n_workers: int) -> None:
    if n_workers != 2:
        raise InputError("run.n_workers", n_workers, "the clipping counterexample has exactly 2 workers")


PROBLEMS.register("clip_counterexample")(ProblemSpec(
    CounterexampleParams, None, lambda p, s, ids, n: Counterexample(p, ids, n),
    "two quadratics whose clipped gradients cancel at 0 (needs run.n_workers = 2)", check=_two_workers))


# --------------------------------------------------------------------------- quadratic
@dataclass(frozen=True)
class QuadraticParams:
    d: int = param(20, "dimension", check=at_least(1))
    L: float = param(1.0, "largest L_i (worker 0's)", check=positive)
    spread: float = param(0.5, "L_i falls linearly from L (worker 0) to (1 - spread)·L (last worker)",
                          check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    mu: float = param(0.01, "smallest eigenvalue of every Q_i", check=positive)
    zeta: float = param(1.0, "heterogeneity: b_i ~ N(0, zeta² I) independently per worker", check=nonnegative)
    seed: int = param(0, "seed of the generated Q_i and b_i", check=nonnegative)

    def __post_init__(self):
        if self.mu > self.L * (1 - self.spread):
            raise InputError("problem.mu", self.mu, f"exceeds the smallest L_i = (1 - spread)·L = {self.L * (1 - self.spread):g}")


class Quadratic(Problem):
    """f_i(x) = ½ xᵀQ_i x − b_iᵀx with Q_i = R_i diag(λ_i) R_iᵀ, λ_i geometric from mu to L_i exactly.

    Worker i's (Q_i, b_i) come from ``default_rng([seed, 3, i])`` alone, so each rank makes only its own.
    """

    def __init__(self, params: QuadraticParams, worker_ids: np.ndarray, n_workers: int):
        self.params, self.worker_ids, self.n_workers, self.d = params, np.asarray(worker_ids), n_workers, params.d
        self.local_sizes = np.ones(len(self.worker_ids), dtype=np.int64)
        self.Q, self.b = map(np.stack, zip(*(quadratic_worker(params, n_workers, int(i)) for i in self.worker_ids)))

    def loss_grads(self, x, with_loss):
        Qx = np.matmul(self.Q, x)
        grads = Qx - self.b
        # a row-wise reduction (not a matrix-vector product) keeps each worker's loss independent of its rank mates
        losses = np.sum((0.5 * Qx - self.b) * x, axis=1) if with_loss else None
        return losses, grads

    def smoothness(self, comm):
        L_workers = np.array([worker_L(self.params, self.n_workers, i) for i in range(self.n_workers)])
        rows = np.concatenate([self.Q.reshape(self.n_local, -1), self.b], axis=1)
        total = comm.sum_rows(rows, ordered=True) / self.n_workers
        mean_Q, mean_b = total[: self.d**2].reshape(self.d, self.d), total[self.d**2 :]
        eig = scipy.linalg.eigh(mean_Q, eigvals_only=True)
        x_star = scipy.linalg.solve(mean_Q, mean_b, assume_a="pos")
        f_star = float(0.5 * x_star @ mean_Q @ x_star - mean_b @ x_star)
        return Smoothness(float(eig[-1]), L_workers, float(eig[0]), f_star)


def worker_L(p: QuadraticParams, n_workers: int, i: int) -> float:
    return p.L * (1 - p.spread * (i / (n_workers - 1) if n_workers > 1 else 0.0))


def quadratic_worker(p: QuadraticParams, n_workers: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([p.seed, 3, i])
    R, _ = np.linalg.qr(rng.standard_normal((p.d, p.d)))
    spectrum = np.geomspace(p.mu, worker_L(p, n_workers, i), p.d) if p.d > 1 else np.array([worker_L(p, n_workers, i)])
    return (R * spectrum) @ R.T, p.zeta * rng.standard_normal(p.d)


PROBLEMS.register("quadratic")(ProblemSpec(QuadraticParams, None, lambda p, s, ids, n: Quadratic(p, ids, n),
                                           "synthetic heterogeneous quadratics with known L_i (no data set)"))
