"""CE-FedAvg: FedAvg whose clients clip their model updates, with optional Gaussian noise (client-level DP).

Zhang, Chen, Hong, Wu, Yi, "Understanding Clipping for Federated Learning: Convergence and Client-Level
Differential Privacy", ICML 2022 (arXiv:2106.13673; docs/algorithms.md §8), the federated baseline the Clip21
paper compares with. Round t, each sampled client i from x^t:

    y_i = K local SGD steps from x^t (FedAvg's),   Δ_i = x^t − y_i
    sent_i = clip_τ(Δ_i) + ω_i,   ω_i ~ N(0, σ² I) keyed (seed, i, t)         (feedback = false: the paper's)
    server: D = (1/P) Σ_i sent_i through the [federated] server optimizer (sgd, server_lr η_s: x ← x − η_s D)

The paper clips the update and adds the noise for client-level DP; it has no error feedback. ``feedback =
true`` is this project's variant (not the paper's), after Clip21/EF21: a client keeps a residual e_i (0 at the
start, kept between the rounds it is sampled in), sends clip_τ(Δ_i + e_i) + ω_i and keeps e_i ← Δ_i + e_i −
clip_τ(Δ_i + e_i), so what clipping cut off is sent later rather than lost.

The noise is drawn per client, so the mean carries N(0, σ²/P·I): in distribution the paper's noise added once
to the sum with standard deviation √P·σ. No ε is accounted here. The client clips by itself, so the runner's
``federated.update_clip`` must stay 0 (refused otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from mpiclip.clipping import clip_vector
from mpiclip.methods.base import METHODS
from mpiclip.methods.gradalign import LocalSteps, local_sgd
from mpiclip.params import nonnegative, param, positive
from mpiclip.rng import NOISE, generator
from mpiclip.runners.federated import ClientResult, FederatedMethod, FedServerState


@dataclass(frozen=True)
class CEFedAvgParams(LocalSteps):
    tau: float = param(1.0, "clipping threshold τ of each client's model update x^t − y_i", check=positive)
    sigma: float = param(0.0, "standard deviation σ of the Gaussian noise each sampled client adds to its clipped "
                         "update (client-level DP); 0: none", check=nonnegative)
    feedback: bool = param(False, "error feedback (this project's variant, not the paper's): send clip(Δ_i + e_i) "
                           "and keep e_i ← Δ_i + e_i − clip(Δ_i + e_i)")


class Residuals(NamedTuple):
    e: np.ndarray  # (n_local, d) what clipping cut off the client's earlier updates (0 without feedback)


@METHODS.register("ce_fedavg")
@dataclass(frozen=True)
class CEFedAvg(CEFedAvgParams, FederatedMethod):
    """CE-FedAvg (module docstring): FedAvg with clipped, optionally noised, client updates."""

    display_name = "CE-FedAvg"
    style = (5, 2)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = CEFedAvgParams
    clips_updates: ClassVar[bool] = True  # the runner's update_clip would clip twice

    def initial_state(self, x0, n_local):
        return Residuals(np.zeros((n_local, len(x0)) if self.feedback else (n_local, 0))), FedServerState(np.zeros(0))

    def client_update(self, x, state, server, data, worker, rnd, aligned):
        (residual,) = state
        update = x - local_sgd(x, x, self.local_steps, data, worker, rnd)
        target = update + residual if self.feedback else update
        sent = clip_vector(target, self.tau)[0]
        rows = (target - sent,) if self.feedback else None
        if self.sigma > 0:
            sent = sent + self.sigma * generator(rnd.seed, NOISE, worker, rnd.t).standard_normal(len(x))
        return ClientResult({"model": x - sent}, rows)
