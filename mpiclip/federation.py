"""The federated protocol's settings ([federated]) and the server optimizers (pure strategies).

A federated round t (driven by :mod:`mpiclip.runners.federated`, the methods in
:mod:`mpiclip.methods.gradalign`): the server samples P of the n clients uniformly without replacement
(``generator(seed, CLIENTS, SERVER_ID, t).permutation(n)[:P]``, as the GradAlign code's
``np.random.permutation(nsubsets)[:nprocesses]``), each sampled client runs its local steps from x^t, and
the server forms the pseudo-gradient D = x^t − x̄ from the clients' averaged models and steps with its
optimizer.

Averaging: ``uniform`` (x̄ = (1/P) Σ y_i, the GradAlign code's all-reduce of the models) or ``samples``
(x̄ = Σ N_i y_i / Σ N_i over the sampled clients, McMahan et al.'s FedAvg). The aligning methods' ĝ is
always sample-weighted, as the code's ``compute_full_gradient``.

Server optimizers on D (docs/algorithms.md §8):

* ``sgd``: torch's SGD with ``server_momentum`` m and ``nesterov``: b ← m·b + D; x ← x − η_s (D + m·b if
  Nesterov else b); m = 0 gives x − η_s D (η_s = 1: x̄, FedAvg).
* ``fedavgm``: the same heavy ball, with m > 0 required (Hsu et al. 2019).
* ``fedadam``, ``fedyogi``, ``fedadagrad`` (Reddi et al., ICLR 2021, Algorithm 2): m ← β1 m + (1 − β1) D;
  v ← v + D² (Adagrad), β2 v + (1 − β2) D² (Adam), v − (1 − β2) D² sign(v − D²) (Yogi);
  x ← x − η_s m / (√v + τ), with m = 0 and v = τ² at the start and no bias correction, as the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Optional

import numpy as np

from mpiclip.errors import InputError
from mpiclip.params import at_least, finite_nonnegative, finite_positive, param
from mpiclip.registry import Registry
from mpiclip.rng import CLIENTS, SERVER_ID, generator


def _unit_interval(v: float) -> Optional[str]:
    return None if 0 <= v < 1 else "must be in [0, 1)"


@dataclass(frozen=True)
class FederatedParams:
    clients_per_round: Optional[int] = param(None, "clients P sampled per round, uniformly without replacement "
                                             "(omit for all n clients every round)", check=at_least(1))
    batch_size: int = param(0, "rows of a local minibatch, drawn without replacement for every local step "
                            "(0: the client's whole data, a full local gradient)", check=at_least(0))
    weighting: str = param("uniform", "averaging of the clients' models: 'uniform' (1/P; the GradAlign code) or "
                           "'samples' (N_i / Σ N_i; McMahan et al.'s FedAvg)", choices=("uniform", "samples"))
    uplink: str = param("update", "what a client sends: its 'update' x^t − y_i (a [compressor] may compress it) "
                        "or its 'model' y_i (the code's all-reduce of models; dense only)", choices=("update", "model"))
    server_optimizer: str = param("sgd", "the server's step on the pseudo-gradient x^t − x̄",
                                  choices=("sgd", "fedavgm", "fedadam", "fedyogi", "fedadagrad"))
    server_lr: float = param(1.0, "server learning rate η_s", check=finite_positive)
    server_momentum: float = param(0.0, "heavy-ball momentum of sgd/fedavgm (torch SGD's momentum)",
                                   check=_unit_interval)
    nesterov: bool = param(False, "Nesterov momentum (sgd/fedavgm; needs server_momentum > 0)")
    server_beta1: float = param(0.9, "β1 of fedadam/fedyogi/fedadagrad", check=_unit_interval)
    server_beta2: float = param(0.99, "β2 of fedadam/fedyogi", check=_unit_interval)
    server_tau: float = param(1e-3, "adaptivity τ of fedadam/fedyogi/fedadagrad", check=finite_positive)
    lr_milestones: tuple[int, ...] = param((), "rounds at which the local learning rate is multiplied by lr_decay "
                                           "(torch's MultiStepLR, stepped once per round)")
    lr_decay: float = param(0.1, "factor of the local learning rate at each milestone", check=finite_positive)
    clip: float = param(0.0, "clip each local gradient to this norm before the weight decay is added (torch's "
                        "clip_grad_norm_ before SGD's weight_decay; 0: no clipping)", check=finite_nonnegative)
    update_clip: float = param(0.0, "clip each client's update x^t − y_i to this norm before it is sent "
                               "(0: no clipping)", check=finite_nonnegative)

    def check(self) -> None:
        if self.nesterov and not self.server_momentum:
            raise InputError("federated.nesterov", True, "needs server_momentum > 0")
        if self.server_optimizer == "fedavgm" and not self.server_momentum:
            raise InputError("federated.server_momentum", self.server_momentum, "must be > 0 for fedavgm (e.g. 0.9)")
        if self.server_momentum and self.server_optimizer not in ("sgd", "fedavgm"):
            raise InputError("federated.server_momentum", self.server_momentum, f"is for sgd and fedavgm; "
                             f"{self.server_optimizer} has server_beta1")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or min(self.lr_milestones, default=1) < 1:
            raise InputError("federated.lr_milestones", list(self.lr_milestones), "must be increasing rounds >= 1")

    def validate(self, n_workers: int) -> None:
        if self.clients_per_round is not None and self.clients_per_round > n_workers:
            raise InputError("federated.clients_per_round", self.clients_per_round,
                             f"exceeds the {n_workers} clients (run.n_workers)")

    def participants(self, n_workers: int) -> int:
        return n_workers if self.clients_per_round is None else self.clients_per_round

    def lr_scale(self, t: int) -> float:
        """The local learning rate's factor in round t: lr_decay^(milestones reached)."""
        return self.lr_decay ** sum(1 for m in self.lr_milestones if m <= t)


def sample_clients(seed: int, t: int, n_workers: int, participants: int) -> np.ndarray:
    """The clients of round t, in the order drawn (all of them, in id order, when P = n)."""
    if participants == n_workers:
        return np.arange(n_workers)
    return generator(seed, CLIENTS, SERVER_ID, t).permutation(n_workers)[:participants]


class ServerOptState(NamedTuple):
    momentum: np.ndarray  # (d,) first moment or momentum buffer; (0,) when unused
    second: np.ndarray  # (d,) second moment of the adaptive optimizers; (0,) when unused


class ServerOptimizer:
    """A pure strategy: ``init(x0)`` and ``step(state, x, D) -> (state, x_next)``."""

    name: ClassVar[str] = "?"
    params: ClassVar[type] = FederatedParams  # its settings are keys of [federated]

    def __init__(self, p: FederatedParams):
        self.p = p

    def init(self, x0: np.ndarray) -> ServerOptState:
        return ServerOptState(np.zeros(0), np.zeros(0))

    def step(self, state: ServerOptState, x: np.ndarray, pseudo_grad: np.ndarray) -> tuple[ServerOptState, np.ndarray]:
        raise NotImplementedError


SERVER_OPTIMIZERS: Registry[type[ServerOptimizer]] = Registry("server optimizer")


@SERVER_OPTIMIZERS.register("sgd")
class ServerSGD(ServerOptimizer):
    def init(self, x0):
        return ServerOptState(np.zeros(len(x0) if self.p.server_momentum else 0), np.zeros(0))

    def step(self, state, x, pseudo_grad):
        m = self.p.server_momentum
        if not m:
            return state, x - self.p.server_lr * pseudo_grad
        buf = m * state.momentum + pseudo_grad
        direction = pseudo_grad + m * buf if self.p.nesterov else buf
        return ServerOptState(buf, state.second), x - self.p.server_lr * direction


@SERVER_OPTIMIZERS.register("fedavgm")
class ServerAvgM(ServerSGD):
    """Heavy ball on the pseudo-gradient (FedAvgM): sgd whose momentum must be set."""


class ServerAdaptive(ServerOptimizer):
    def init(self, x0):
        return ServerOptState(np.zeros(len(x0)), np.full(len(x0), self.p.server_tau**2))

    def second_moment(self, v: np.ndarray, sq: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def step(self, state, x, pseudo_grad):
        p = self.p
        m = p.server_beta1 * state.momentum + (1.0 - p.server_beta1) * pseudo_grad
        v = self.second_moment(state.second, pseudo_grad * pseudo_grad)
        return ServerOptState(m, v), x - p.server_lr * m / (np.sqrt(v) + p.server_tau)


@SERVER_OPTIMIZERS.register("fedadagrad")
class ServerAdagrad(ServerAdaptive):
    def second_moment(self, v, sq):
        return v + sq


@SERVER_OPTIMIZERS.register("fedadam")
class ServerAdam(ServerAdaptive):
    def second_moment(self, v, sq):
        return self.p.server_beta2 * v + (1.0 - self.p.server_beta2) * sq


@SERVER_OPTIMIZERS.register("fedyogi")
class ServerYogi(ServerAdaptive):
    def second_moment(self, v, sq):
        return v - (1.0 - self.p.server_beta2) * sq * np.sign(v - sq)


def server_optimizer(p: FederatedParams) -> ServerOptimizer:
    return SERVER_OPTIMIZERS.get(p.server_optimizer, "federated.server_optimizer")(p)
