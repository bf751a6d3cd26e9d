"""The counterexamples where clipping fails: two workers whose clipped gradients cancel (Clip21's motivating
example), and skewed minibatch noise whose clipped mean vanishes away from the solution (Clip21-SGD2M's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mpiclip.errors import InputError
from mpiclip.params import at_least, param, positive
from mpiclip.problems.base import PROBLEMS, Problem, Smoothness
from mpiclip.wire import row_sq_norms


@dataclass(frozen=True)
class CounterexampleParams:
    d: int = param(2, "dimension", check=at_least(1))
    s: float = param(1.0, "distance of the two workers' minimisers ±s·e_1 from 0", check=positive)
    kappa: float = param(3.0, "curvature of worker 1 (worker 0 has 1)", check=positive)


@PROBLEMS.register("clip_counterexample")
class Counterexample(Problem):
    """Two quadratics whose clipped gradients cancel at 0 (needs run.n_workers = 2).

    Clip21's Example 1.1 type, built here: f_0(x) = ½‖x − c‖², f_1(x) = (κ/2)‖x + c‖², c = s·e_1. At
    x = 0 the gradients −c and κc are antiparallel; once both norms exceed τ their clipped versions sum to
    0, so Clip-GD does not move, although ∇f(0) = (κ − 1)c/2 ≠ 0. f is (1+κ)/2-smooth and strongly
    convex; x* = c(1 − κ)/(1 + κ)."""

    params = CounterexampleParams

    @classmethod
    def build(cls, params, shard, worker_ids, n_workers):
        return cls(params, worker_ids, n_workers)

    @staticmethod
    def check(params, n_workers):
        if n_workers != 2:
            raise InputError("run.n_workers", n_workers, "the clipping counterexample has exactly 2 workers")

    def __init__(self, params: CounterexampleParams, worker_ids: np.ndarray, n_workers: int):
        self.settings, self.worker_ids, self.d = params, np.asarray(worker_ids), params.d
        self.local_sizes = np.ones(len(self.worker_ids), dtype=np.int64)
        c = np.zeros(params.d)
        c[0] = params.s
        self.centres = np.stack([c if w == 0 else -c for w in self.worker_ids])
        self.curv = np.array([1.0 if w == 0 else params.kappa for w in self.worker_ids])

    def loss_grads(self, x, with_loss):
        diff = x - self.centres
        grads = self.curv[:, None] * diff
        losses = 0.5 * self.curv * row_sq_norms(diff) if with_loss else None
        return losses, grads

    def smoothness(self, reduce):
        k = self.settings.kappa
        x_star = np.zeros(self.d)
        x_star[0] = self.settings.s * (1 - k) / (1 + k)
        f_star = 0.25 * ((x_star[0] - self.settings.s) ** 2 + k * (x_star[0] + self.settings.s) ** 2)
        return Smoothness((1 + k) / 2, np.array([1.0, k]), (1 + k) / 2, f_star)


@dataclass(frozen=True)
class NoiseCounterexampleParams:
    d: int = param(1, "dimension (the noise acts along e_1)", check=at_least(1))
    spike: float = param(3.0, "a: the rare row's target is −a·e_1, the others' a/(N − 1)·e_1 (mean 0)", check=positive)
    rows: int = param(4, "N: rows per worker, one of them rare (a minibatch of one row is rare with probability 1/N)",
                      check=at_least(3))


@PROBLEMS.register("clip_noise_counterexample")
class NoiseCounterexample(Problem):
    """Skewed minibatch noise on which Clip-SGD and Clip21-SGD stall and Clip21-SGD2M converges (any n).

    Built after the argument of Islamov et al. (arXiv:2502.11682), whose exact construction was not found
    (docs/algorithms.md §6): clipping a *stochastic* gradient is biased, error feedback alone does not remove that
    bias, client momentum does. Every worker holds the same N rows, f_j(x) = ½‖x − c_j‖² with c_0 = −a·e_1 and
    c_j = b·e_1, b = a/(N − 1), for the other rows; so f_i = f = ½‖x‖² + f*, x* = 0, L = μ = 1, and a minibatch
    of one row gives x + a·e_1 with probability p = 1/N and x − b·e_1 otherwise (mean-zero noise whose median
    is not 0). Where the stall points are (closed forms below): :func:`clip_sgd_stall`, :func:`clip21_sgd_stall`."""

    params = NoiseCounterexampleParams

    @classmethod
    def build(cls, params, shard, worker_ids, n_workers):
        return cls(params, worker_ids, n_workers)

    @classmethod
    def sample_counts(cls, params, n_workers):
        return np.full(n_workers, params.rows, dtype=np.int64)

    def __init__(self, params: NoiseCounterexampleParams, worker_ids: np.ndarray, n_workers: int):
        self.settings, self.worker_ids, self.n_workers, self.d = params, np.asarray(worker_ids), n_workers, params.d
        self.local_sizes = np.full(len(self.worker_ids), params.rows, dtype=np.int64)
        self.targets = np.zeros((params.rows, params.d))
        self.targets[:, 0] = params.spike / (params.rows - 1)
        self.targets[0, 0] = -params.spike

    def loss_grads(self, x, with_loss):
        # the rows' targets have mean 0, so each worker's gradient is x itself
        grads = np.tile(x, (self.n_local, 1))
        losses = np.full(self.n_local, 0.5 * float(x @ x) + self._f_star()) if with_loss else None
        return losses, grads

    def minibatch_grads(self, x, batches):
        return np.stack([x - self.targets[np.asarray(rows)].mean(axis=0) for rows in batches])

    def _f_star(self) -> float:
        return 0.5 * self.settings.spike**2 / (self.settings.rows - 1)  # ½ · (1/N) Σ_j ‖c_j‖²

    def smoothness(self, reduce):
        return Smoothness(1.0, np.ones(self.n_workers), 1.0, self._f_star())


def clip_sgd_stall(spike: float, rows: int, tau: float) -> float:
    """x̂ = max(0, a − τ)/(N − 1): where Clip-SGD's expected step vanishes (one row per worker and round).

    For τ < a, near x̂ the rare gradient x + a is clipped to τ and the common one x − b is not (|x̂ − b| =
    τ/(N − 1) <= τ), so E[clip] = pτ + (1 − p)(x − b) = 0 at x̂ = b − pτ/(1 − p). The step is affine in x
    there, so the iterates' mean settles exactly at x̂ (and ‖∇f‖ at |x̂|) while they stay in that region; the
    step size only sets the jitter. For τ >= a nothing is clipped at 0: SGD, no bias."""
    return max(0.0, spike - tau) / (rows - 1)


def clip21_sgd_stall(spike: float, rows: int, tau: float) -> Optional[float]:
    """x̃ = b − m(τ): where Clip21-SGD stalls as γ → 0, for (a + b)/τ = M an integer (None otherwise).

    At a (nearly) fixed x a worker's buffer g tracks the drawn gradient y with steps of at most τ: it sits at
    the common value x − b, moves up by τ when the rare row comes (probability p) and back down by τ
    otherwise, so g − (x − b) is a birth–death chain on {0, τ, …, Mτ} with stationary weights r^k,
    r = p/(1 − p), and mean m(τ) = τ Σ k r^k / Σ r^k. The server steps along the mean buffer, so x settles
    where E[g] = x − b + m(τ) = 0 (g tracks a clipped, median-like statistic of y, not its mean)."""
    b = spike / (rows - 1)
    steps = (spike + b) / tau
    if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
        return None
    k = np.arange(round(steps) + 1)
    weights = (1.0 / (rows - 1)) ** k
    return float(b - tau * (k @ weights) / weights.sum())
