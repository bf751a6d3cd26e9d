"""Federated learning with gradient alignment, and the baselines it is compared with.

Dandi, Barba, Jaggi, "Implicit Gradient Alignment in Distributed and Federated Learning" (AAAI 2022;
code epfml/GradientAlignment, docs/algorithms.md §8). In round t every sampled client i first computes its full
local gradient g_i = ∇f_i(x^t); the sample-weighted mean ĝ of the sampled clients' g_i costs one extra
communication round. FedGA then displaces the client's start, y_i⁰ = x^t − β(ĝ − g_i), and runs K local
SGD steps; to first order in β this is gradient descent on f + (β/2)·(1/n)Σ‖∇f_i − ∇f‖², the alignment
penalty SGD has implicitly. GradAlign is FedGA with K = 1.

Methods (all driven by the federated runner; its [federated] section holds the protocol):

* ``fedavg``: K local SGD steps from x^t (McMahan et al. 2017; local SGD with iid data).
* ``fedga`` (β, K) and ``gradalign`` (β, K = 1); ``beta_decay`` multiplies β by the local learning rate's
  schedule, as the code's NeurIPS version did.
* ``scaffold``: the GradAlign code's variant: fresh control variates, each local gradient corrected by
  ĝ − g_i computed at x^t (the extra round).
* ``scaffold_stored``: SCAFFOLD as Karimireddy et al. (ICML 2020), option II: stored client variates c_i and
  the server's c; local gradients corrected by c − c_i; then c_i⁺ = c_i − c + (x^t − y_i^K)/(K η) and the
  client sends Δc_i = c_i⁺ − c_i with its update (twice the uplink); the server sets c ← c + (1/n)Σ Δc_i.
* ``fedprox`` (μ): local steps on f_i(y) + (μ/2)‖y − x^t‖², with the proximal gradient μ(y − x^t) really
  applied (the official code's term carries no gradient, docs/algorithms.md §8).
* ``lbsgd``: large-batch SGD: D = η ĝ from the sampled clients' full gradients, one communication round.

A local step: g = ∇f_i(y; batch) (clipped to ``federated.clip`` before the weight decay is added, as torch's
clip_grad_norm_ before SGD's weight_decay), + the method's correction, + μ(y − x^t); y ← y − η g.
Minibatches are drawn without replacement for every step, keyed by (seed, client, round, step), so a run
gives the same trace on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from mpiclip.clipping import clip_vector
from mpiclip.methods.base import METHODS
from mpiclip.params import at_least, finite_nonnegative, param
from mpiclip.rng import SAMPLING, drawn, generator
from mpiclip.runners.federated import (
    ClientData,
    ClientResult,
    Clients,
    FederatedMethod,
    FedServerState,
    LocalRound,
)


def local_batch(rnd: LocalRound, worker: int, step: int, n_rows: int) -> Optional[np.ndarray]:
    """The rows of local step ``step`` (None: all of them)."""
    if rnd.batch_size == 0 or rnd.batch_size >= n_rows:
        return None
    key = (rnd.seed, SAMPLING, worker, rnd.t, step)
    return drawn(generator(*key).choice(n_rows, rnd.batch_size, replace=False), *key)


def local_sgd(y: np.ndarray, anchor: np.ndarray, steps: int, data: ClientData, worker: int, rnd: LocalRound,
              correction: Optional[np.ndarray] = None, mu: float = 0.0) -> np.ndarray:
    """K local SGD steps from y (a new array); ``anchor`` is x^t, the centre of FedProx's term."""
    for k in range(steps):
        rows = local_batch(rnd, worker, k, data.rows)
        if rnd.clip:
            g = clip_vector(data.grad(y, rows, decay=False), rnd.clip)[0]
            if rnd.weight_decay:
                g = g + rnd.weight_decay * y
        else:
            g = data.grad(y, rows)
        if correction is not None:
            g = g + correction
        if mu:
            g = g + mu * (y - anchor)
        y = y - rnd.lr * g
    return y


@dataclass(frozen=True)
class LocalSteps:
    local_steps: int = param(5, "local SGD steps K per round (the code's nsteps)", check=at_least(1))


@dataclass(frozen=True)
class AlignRows:
    fg_rows: int = param(0, "rows of each client's g_i at x^t: its first fg_rows rows (the code's fg_batch_size; "
                         "0: all of them)", check=at_least(0))

    def alignment_gradient(self, x, data):
        """g_i on the client's first fg_rows rows (all of them if 0 or more than it has), and that count."""
        if 0 < self.fg_rows < data.rows:
            return data.grad(x, np.arange(self.fg_rows)), self.fg_rows
        return data.grad(x), data.rows


@dataclass(frozen=True)
class AlignParams(AlignRows):
    beta: float = param(0.1, "alignment strength β: the client starts from x^t − β(ĝ − g_i)", check=finite_nonnegative)
    beta_decay: bool = param(False, "decay β with the local learning rate's schedule (the code's NeurIPS version)")


@dataclass(frozen=True)
class FedGAParams(LocalSteps, AlignParams):
    pass


@METHODS.register("fedavg")
@dataclass(frozen=True)
class FedAvg(LocalSteps, FederatedMethod):
    """FedAvg / local SGD: K local SGD steps from x^t, then the server averages the models."""

    display_name = "FedAvg"
    style = (0, 3)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = LocalSteps

    def client_update(self, x, state, server, data, worker, rnd, aligned):
        return ClientResult({"model": local_sgd(x, x, self.local_steps, data, worker, rnd)})


def aligned_sgd(method: Any, steps: int, x, data, worker, rnd, aligned) -> ClientResult:
    """FedGA's client: start from x^t − β(ĝ − g_i) (β decayed with the schedule if asked), then local SGD."""
    beta = method.beta * rnd.scale if method.beta_decay else method.beta
    start = x - beta * (aligned.g_hat - aligned.g_i) if beta else x
    return ClientResult({"model": local_sgd(start, x, steps, data, worker, rnd)})


@METHODS.register("fedga")
@dataclass(frozen=True)
class FedGA(FedGAParams, FederatedMethod):
    """FedGA: the start displaced by −β(ĝ − g_i), then K local SGD steps (Dandi et al. 2022)."""

    display_name = "FedGA"
    style = (1, 4)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = FedGAParams
    alignment: ClassVar[bool] = True

    def client_update(self, x, state, server, data, worker, rnd, aligned):
        return aligned_sgd(self, self.local_steps, x, data, worker, rnd, aligned)


@METHODS.register("gradalign")
@dataclass(frozen=True)
class GradAlign(AlignParams, FederatedMethod):
    """GradAlign: FedGA with one local step (K = 1)."""

    display_name = "GradAlign"
    style = (2, 5)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = AlignParams
    alignment: ClassVar[bool] = True

    def client_update(self, x, state, server, data, worker, rnd, aligned):
        return aligned_sgd(self, 1, x, data, worker, rnd, aligned)


@dataclass(frozen=True)
class ScaffoldParams(LocalSteps, AlignRows):
    pass


@METHODS.register("scaffold")
@dataclass(frozen=True)
class Scaffold(ScaffoldParams, FederatedMethod):
    """SCAFFOLD as the GradAlign code runs it: every local gradient corrected by ĝ − g_i, fresh at x^t."""

    display_name = "SCAFFOLD"
    style = (3, 6)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = ScaffoldParams
    alignment: ClassVar[bool] = True

    def client_update(self, x, state, server, data, worker, rnd, aligned):
        correction = aligned.g_hat - aligned.g_i
        return ClientResult({"model": local_sgd(x, x, self.local_steps, data, worker, rnd, correction=correction)})


@METHODS.register("scaffold_stored")
@dataclass(frozen=True)
class ScaffoldStored(LocalSteps, FederatedMethod):
    """SCAFFOLD with stored control variates (Karimireddy et al. 2020, option II)."""

    display_name = "SCAFFOLD (II)"
    style = (4, 7)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = LocalSteps
    payloads: ClassVar[tuple[str, ...]] = ("model", "control")
    downlink: ClassVar[int] = 2  # x and c

    def initial_state(self, x0, n_local):
        return Clients(np.zeros((n_local, len(x0)))), FedServerState(np.zeros(len(x0)))

    def client_update(self, x, state, server, data, worker, rnd, aligned):
        (control,) = state
        y = local_sgd(x, x, self.local_steps, data, worker, rnd, correction=server.control - control)
        updated = control - server.control + (x - y) / (self.local_steps * rnd.lr)
        return ClientResult({"model": y, "control": updated - control}, (updated,))

    def server_step(self, server, x, got, rnd):
        return FedServerState(server.control + got.sums["control"] / got.n), got.update


@dataclass(frozen=True)
class FedProxParams(LocalSteps):
    mu: float = param(0.01, "proximal weight μ: local objective f_i(y) + (μ/2)‖y − x^t‖² (the code's prox_gamma)",
                      check=finite_nonnegative)


@METHODS.register("fedprox")
@dataclass(frozen=True)
class FedProx(FedProxParams, FederatedMethod):
    """FedProx (Li et al. 2020) with its proximal gradient μ(y − x^t) applied at every local step."""

    display_name = "FedProx"
    style = (5, 8)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = FedProxParams

    def client_update(self, x, state, server, data, worker, rnd, aligned):
        return ClientResult({"model": local_sgd(x, x, self.local_steps, data, worker, rnd, mu=self.mu)})


@METHODS.register("lbsgd")
@dataclass(frozen=True)
class LargeBatchSGD(AlignRows, FederatedMethod):
    """Large-batch SGD: x ← server step on η ĝ, ĝ the sampled clients' sample-weighted full gradient."""

    display_name = "Large-batch SGD"
    style = (6, 9)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params: ClassVar[type] = AlignRows
    alignment: ClassVar[bool] = True
    payloads: ClassVar[tuple[str, ...]] = ()  # the alignment step is the whole round

    def server_step(self, server, x, got, rnd):
        return server, rnd.lr * got.g_hat
