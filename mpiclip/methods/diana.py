"""DIANA: compressed gradient differences with an unbiased compressor.

Mishchenko, Gorbunov, Takáč, Richtárik, "Distributed Learning with Compressed Gradient Differences",
arXiv:1901.09269; Horváth, Kovalev, Mishchenko, Stich, Richtárik, "Stochastic Distributed Learning with
Gradient Quantization and Variance Reduction", arXiv:1904.05115. Rule (docs/algorithms.md §4):
m_i = Q(∇f_i(x^t) − h_i), ĝ = h + (1/n) Σ m_i, h_i ← h_i + a·m_i, h ← h + a·(1/n) Σ m_i,
x^{t+1} = x^t − γ ĝ, with h_i^0 = 0 and a = 1/(ω + 1) unless set. With a = 1 it is EF21 with the
paper's compressed initialisation, step for step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mpiclip.errors import InputError
from mpiclip.methods.base import METHODS, compression_metrics
from mpiclip.params import param
from mpiclip.rng import COMPRESSOR
from mpiclip.runners.synchronous import SynchronousMethod
from mpiclip.wire import row_sq_norms


@dataclass(frozen=True)
class DianaParams:
    a: float = param(0.0, "shift step a in (0, 1]; 0 takes 1/(ω + 1)",
                     check=lambda v: None if 0 <= v <= 1 else "must be in [0, 1]")


class DianaWorkers(NamedTuple):
    h: np.ndarray  # (n_local, d) shifts


class DianaServer(NamedTuple):
    h: np.ndarray  # (d,) mean shift


@METHODS.register("diana")
@dataclass(frozen=True)
class Diana(DianaParams, SynchronousMethod):
    """DIANA with an unbiased compressor Q of variance ω (see the module docstring)."""

    display_name = "DIANA"
    style = (3, 1)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = DianaParams
    worker_metrics = ("shift_error", "compress_error")
    default_rule = "diana"

    def validate(self, d, n_workers):
        if self.compressor.omega(d) is None:
            raise InputError("compressor.name", self.compressor.name, "DIANA needs an unbiased compressor "
                             "(one with a variance ω, e.g. randk_unbiased, natural, dithering)")

    def shift_step(self, d: int) -> float:
        return self.a if self.a > 0 else 1.0 / (self.compressor.omega(d) + 1.0)

    def initial_state(self, x0, n_local):
        return DianaWorkers(np.zeros((n_local, x0.size))), DianaServer(np.zeros(x0.size))

    row_separable = True  # the step below is row by row (chunked rounds: runners/chunks.py)

    def worker_step(self, state, oracle, ctx):
        grads = oracle.full()
        v = grads - state.h
        msg = self.compressor(v, ctx.randomness(COMPRESSOR))
        a = self.shift_step(v.shape[1])
        h = state.h + a * msg.dense(v.shape)
        metrics = {}
        if ctx.record:
            error, relative = compression_metrics(msg, v)
            metrics = {"shift_error": row_sq_norms(grads - h), "compress_error": relative}
        return DianaWorkers(h), msg, metrics

    def server_step(self, state, x, agg, ctx):
        mean = agg.mean(x.size)
        g_hat = state.h + mean
        h = state.h + self.shift_step(x.size) * mean
        return DianaServer(h), x - self.gamma * g_hat, None
