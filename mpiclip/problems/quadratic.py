"""Synthetic heterogeneous quadratics with known constants, generated per worker (no data set)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from mpiclip.errors import InputError
from mpiclip.params import at_least, nonnegative, param, positive
from mpiclip.problems.base import PROBLEMS, Problem, Smoothness


@dataclass(frozen=True)
class QuadraticParams:
    d: int = param(20, "dimension", check=at_least(1))
    L: float = param(1.0, "largest L_i (worker 0's)", check=positive)
    spread: float = param(0.5, "L_i falls linearly from L (worker 0) to (1 - spread)·L (last worker)",
                          check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    mu: float = param(0.01, "smallest eigenvalue of every Q_i", check=positive)
    zeta: float = param(1.0, "heterogeneity: b_i ~ N(0, zeta² I) independently per worker", check=nonnegative)
    seed: int = param(0, "seed of the generated Q_i and b_i", check=nonnegative)

    def check(self) -> None:
        if self.mu > self.L * (1 - self.spread):
            raise InputError("problem.mu", self.mu, f"exceeds the smallest L_i = (1 - spread)·L = {self.L * (1 - self.spread):g}")


@PROBLEMS.register("quadratic")
class Quadratic(Problem):
    """Synthetic heterogeneous quadratics with known L_i (no data set).

    f_i(x) = ½ xᵀQ_i x − b_iᵀx with Q_i = R_i diag(λ_i) R_iᵀ, λ_i geometric from mu to L_i exactly.

    Worker i's (Q_i, b_i) come from ``default_rng([seed, 3, i])`` alone, so each rank makes only its own.
    """

    params = QuadraticParams

    @classmethod
    def build(cls, params, shard, worker_ids, n_workers):
        return cls(params, worker_ids, n_workers)

    def __init__(self, params: QuadraticParams, worker_ids: np.ndarray, n_workers: int):
        self.settings, self.worker_ids, self.n_workers, self.d = params, np.asarray(worker_ids), n_workers, params.d
        self.local_sizes = np.ones(len(self.worker_ids), dtype=np.int64)
        self.Q, self.b = map(np.stack, zip(*(quadratic_worker(params, n_workers, int(i)) for i in self.worker_ids)))

    def loss_grads(self, x, with_loss):
        Qx = np.matmul(self.Q, x)
        grads = Qx - self.b
        # a row-wise reduction (not a matrix-vector product) keeps each worker's loss independent of its rank mates
        losses = np.sum((0.5 * Qx - self.b) * x, axis=1) if with_loss else None
        return losses, grads

    def smoothness(self, reduce):
        L_workers = np.array([worker_L(self.settings, self.n_workers, i) for i in range(self.n_workers)])
        rows = np.concatenate([self.Q.reshape(self.n_local, -1), self.b], axis=1)
        total = reduce.sum(rows) / self.n_workers
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
