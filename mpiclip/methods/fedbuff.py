"""FedBuff: buffered asynchronous federated learning.

Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba, "Federated Learning with Buffered Asynchronous
Aggregation" (AISTATS 2022), Algorithm 1, on the asynchronous runner (docs/algorithms.md §7):

* a client (a worker of the runner) takes the newest global model x^s when its job starts, runs K local SGD
  steps y ← y − η_l ∇f_j(y; B_q) on its own data, and sends Δ = x^s − y_K. Its minibatches are the federated
  runner's (:func:`~mpiclip.methods.gradalign.local_sgd`), keyed by (seed, client, job index, step): [async]
  ``oracle = "minibatch"`` draws ``batch_size`` rows without replacement for every step, ``"full"`` takes the
  client's whole data. A job computes K gradients, so its compute time is K times the clock's draw;
* the server weighs each arrival by w(s), s = server steps since the client took its model: 1/sqrt(1 + s)
  (the paper's experiments), 1 (``constant``) or (1 + s)^−a (``polynomial``), and once it holds K_buf
  updates steps x ← x − η_g (Σ_i w(s_i) Δ_i)/K_buf and empties the buffer. η_g is the [stepsize] section's γ.
  The weights are not normalised (the paper divides by K_buf; FLSim's default reducer divides by Σ w_i).

A client sends while the server may step: its next job starts at once from the newest model (the runner's
``finisher`` assignment), and a buffer may hold several updates of one fast client, as in the paper.
Like the other asynchronous methods, ``tau`` > 0 clips each Δ before it is weighted, and a [compressor]
compresses the uplink with EF21 (the client's estimate h_j of its Δ's), its bits counted per message.

With K = 1, K_buf = 1, constant weights and η_l = 1, Δ = x^s − (x^s − g) is g up to rounding, and FedBuff is
ASGD with the same γ on the same schedule (tests/test_fedbuff.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import numpy as np

from mpiclip.asynchrony import Policy
from mpiclip.errors import InputError
from mpiclip.methods.asgd import AsyncParams, AsyncSGD
from mpiclip.methods.base import METHODS
from mpiclip.methods.gradalign import local_sgd
from mpiclip.params import at_least, finite_nonnegative, finite_positive, param
from mpiclip.runners.federated import ClientView, LocalRound

# w(s; a): the weight of an update s server steps stale
STALENESS: dict[str, Callable[[int, float], float]] = {
    "inverse_sqrt": lambda s, a: 1.0 / math.sqrt(1.0 + s),
    "constant": lambda s, a: 1.0,
    "polynomial": lambda s, a: (1.0 + s) ** -a,
}


@dataclass(frozen=True)
class FedBuffParams(AsyncParams):
    local_steps: int = param(5, "local SGD steps K of each client job (the paper's Q)", check=at_least(1))
    client_lr: Optional[float] = param(None, "the clients' step size η_l (required; the server's η_g is [stepsize]'s γ)",
                                       check=finite_positive)
    buffer: int = param(10, "K_buf: client updates the server buffers before it steps", check=at_least(1))
    staleness: str = param("inverse_sqrt", "weight w(s) of an update s server steps stale: 1/sqrt(1 + s), 'constant' 1, "
                           "or 'polynomial' (1 + s)^−a", choices=tuple(STALENESS))
    staleness_exponent: Optional[float] = param(None, "a of staleness = 'polynomial'", check=finite_nonnegative)

    def check(self) -> None:
        if self.client_lr is None:
            raise InputError("method.client_lr", "missing", "fedbuff needs the clients' step size η_l (e.g. 1/L)")
        if self.staleness == "polynomial" and self.staleness_exponent is None:
            raise InputError("method.staleness_exponent", "missing", "staleness = 'polynomial' needs an exponent a")
        if self.staleness != "polynomial" and self.staleness_exponent is not None:
            raise InputError("method.staleness_exponent", self.staleness_exponent,
                             f"is only used with staleness = 'polynomial' (staleness is {self.staleness!r})")


@METHODS.register("fedbuff")
@dataclass(frozen=True)
class FedBuff(FedBuffParams, AsyncSGD):
    """FedBuff: clients run K local steps asynchronously; the server steps once it has buffered K_buf updates."""

    display_name = "FedBuff"
    style = (6, 3)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = FedBuffParams

    def policy(self) -> Policy:
        return Policy(batch=self.buffer, steps=self.local_steps)

    def check_async(self, params) -> None:
        if params.data == "homogeneous":
            raise InputError("async.data", "homogeneous", "fedbuff's clients run local steps on their own data "
                             "(use 'heterogeneous')")
        if params.oracle == "noise":
            raise InputError("async.oracle", "noise", "fedbuff's local steps take 'full' or 'minibatch' gradients of "
                             "the client's data")

    def work(self, oracle, x: np.ndarray, local: int, worker: int, job: int, t: int) -> np.ndarray:
        """Δ = x − y_K of the client's K local steps from x; the job index stands in for the federated round."""
        p = oracle.p
        rows = p.batch_size if p.oracle == "minibatch" else 0
        rnd = LocalRound(job, oracle.seed, self.client_lr, 1.0, rows, 0.0, 0.0)
        return x - local_sgd(x, x, self.local_steps, ClientView(oracle.problem, local), worker, rnd)

    def step_size(self, delay: int) -> float:
        return self.gamma * STALENESS[self.staleness](delay, self.staleness_exponent or 0.0)
