"""Asynchronous SGD with and without clipping, and the baselines a straggler study needs.

The server applies each worker's gradient when it arrives, computed at an iterate ``delay`` updates old;
the runner (:mod:`mpiclip.runners.asynchronous`) owns the clock and the jobs, these methods only say
what the worker sends and what the server does with it (docs/algorithms.md §7):

* ``asgd``: x ← x − γ g (standard parameter-server ASGD).
* ``clipped_asgd``: x ← x − γ clip_τ(g), clip_τ(g) = min(1, τ/‖g‖) g. Erickson & Johansson, "Clipping
  Makes Distributed and Federated Asynchronous SGD Robust to Stragglers" (arXiv 2606.13287): with
  constant γ and τ the guarantee depends on the concurrency τ_C instead of the maximum delay τ_max.
* ``delay_adaptive_asgd``: γ_t = γ · τ_C / max(τ_C, d_t) (Mishchenko, Bach, Even, Woodworth, "Asynchronous
  SGD Beats Minibatch SGD Under Arbitrary Delays", NeurIPS 2022; their code: ``lr * num_workers /
  max(num_workers, delay)``, with τ_C = number of workers when each holds one job).
* ``minibatch_sgd``: every worker computes at x^k, the server waits for all n and steps with the mean.
* ``rennala_sgd``: Tyurin & Richtárik, "Optimal Time Complexities of Parallel Stochastic Optimization
  Methods Under a Fixed Computation Model" (NeurIPS 2023): workers compute at x^k and restart at once;
  the server keeps only gradients computed at x^k until it has B, then steps with their mean; stale
  gradients are discarded.
* ``ringmaster_asgd``: Maranjyan, Tyurin, Richtárik, "Ringmaster ASGD: The First Asynchronous SGD with
  Optimal Time Complexity" (ICML 2025): ASGD that discards a gradient R or more updates stale; with
  ``stops``, a job that becomes R stale is stopped and restarted at the newest iterate.

Every method takes an optional clip threshold ``tau`` (the server clips each gradient before using it)
and, through [compressor], EF21 on the uplink: worker j sends c = C(g − h_j) and both sides set
h_j ← h_j + c; the server uses h_j in place of g (h_j^0 = 0, so no uncompressed first round). With a
batch B > 1 the step is x ← x − (1/B) Σ_b γ_b clip_τ(g_b).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import numpy as np

from mpiclip.asynchrony import Policy
from mpiclip.clipping import clip_vector, vector_norm
from mpiclip.compressors import Identity
from mpiclip.compressors.message import dense_bits
from mpiclip.errors import InputError
from mpiclip.methods.base import METHODS, RunInfo
from mpiclip.params import at_least, finite_nonnegative, finite_positive, param
from mpiclip.rng import COMPRESSOR, WorkerRandomness
from mpiclip.runners.asynchronous import AsynchronousMethod, AsyncWorkers, Received


@functools.lru_cache(maxsize=4)
def _dense_upload(d: int) -> np.ndarray:
    """(E,) the bits of an uncompressed upload of d values, made once (read-only: every arrival shares it)."""
    bits = dense_bits(d)
    bits.setflags(write=False)
    return bits


class AsyncServer(NamedTuple):
    total: np.ndarray  # (d,) Σ γ_b clip_τ(g_b) of the gradients admitted since the last step
    count: np.ndarray  # () how many


@dataclass(frozen=True)
class AsyncParams:
    tau: float = param(0.0, "clip threshold τ: the server uses clip_τ(g) = min(1, τ/‖g‖)·g (0: no clipping)",
                       check=finite_nonnegative)


@dataclass(frozen=True)
class AsyncSGD(AsynchronousMethod):
    """Base of the asynchronous methods: the uplink message and the server's use of one arrival."""

    tau: float = 0.0
    concurrency: int = 1  # τ_C, set by bind
    n_workers: int = 1

    accepts_clipping: ClassVar[bool] = True  # in the sense that validate() explains how these methods clip
    delay_adaptive: ClassVar[bool] = False

    def bind(self, info: RunInfo) -> "AsyncSGD":
        return dataclasses.replace(self, concurrency=info.concurrency or info.n_workers, n_workers=info.n_workers)

    def validate(self, d, n_workers):
        if self.compressor.clips:
            raise InputError("compressor.name", self.compressor.name, f"{self.name} clips with method.tau; use "
                             "[compressor] only for compression")

    def initial_state(self, x0: np.ndarray, n_local: int) -> tuple[AsyncWorkers, AsyncServer]:
        d = len(x0)
        width = 0 if isinstance(self.compressor, Identity) else d
        return (AsyncWorkers(np.zeros((n_local, d)), np.zeros((n_local, width))),
                AsyncServer(np.zeros(d), np.zeros((), dtype=np.int64)))

    def send(self, estimate: np.ndarray, gradient: np.ndarray,
             rng: WorkerRandomness) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(new estimate, the vector the server uses, the bits of the message (one per encoding)): one worker's
        upload of ``gradient`` (d,)."""
        if estimate.size == 0:
            if isinstance(self.compressor, Identity):  # the hot path: a dense message, the same bits every time
                return estimate, gradient, _dense_upload(len(gradient))
            return estimate, gradient, self.compressor(gradient[None], rng).bits[0]
        msg = self.compressor((gradient - estimate)[None], rng)
        new = msg.added_to(estimate[None])[0]
        return new, new, msg.bits[0]

    def upload_bits(self, d: int, seed: int) -> np.ndarray:
        """(E,) bits of one upload, known before its job runs: the message of a probe vector (its own generators, so
        no draw of the run moves). Every compressor's message size is fixed by (d, k, encoding), so these are the bits
        each upload really takes (tests/test_async_network.py); a message whose size depended on the vector (a
        sparse one without a fixed count) would be priced at its bound, d values with their positions."""
        if isinstance(self.compressor, Identity):
            return dense_bits(d)
        msg = self.compressor(np.ones((1, d)), WorkerRandomness(seed, COMPRESSOR, np.array([0]), 0))
        if msg.sparse and msg.fixed_count is None:
            return msg.cost.per_worker(d, d, True)
        return np.asarray(msg.bits[0])

    def plain_upload(self, d: int) -> Optional[np.ndarray]:
        """Without compression (no estimate) a worker sends its gradient itself, d dense values each time."""
        return _dense_upload(d) if isinstance(self.compressor, Identity) else None

    def plain_step(self) -> Optional[float]:
        """γ of ``receive``'s batch-1 step when it admits every arrival, does not clip and prices no delay (a subclass
        with its own ``step_size`` does, FedBuff's staleness weights)."""
        rules = self.rules
        constant = not self.delay_adaptive and type(self).step_size is AsyncSGD.step_size
        if self.tau > 0 or rules.batch != 1 or rules.max_delay != math.inf or not constant:
            return None
        return self.gamma

    def decisions(self, server: AsyncServer) -> Optional[tuple[int, float, int]]:
        """``receive`` admits by the delay alone and steps at every batch-th admission; clipping and the step size
        (delay-adaptive, FedBuff's staleness weights) change the step, never whether there is one. A subclass with its
        own ``receive`` says for itself."""
        if type(self).receive is not AsyncSGD.receive:
            return None
        return self.rules.batch, self.rules.max_delay, int(server.count)

    @functools.cached_property
    def rules(self) -> Policy:
        return self.policy()

    def admits(self, delay: int) -> bool:
        return delay < self.rules.max_delay

    def step_size(self, delay: int) -> float:
        """γ of an arrival computed ``delay`` updates ago (delay-adaptive: γ·τ_C/max(τ_C, d); FedBuff: η_g·w(d))."""
        if self.delay_adaptive:
            return self.gamma * self.concurrency / max(self.concurrency, delay)
        return self.gamma

    def receive(self, server: AsyncServer, x: np.ndarray, v: np.ndarray, delay: int) -> tuple[AsyncServer, np.ndarray, Received]:
        """The server's use of the vector ``v`` computed ``delay`` updates ago: (server, x, what happened)."""
        if not self.admits(delay):
            return server, x, Received(False, False, vector_norm(v), False)
        used, norm, clipped = clip_vector(v, self.tau) if self.tau > 0 else (v, vector_norm(v), False)
        gamma = self.step_size(delay)
        batch = self.rules.batch
        if batch == 1:  # x − (0 + γu)/1 is x − γu to the last bit
            return server, x - gamma * used, Received(True, True, norm, clipped)
        total, count = server.total + gamma * used, int(server.count) + 1
        if count < batch:
            return AsyncServer(total, np.asarray(count)), x, Received(True, False, norm, clipped)
        fresh = AsyncServer(np.zeros_like(total), np.zeros((), dtype=np.int64))
        return fresh, x - total / batch, Received(True, True, norm, clipped)


@dataclass(frozen=True)
class ClippedParams:
    tau: float = param(1.0, "clip threshold τ: the server uses clip_τ(g) = min(1, τ/‖g‖)·g", check=finite_positive)


@dataclass(frozen=True)
class RennalaParams(AsyncParams):
    batch: int = param(0, "gradients computed at x^k the server collects before stepping (0: n)", check=at_least(0))


@dataclass(frozen=True)
class RingmasterParams(AsyncParams):
    max_delay: int = param(0, "R: a gradient R or more updates stale is discarded (0: R = n)", check=at_least(0))
    stops: bool = param(False, "stop (and restart at the newest iterate) a job as soon as it is R updates stale")


@METHODS.register("asgd")
@dataclass(frozen=True)
class ASGD(AsyncParams, AsyncSGD):
    """Asynchronous SGD: x ← x − γ g at each arrival."""

    display_name = "ASGD"
    style = (0, 7)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = AsyncParams


@METHODS.register("clipped_asgd")
@dataclass(frozen=True)
class ClippedASGD(ClippedParams, AsyncSGD):
    """Clipped asynchronous SGD: x ← x − γ clip_τ(g) at each arrival (Erickson & Johansson 2026)."""

    display_name = "Clipped ASGD"
    style = (1, 8)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = ClippedParams


@METHODS.register("delay_adaptive_asgd")
@dataclass(frozen=True)
class DelayAdaptiveASGD(AsyncParams, AsyncSGD):
    """Delay-adaptive ASGD: γ_t = γ·τ_C/max(τ_C, d_t) (Mishchenko et al. 2022)."""

    display_name = "Delay-adaptive ASGD"
    style = (2, 9)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = AsyncParams
    delay_adaptive = True


@METHODS.register("minibatch_sgd")
@dataclass(frozen=True)
class MinibatchSGD(AsyncParams, AsyncSGD):
    """Minibatch SGD in the asynchronous clock: wait for all n gradients at x^k, step with their mean."""

    display_name = "Minibatch SGD"
    style = (3, 0)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = AsyncParams

    def policy(self):
        return Policy(batch=self.n_workers, wait_all=True)


@METHODS.register("rennala_sgd")
@dataclass(frozen=True)
class RennalaSGD(RennalaParams, AsyncSGD):
    """Rennala SGD: collect B gradients computed at x^k (stale ones discarded), step with their mean."""

    display_name = "Rennala SGD"
    style = (4, 1)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = RennalaParams

    def policy(self):
        return Policy(batch=self.batch or self.n_workers, max_delay=1)


@METHODS.register("ringmaster_asgd")
@dataclass(frozen=True)
class RingmasterASGD(RingmasterParams, AsyncSGD):
    """Ringmaster ASGD: ASGD that discards gradients R or more updates stale (optionally stopping them)."""

    display_name = "Ringmaster ASGD"
    style = (5, 2)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = RingmasterParams

    def policy(self):
        return Policy(max_delay=self.max_delay or self.n_workers, stops=self.stops)

