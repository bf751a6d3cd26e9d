"""Least squares, with its PL constant and optimum from the normal equations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from mpiclip.data import Shard
from mpiclip.problems import linear
from mpiclip.problems.base import PROBLEMS, Smoothness
from mpiclip.problems.linear import LinearModel, _dense_gram


@dataclass(frozen=True)
class LeastSquaresParams:
    pass


@PROBLEMS.register("least_squares")
class LeastSquares(LinearModel):
    """Least squares (1/(2N_i))‖A_i x − b_i‖² on raw labels.

    ∇f_i = (1/N_i) A_iᵀ(A_i x − b_i) and L_i = λ_max(A_iᵀA_i/N_i). This fixes the EF21 repository's
    mixed convention (its gradient is that of 1/(2N) but its loss uses 1/N; docs/algorithms.md §9 item 10): here
    loss and gradient agree.
    """

    params = LeastSquaresParams
    labels = "raw"
    curvature = 1.0
    reg_L = 0.0

    @classmethod
    def build(cls, params, shard, worker_ids, n_workers):
        return cls(params, shard, n_workers)

    def __init__(self, params: LeastSquaresParams, shard: Shard, n_workers: int):
        super().__init__(shard, n_workers, np.ones(len(shard.y)), targets=shard.y)

    def smoothness(self, reduce):
        """Also μ, the smallest positive eigenvalue of ∇²f = (1/n) Σ A_iᵀA_i/N_i (the PL constant; the
        official scripts use σ_min(A)² with or without 1/N, docs/algorithms.md §9 item 10), and f* from the normal
        equations; both only for d <= linear.GRAM_MAX_D (None above)."""
        s = super().smoothness(reduce)
        if self.d > linear.GRAM_MAX_D:
            return s
        design = self.design
        rows = []
        for w in range(self.n_local):
            A, b = design.rows(w), design.targets[design.offsets[w] : design.offsets[w + 1]]
            rows.append(np.concatenate([(_dense_gram(A) / design.sizes[w]).ravel(), A.T @ b / design.sizes[w]]))
        total = reduce.sum(np.stack(rows)) / self.n_workers
        H, r = total[: self.d**2].reshape(self.d, self.d), total[self.d**2 :]
        eig = scipy.linalg.eigh(H, eigvals_only=True)
        positive = eig[eig > 1e-10 * eig[-1]]
        x_star = scipy.linalg.lstsq(H, r)[0]
        losses = self.loss_grads(x_star, True)[0]
        f_star = float(reduce.sum(losses[:, None])[0] / self.n_workers)
        return Smoothness(s.L, s.L_workers, float(positive[0]) if len(positive) else None, f_star)

    def _evaluate(self, design, x, with_loss):
        residual = design.products(x) - design.targets
        grads = design.worker_means(residual)
        return (0.5 * design.worker_average(residual * residual) if with_loss else None), grads
