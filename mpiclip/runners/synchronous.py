"""Synchronous rounds (the EF21 family, DIANA, Clip21): every worker computes at x^t and sends one message,
and the server step, replicated on every rank from the same aggregate, forms x^{t+1}.

``advance`` runs one round t: at a recorded round it first evaluates f(x^t) and ∇f(x^t) exactly
(metric-only traffic, not counted as communication) and folds the session's stop/save/flush requests
into that same reduction; then the local workers step, their messages are exchanged and the server
steps. A stop agreed at round t ends the loop before round t is recorded, so the state is that of the
top of round t and a resumed run records it as the uninterrupted run did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import numpy as np

from mpiclip.compressors import Message
from mpiclip.problems import Problem
from mpiclip.rng import SERVER_ID, WorkerRandomness, generator
from mpiclip.runners.base import (
    RUNNERS,
    Ledger,
    Runner,
    RunState,
    check_ranks,
    end_status,
    exact_row,
    exact_row_in_chunks,
    time_budget,
)
from mpiclip.runners.chunks import plan_chunks, step_in_chunks
from mpiclip.runners.protocol import Method
from mpiclip.trace import CLOCK_COLUMNS
from mpiclip.wire import SparseGather, sequential_sum

if TYPE_CHECKING:  # the loop gets its communicator from the session; this package never imports it
    from mpiclip.comm import Comm


# --------------------------------------------------------------------------------------- the protocol
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
class SynchronousMethod(Method):
    """The protocol of synchronous rounds:

    * ``initial_state(x0, n_local) -> (worker_state, server_state)``
    * ``worker_step(worker_state, oracle, ctx) -> (worker_state, Message, metrics)``: all local workers at
      once. ``oracle.full()`` gives their gradients (n_local, d) at the round's point ``ctx.x``;
      ``oracle.minibatch(x, batches)`` stochastic ones. ``metrics`` maps the names in ``worker_metrics`` to
      (n_local,) arrays (computed when ``ctx.record``).
    * ``server_step(server_state, x, aggregate, ctx) -> (server_state, x_next, downlink)``: replicated on
      every rank from the same :class:`Aggregate`, so every rank holds the same x; ``downlink`` is the
      :class:`Message` the server broadcasts (its bits go to /bits/down) or None when there is none.
    * ``evaluate(server_state, x, grad, t)``: the per-round scalars ``round_metrics`` at a recorded round.
    """

    runner: ClassVar[str] = "synchronous"
    per_worker: ClassVar[bool] = False  # server needs each worker's dense message, not only the sum
    # worker_step is row by row (each worker's output from its own state row and draws), so a large round may
    # step a chunk of workers at a time (runners/chunks.py); declared beside the worker_step it describes
    row_separable: ClassVar[bool] = False

    def initial_state(self, x0: np.ndarray, n_local: int) -> tuple[Any, Any]:
        raise NotImplementedError

    def worker_step(self, state: Any, oracle: Oracle, ctx: RoundContext) -> tuple[Any, Message, dict]:
        raise NotImplementedError

    def server_step(self, state: Any, x: np.ndarray, agg: Aggregate,
                    ctx: RoundContext) -> tuple[Any, np.ndarray, Optional[Message]]:
        raise NotImplementedError

    def evaluate(self, server_state: Any, x: np.ndarray, grad: np.ndarray, t: int) -> dict:
        """The ``round_metrics`` at recorded round t, from x^t and the full gradient ∇f(x^t)."""
        return {}


# --------------------------------------------------------------------------------------- the loop
class LocalOracle(Oracle):
    """The local workers' gradients at the round's point; the full ones are computed at most once."""

    def __init__(self, problem: Problem, x: np.ndarray, with_loss: bool):
        self.problem, self.x, self.with_loss = problem, x, with_loss
        self._full: Optional[np.ndarray] = None
        self._losses: Optional[np.ndarray] = None
        self.seconds = 0.0  # time spent computing gradients, for the timing split
        self.count_samples()

    def count_samples(self) -> None:
        """From now on, count the samples the gradients asked for touch (``touched``, per local worker): the full
        gradient at the round's point once, however often it is asked for, and every minibatch's rows."""
        self._full_counted = False
        self._batch_rows: list = []  # per minibatch call, the rows of each local worker

    @property
    def touched(self) -> np.ndarray:
        """(n_local,) samples touched since ``count_samples``; made when asked (only a [system] clock and the
        chunked step ask), not at every round."""
        touched = np.zeros(self.problem.n_local, dtype=np.int64)
        if self._full_counted:
            touched += self.problem.local_sizes
        for rows in self._batch_rows:
            touched += rows
        return touched

    def full(self) -> np.ndarray:
        self._full_counted = True
        if self._full is None:
            start = time.perf_counter()
            self._losses, self._full = self.problem.loss_grads(self.x, with_loss=self.with_loss)
            self.seconds += time.perf_counter() - start
        return self._full

    def losses(self) -> Optional[np.ndarray]:
        """Per-worker losses at x (None unless the oracle was made ``with_loss``)."""
        self.full()
        return self._losses

    def minibatch(self, x, batches):
        self._batch_rows.append([len(rows) for rows in batches])
        start = time.perf_counter()
        grads = self.problem.minibatch_grads(x, batches)
        self.seconds += time.perf_counter() - start
        return grads

    def clipped_example_sums(self, x, batches, tau):
        self._batch_rows.append([len(rows) for rows in batches])
        start = time.perf_counter()
        out = self.problem.clipped_example_sums(x, batches, tau)
        self.seconds += time.perf_counter() - start
        return out

    @property
    def sizes(self) -> np.ndarray:
        return self.problem.local_sizes


def exchange(comm: Comm, msg: Message, n_workers: int, ordered: bool, per_worker: bool,
             all_worker_ids: np.ndarray) -> Aggregate:
    """Move one round's messages: sparse ones by Allgatherv (positions regenerated by the receiver when
    they are not sent), dense ones by an (ordered) sum or, if the server needs them, an Allgatherv."""
    if msg.sparse:
        sent = msg.indices if msg.cost.positions else None
        gathered = comm.gather_sparse(msg.counts, msg.values, sent, msg.flags, msg.fixed_count)
        if sent is None:
            gathered = SparseGather(gathered.counts, gathered.values,
                                    np.asarray(msg.regenerate(all_worker_ids)), gathered.flags)
        return Aggregate(n_workers, sparse=gathered)
    if per_worker:
        rows = comm.allgather_rows(msg.values)
        flags = None if msg.flags is None else comm.allgather_rows(msg.flags[:, None].astype(float))[:, 0].astype(np.int8)
        return Aggregate(n_workers, total=sequential_sum(rows), rows=rows, flags=flags)
    return Aggregate(n_workers, total=comm.sum_rows(msg.values, ordered))


@RUNNERS.register("synchronous")
class SynchronousRunner(Runner):
    """Rounds: every worker sends one message per round; the replicated server step forms x^{t+1}."""
    keeps_clock = True

    protocol = SynchronousMethod
    phases = ("gradient", "compression", "communication", "update", "evaluation", "trace")

    @classmethod
    def row_scalars(cls, config):
        return cls.scalars + (CLOCK_COLUMNS if config.system is not None else ())

    def __init__(self, setup):
        super().__init__(setup)
        run = setup.config.run
        self.all_ids = np.arange(run.n_workers)
        self.system = None
        if setup.config.system is not None:  # imported only here: a run without [system] never loads the model
            from mpiclip.system import SystemModel

            self.system = SystemModel(setup.config.system, run.n_workers, run.seed)

    def start(self, state: Optional[RunState]) -> RunState:
        s = self.setup
        if state is None:
            workers, server = self.initial_states(s.config, s.method, s.x0, len(s.worker_ids))
            state = RunState(0, s.x0.copy(), workers, server, Ledger.empty(len(s.worker_ids)))
            if self.system is not None:
                state.runner_data.update(sim_compute=0.0, sim_wait=0.0, sim_down=0.0)
        self.started = time.perf_counter() - state.elapsed
        # a large round in chunks of workers (runners/chunks.py); a state with replicated fields is stepped whole
        stacked = getattr(state.workers, "replicated", ())
        self.chunks = None if stacked else plan_chunks(s.method, s.problem, len(s.worker_ids))
        return state

    def advance(self, state: RunState) -> RunState:
        s, run = self.setup, self.setup.config.run
        comm, method, problem, spent, control = s.comm, s.method, s.problem, s.timing, s.control
        t, x = state.t, state.x
        clock = time.perf_counter
        record = t % run.eval_every == 0 or t == run.rounds
        chunks = self.chunks
        if chunks is not None:  # every chunk sees one read-only x: what a problem computes from x alone, it computes once
            x = x.view()
            x.flags.writeable = False
        oracle = LocalOracle(problem, x, with_loss=record) if chunks is None else None
        # divergence is reported, not warned about: the session's loop holds np.errstate(over=, invalid='ignore')
        if record:
            if oracle is not None:
                oracle.full()
                spent["gradient"] += oracle.seconds
            if not self._evaluate(state, oracle, x):
                return state
        if t and t % run.check_every == 0:
            check_ranks(self.setup, state, record)
            if control.stop:
                return state
        ctx = RoundContext(t, run.seed, s.worker_ids, run.n_workers, record, x)
        t0 = clock()
        if chunks is None:
            oracle.count_samples()  # the evaluation's gradient is metric-only: the method's own count from here
            before = oracle.seconds
            state.workers, msg, metrics = method.worker_step(state.workers, oracle, ctx)
            # the step's gradients are gradient time; its samples (oracle.touched) are counted if a clock asks
            inside, touched = oracle.seconds - before, None
        else:  # each chunk's gradients anew (a recorded round's evaluation kept none of them)
            state.workers, msg, metrics, touched, inside = step_in_chunks(
                method, state.workers, chunks, ctx, lambda part: LocalOracle(part, x, with_loss=False))
        t1 = clock()
        agg = exchange(comm, msg, run.n_workers, run.deterministic, method.per_worker, self.all_ids)
        t2 = clock()
        state.server, state.x, downlink = method.server_step(state.server, x, agg, ctx)
        finite = np.count_nonzero(np.isfinite(state.x)) == state.x.size  # .all() goes through a Python wrapper
        t3 = clock()
        state.ledger.add(msg, downlink)
        if self.system is not None:
            self._tick(state, downlink, oracle.touched if touched is None else touched)
        if record:
            s.recorder.set_metrics(metrics)
            if s.recorder.full or control.flush:  # only now is the row complete
                s.recorder.flush(state.ledger)
                control.flushed()
        spent["gradient"] += inside
        spent["compression"] += t1 - t0 - inside
        spent["communication"] += t2 - t1
        spent["update"] += t3 - t2
        spent["trace"] += clock() - t3
        state.t = t + 1
        if not finite:
            state.status = f"failed: diverged at round {state.t} (x is not finite)"
        return state

    def _tick(self, state: RunState, downlink: Optional[Message], touched: np.ndarray) -> None:
        """Round t on the simulated clock, but for the uplink's bytes (summed over the workers at the next row):
        the workers' compute, every one waiting for the slowest, and the server's broadcast. Per sample, every
        rank learns every worker's samples (``touched`` by the local ones) by one small all-gather."""
        clock, system = state.runner_data, self.system
        samples = self.setup.comm.allgather_rows(touched[:, None].astype(float))[:, 0] if system.per_sample else None
        seconds = system.compute_seconds(self.all_ids, state.t, samples)
        slowest, mean = float(seconds.max()), float(seconds.mean())
        clock["sim_compute"] += mean
        clock["sim_wait"] += slowest - mean
        if downlink is not None:
            clock["sim_down"] += system.broadcast(float(downlink.bits[0][system.encoding]) / 8)

    def _clock(self, state: RunState, sent_bits: float) -> dict:
        """The simulated clock at x^t, with ``sent_bits`` the bits every worker sent in rounds 0..t−1 (the initial
        round's included): each round's collective is affine in its bytes, so their sum is the rounds' cost."""
        clock, system = state.runner_data, self.system
        comm = state.t * system.collective_latency() + system.collective_per_byte() * sent_bits / 8 + clock["sim_down"]
        return {"sim_time": clock["sim_compute"] + clock["sim_wait"] + comm, "sim_compute": clock["sim_compute"],
                "sim_comm": comm, "sim_wait": clock["sim_wait"]}

    def _evaluate(self, state: RunState, oracle: Optional[LocalOracle], x: np.ndarray) -> bool:
        """Record row t (f, ‖∇f‖², the method's and the problem's scores) and apply the stopping rules and
        the session's requests; False if the loop ends at this round. ``oracle`` None: the round is stepped in
        chunks, and so are the gradients of the row, at x (x^t, read-only)."""
        s, run, t = self.setup, self.setup.config.run, state.t
        t1 = time.perf_counter()
        sent = None if self.system is None else state.ledger.sent_up[:, self.system.encoding : self.system.encoding + 1]
        gradient_seconds = s.timing["gradient"]
        if oracle is not None:
            row = exact_row(s, state, oracle.full(), oracle.losses(), sent)
        else:
            row = exact_row_in_chunks(s, state, self._chunk_gradients(x), sent)
        since = t1 + s.timing["gradient"] - gradient_seconds  # the chunks' gradients are gradient time, not evaluation
        status = end_status(run, t, row)
        clock = {} if self.system is None else self._clock(state, float(row.sums[0]))
        if status == "running" and clock:
            status = time_budget(s.config.system.max_time, clock["sim_time"], t)
        if status == "running" and s.control.stop:
            return False  # round t is recorded when the run resumes
        s.recorder.add_row(state.ledger, t, t1 - self.started, row.loss, row.grad_norm_sq,
                           {**s.method.evaluate(state.server, state.x, row.grad, t), **row.scores, **clock})
        self.recorded(state, row, status, since)
        if clock:
            state.runner_data["sim_time"] = clock["sim_time"]
        return status == "running"

    def _chunk_gradients(self, x: np.ndarray):
        """(gradients, losses, scores) of each chunk of local workers at x, made when the row's sum takes them."""
        for _, _, part in self.chunks:
            oracle = LocalOracle(part, x, with_loss=True)
            oracle.full()
            self.setup.timing["gradient"] += oracle.seconds
            yield oracle.full(), oracle.losses(), part.scores()
            del oracle  # before the next chunk's gradients are made

    def summary(self, state: RunState) -> dict:
        return {} if self.system is None else {"sim_time": float(state.runner_data.get("sim_time", 0.0))}
