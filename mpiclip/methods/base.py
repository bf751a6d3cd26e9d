"""The method interface: pure worker and server steps (DESIGN §2 rule 2).

A method is a small immutable object holding its hyper-parameters. Its steps take and return
immutable state records and never touch MPI, files or globals:

* ``initial_state(x0, n_local) -> (worker_state, server_state)``
* ``worker_step(worker_state, grads, ctx) -> (worker_state, Message, metrics)``: all local workers
  at once; ``grads`` is (n_local, d), the local gradients at the current x; ``metrics`` maps the names
  in ``metrics`` to (n_local,) arrays (only computed when ``ctx.record``).
* ``server_step(server_state, x, aggregate, ctx) -> (server_state, x_next)``: replicated on every rank
  from the same :class:`Aggregate`, so every rank holds the same x.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from mpiclip.comm import SparseGather, add_sparse_sum
from mpiclip.compressors import Compressor, Message
from mpiclip.registry import Registry
from mpiclip.rng import WorkerRandomness


@dataclass(frozen=True)
class RoundContext:
    t: int
    seed: int
    worker_ids: np.ndarray
    n_workers: int
    record: bool

    def randomness(self, stream: int) -> WorkerRandomness:
        return WorkerRandomness(self.seed, stream, self.worker_ids, self.t)


@dataclass(frozen=True)
class Aggregate:
    """What the (replicated) server receives in a round: the sum of all messages, and per-worker
    payloads when the method asked for them (``Method.per_worker``) or the messages were sparse."""

    n_workers: int
    total: Optional[np.ndarray] = None  # dense Σ_i c_i
    sparse: Optional[SparseGather] = None
    rows: Optional[np.ndarray] = None  # (n, d) dense per-worker messages
    flags: Optional[np.ndarray] = None  # (n,) per-worker flags of dense messages (sparse ones: in ``sparse``)

    def plus_mean(self, base: np.ndarray) -> np.ndarray:
        """base + (1/n) Σ_i c_i as a new array."""
        if self.sparse is not None:
            out = base.copy()
            add_sparse_sum(out, self.sparse.indices, self.sparse.values, self.n_workers)
            return out
        return base + self.total / self.n_workers


@dataclass(frozen=True)
class NoParams:
    pass


class Method:
    """Base of all methods; ``create`` builds one from its validated [method] parameters."""

    name: ClassVar[str] = "?"
    params: ClassVar[type] = NoParams
    metrics: ClassVar[tuple[str, ...]] = ()
    default_rule: ClassVar[str] = "ef21"
    uses_compressor: ClassVar[bool] = True
    per_worker: ClassVar[bool] = False  # server needs each worker's dense message, not only the sum

    compressor: Compressor
    gamma: float

    @classmethod
    def create(cls, params: Any, compressor: Compressor, gamma: float) -> "Method":
        """The method's dataclass fields after (compressor, gamma) are named like its [method] keys."""
        return cls(compressor, gamma, **{f.name: getattr(params, f.name) for f in dataclasses.fields(params)})

    def initial_state(self, x0: np.ndarray, n_local: int) -> tuple[Any, Any]:
        raise NotImplementedError

    def worker_step(self, state: Any, grads: np.ndarray, ctx: RoundContext) -> tuple[Any, Message, dict]:
        raise NotImplementedError

    def server_step(self, state: Any, x: np.ndarray, agg: Aggregate, ctx: RoundContext) -> tuple[Any, np.ndarray]:
        raise NotImplementedError


METHODS: Registry[type] = Registry("method")


def row_sq_norms(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, a)


def relative_error(error_sq: np.ndarray, v_sq: np.ndarray) -> np.ndarray:
    """‖C(v) − v‖² / ‖v‖² per worker (nan where v = 0): the α a user sees in practice is 1 − this."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return error_sq / v_sq
