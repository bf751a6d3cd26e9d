"""EF21 and its baselines.

Richtárik, Sokolov, Fatkhullin, "EF21: A New, Simpler, Theoretically Better, and Practically Faster
Error Feedback", NeurIPS 2021, arXiv:2106.05203; the baselines as in its experiments: distributed GD,
naive compressed GD (Beznosikov et al. 2020), EF in the Seide et al. (2014) / Stich & Karimireddy (2019)
form ("EF14"), and EF21+ (same paper). Update rules and conventions: docs/algorithms.md §3 and §9.

Round t evaluates ∇f_i(x^t) on every worker, sends one message per worker, and forms x^{t+1}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mpiclip.compressors import Compressor, Message, dense_message
from mpiclip.errors import InputError
from mpiclip.methods.base import METHODS, compression_metrics, row_sq_norms
from mpiclip.params import param
from mpiclip.rng import COMPRESSOR
from mpiclip.runners.synchronous import SynchronousMethod
from mpiclip.wire import sequential_sum


@dataclass(frozen=True)
class EF21Params:
    init: str = param("full", "g_i^0: 'full' = ∇f_i(x^0) uncompressed, as the official code (its bits are kept "
                      "apart as the initial round); 'compressed' = C(∇f_i(x^0)), as the paper",
                      choices=("full", "compressed"))


class XState(NamedTuple):
    """State of methods that keep nothing between rounds."""


class EF21State(NamedTuple):
    g: np.ndarray  # (n_local, d) the workers' g_i


class MeanState(NamedTuple):
    g: np.ndarray  # (d,) the server's estimate (1/n) Σ_i g_i


def ef21_worker_update(compressor: Compressor, g: np.ndarray, target: np.ndarray, ctx,
                       initial_full: bool) -> tuple[np.ndarray, Message, dict]:
    """g_i ← g_i + C(target_i − g_i), the EF21 step every extension shares; with ``initial_full`` the
    target itself is sent uncompressed (round 0 of the official code). Metrics: ``ef_error`` =
    ‖g_i^new − target_i‖² = ‖C(v) − v‖² and ``compress_error`` = ‖C(v) − v‖²/‖v‖²."""
    if initial_full:
        zeros = np.zeros(len(target))
        return target, dense_message(target, initial=True), {"ef_error": zeros, "compress_error": zeros}
    v = target - g
    msg = compressor(v, ctx.randomness(COMPRESSOR))
    metrics = {}
    if ctx.record:
        error, relative = compression_metrics(msg, v)
        metrics = {"ef_error": error, "compress_error": relative}
    return msg.added_to(g, out=v), msg, metrics  # v's memory holds the new g_i: one (n_local, d) array fewer


@METHODS.register("gd")
@dataclass(frozen=True)
class GD(SynchronousMethod):
    """Distributed gradient descent, x^{t+1} = x^t − γ (1/n) Σ_i ∇f_i(x^t) (uncompressed baseline)."""

    display_name = "GD"
    style = (0, 0)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    default_rule = "inverse_L"
    uses_compressor = False

    def initial_state(self, x0, n_local):
        return XState(), XState()

    def worker_step(self, state, oracle, ctx):
        return state, dense_message(oracle.full()), {}

    def server_step(self, state, x, agg, ctx):
        return state, x - self.gamma * (agg.total / agg.n_workers), None


@METHODS.register("cgd")
@dataclass(frozen=True)
class CompressedGD(SynchronousMethod):
    """Naive distributed compressed GD, x^{t+1} = x^t − γ (1/n) Σ_i C(∇f_i(x^t)); may diverge for biased C
    (Beznosikov et al. 2020), which is what error feedback repairs."""

    display_name = "CGD"
    style = (5, 1)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    worker_metrics = ("compress_error",)
    accepts_clipping = True  # with compressor clip this is Clip-GD

    def initial_state(self, x0, n_local):
        return XState(), XState()

    row_separable = True  # the step below is row by row (chunked rounds: runners/chunks.py)

    def worker_step(self, state, oracle, ctx):
        grads = oracle.full()
        msg = self.compressor(grads, ctx.randomness(COMPRESSOR))
        return state, msg, ({"compress_error": compression_metrics(msg, grads)[1]} if ctx.record else {})

    def server_step(self, state, x, agg, ctx):
        return state, x - self.gamma * agg.mean(x.size), None


class EF14State(NamedTuple):
    e: np.ndarray  # (n_local, d) error buffers


@METHODS.register("ef14")
@dataclass(frozen=True)
class EF14(SynchronousMethod):
    """EF (Seide et al. 2014; Stich & Karimireddy 2019 form), the EF21 paper's baseline:
    w_i^t = C(e_i^t + γ∇f_i(x^t)), e_i^{t+1} = e_i^t + γ∇f_i(x^t) − w_i^t, x^{t+1} = x^t − (1/n) Σ_i w_i^t,
    with e_i^0 = 0 (so w_i^0 = C(γ∇f_i(x^0)), an ordinary compressed message)."""

    display_name = "EF"
    style = (1, 2)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    worker_metrics = ("error_sq", "compress_error")

    def initial_state(self, x0, n_local):
        return EF14State(np.zeros((n_local, x0.size))), XState()

    row_separable = True  # the step below is row by row (chunked rounds: runners/chunks.py)

    def worker_step(self, state, oracle, ctx):
        grads, samples = self.gradients(oracle, ctx)
        u = state.e + self.gamma * grads
        msg = self.compressor(u, ctx.randomness(COMPRESSOR))
        e = u - msg.dense(u.shape)
        metrics = {}
        if ctx.record:
            metrics = {"error_sq": row_sq_norms(e), "compress_error": compression_metrics(msg, u)[1]}
            if "samples" in self.worker_metrics:
                metrics["samples"] = samples.astype(float)
        return EF14State(e), msg, metrics

    def gradients(self, oracle, ctx) -> tuple[np.ndarray, np.ndarray]:
        """(the gradients the step compresses, the samples each took): full gradients here."""
        return oracle.full(), oracle.sizes

    def server_step(self, state, x, agg, ctx):
        return state, x - agg.mean(x.size), None


@METHODS.register("ef21")
@dataclass(frozen=True)
class EF21(EF21Params, SynchronousMethod):
    """EF21 (Alg. 1 of the paper): c_i^t = C(∇f_i(x^t) − g_i^{t−1}), g_i^t = g_i^{t−1} + c_i^t,
    g^t = g^{t−1} + (1/n) Σ_i c_i^t, x^{t+1} = x^t − γ g^t, with g_i^{−1} = 0.

    ``init = "full"`` sends ∇f_i(x^0) uncompressed in round 0 (the official code; its bits are recorded
    as the initial round), ``"compressed"`` sends C(∇f_i(x^0)) (the paper)."""

    display_name = "EF21"
    style = (2, 3)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = EF21Params
    worker_metrics = ("ef_error", "compress_error")
    accepts_clipping = True  # M = clip_τ gives Clip21 (docs/algorithms.md §2); the clip21_* methods add DP and metrics

    def initial_state(self, x0, n_local):
        return EF21State(np.zeros((n_local, x0.size))), MeanState(np.zeros(x0.size))

    row_separable = True  # the step below is row by row (chunked rounds: runners/chunks.py)

    def worker_step(self, state, oracle, ctx):
        g, msg, metrics = ef21_worker_update(self.compressor, state.g, oracle.full(), ctx,
                                             ctx.t == 0 and self.init == "full")
        return EF21State(g), msg, metrics

    def server_step(self, state, x, agg, ctx):
        g = agg.plus_mean(state.g)
        return MeanState(g), x - self.gamma * g, None


class EF21PlusServer(NamedTuple):
    G: np.ndarray  # (n, d) every worker's g_i: a replaced g_i cannot be recovered from a running mean
    g: np.ndarray  # (d,)


@METHODS.register("ef21_plus")
@dataclass(frozen=True)
class EF21Plus(EF21Params, SynchronousMethod):
    """EF21+ (same paper): each worker forms b_i = C(∇f_i) and m_i = g_i + C(∇f_i − g_i) and keeps b_i only
    if ‖b_i − ∇f_i‖ < ‖m_i − ∇f_i‖ (ties to m_i, as the official code). The message is the chosen payload
    plus a flag (flag bits not counted, as the paper); the server keeps every g_i to apply a replacement,
    so its state is (n, d) on every rank. Theory holds for deterministic C only."""

    display_name = "EF21+"
    style = (4, 4)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = EF21Params
    worker_metrics = ("ef_error", "chose_b", "compress_error")
    default_rule = "ef21_pl"
    per_worker = True

    def validate(self, d, n_workers):
        if not self.compressor.positions_sent:
            raise InputError("compressor.name", self.compressor.name, "EF21+ sends one of two candidates, so the "
                             "receiver cannot regenerate its positions; use a compressor that sends them")

    def initial_state(self, x0, n_local):
        # no g_i before the first round (the server learns n there); a record from the start, so that a
        # checkpoint is read back into its class
        return EF21State(np.zeros((n_local, x0.size))), EF21PlusServer(np.zeros((0, x0.size)), np.zeros(x0.size))

    def worker_step(self, state, oracle, ctx):
        grads = oracle.full()
        n_local = len(grads)
        if ctx.t == 0 and self.init == "full":
            msg = dense_message(grads, initial=True)
            zeros = np.zeros(n_local)
            return EF21State(grads), msg, ({"ef_error": zeros, "chose_b": zeros, "compress_error": zeros} if ctx.record else {})
        rng = ctx.randomness(COMPRESSOR)
        b_msg = self.compressor(grads, rng.child(1))
        m_msg = self.compressor(grads - state.g, rng.child(2))
        b, m = b_msg.dense(grads.shape), m_msg.added_to(state.g)
        chose_b = row_sq_norms(b - grads) < row_sq_norms(m - grads)
        g = np.where(chose_b[:, None], b, m)
        msg = _choose(chose_b, b_msg, m_msg)
        metrics = {}
        if ctx.record:  # compress_error: of C(∇ − g), the candidate EF21 would send
            metrics = {"ef_error": row_sq_norms(g - grads), "chose_b": chose_b.astype(float),
                       "compress_error": compression_metrics(m_msg, grads - state.g)[1]}
        return EF21State(g), msg, metrics

    def server_step(self, state, x, agg, ctx):
        G = np.zeros((agg.n_workers, x.size)) if state is None or not len(state.G) else state.G.copy()
        flags = agg.flags if agg.sparse is None else agg.sparse.flags
        replaced = np.zeros(agg.n_workers, bool) if flags is None else flags.astype(bool)
        G[replaced] = 0.0  # b_i replaces g_i; otherwise g_i += c_i
        if agg.sparse is None:
            G += agg.rows
        else:
            G[np.repeat(np.arange(agg.n_workers), agg.sparse.counts), agg.sparse.indices] += agg.sparse.values
        g = sequential_sum(G) / agg.n_workers
        return EF21PlusServer(G, g), x - self.gamma * g, None


def _choose(chose_b: np.ndarray, b_msg: Message, m_msg: Message) -> Message:
    """Per worker, b's payload where chose_b else m's, flagged; bits are the chosen payload's."""
    flags = chose_b.astype(np.int8)
    bits = np.where(chose_b[:, None], b_msg.bits, m_msg.bits)
    if not b_msg.sparse:
        return b_msg.replace(values=np.where(chose_b[:, None], b_msg.values, m_msg.values), bits=bits, flags=flags)
    b_rows, m_rows = b_msg.entry_rows(), m_msg.entry_rows()
    take_b, take_m = chose_b[b_rows], ~chose_b[m_rows]
    rows = np.concatenate([b_rows[take_b], m_rows[take_m]])
    order = np.argsort(rows, kind="stable")  # worker order; within a worker the message's own order
    pick = lambda bb, mm: np.concatenate([bb[take_b], mm[take_m]])[order]
    counts = np.where(chose_b, b_msg.counts, m_msg.counts)
    same = b_msg.fixed_count is not None and b_msg.fixed_count == m_msg.fixed_count
    return m_msg.replace(values=pick(b_msg.values, m_msg.values), indices=pick(b_msg.indices, m_msg.indices),
                         counts=counts, bits=bits, flags=flags, fixed_count=b_msg.fixed_count if same else None)
