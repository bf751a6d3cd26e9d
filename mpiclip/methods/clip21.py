"""Clipped distributed gradient methods, with error feedback (Clip21) and without, and their DP variants.

Khirirat, Gorbunov, Horváth, Islamov, Karray, Richtárik, "Clip21: Error Feedback for Gradient
Clipping", arXiv:2305.18929 (no official code; docs/algorithms.md §5). With clip_τ(x) = min(1, τ/‖x‖)·x:

* Clip-GD / Clip-SGD (the naive baselines): x ← x − γ (1/n) Σ_i clip_τ(∇f_i(x)). Clipped local
  gradients can cancel at a non-stationary point, so the method stalls at a τ-dependent floor.
* Clip21-GD / Clip21-SGD: c_i = clip_τ(∇f_i(x^t) − v_i), v_i ← v_i + c_i, v = (1/n) Σ v_i,
  x ← x − γ v, with v_i^{−1} = 0, so the first messages are clip_τ(∇f_i(x^0)) (docs/algorithms.md §9 item 6).
* Clip21-Avg: the same messages at a fixed x: the server learns the mean of a_i = ∇f_i(x) exactly after
  ⌈max_i ‖a_i‖/τ⌉ rounds (each round shortens a_i − v_i by τ in its own direction).

DP variants (σ > 0): every message gets N(0, σ² I) and both worker and server update with the noisy
message, so they stay consistent (docs/algorithms.md §5). Sensitivity per round: 2τ for replace-one
neighbours, τ for adding or removing a worker (``relation``); see :mod:`mpiclip.privacy`. The
[compressor] section adds compression: ``order = "clip_first"`` sends C(clip_τ(u)), ``"compress_first"``
clip_τ(C(u)); bits are counted from the final message. Noise and compression do not mix here: a
data-dependent sparsifier's positions are not privatised.

Recorded per worker: ``clip_active`` (‖v‖ > τ) and ``norm_before_clip`` (‖v‖), v the vector clipped: u for
``clip_first``, C(u) for ``compress_first``;
``residual`` (‖∇f_i(x) − v_i‖ after the update for Clip21; ‖∇f_i(x) − message‖ for Clip-GD),
``noise_scale`` (σ); per round ``epsilon`` (ε at the configured δ, after the rounds sent so far).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Optional

import numpy as np

from mpiclip import privacy
from mpiclip.clipping import clip_rows
from mpiclip.compressors import Identity, dense_message
from mpiclip.compressors.clipping import Clip, ClipParams, message_norms
from mpiclip.errors import InputError
from mpiclip.methods.base import METHODS, RunInfo
from mpiclip.methods.ef21_extensions import minibatch_sizes, sample_minibatches, sample_poisson
from mpiclip.methods.participation import RULES as PARTICIPATION_RULES
from mpiclip.methods.participation import drawn_workers, step_drawn
from mpiclip.params import nonnegative, param, positive
from mpiclip.rng import COMPRESSOR, NOISE
from mpiclip.runners.synchronous import SynchronousMethod
from mpiclip.wire import row_sq_norms

SAMPLERS = {"fixed": sample_minibatches, "poisson": sample_poisson}  # method.sampling -> (ctx, N_i, batch) -> rows


def minibatch_means(oracle, x: np.ndarray, batches: list) -> np.ndarray:
    """Each worker's mean gradient over its rows; 0 for a worker whose (Poisson) draw is empty: it has no
    gradient to send, and its message is then the noise alone (the oracles need at least one row)."""
    empty = np.array([len(b) == 0 for b in batches])
    if not empty.any():
        return oracle.minibatch(x, batches)
    grads = oracle.minibatch(x, [np.arange(1) if e else b for b, e in zip(batches, empty)])
    grads[empty] = 0.0
    return grads


def _open_unit(v: float) -> Optional[str]:
    return None if 0 < v < 1 else "must be in (0, 1)"


@dataclass(frozen=True)
class ClipMethodParams:
    tau: float = param(1.0, "clipping threshold τ", check=positive)
    sigma: float = param(0.0, "standard deviation σ of the Gaussian noise added to every message (DP); 0: none",
                         check=nonnegative)
    target_epsilon: float = param(0.0, "if > 0, σ is chosen so that run.rounds rounds use exactly this ε at δ",
                                  check=nonnegative)
    delta: float = param(1e-5, "δ of the (ε, δ) guarantee", check=_open_unit)
    relation: str = param("replace", "neighbouring datasets: 'replace' one record (sensitivity 2τ; amplified by "
                          "fixed-size minibatches), 'add_remove_record' one record (2τ, τ for DP-SGD's sum; amplified "
                          "by Poisson sampling) or 'add_remove' a worker's contribution (τ; worker-level, not amplified "
                          "by sampling)", choices=privacy.RELATIONS)
    accountant: str = param("rdp", "privacy accountant of ε(t) and of target_epsilon: 'rdp' (Rényi DP, any sampling) or "
                            "'pld' (privacy loss distribution, tight; full-batch rounds only)", choices=privacy.ACCOUNTANTS)
    order: str = param("clip_first", "with a [compressor]: 'clip_first' sends C(clip(u)), 'compress_first' "
                       "clip(C(u))", choices=("clip_first", "compress_first"))
    participation: float = param(1.0, "partial participation: the share of workers drawn each round (the others send "
                                 "nothing and keep their state); 1: every worker, every round",
                                 check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    participation_sampling: str = param("fixed", "how the round's workers are drawn: 'fixed' int(participation·n) "
                                        "of them without replacement (amplifies privacy under relation replace or "
                                        "add_remove_record), 'poisson' each with probability participation (without "
                                        "DP noise only: each drawn worker adds its own noise)",
                                        choices=PARTICIPATION_RULES)

    # keys added after traces were made, left out of the config hash at the value those traces ran with
    UNHASHED_DEFAULTS = {"participation": 1.0, "participation_sampling": "fixed"}

    def check(self) -> None:
        if self.sigma > 0 and self.target_epsilon > 0:
            raise InputError("method.target_epsilon", self.target_epsilon, "and method.sigma are alternatives; set one")


@dataclass(frozen=True)
class ClipSGDParams(ClipMethodParams):
    batch: float = param(0.25, "minibatch fraction: τ_i = int(batch·N_i) rows per worker and round, without "
                         "replacement (sampling 'fixed'), or the probability q of each row (sampling 'poisson')",
                         check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    sampling: str = param("fixed", "how a worker draws its minibatch: 'fixed' size without replacement, or 'poisson' "
                          "(each row independently with probability batch; an empty draw's gradient is 0, so the "
                          "worker sends noise alone)", choices=privacy.SAMPLINGS)

    UNHASHED_DEFAULTS = {**ClipMethodParams.UNHASHED_DEFAULTS, "sampling": "fixed"}


class MeanState(NamedTuple):
    v: np.ndarray  # (d,) the server's (1/n) Σ v_i


class VState(NamedTuple):
    v: np.ndarray  # (n_local, d)


class NoState(NamedTuple):
    pass


@dataclass(frozen=True)
class _Clipped(ClipMethodParams, SynchronousMethod):
    """Shared machinery: the clipped (optionally compressed, optionally noisy) message of u."""

    ledger: Any = None  # the privacy.Accountant, set by bind when there is noise
    params = ClipMethodParams
    own_metrics: ClassVar[tuple[str, ...]] = ("clip_active", "norm_before_clip", "residual", "noise_scale")
    round_metrics = ("epsilon",)
    default_rule = "inverse_L"
    accepts_clipping = True  # in the sense that validate() explains why a clipping compressor is not needed
    minibatch = False
    batch = 1.0
    sampling = "fixed"

    def validate(self, d, n_workers):
        if self.compressor.clips:
            raise InputError("compressor.name", self.compressor.name, f"{self.name} clips by itself; set method.tau "
                             "and use [compressor] only for compression")
        if (self.sigma > 0 or self.target_epsilon > 0) and not isinstance(self.compressor, Identity):
            raise InputError("compressor.name", self.compressor.name, "DP noise is added to uncompressed messages "
                             "only (a sparsifier's data-dependent positions are not privatised)")
        if self.participation < 1:
            if self.participation_sampling == "fixed" and int(self.participation * n_workers) < 1:
                raise InputError("method.participation", self.participation, f"selects no worker out of {n_workers}")
            if not self.compressor.positions_sent:
                raise InputError("compressor.name", self.compressor.name, f"regenerates positions for every worker, "
                                 f"which {self.name} cannot do for the workers that sit a round out")

    @property
    def worker_metrics(self) -> tuple[str, ...]:
        """The method's own per-worker metrics, and ``participated`` (1 drawn, 0 sat out) when workers are sampled."""
        return self.own_metrics + (("participated",) if self.participation < 1 else ())

    def _worker_sampling(self, n_workers: int) -> Optional[privacy.WorkerSampling]:
        if self.participation == 1:
            return None
        return privacy.WorkerSampling(self.participation_sampling, n_workers, self.participation)

    def _mechanisms(self, info: RunInfo, sigma: float) -> list:
        sensitivity = privacy.sensitivity(self.tau, self.relation)
        workers = self._worker_sampling(info.n_workers)
        if not self.amplified or info.sample_counts is None:
            return [privacy.Mechanism(sigma, sensitivity, self.relation, workers=workers)]
        if self.sampling == "poisson":
            return [privacy.Mechanism(sigma, sensitivity, self.relation, poisson=self.batch, workers=workers)]
        taus = minibatch_sizes(self.batch, info.sample_counts)
        return [privacy.Mechanism(sigma, sensitivity, self.relation, int(n), int(b), workers=workers)
                for n, b in zip(info.sample_counts, taus)]

    @property
    def amplified(self) -> bool:
        """Whether a round's message depends on its minibatch alone, so that sampling amplifies (record-level)
        privacy."""
        return self.minibatch

    def bind(self, info):
        sigma = self.sigma
        if self.target_epsilon > 0:
            sigma = privacy.sigma_for(self.target_epsilon, self.delta, info.rounds, self._mechanisms(info, 1.0),
                                      self.accountant)
        if sigma == 0:
            return self
        return dataclasses.replace(self, sigma=sigma,
                                   ledger=privacy.Accountant(self._mechanisms(info, sigma), self.delta, self.accountant))

    def evaluate(self, server_state, x, grad, t):
        return {"epsilon": self.ledger.epsilon(t) if self.ledger is not None else float("inf")}

    def _batches(self, oracle, ctx) -> list:
        """The round's minibatch of each local worker, drawn as ``sampling`` says."""
        return SAMPLERS[self.sampling](ctx, oracle.sizes, self.batch)

    def _drawn(self, ctx) -> np.ndarray:
        return drawn_workers(ctx, self.participation, self.participation_sampling)

    row_separable = True  # every local_step below is row by row (chunked rounds: runners/chunks.py)

    def worker_step(self, state, oracle, ctx):
        """``local_step`` by the workers drawn this round; the others send nothing and keep their state."""
        if self.participation == 1:
            return self.local_step(state, oracle, ctx)
        mine = self._drawn(ctx)[ctx.worker_ids]
        return step_drawn(self.local_step, state, oracle, ctx, mine, (len(mine), ctx.x.size))

    def local_step(self, state, oracle, ctx):
        """The step of the local workers of ``ctx.worker_ids`` (all of them, or the drawn ones)."""
        raise NotImplementedError

    def _received_mean(self, agg, d: int, ctx) -> np.ndarray:
        """(1/|S^t|) Σ_{i∈S^t} c_i, the mean of the messages the server received (all n without sampling; 0 when
        nobody was drawn): the step of a Clip-GD round has the scale of full participation's however many send."""
        if self.participation == 1:
            return agg.mean(d)
        received = int(self._drawn(ctx).sum())
        return dataclasses.replace(agg, n_workers=received).mean(d) if received else np.zeros(d)

    def _target(self, oracle, ctx) -> np.ndarray:
        if not self.minibatch:
            return oracle.full()
        return minibatch_means(oracle, ctx.x, self._batches(oracle, ctx))

    def _message(self, u: np.ndarray, ctx):
        """(message, norms of u): clip and compress in the configured order, then add the noise."""
        msg, norms = self._clipped(u, ctx)
        return self._noised(msg, ctx), norms

    def _noised(self, msg, ctx):
        """The message plus N(0, σ² I), drawn per worker from (seed, worker, round)."""
        if self.sigma == 0:
            return msg
        values = msg.values
        noise_rng = ctx.randomness(NOISE)
        noise = np.zeros(values.shape)  # row by row, so that a round without local workers has none
        for i in range(len(values)):
            noise[i] = noise_rng[i].standard_normal(values.shape[1])
        return dense_message(values + noise * self.sigma)

    def _clipped(self, u: np.ndarray, ctx):
        """(message, norms of u) before the noise."""
        clip = Clip(ClipParams(self.tau))
        rng = ctx.randomness(COMPRESSOR)
        if self.order == "clip_first":
            clipped, norms = clip_rows(u, self.tau)
            msg = dense_message(clipped) if isinstance(self.compressor, Identity) else self.compressor(clipped, rng)
        else:  # the vector clipped is C(u): its norm says whether clipping acted
            compressed = self.compressor(u, rng)
            norms = message_norms(compressed)
            msg = clip.on(compressed, rng)
        return msg, norms

    def _metrics(self, norms, residual, n_local) -> dict:
        return {"clip_active": (norms > self.tau).astype(float), "norm_before_clip": norms, "residual": residual,
                "noise_scale": np.full(n_local, self.sigma)}


@METHODS.register("clip_gd")
@dataclass(frozen=True)
class ClipGD(_Clipped):
    """Clip-GD: x ← x − γ (1/n) Σ_i [clip_τ(∇f_i(x)) + noise] (the naive baseline, biased)."""

    display_name = "Clip-GD"
    style = (1, 2)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS

    def initial_state(self, x0, n_local):
        return NoState(), NoState()

    def local_step(self, state, oracle, ctx):
        grads = self._target(oracle, ctx)
        msg, norms = self._message(grads, ctx)
        metrics = {}
        if ctx.record:
            diff = grads - msg.dense(grads.shape)
            metrics = self._metrics(norms, np.sqrt(row_sq_norms(diff)), len(grads))
        return state, msg, metrics

    def server_step(self, state, x, agg, ctx):
        return state, x - self.gamma * self._received_mean(agg, x.size, ctx), None


@METHODS.register("clip_sgd")
@dataclass(frozen=True)
class ClipSGD(ClipSGDParams, ClipGD):
    """Clip-SGD: Clip-GD with τ_i-nice minibatch gradients."""

    display_name = "Clip-SGD"
    style = (3, 3)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = ClipSGDParams
    minibatch = True
    needs_samples = True


@dataclass(frozen=True)
class ClipSGDMParams(ClipSGDParams):
    beta: float = param(0.1, "server momentum β: m ← (1 − β) m + β (1/n) Σ_i c_i, x ← x − γ m; 1: none (Clip-SGD)",
                        check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")


@METHODS.register("clip_sgdm")
@dataclass(frozen=True)
class ClipSGDM(ClipSGDMParams, ClipSGD):
    """DP-Clip-SGD with momentum: Clip-SGD's messages, averaged by the server into m ← (1 − β) m + β·mean
    (m^{−1} = 0), x ← x − γ m. The momentum only post-processes the noisy messages, so the privacy of a
    round is Clip-SGD's, amplified by the sampling. β = 1 is Clip-SGD to the last bit."""

    display_name = "Clip-SGDM"
    style = (6, 0)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = ClipSGDMParams

    def initial_state(self, x0, n_local):
        return NoState(), MeanState(np.zeros(x0.size))

    def server_step(self, state, x, agg, ctx):
        mean = self._received_mean(agg, x.size, ctx)
        m = mean if self.beta == 1 else (1.0 - self.beta) * state.v + self.beta * mean
        return MeanState(m), x - self.gamma * m, None


@METHODS.register("clip21_gd")
@dataclass(frozen=True)
class Clip21GD(_Clipped):
    """Clip21-GD: c_i = clip_τ(∇f_i(x) − v_i) [+ noise], v_i ← v_i + c_i, x ← x − γ (1/n) Σ_i v_i."""

    display_name = "Clip21-GD"
    style = (2, 4)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS

    def initial_state(self, x0, n_local):
        return VState(np.zeros((n_local, x0.size))), MeanState(np.zeros(x0.size))

    def local_step(self, state, oracle, ctx):
        grads = self._target(oracle, ctx)
        msg, norms = self._message(grads - state.v, ctx)
        v = msg.added_to(state.v)
        metrics = {}
        if ctx.record:
            diff = grads - v
            metrics = self._metrics(norms, np.sqrt(row_sq_norms(diff)), len(grads))
        return VState(v), msg, metrics

    def server_step(self, state, x, agg, ctx):
        v = agg.plus_mean(state.v)
        return MeanState(v), x - self.gamma * v, None


@METHODS.register("clip21_sgd")
@dataclass(frozen=True)
class Clip21SGD(ClipSGDParams, Clip21GD):
    """Clip21-SGD: Clip21-GD with τ_i-nice minibatch gradients."""

    display_name = "Clip21-SGD"
    style = (4, 5)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = ClipSGDParams
    minibatch = True
    needs_samples = True


@METHODS.register("clip21_avg")
@dataclass(frozen=True)
class Clip21Avg(Clip21GD):
    """Clip21-Avg: clipped mean estimation of a_i = ∇f_i(x^0) at a fixed point; x never moves. Records
    ``estimate_error`` = ‖v − (1/n) Σ a_i‖² per round (exactly 0, to rounding, after ⌈max_i ‖a_i‖/τ⌉
    rounds without noise)."""

    display_name = "Clip21-Avg"
    style = (5, 6)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    round_metrics = ("epsilon", "estimate_error")

    def server_step(self, state, x, agg, ctx):
        return MeanState(agg.plus_mean(state.v)), x, None

    def evaluate(self, server_state, x, grad, t):
        err = server_state.v - grad
        return {**super().evaluate(server_state, x, grad, t), "estimate_error": float(err @ err)}
