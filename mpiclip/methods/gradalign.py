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
from typing import Any, ClassVar, NamedTuple, Optional, Protocol

import numpy as np

from mpiclip.methods.base import METHODS, Method
from mpiclip.params import at_least, finite_nonnegative, param
from mpiclip.rng import SAMPLING, drawn, generator


@dataclass(frozen=True)
class LocalRound:
    """What a client's local work needs to know about round t."""

    t: int
    seed: int
    lr: float  # the local learning rate of the round (γ × the schedule's factor)
    scale: float  # the schedule's factor
    batch_size: int  # 0: full local batches
    clip: float  # 0: no clipping of local gradients
    weight_decay: float  # the problem's torch-style λ (added after clipping)


class ClientData(Protocol):
    """One client's gradients (the runner's view of its rows)."""

    rows: int

    def grad(self, y: np.ndarray, rows: Optional[np.ndarray] = None, decay: bool = True) -> np.ndarray: ...


class Clients(NamedTuple):
    control: np.ndarray  # (n_local, d) SCAFFOLD's stored c_i; (n_local, 0) for the other methods


class FedServerState(NamedTuple):
    control: np.ndarray  # (d,) SCAFFOLD's c; (0,) for the other methods


class ClientResult(NamedTuple):
    model: np.ndarray  # y_i^K
    control: Optional[np.ndarray] = None  # the client's new state row (SCAFFOLD stored)
    extra: Optional[np.ndarray] = None  # sent beside the update (SCAFFOLD stored: Δc_i)


def local_batch(rnd: LocalRound, worker: int, step: int, n_rows: int) -> Optional[np.ndarray]:
    """The rows of local step ``step`` (None: all of them)."""
    if rnd.batch_size == 0 or rnd.batch_size >= n_rows:
        return None
    key = (rnd.seed, SAMPLING, worker, rnd.t, step)
    return drawn(generator(*key).choice(n_rows, rnd.batch_size, replace=False), *key)


def clip(v: np.ndarray, tau: float) -> np.ndarray:
    norm = float(np.sqrt(v @ v))
    return v * (tau / norm) if norm > tau else v


def local_sgd(y: np.ndarray, anchor: np.ndarray, steps: int, data: ClientData, worker: int, rnd: LocalRound,
              correction: Optional[np.ndarray] = None, mu: float = 0.0) -> np.ndarray:
    """K local SGD steps from y (a new array); ``anchor`` is x^t, the centre of FedProx's term."""
    for k in range(steps):
        rows = local_batch(rnd, worker, k, data.rows)
        if rnd.clip:
            g = clip(data.grad(y, rows, decay=False), rnd.clip)
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
class FederatedMethod(Method):
    """Base of the federated methods: what a sampled client does in a round."""

    runner: ClassVar[str] = "federated"
    default_rule: ClassVar[str] = "inverse_L"
    default_compressor: ClassVar[str] = "identity"
    metrics: ClassVar[tuple[str, ...]] = ("grad_gap", "grad_gap_rel", "update_norm")
    aligns: ClassVar[bool] = False  # needs g_i and ĝ at x^t: one more communication round
    local: ClassVar[bool] = True  # runs local steps and sends a model (False: large-batch SGD)
    control_uplink: ClassVar[bool] = False  # a client sends d more numbers (SCAFFOLD's Δc_i)

    def initial_state(self, x0: np.ndarray, n_local: int) -> tuple[Clients, FedServerState]:
        return Clients(np.zeros((n_local, 0))), FedServerState(np.zeros(0))

    def client_update(self, x: np.ndarray, control: np.ndarray, server: FedServerState, data: ClientData,
                      worker: int, rnd: LocalRound, g_i: Optional[np.ndarray],
                      g_hat: Optional[np.ndarray]) -> ClientResult:
        raise NotImplementedError

    def server_update(self, server: FedServerState, extra_mean: Optional[np.ndarray]) -> FedServerState:
        """The method's server state after a round (``extra_mean``: (1/n) Σ over the sampled clients' extras)."""
        return server


@dataclass(frozen=True)
class LocalSteps:
    local_steps: int = param(5, "local SGD steps K per round (the code's nsteps)", check=at_least(1))


@dataclass(frozen=True)
class AlignRows:
    fg_rows: int = param(0, "rows of each client's g_i at x^t: its first fg_rows rows (the code's fg_batch_size; "
                         "0: all of them)", check=at_least(0))


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

    params: ClassVar[type] = LocalSteps

    def client_update(self, x, control, server, data, worker, rnd, g_i, g_hat):
        return ClientResult(local_sgd(x, x, self.local_steps, data, worker, rnd))


def aligned_sgd(method: Any, steps: int, x, data, worker, rnd, g_i, g_hat) -> ClientResult:
    """FedGA's client: start from x^t − β(ĝ − g_i) (β decayed with the schedule if asked), then local SGD."""
    beta = method.beta * rnd.scale if method.beta_decay else method.beta
    start = x - beta * (g_hat - g_i) if beta else x
    return ClientResult(local_sgd(start, x, steps, data, worker, rnd))


@METHODS.register("fedga")
@dataclass(frozen=True)
class FedGA(FedGAParams, FederatedMethod):
    """FedGA: the start displaced by −β(ĝ − g_i), then K local SGD steps (Dandi et al. 2022)."""

    params: ClassVar[type] = FedGAParams
    aligns: ClassVar[bool] = True

    def client_update(self, x, control, server, data, worker, rnd, g_i, g_hat):
        return aligned_sgd(self, self.local_steps, x, data, worker, rnd, g_i, g_hat)


@METHODS.register("gradalign")
@dataclass(frozen=True)
class GradAlign(AlignParams, FederatedMethod):
    """GradAlign: FedGA with one local step (K = 1)."""

    params: ClassVar[type] = AlignParams
    aligns: ClassVar[bool] = True

    def client_update(self, x, control, server, data, worker, rnd, g_i, g_hat):
        return aligned_sgd(self, 1, x, data, worker, rnd, g_i, g_hat)


@dataclass(frozen=True)
class ScaffoldParams(LocalSteps, AlignRows):
    pass


@METHODS.register("scaffold")
@dataclass(frozen=True)
class Scaffold(ScaffoldParams, FederatedMethod):
    """SCAFFOLD as the GradAlign code runs it: every local gradient corrected by ĝ − g_i, fresh at x^t."""

    params: ClassVar[type] = ScaffoldParams
    aligns: ClassVar[bool] = True

    def client_update(self, x, control, server, data, worker, rnd, g_i, g_hat):
        return ClientResult(local_sgd(x, x, self.local_steps, data, worker, rnd, correction=g_hat - g_i))


@METHODS.register("scaffold_stored")
@dataclass(frozen=True)
class ScaffoldStored(LocalSteps, FederatedMethod):
    """SCAFFOLD with stored control variates (Karimireddy et al. 2020, option II)."""

    params: ClassVar[type] = LocalSteps
    control_uplink: ClassVar[bool] = True

    def initial_state(self, x0, n_local):
        return Clients(np.zeros((n_local, len(x0)))), FedServerState(np.zeros(len(x0)))

    def client_update(self, x, control, server, data, worker, rnd, g_i, g_hat):
        y = local_sgd(x, x, self.local_steps, data, worker, rnd, correction=server.control - control)
        updated = control - server.control + (x - y) / (self.local_steps * rnd.lr)
        return ClientResult(y, updated, updated - control)

    def server_update(self, server, extra_mean):
        return FedServerState(server.control + extra_mean)


@dataclass(frozen=True)
class FedProxParams(LocalSteps):
    mu: float = param(0.01, "proximal weight μ: local objective f_i(y) + (μ/2)‖y − x^t‖² (the code's prox_gamma)",
                      check=finite_nonnegative)


@METHODS.register("fedprox")
@dataclass(frozen=True)
class FedProx(FedProxParams, FederatedMethod):
    """FedProx (Li et al. 2020) with its proximal gradient μ(y − x^t) applied at every local step."""

    params: ClassVar[type] = FedProxParams

    def client_update(self, x, control, server, data, worker, rnd, g_i, g_hat):
        return ClientResult(local_sgd(x, x, self.local_steps, data, worker, rnd, mu=self.mu))


@METHODS.register("lbsgd")
@dataclass(frozen=True)
class LargeBatchSGD(AlignRows, FederatedMethod):
    """Large-batch SGD: x ← server step on η ĝ, ĝ the sampled clients' sample-weighted full gradient."""

    params: ClassVar[type] = AlignRows
    aligns: ClassVar[bool] = True
    local: ClassVar[bool] = False

