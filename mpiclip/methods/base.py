"""The method interface: pure worker and server steps (docs/design.md §2 rule 3).

A method is a small immutable object holding its hyper-parameters. Its steps take and return
immutable state records and never touch MPI, files or globals:

* ``initial_state(x0, n_local) -> (worker_state, server_state)``
* ``worker_step(worker_state, oracle, ctx) -> (worker_state, Message, metrics)``: all local workers at
  once. ``oracle.full()`` gives their gradients (n_local, d) at the round's point ``ctx.x``;
  ``oracle.minibatch(x, batches)`` stochastic ones. ``metrics`` maps the names in ``metrics`` to
  (n_local,) arrays (computed when ``ctx.record``).
* ``server_step(server_state, x, aggregate, ctx) -> (server_state, x_next, downlink)``: replicated on
  every rank from the same :class:`Aggregate`, so every rank holds the same x; ``downlink`` is the
  :class:`Message` the server broadcasts (its bits go to /bits/down) or None when there is none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from mpiclip.compressors import Compressor, Message
from mpiclip.registry import NoParams, Registry
from mpiclip.rng import SERVER_ID, WorkerRandomness, generator
from mpiclip.wire import SparseGather, row_sq_norms


@dataclass(frozen=True)
class RoundContext:
    t: int
    seed: int
    worker_ids: np.ndarray
    n_workers: int
    record: bool
    x: Optional[np.ndarray] = None

    def randomness(self, stream: int) -> WorkerRandomness:
        """Per-worker generators: the same draws for a worker whichever rank holds it."""
        return WorkerRandomness(self.seed, stream, self.worker_ids, self.t)

    def shared(self, stream: int) -> np.random.Generator:
        """One generator every rank shares this round (a server's draw, e.g. who participates)."""
        return generator(self.seed, stream, SERVER_ID, self.t)

    def server_randomness(self, stream: int) -> WorkerRandomness:
        """The server's draws as a one-row family, for a compressor acting on the server's vector."""
        return WorkerRandomness(self.seed, stream, np.array([SERVER_ID]), self.t)


@dataclass(frozen=True)
class RunInfo:
    """What a method may need to know about the run before it starts (see ``Method.bind``)."""

    n_workers: int
    rounds: int
    d: int
    sample_counts: Optional[np.ndarray] = None  # (n,) for problems made of samples
    concurrency: int = 0  # jobs in flight τ_C of an asynchronous run (0: not one)


class Oracle:
    """Gradients of the local workers; the runner gives one per round, at the round's point."""

    def full(self) -> np.ndarray:
        raise NotImplementedError

    def minibatch(self, x: np.ndarray, batches: list) -> np.ndarray:
        """(n_local, d): worker i's mean gradient over its rows ``batches[i]`` (local row numbers) at x."""
        raise NotImplementedError

    def clipped_example_sums(self, x: np.ndarray, batches: list, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """(n_local, d) Σ_{j ∈ batches[i]} clip_τ(∇ℓ_j(x)) and the per-example norms (:class:`~mpiclip.problems.Problem`)."""
        raise NotImplementedError

    @property
    def sizes(self) -> np.ndarray:
        """(n_local,) samples per local worker."""
        raise NotImplementedError


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
            self.sparse.sum_into(out, self.n_workers)
            return out
        return base + self.total / self.n_workers

    def mean(self, d: int) -> np.ndarray:
        return self.plus_mean(np.zeros(d))


@dataclass(frozen=True)
class Method:
    """Base of all methods: the compressor and step size, then the method's own hyper-parameters.

    A method declares its [method] keys once, as a parameter record (a frozen dataclass of
    :func:`~mpiclip.params.param` fields) that it inherits from and names in ``params``; e.g.
    ``class EF21(EF21Params, Method)`` is constructed as ``EF21(compressor, gamma, init="full")``.
    """

    compressor: Compressor
    gamma: float

    name: ClassVar[str] = "?"  # set by registration
    params: ClassVar[type] = NoParams
    runner: ClassVar[str] = "synchronous"  # the runner that drives it (mpiclip.runners)
    metrics: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[tuple[str, ...]] = ()  # per-round scalars from ``evaluate`` (trace /metrics/<name>)
    default_rule: ClassVar[str] = "ef21"
    default_compressor: ClassVar[str] = "topk"  # when the config has no [compressor]
    uses_compressor: ClassVar[bool] = True
    needs_samples: ClassVar[bool] = False  # uses minibatches, so needs a problem made of samples
    example_gradients: ClassVar[bool] = False  # asks for per-example gradients (``Oracle.clipped_example_sums``)
    accepts_clipping: ClassVar[bool] = False  # may use a compressor that clips (the EF21 family: Clip21-style)
    per_worker: ClassVar[bool] = False  # server needs each worker's dense message, not only the sum

    @classmethod
    def create(cls, params: Any, compressor: Compressor, gamma: float) -> "Method":
        """The method with its validated [method] parameters."""
        return cls(compressor, gamma, **{f.name: getattr(params, f.name) for f in dataclasses.fields(params)})

    def initial_state(self, x0: np.ndarray, n_local: int) -> tuple[Any, Any]:
        raise NotImplementedError

    def worker_step(self, state: Any, oracle: Oracle, ctx: RoundContext) -> tuple[Any, Message, dict]:
        raise NotImplementedError

    def server_step(self, state: Any, x: np.ndarray, agg: Aggregate,
                    ctx: RoundContext) -> tuple[Any, np.ndarray, Optional[Message]]:
        raise NotImplementedError

    def evaluate(self, server_state: Any, x: np.ndarray, grad: np.ndarray, t: int) -> dict:
        """Extra per-round scalars at recorded round t, from x^t and the full gradient ∇f(x^t)."""
        return {}

    def validate(self, d: int, n_workers: int) -> None:
        """Raise InputError for settings that cannot work with this dimension or number of workers."""

    def bind(self, info: RunInfo) -> "Method":
        """This method with settings that depend on the run (e.g. every worker's number of samples) resolved."""
        return self


METHODS: Registry[type[Method]] = Registry("method")


def relative_error(error_sq: np.ndarray, v_sq: np.ndarray) -> np.ndarray:
    """‖C(v) − v‖² / ‖v‖² per worker (nan where v = 0): the α a user sees in practice is 1 − this."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return error_sq / v_sq


def compression_metrics(msg: Message, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(‖C(v) − v‖², ‖C(v) − v‖²/‖v‖²) per worker."""
    v_sq = row_sq_norms(v)
    error = msg.error_sq(v, v_sq)
    return error, relative_error(error, v_sq)
