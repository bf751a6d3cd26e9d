"""DP-SGD with per-example clipping, run by every worker on its own data (local DP).

Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with Differential Privacy",
CCS 2016, Algorithm 1. Round t, at x^t: worker i samples b_i = int(batch·N_i) of its N_i records without
replacement and sends

    c_i = (1/b_i) (Σ_j clip_τ(∇ℓ_j(x^t)) + N(0, σ² I)),     x^{t+1} = x^t − γ (1/n) Σ_i c_i,

with ℓ_j the per-example loss of f_i = (1/N_i) Σ_j ℓ_j (its regulariser included). σ is the noise on the
sum, as in the paper (σ = z·Δ, z the noise multiplier). Replacing one record moves the sum by at most
Δ = 2τ, so a round is the subsampled Gaussian mechanism of the other minibatch DP methods here and is
accounted the same way (:mod:`mpiclip.privacy`). Under worker-level DP (``relation = "add_remove"``) the
sum moves by b_i·τ: per-example clipping then buys nothing over clipping the mean. The paper samples lots by
Poisson sampling; fixed-size sampling without replacement is what the other methods here do, and is what is
accounted.

Recorded per worker: ``clip_active`` (the fraction of its examples clipped), ``norm_before_clip`` (their mean
gradient norm) and ``noise_scale`` (σ/b_i, the noise in the message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mpiclip import privacy
from mpiclip.compressors import dense_message
from mpiclip.methods.base import METHODS
from mpiclip.methods.clip21 import ClipSGDParams, NoState, _Clipped
from mpiclip.methods.ef21_extensions import minibatch_sizes, sample_minibatches


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
        """σ is on the sum: replacing a record moves it by 2τ; adding or removing the worker by b_i·τ."""
        if self.relation == "replace":
            return super()._mechanisms(info, sigma)
        return [privacy.Mechanism(sigma, self.tau * int(b), self.relation, workers=self._worker_sampling(info.n_workers))
                for b in minibatch_sizes(self.batch, info.sample_counts)]

    def initial_state(self, x0, n_local):
        return NoState(), NoState()

    def local_step(self, state, oracle, ctx):
        batches = sample_minibatches(ctx, oracle.sizes, self.batch)
        sums, norms = oracle.clipped_example_sums(ctx.x, batches, self.tau)
        noisy = self._noised(dense_message(sums), ctx).values
        sizes = np.array([len(b) for b in batches], dtype=np.float64)
        metrics = {}
        if ctx.record:
            ends = np.cumsum(sizes).astype(np.int64)
            starts = ends - sizes.astype(np.int64)
            metrics = {"clip_active": np.add.reduceat((norms > self.tau).astype(float), starts) / sizes,
                       "norm_before_clip": np.add.reduceat(norms, starts) / sizes,
                       "noise_scale": self.sigma / sizes}
        return state, dense_message(noisy / sizes[:, None]), metrics

    def server_step(self, state, x, agg, ctx):
        return state, x - self.gamma * self._received_mean(agg, x.size, ctx), None
