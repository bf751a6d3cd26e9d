"""Binary logistic regression with the EF21 papers' nonconvex regulariser (or l2, or none)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiclip.clipping import clip_scale
from mpiclip.data import Shard
from mpiclip.errors import InputError
from mpiclip.params import nonnegative, param
from mpiclip.problems.base import PROBLEMS
from mpiclip.problems.linear import LinearDesign, LinearModel


@dataclass(frozen=True)
class LogRegParams:
    lam: float = param(0.1, "regularisation strength λ", check=nonnegative)
    regularizer: str = param("nonconvex", "'nonconvex': λ Σ x²/(1+x²) (EF21 papers); 'l2': (λ/2)‖x‖²; 'none'",
                             choices=("nonconvex", "l2", "none"))


@PROBLEMS.register("logreg")
class LogisticRegression(LinearModel):
    """Logistic regression, labels ±1, log(1 + exp(−y aᵀx)) plus a (nonconvex) regulariser (EF21 eq. (8)).

    With z = y aᵀx and e = exp(z): ∇ = −(1/N_i) Σ y a /(1 + e) as in the official code, and the loss is
    log1p(e) − z, accurate to an absolute ulp(z) (the stable log1p(exp(−|z|)) + max(−z, 0) takes over for a
    worker where e overflows). L_i = λ_max(A_iᵀA_i/(4N_i)) + 2λ for the nonconvex regulariser
    (docs/algorithms.md §3); for the official EF21+ step-size rule, μ = λ.
    """

    params = LogRegParams
    labels = "pm1"
    curvature = 0.25
    score_names = ("accuracy",)

    @classmethod
    def check_data(cls, params, plan):
        if plan.label_map == "raw" and not set(np.unique(plan.label_values)) <= {-1.0, 1.0}:
            shown = ", ".join(f"{v:g}" for v in plan.label_values[:5]) + (", ..." if len(plan.label_values) > 5 else "")
            raise InputError("data.labels", "raw", f"keeps the labels {shown}, and logistic regression needs -1 and +1 "
                             "(use 'pm1' for two labels, or problem softmax for several classes)")

    @classmethod
    def build(cls, params, shard, worker_ids, n_workers):
        return cls(params, shard, n_workers)

    def __init__(self, params: LogRegParams, shard: Shard, n_workers: int):
        super().__init__(shard, n_workers, shard.y)
        self._accuracy = np.full(self.n_local, np.nan)
        self._regularised = [None, None]  # (x, r(x) and ∇r(x)) at the last read-only x, shared with workers()' parts
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

    def clipped_example_sums(self, x, batches, tau):
        """∇ℓ_j = s_j a_j + ∇r with s_j = −1/(1 + e^{z_j}) (a_j carries y_j): its norm from ‖a_j‖², a_jᵀ∇r and
        ‖∇r‖², and the clipped sum as Σ_j c_j s_j a_j + (Σ_j c_j)∇r, c_j = min(1, τ/‖∇ℓ_j‖)."""
        design = self.design.select(batches)
        z = design.products(x).copy()
        slopes = -1.0 / (1.0 + np.exp(np.minimum(z, 700.0)))
        _, reg_grad = self._regulariser(x)
        reg_grad = np.broadcast_to(np.asarray(reg_grad, dtype=np.float64), x.shape)
        cross = design.products(reg_grad) if np.any(reg_grad) else np.zeros_like(z)
        sq = slopes * slopes * design.row_sq_norms() + 2.0 * slopes * cross + float(reg_grad @ reg_grad)
        norms = np.sqrt(np.maximum(sq, 0.0))
        scale = clip_scale(norms, tau)
        sums = design.worker_sums(scale * slopes)
        sums += np.add.reduceat(scale, design.offsets[:-1])[:, None] * reg_grad
        return sums, norms

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
        """(r(x), ∇r(x)), computed once per read-only x for the problem and its parts: a round in chunks of workers
        (runners/chunks.py) hands every chunk the same read-only x, which nothing can change while it is held here,
        and ∇r costs a few d-vectors (at d = 10^7, more than the chunk's own gradient)."""
        if self._regularised[0] is x and not x.flags.writeable:
            return self._regularised[1]
        self._regularised[:] = [None, None]  # the last round's x and ∇r go before this round's are made
        value = self._regulariser_of(x)
        self._regularised[:] = [x, value] if not x.flags.writeable else [None, None]
        return value

    def _regulariser_of(self, x) -> tuple[float, np.ndarray | float]:
        """(r(x), ∇r(x)): λ Σ x²/(1+x²) and λ·2x/(1+x²)², or (λ/2)‖x‖² and λx, or nothing."""
        if self.kind == "nonconvex":  # the operations of λ·Σ x²/(1+x²), λ·2x/(1+x²)², with two d-vectors fewer alive
            square = x * x
            one_plus = 1.0 + square
            value = self.lam * float(np.sum(np.divide(square, one_plus, out=square)))
            del square
            np.multiply(one_plus, one_plus, out=one_plus)
            grad = self.lam * 2.0 * x
            return value, np.divide(grad, one_plus, out=grad)
        if self.kind == "l2":
            return 0.5 * self.lam * float(x @ x), self.lam * x
        return 0.0, 0.0

    def _mu(self):
        return self.lam if self.lam > 0 else None
