"""The gradient of one job of one worker (asynchronous runs): full, minibatch, or exact plus sub-Weibull noise.

Every draw of job k of worker j comes from generators keyed by (seed, purpose, j, k), so a job's gradient
is the same on any rank, in a resumed run and in a replay of the run's schedule.

Heterogeneous data: worker j's oracle is its own f_j. Homogeneous data: every worker's oracle is the
whole objective f = (1/n) Σ_i f_i (each rank then holds the whole data set): the full gradient ∇f, or a
minibatch of b (worker, row) pairs drawn uniformly (a worker, then one of its rows; unbiased for ∇f).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mpiclip.asynchrony import AsyncParams
from mpiclip.problems import Problem
from mpiclip.problems.base import Picked
from mpiclip.rng import NOISE, SAMPLING, drawn, generator
from mpiclip.wire import sequential_sum


def sub_weibull(rng: np.random.Generator, d: int, theta: float, sigma: float) -> np.ndarray:
    """ξ = σ·E^θ·u with E ~ Exp(1) and u uniform on the unit sphere: zero mean, P(‖ξ‖ ≥ t) = exp(−(t/σ)^(1/θ))
    (docs/algorithms.md §7)."""
    u = rng.standard_normal(d)
    u /= np.sqrt(u @ u)
    return sigma * rng.standard_exponential() ** theta * u


class JobOracle:
    """Gradients of single jobs; ``problem`` holds the workers whose jobs the rank computes (all of them for
    homogeneous data)."""

    def __init__(self, problem: Problem, params: AsyncParams, seed: int):
        self.problem, self.p, self.seed = problem, params, seed
        self.whole = problem if params.data == "homogeneous" else None
        self._full_at: tuple[int, Optional[np.ndarray]] = (-1, None)  # ∇f at the last update index asked for

    def gradient(self, x: np.ndarray, local: int, worker: int, job: int, t: int) -> np.ndarray:
        """(d,) the gradient of job ``job`` of worker ``worker`` (local index ``local``) at x = x^t."""
        p = self.p
        if p.oracle == "minibatch":
            g = self._minibatch(x, local, worker, job)
        elif self.whole is not None:
            g = self._whole_full(x, t)
        else:
            g = self.problem.worker_grad(x, local)
        if p.oracle == "noise" and p.noise_sigma > 0:
            g = g + sub_weibull(generator(self.seed, NOISE, worker, job), len(x), p.noise_theta, p.noise_sigma)
        return g

    def _whole_full(self, x: np.ndarray, t: int) -> np.ndarray:
        at, g = self._full_at
        if at != t:
            grads = self.whole.loss_grads(x, False)[1]
            g = sequential_sum(grads) / len(grads)
            self._full_at = (t, g)
        return g.copy()

    def _minibatch(self, x: np.ndarray, local: int, worker: int, job: int) -> np.ndarray:
        key, b = (self.seed, SAMPLING, worker, job), self.p.batch_size
        rng = generator(*key)
        if self.whole is None:
            n_rows = int(self.problem.local_sizes[local])
            if b >= n_rows:
                return self.problem.worker_grad(x, local)
            return self.problem.worker_grad(x, local, drawn(np.sort(rng.choice(n_rows, b, replace=False)), *key))
        sizes = self.whole.local_sizes
        workers = rng.integers(0, len(sizes), b)
        rows = (rng.random(b) * sizes[workers]).astype(np.int64)
        order = np.lexsort((rows, workers))  # by worker, each worker's rows increasing
        workers, rows = workers[order], rows[order]
        first = np.flatnonzero(np.concatenate([[True], workers[1:] != workers[:-1]]))
        picked = Picked(workers[first], np.append(first, b), rows, key)
        return self.whole.pooled_grad(x, picked) / b
