"""DP-SGD with per-example clipping, run by every worker on its own data (local DP).

Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with Differential Privacy",
CCS 2016, Algorithm 1. Round t, at x^t: worker i samples b_i = int(batch·N_i) of its N_i records without
replacement (``sampling = "fixed"``) and sends

    c_i = (1/b_i) (Σ_j clip_τ(∇ℓ_j(x^t)) + N(0, σ² I)),     x^{t+1} = x^t − γ (1/n) Σ_i c_i,

with ℓ_j the per-example loss of f_i = (1/N_i) Σ_j ℓ_j (its regulariser included). σ is the noise on the
sum, as in the paper (σ = z·Δ, z the noise multiplier). Replacing one record moves the sum by at most
Δ = 2τ, so a round is the subsampled Gaussian mechanism of the other minibatch DP methods here and is
accounted the same way (:mod:`mpiclip.privacy`). With ``sampling = "poisson"`` each record joins the lot
independently with probability q = batch and the noisy sum is divided by the expected lot size q·N_i (the
paper's and Opacus's estimator; an empty lot sends the noise alone): adding or removing one record
(``relation = "add_remove_record"``) moves the sum by one clipped term, Δ = τ, the convention under which
the DP-SGD literature reports ε. Under worker-level DP (``relation = "add_remove"``) the sum moves by b_i·τ:
per-example clipping then buys nothing over clipping the mean (and a Poisson lot has no such bound).

Recorded per worker: ``clip_active`` (the fraction of its examples clipped; 0 for an empty lot),
``norm_before_clip`` (their mean gradient norm; NaN for an empty lot) and ``noise_scale`` (σ/b_i or σ/(q·N_i),
the noise in the message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mpiclip import privacy
from mpiclip.compressors import dense_message
from mpiclip.errors import InputError
from mpiclip.methods.base import METHODS
from mpiclip.methods.clip21 import ClipSGDParams, NoState, _Clipped
from mpiclip.methods.ef21_extensions import minibatch_sizes


def clipped_sums(oracle, x: np.ndarray, batches: list, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's per-worker clipped sums and per-example norms, with a zero sum and no norms for an empty
    (Poisson) lot (the oracles need at least one row)."""
    empty = np.array([len(b) == 0 for b in batches])
    if not empty.any():
        return oracle.clipped_example_sums(x, batches, tau)
    sums, norms = oracle.clipped_example_sums(x, [np.arange(1) if e else b for b, e in zip(batches, empty)], tau)
    sums[empty] = 0.0
    return sums, np.delete(norms, np.cumsum([max(len(b), 1) for b in batches])[empty] - 1)


def per_worker_means(norms: np.ndarray, sizes: np.ndarray, tau: float) -> dict:
    """``clip_active`` (the fraction of a worker's examples clipped) and ``norm_before_clip`` (their mean norm)
    from the concatenated per-example norms; 0 and NaN for an empty lot, whose rows reduceat must skip."""
    full = sizes > 0
    starts = (np.cumsum(sizes) - sizes).astype(np.int64)[full]
    active, mean_norm = np.zeros(len(sizes)), np.full(len(sizes), np.nan)
    if full.any():
        active[full] = np.add.reduceat((norms > tau).astype(float), starts) / sizes[full]
        mean_norm[full] = np.add.reduceat(norms, starts) / sizes[full]
    return {"clip_active": active, "norm_before_clip": mean_norm}


@METHODS.register("dp_sgd")
@dataclass(frozen=True)
class DPSGD(ClipSGDParams, _Clipped):
    """DP-SGD (module docstring)."""

    display_name = "DP-SGD"
    style = (1, 2)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = ClipSGDParams
    own_metrics = ("clip_active", "norm_before_clip", "noise_scale")
    uses_compressor: ClassVar[bool] = False
    needs_samples: ClassVar[bool] = True
    example_gradients: ClassVar[bool] = True
    minibatch = True

    def _mechanisms(self, info, sigma):
        """σ is on the sum: replacing a record moves it by 2τ, adding or removing one by τ, adding or removing
        the worker by b_i·τ."""
        if self.relation == "replace":
            return super()._mechanisms(info, sigma)
        workers = self._worker_sampling(info.n_workers)
        if self.relation == "add_remove_record":
            if self.sampling == "poisson" and self.batch < 1:
                return [privacy.Mechanism(sigma, self.tau, self.relation, poisson=self.batch, workers=workers)]
            return [privacy.Mechanism(sigma, self.tau, self.relation, int(n), int(b), workers=workers)
                    for n, b in zip(info.sample_counts, minibatch_sizes(self.batch, info.sample_counts))]
        if self.sampling == "poisson":
            raise InputError("method.sampling", "poisson", "DP-SGD's sum over a Poisson lot has no worker-level "
                             "sensitivity bound (the lot may hold every record); use 'fixed' with relation 'add_remove'")
        return [privacy.Mechanism(sigma, self.tau * int(b), self.relation, workers=workers)
                for b in minibatch_sizes(self.batch, info.sample_counts)]

    def _divisors(self, oracle, batches) -> np.ndarray:
        """What a worker's noisy sum is divided by: its lot size, or the expected one q·N_i for Poisson lots."""
        if self.sampling == "poisson":
            return self.batch * oracle.sizes.astype(np.float64)
        return np.array([len(b) for b in batches], dtype=np.float64)

    def initial_state(self, x0, n_local):
        return NoState(), NoState()

    def local_step(self, state, oracle, ctx):
        batches = self._batches(oracle, ctx)
        sums, norms = clipped_sums(oracle, ctx.x, batches, self.tau)
        noisy = self._noised(dense_message(sums), ctx).values
        divisors = self._divisors(oracle, batches)
        metrics = {}
        if ctx.record:
            sizes = np.array([len(b) for b in batches], dtype=np.float64)
            metrics = {**per_worker_means(norms, sizes, self.tau), "noise_scale": self.sigma / divisors}
        return state, dense_message(noisy / divisors[:, None]), metrics

    def server_step(self, state, x, agg, ctx):
        return state, x - self.gamma * self._received_mean(agg, x.size, ctx), None
