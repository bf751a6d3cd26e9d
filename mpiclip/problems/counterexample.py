"""The two-worker counterexample where clipped gradients cancel (Clip21's motivating example)."""

from __future__ import annotations

from dataclasses import dataclass

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
