"""The six extensions of EF21.

Fatkhullin, Sokolov, Gorbunov, Li, Richtárik, "EF21 with Bells & Whistles: Practical Algorithmic
Extensions of Modern Error Feedback", arXiv:2110.03294 (JMLR: "... Six Algorithmic Extensions of
Modern Error Feedback"). Rules as in the official code (docs/algorithms.md §4): stochastic gradients
(EF21-SGD), the PAGE estimator (EF21-PAGE), partial participation (EF21-PP), bidirectional compression
(EF21-BC), heavy ball (EF21-HB) and proximal steps (EF21-Prox). All keep EF21's worker state g_i and
its server update; each reduces to EF21 in its trivial setting (full batch, p = 1, everyone
participates, identity downlink, η = 0, no regulariser), which the tests check bit for bit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from mpiclip.compressors import Identity, build_compressor, dense_message
from mpiclip.errors import InputError
from mpiclip.methods.base import METHODS
from mpiclip.methods.ef21 import EF21, EF21Params, EF21State, MeanState, ef21_worker_update
from mpiclip.methods.participation import drawn_workers, fill, spread
from mpiclip.params import nonnegative, param
from mpiclip.rng import ORACLE, SAMPLING, SERVER, drawn


def _fraction(v: float) -> Optional[str]:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def minibatch_sizes(fraction: float, sizes: np.ndarray) -> np.ndarray:
    """τ_i = int(fraction·N_i) (the official code), at least 1."""
    return np.maximum(1, (fraction * sizes).astype(np.int64))


def sample_minibatches(ctx, sizes: np.ndarray, fraction: float) -> list:
    """τ-nice sampling: per worker, τ_i of its N_i rows uniformly without replacement, sorted."""
    rng = ctx.randomness(ORACLE)
    taus = minibatch_sizes(fraction, sizes)
    return [drawn(np.sort(rng[i].choice(int(n), int(tau), replace=False)), *rng.key(i))
            for i, (n, tau) in enumerate(zip(sizes, taus))]


def sample_poisson(ctx, sizes: np.ndarray, q: float) -> list:
    """Poisson sampling: per worker, each of its N_i rows independently with probability q (an empty draw
    possible), from the same per-worker generators as :func:`sample_minibatches` (rank-count independent)."""
    rng = ctx.randomness(ORACLE)
    return [drawn(np.flatnonzero(rng[i].random(int(n)) < q), *rng.key(i)) for i, n in enumerate(sizes)]


def _whole(batches: list, sizes: np.ndarray) -> bool:
    """Is every batch its worker's whole shard? Then the full gradient is the estimate (the same bits)."""
    return all(len(b) == n for b, n in zip(batches, sizes))


def minibatch_gradients(oracle, ctx, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(the local workers' τ_i-nice minibatch gradients at ctx.x, the τ_i): the full gradients when every
    minibatch is the whole shard."""
    batches = sample_minibatches(ctx, oracle.sizes, fraction)
    grads = oracle.full() if _whole(batches, oracle.sizes) else oracle.minibatch(ctx.x, batches)
    return grads, np.array([len(b) for b in batches])


# ------------------------------------------------------------------------------------------ SGD
@dataclass(frozen=True)
class SGDParams(EF21Params):
    batch: float = param(0.25, "minibatch fraction: each worker samples τ_i = int(batch·N_i) of its rows per "
                         "round, without replacement (τ-nice)", check=_fraction)


@METHODS.register("ef21_sgd")
@dataclass(frozen=True)
class EF21SGD(SGDParams, EF21):
    """EF21-SGD: g_i ← g_i + C(∇̃f_i(x) − g_i) with ∇̃f_i a τ_i-nice minibatch gradient (g_i^0 = ∇f_i(x^0)).
    Converges to a noise floor that shrinks with the batch. ``samples`` counts gradients of samples."""

    display_name = "EF21-SGD"
    style = (3, 5)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = SGDParams
    worker_metrics = ("ef_error", "compress_error", "samples")
    needs_samples = True

    row_separable = True  # the step below is row by row (chunked rounds: runners/chunks.py)

    def worker_step(self, state, oracle, ctx):
        initial = ctx.t == 0 and self.init == "full"
        target, samples = (oracle.full(), oracle.sizes) if initial else minibatch_gradients(oracle, ctx, self.batch)
        g, msg, metrics = ef21_worker_update(self.compressor, state.g, target, ctx, initial)
        if ctx.record:
            metrics["samples"] = samples.astype(float)
        return EF21State(g), msg, metrics


# ----------------------------------------------------------------------------------------- PAGE
@dataclass(frozen=True)
class PageParams(SGDParams):
    p: float = param(0.0, "probability of a full-gradient round, one draw shared by all workers; 0 takes the "
                     "official p = mean_i τ_i/(τ_i + N_i)", check=lambda v: None if 0 <= v <= 1 else "must be in [0, 1]")


class PageState(NamedTuple):
    g: np.ndarray  # (n_local, d)
    v: np.ndarray  # (n_local, d) the PAGE estimators
    x_prev: np.ndarray  # (d,) the previous point, for the minibatch difference
    replicated = ("x_prev",)  # the same on every rank, not one row per worker


@METHODS.register("ef21_page")
@dataclass(frozen=True)
class EF21Page(PageParams, EF21):
    """EF21-PAGE: v_i ← ∇f_i(x^t) with probability p, else v_i + mean_{j∈I_i}(∇f_ij(x^t) − ∇f_ij(x^{t−1}))
    on one minibatch I_i at both points; then g_i ← g_i + C(v_i − g_i). v_i^0 = g_i^0 = ∇f_i(x^0)."""

    display_name = "EF21-PAGE"
    style = (5, 6)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = PageParams
    worker_metrics = ("ef_error", "compress_error", "samples")
    needs_samples = True

    def bind(self, info):
        if self.p > 0 or info.sample_counts is None:
            return self
        taus = minibatch_sizes(self.batch, info.sample_counts)
        return dataclasses.replace(self, p=float(np.mean(taus / (taus + info.sample_counts))))

    def initial_state(self, x0, n_local):
        return PageState(np.zeros((n_local, x0.size)), np.zeros((n_local, x0.size)), x0), MeanState(np.zeros(x0.size))

    def worker_step(self, state, oracle, ctx):
        if ctx.t == 0 or ctx.shared(SAMPLING).random() < self.p:
            v, samples = oracle.full(), oracle.sizes
        else:
            batches = sample_minibatches(ctx, oracle.sizes, self.batch)
            if _whole(batches, oracle.sizes):
                v, samples = oracle.full(), oracle.sizes
            else:
                v = state.v + (oracle.minibatch(ctx.x, batches) - oracle.minibatch(state.x_prev, batches))
                samples = 2 * np.array([len(b) for b in batches])
        g, msg, metrics = ef21_worker_update(self.compressor, state.g, v, ctx, ctx.t == 0 and self.init == "full")
        if ctx.record:
            metrics["samples"] = np.asarray(samples, dtype=float)
        return PageState(g, v, ctx.x), msg, metrics


# ------------------------------------------------------------------------------------------- PP
@dataclass(frozen=True)
class PPParams(EF21Params):
    participation: float = param(0.5, "fraction of workers that take part each round: int(participation·n) of "
                                 "them, drawn uniformly without replacement by the server", check=_fraction)


@METHODS.register("ef21_pp")
@dataclass(frozen=True)
class EF21PP(PPParams, EF21):
    """EF21-PP: each round the server draws S^t, int(participation·n) workers without replacement; they
    do the EF21 step, the others send nothing and keep g_i; the server still averages all n g_i."""

    display_name = "EF21-PP"
    style = (6, 7)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = PPParams
    worker_metrics = ("ef_error", "compress_error", "participated")

    def validate(self, d, n_workers):
        if int(self.participation * n_workers) < 1:
            raise InputError("method.participation", self.participation, f"selects no worker out of {n_workers}")
        if not self.compressor.positions_sent:
            raise InputError("compressor.name", self.compressor.name, "regenerates positions for every worker, "
                             "which ef21_pp cannot do for the workers that sit a round out")

    def worker_step(self, state, oracle, ctx):
        grads = oracle.full()
        if ctx.t == 0 and self.init == "full":
            return super().worker_step(state, oracle, ctx)
        mine = drawn_workers(ctx, self.participation, "fixed")[ctx.worker_ids]
        sub = dataclasses.replace(ctx, worker_ids=ctx.worker_ids[mine])
        g = state.g.copy()
        part_g, part_msg, part_metrics = ef21_worker_update(self.compressor, state.g[mine], grads[mine], sub, False)
        g[mine] = part_g
        msg = spread(part_msg, mine, state.g.shape)
        metrics = {}
        if ctx.record:
            metrics = {name: fill(values, mine) for name, values in part_metrics.items()}
            metrics["participated"] = mine.astype(float)
        return EF21State(g), msg, metrics


# ------------------------------------------------------------------------------------------- BC
@dataclass(frozen=True)
class BCParams(EF21Params):
    downlink: dict = param({"name": "identity"}, "the server's compressor C_M for g ← g + C_M(w − g), an inline "
                           "table such as {name = \"topk\", k = 4}")

    def check(self) -> None:
        build_compressor(self.downlink, "method.downlink")


class BCServer(NamedTuple):
    w: np.ndarray  # (d,) mean of the workers' w_i (uplink EF21 state)
    g: np.ndarray  # (d,) the downlink EF21 state every worker tracks


@METHODS.register("ef21_bc")
@dataclass(frozen=True)
class EF21BC(BCParams, EF21):
    """EF21-BC (bidirectional): uplink EF21 w_i ← w_i + C(∇f_i − w_i); the server forms w = mean w_i and
    broadcasts C_M(w − g), so g ← g + C_M(w − g) on every worker and x ← x − γ g. Downlink bits go to
    /bits/down (its initial dense g^0 to /bits/initial/down). With the identity downlink the server sends
    w itself, which is EF21."""

    display_name = "EF21-BC"
    style = (3, 8)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = BCParams

    def __post_init__(self):
        if isinstance(self.downlink, dict):  # from the config; a test may pass a compressor itself
            object.__setattr__(self, "downlink", build_compressor(self.downlink, "method.downlink"))

    def validate(self, d, n_workers):
        self.downlink.validate(d)

    def initial_state(self, x0, n_local):
        return EF21State(np.zeros((n_local, x0.size))), BCServer(np.zeros(x0.size), np.zeros(x0.size))

    def server_step(self, state, x, agg, ctx):
        w = agg.plus_mean(state.w)
        if isinstance(self.downlink, Identity) or (ctx.t == 0 and self.init == "full"):
            down = dense_message(w[None, :], initial=ctx.t == 0 and self.init == "full")
            g = w
        else:
            down = self.downlink((w - state.g)[None, :], ctx.server_randomness(SERVER))
            g = down.added_to(state.g[None, :])[0]
        return BCServer(w, g), x - self.gamma * g, down


# ------------------------------------------------------------------------------------------- HB
@dataclass(frozen=True)
class HBParams(EF21Params):
    eta: float = param(0.99, "momentum η (official default 0.99): v ← η v + g, x ← x − γ v",
                       check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")


class HBServer(NamedTuple):
    g: np.ndarray
    v: np.ndarray


@METHODS.register("ef21_hb")
@dataclass(frozen=True)
class EF21HB(HBParams, EF21):
    """EF21-HB in the official code's form: g as EF21, v^t = η v^{t−1} + g^t (v^0 = g^0), x^{t+1} = x^t − γ v^t
    (the poster's v = ηv + γg puts γ twice; docs/algorithms.md §4)."""

    display_name = "EF21-HB"
    style = (6, 9)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = HBParams

    def initial_state(self, x0, n_local):
        return EF21State(np.zeros((n_local, x0.size))), HBServer(np.zeros(x0.size), np.zeros(x0.size))

    def server_step(self, state, x, agg, ctx):
        g = agg.plus_mean(state.g)
        v = self.eta * state.v + g
        return HBServer(g, v), x - self.gamma * v, None


# ----------------------------------------------------------------------------------------- Prox
@dataclass(frozen=True)
class ProxParams(EF21Params):
    prox: str = param("l1", "the regulariser r: 'l1' (l1·‖x‖₁), 'box' (indicator of [lower, upper]^d) or 'none'",
                      choices=("l1", "box", "none"))
    l1: float = param(0.0, "weight of ‖x‖₁ for prox = 'l1'", check=nonnegative)
    lower: float = param(-1.0, "lower end of the box for prox = 'box'")
    upper: float = param(1.0, "upper end of the box for prox = 'box'")

    def check(self) -> None:
        if self.prox == "box" and not self.lower < self.upper:
            raise InputError("method.upper", self.upper, f"must exceed method.lower = {self.lower}")


def prox_step(z: np.ndarray, gamma: float, prox: str, l1: float, lower: float, upper: float) -> np.ndarray:
    """prox_{γr}(z): soft-thresholding by γ·l1, or projection onto the box."""
    if prox == "l1":
        return np.sign(z) * np.maximum(np.abs(z) - gamma * l1, 0.0) if l1 > 0 else z
    if prox == "box":
        return np.clip(z, lower, upper)
    return z


@METHODS.register("ef21_prox")
@dataclass(frozen=True)
class EF21Prox(ProxParams, EF21):
    """EF21-Prox: x^{t+1} = prox_{γr}(x^t − γ g^t) for r = l1‖x‖₁ or the indicator of a box.
    Recorded per round: r(x^t) and the squared gradient mapping ‖(x − prox_{γr}(x − γ∇f(x)))/γ‖²,
    the stationarity measure of f + r."""

    display_name = "EF21-Prox"
    style = (5, 0)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = ProxParams
    round_metrics = ("regularizer", "grad_mapping_sq")

    def _prox(self, z):
        return prox_step(z, self.gamma, self.prox, self.l1, self.lower, self.upper)

    def server_step(self, state, x, agg, ctx):
        g = agg.plus_mean(state.g)
        return MeanState(g), self._prox(x - self.gamma * g), None

    def evaluate(self, server_state, x, grad, t):
        if self.prox == "l1":
            r = self.l1 * float(np.abs(x).sum())
        elif self.prox == "box":
            r = 0.0 if np.all((x >= self.lower) & (x <= self.upper)) else float("inf")
        else:
            r = 0.0
        mapping = (x - self._prox(x - self.gamma * grad)) / self.gamma
        return {"regularizer": r, "grad_mapping_sq": float(mapping @ mapping)}
