"""Clip21-SGD2M: Clip21 with client momentum and a damped error-feedback buffer, and its DP variant.

Islamov, Horváth, Lucchi, Richtárik, Gorbunov, "Double Momentum and Error Feedback for Clipping with Fast
Rates and Differential Privacy", arXiv:2502.11682 (docs/algorithms.md §6). Round t, at x^t, with v_i^{−1} = 0,
g_i^{−1} = 0, g^{−1} = 0:

    v_i^t = (1 − β1) v_i^{t−1} + β1 ∇f_i(x^t; ξ_i^t)        client momentum on the (stochastic) gradient
    c_i^t = clip_τ(v_i^t − g_i^{t−1}) + ω_i^t              sent; ω ~ N(0, σ² I) under DP, keyed (seed, i, t)
    g_i^t = g_i^{t−1} + β2 c_i^t                             the worker's error-feedback buffer
    g^t   = g^{t−1} + β2 (1/n) Σ_i c_i^t,  x^{t+1} = x^t − γ g^t

The paper's text was not reachable; this order is that of the authors' code (`EF21M` in
Rustem-Islamov/Opt-Scaling-Laws, src/optimizers/gen_sgd.py) and of an independent description, and
β1 = β2 = 1 is Clip21-SGD (to the last bit here, tested). They write the step first, x^{t+1} = x^t − γ g^t
with g^0 = 0, so their first step stands still and their x^{t+1} is the x^t here. One convention differs, and is a parameter:
the code adds only the clipped increment, without the noise, to the worker's buffer (``feedback =
"clean"``), so the server's g drifts from (1/n) Σ_i g_i by the accumulated noise; by default (``"noisy"``)
the worker adds the message it sent, as DP-Clip21 does here (docs/algorithms.md §5), and worker and server agree.

Privacy: each message is clipped, so a round is a Gaussian mechanism of sensitivity Δ on the worker's data
whatever v_i and g_i hold. Sampling amplifies it only when the message depends on the round's minibatch
alone: with client momentum (β1 < 1), or a buffer that keeps noise-free private increments ("clean"), every
record influences every later message, so the rounds are accounted as full-batch ones (the reviewers of
the paper note it gets no amplification). ``batch = 1`` uses the full local gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from mpiclip.errors import InputError
from mpiclip.methods.base import METHODS
from mpiclip.methods.clip21 import ClipSGDParams, MeanState, _Clipped
from mpiclip.params import param
from mpiclip.wire import row_sq_norms


def _momentum(v: float):
    return None if 0 < v <= 1 else "must be in (0, 1]"


@dataclass(frozen=True)
class Clip21SGD2MParams(ClipSGDParams):
    beta1: float = param(0.1, "client momentum β1: v_i ← (1 − β1) v_i + β1 ∇f_i(x; ξ); 1: none", check=_momentum)
    beta2: float = param(0.1, "error-feedback step β2: g_i ← g_i + β2 c_i and g ← g + β2·mean c_i; 1: Clip21's",
                         check=_momentum)
    feedback: str = param("noisy", "what a worker adds to its buffer under DP: 'noisy' the message it sent (worker "
                          "and server agree), 'clean' the clipped increment without noise (the authors' code)",
                          choices=("noisy", "clean"))


class WorkerState(NamedTuple):
    v: np.ndarray  # (n_local, d) client momentum
    g: np.ndarray  # (n_local, d) error-feedback buffer


@METHODS.register("clip21_sgd2m")
@dataclass(frozen=True)
class Clip21SGD2M(Clip21SGD2MParams, _Clipped):
    """Clip21-SGD2M (module docstring); ``batch`` < 1 samples minibatches like Clip21-SGD, 1 takes full gradients."""

    display_name = "Clip21-SGD2M"
    style = (0, 1)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = Clip21SGD2MParams
    default_compressor: ClassVar[str] = "identity"

    @property
    def minibatch(self) -> bool:
        return self.batch < 1

    @property
    def amplified(self) -> bool:
        return self.minibatch and self.beta1 == 1 and self.feedback == "noisy"

    def bind(self, info):
        if self.minibatch and info.sample_counts is None:
            raise InputError("method.batch", self.batch, "samples minibatches, and this problem has no samples "
                             "(use batch = 1 for full gradients)")
        return super().bind(info)

    def initial_state(self, x0, n_local):
        zeros = np.zeros((n_local, x0.size))
        return WorkerState(zeros, zeros.copy()), MeanState(np.zeros(x0.size))

    def local_step(self, state, oracle, ctx):
        grads = self._target(oracle, ctx)
        v = grads if self.beta1 == 1 else (1.0 - self.beta1) * state.v + self.beta1 * grads
        clipped, norms = self._clipped(v - state.g, ctx)
        msg = self._noised(clipped, ctx)
        increment = msg if self.feedback == "noisy" else clipped
        if self.beta2 == 1:
            g = increment.added_to(state.g)
        else:
            g = state.g + self.beta2 * increment.dense(v.shape)
        metrics = {}
        if ctx.record:
            metrics = self._metrics(norms, np.sqrt(row_sq_norms(v - g)), len(v))
        return WorkerState(v, g), msg, metrics

    def server_step(self, state, x, agg, ctx):
        g = agg.plus_mean(state.v) if self.beta2 == 1 else state.v + self.beta2 * agg.mean(x.size)
        return MeanState(g), x - self.gamma * g, None
