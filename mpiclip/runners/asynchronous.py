"""Asynchronous runs in simulated time (the ASGD family): the server applies each gradient when it arrives.

Every rank holds the replicated world: the iterate x, the method's server state and the
:class:`~mpiclip.asynchrony.Schedule` (the clock and the jobs). When a job starts, the rank that holds
its worker computes the gradient at the newest iterate (in :class:`~mpiclip.methods.asgd.AsyncWorkers`,
one gradient in flight per worker); when it arrives, that rank runs the worker's upload (EF21
compression if any, its bits), the vector the server uses reaches every rank, and every rank applies the
same server step. So the trajectory depends on the config and the seed only: the same trace on 1, 2
or n ranks, resumed or not.

On more than one rank a job's gradient is computed when its rank has time, not when the job starts: the
rank keeps the job's start iterate (a reference: the server's step makes a new x, never writes into it)
and computes its pending jobs in the order they started, at the latest before a row, a checkpoint or the
end. So every rank makes the same calls to the problem in the same order as on one rank: the same bits.
The arriving vectors travel in one of two ways:

* in blocks (:mod:`mpiclip.runners.async_blocks`), where the method's server decides admitted and stepped
  from each arrival's delay alone (``AsynchronousMethod.decisions``: every method of
  :mod:`mpiclip.methods.asgd` and FedBuff) on a simulated clock: each rank finds from its copy of the clock
  the run of arrivals whose jobs were all in flight at the block's start, their ranks compute and upload
  them, one Allgatherv moves the block's vectors and bits, and every rank applies them in order. One
  collective per block, not per arrival, between the same points as the one-rank loop below (rows, checks,
  checkpoints, the end);
* one nonblocking broadcast per arrival from its worker's rank (``_arrive``), during which the rank computes
  its pending jobs, elsewhere: a replayed schedule (its jobs start as recorded, not as the clock decides) and
  a method whose decisions may depend on the vector's values (``decisions`` None).

``advance`` runs server updates t → t+1: at a recorded update it first evaluates f(x^t) and ∇f(x^t)
exactly (with the session's stop/save/flush requests in the same reduction), then it processes
arrivals until the method steps (one arrival for ASGD; B admitted ones for Rennala SGD; n for
minibatch SGD). Each arrival is a row of ``/events`` (update −1 when the method discards it).

On one rank ``advance`` runs every update up to the next row, check, checkpoint or end in one loop
(``_arrivals``): an arrival there costs the clock, the method's step and a few list appends; the block's
/events rows, delay counts and (uploads of the same bits each time) ledger counts are handed over once at
its end, which no one reads before. ``plain_upload`` and ``plain_step`` let it skip ``send`` and
``receive`` where they would only pass the gradient on and step x − γv (ASGD without compression or
clipping), computing the same bits. Several ranks exchanging blocks run the same stretch of updates per
``advance``; with a broadcast per arrival, ``advance`` runs one update.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Optional

import numpy as np

from mpiclip.asynchrony import CLOCK_JOBS, REPLAY_COLUMNS, AsyncParams, Policy, ReplaySchedule, Schedule, schedule_fault
from mpiclip.clipping import vector_norm
from mpiclip.compressors import ENCODINGS
from mpiclip.compressors.message import dense_bits
from mpiclip.errors import InputError, RunFailed
from mpiclip.oracles import JobOracle
from mpiclip.rng import COMPRESSOR, WorkerRandomness
from mpiclip.runners.async_blocks import BlockExchange
from mpiclip.runners.base import RUNNERS, Ledger, Runner, RunState, end_status, exact_row
from mpiclip.runners.protocol import Method
from mpiclip.runners.tables import EVENTS
from mpiclip.system import COMPUTE_KEYS, job_transfers, worker_links
from mpiclip.trace import CLOCK_COLUMNS, CORRUPT, open_trace

E = len(ENCODINGS)
BLOCK_UPDATES = 4096  # the most updates one-rank ``advance`` runs as a block (rows and checks may be rarer)
BUSY = ("arrived_compute", "arrived_comm", "stepped_compute", "stepped_comm")  # runner_data keys of the time split


# --------------------------------------------------------------------------------------- the protocol
class AsyncWorkers(NamedTuple):
    gradient: np.ndarray  # (n_local, d) each worker's result in flight (computed when its job started): its gradient,
    # or what the method's ``work`` computes instead (FedBuff: the model difference of its local steps)
    estimate: np.ndarray  # (n_local, d) EF21 estimate h_j of the uplink; (n_local, 0) without compression


class Received(NamedTuple):
    """What the server did with one arrival."""

    admitted: bool
    stepped: bool
    norm: float  # ‖g‖ of the vector it received (before clipping)
    clipped: bool


@dataclass(frozen=True)
class AsynchronousMethod(Method):
    """The protocol of asynchronous runs: what a worker sends when its gradient is done, and what the server
    does with each arrival.

    * ``initial_state(x0, n_local) -> (AsyncWorkers, server_state)``: the runner writes each job's gradient
      into ``AsyncWorkers.gradient`` and keeps the uplink's estimate in ``AsyncWorkers.estimate``;
    * ``policy() -> Policy``: how the clock hands out jobs (a batch to collect, a delay to discard, the gradients a
      job computes, ...);
    * ``work(oracle, x, local, worker, job, t) -> (d,)``: what a worker computes in a job at x^t (one gradient of the
      job's oracle; FedBuff: local steps on the client's data);
    * ``check_async(params)``: [async] settings the method cannot work with (InputError);
    * ``send(estimate, gradient, rng) -> (estimate, vector, bits)``: one worker's upload;
    * ``upload_bits(d, seed) -> (E,)``: the bits of one upload before its job runs (the [system] clock prices it
      when the job starts);
    * ``receive(server_state, x, vector, delay) -> (server_state, x, Received)``: the server's use of it; a step
      returns a new x and never writes into the old one (jobs in flight keep a reference to their start iterate).
    """

    runner: ClassVar[str] = "asynchronous"
    default_rule: ClassVar[str] = "inverse_L"
    default_compressor: ClassVar[str] = "identity"

    def initial_state(self, x0: np.ndarray, n_local: int) -> tuple[AsyncWorkers, Any]:
        raise NotImplementedError

    def policy(self) -> Policy:
        return Policy()

    def check_async(self, params: AsyncParams) -> None:
        """Raise InputError for [async] settings this method cannot work with (before anything is read or written)."""

    def work(self, oracle: JobOracle, x: np.ndarray, local: int, worker: int, job: int, t: int) -> np.ndarray:
        """(d,) what job ``job`` of worker ``worker`` (local index ``local`` in the oracle's problem) computes at x = x^t:
        one gradient of the oracle. Its draws must be keyed by (seed, worker, job), never by rank or time."""
        return oracle.gradient(x, local, worker, job, t)

    def send(self, estimate: np.ndarray, gradient: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def receive(self, server: Any, x: np.ndarray, v: np.ndarray, delay: int) -> tuple[Any, np.ndarray, Received]:
        raise NotImplementedError

    def upload_bits(self, d: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    def decisions(self, server: Any) -> Optional[tuple[int, float, int]]:
        """(batch, max_delay, admitted since the last step) when ``receive``'s admitted and stepped follow from each
        arrival's delay alone, whatever its vector: admitted iff delay < max_delay, stepped at every batch-th admitted
        one, counted from ``server``'s count. Several ranks then exchange the arrivals in blocks, one collective for
        many (:mod:`mpiclip.runners.async_blocks`). None where a decision may depend on the vector's values: one
        broadcast per arrival."""
        return None

    def plain_upload(self, d: int) -> Optional[np.ndarray]:
        """(E,) the bits of every upload when a worker sends its result itself, the same bits every time (no compressor,
        no estimate): the one-rank loop then skips ``send``. None otherwise."""
        return None

    def plain_step(self) -> Optional[float]:
        """γ when the server's use of every arrival is x ← x − γ v (each one admitted and stepped, unclipped, one γ):
        the one-rank loop then steps itself, to the bits of ``receive``. None otherwise."""
        return None


# --------------------------------------------------------------------------------------- the loop
def delay_histogram(data: dict, delays) -> np.ndarray:
    """The run's histogram of delays (``runner_data["delays"]``), long enough for ``delays``: grown as one arrival at a
    time has always grown it, past its end by the delay + 1 + its length (a checkpoint keeps its length, so the one-rank
    block, the several-rank block and the single arrival all grow it alike)."""
    histogram = data["delays"]
    length = len(histogram)
    if delays and max(delays) >= length:
        for delay in delays:
            if delay >= length:
                length += delay + 1 + length
        histogram = data["delays"] = np.concatenate([histogram, np.zeros(length - len(histogram), dtype=np.int64)])
    return histogram


def _next_multiple(t: int, every: int) -> int:
    return (t // every + 1) * every


def _whole(values: np.ndarray) -> bool:
    """Every value a whole number below 2⁵³, where float sums are exact."""
    return bool(np.all(np.floor(values) == values) and np.all(values < 2.0**53))


def count_uploads(ledger: Ledger, workers: list, bits: np.ndarray) -> None:
    """The ledger after one upload of ``bits`` (E,) by each local worker in ``workers``, in order: each worker's count ×
    the bits at once where the bits, the totals before and after are whole numbers below 2⁵³ (then every sum one by
    one is exact, and they equal it), else one by one."""
    counts = np.bincount(workers, minlength=len(ledger.sent_up))[:, None] * bits
    totals = (ledger.sent_up, ledger.pending_up)
    if _whole(bits) and all(_whole(before) and _whole(before + counts) for before in totals):
        ledger.sent_up += counts
        ledger.pending_up += counts
        return
    for i in workers:
        ledger.sent_up[i] += bits
        ledger.pending_up[i] += bits


def network_bytes(system, method: AsynchronousMethod, d: int, seed: int) -> tuple[float, float]:
    """Bytes of a job's download (x: d dense values) and of its upload (the method's message), in [system]'s
    encoding."""
    encoding = ENCODINGS.index(system.encoding)
    return float(dense_bits(d)[encoding]) / 8, float(method.upload_bits(d, seed)[encoding]) / 8



def read_replay(path: str) -> dict:
    """The /events columns of a trace to replay, and the attributes that say which run it was (read once for
    the checks before the run and the run itself, unless the file changes)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError("async.replay", path, f"cannot be read: {e}") from None
    return _read_replay(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_replay(path: str, size: int, mtime: int) -> dict:
    try:
        with open_trace(path) as f:
            if "events/worker" not in f or "events/job" not in f:
                raise InputError("async.replay", path, "has no arrival schedule (/events with a job column): it is not "
                                 "the trace of an asynchronous run")
            events = {}
            for name in REPLAY_COLUMNS:
                column = f.get(f"events/{name}")
                if not hasattr(column, "dtype"):  # missing, or a group
                    raise InputError("async.replay", path, f"has no dataset /events/{name}: not a whole arrival schedule")
                events[name] = np.asarray(column[()])
            attrs = {k: f.attrs.get(k) for k in ("n_workers", "problem", "dataset_checksum", "d")}
    except CORRUPT as e:
        raise InputError("async.replay", path, f"cannot be read: {e}") from None
    return {"events": events, "attrs": attrs}


def _unused_system_keys() -> dict:
    """[system] keys the asynchronous clock does not use, and why (config refuses them in one line): it takes the
    links alone, its compute times and budget stay [async]'s and it has no rounds to gather or clients to drop."""
    unused = {key: f"the asynchronous runner's compute times are [async]'s (async.{key})" for key in COMPUTE_KEYS}
    unused["speeds_file"] = "the asynchronous runner's compute times are [async]'s (async.factors)"
    unused["compute_unit"] = "the asynchronous runner's compute times are [async]'s, per job"
    unused["max_time"] = "the asynchronous runner's time budget is async.max_time"
    for key in ("collective", "server_latency", "server_bandwidth"):
        unused[key] = "a synchronous round's collective: an asynchronous job's messages take its worker's own link"
    for key in ("availability", "p_off", "p_on", "availability_file", "deadline", "over_selection"):
        unused[key] = "a federated round's setting: the asynchronous runner has no rounds to drop clients from"
    return unused


@RUNNERS.register("asynchronous")
class AsynchronousRunner(Runner):
    """Server updates in a simulated clock: one gradient (or one batch) per update, applied as it arrives."""

    keeps_clock = True  # [system]'s links price each job's download and upload
    unused_system_keys = _unused_system_keys()

    protocol = AsynchronousMethod
    section = "async"
    params = AsyncParams
    phases = ("gradient", "upload", "communication", "update", "evaluation", "trace")
    scalars = ("sim_time",)
    tables = (EVENTS,)
    unit = "update"

    @classmethod
    def check_section(cls, params, n_workers):
        params.validate(n_workers)

    @classmethod
    def row_scalars(cls, config):
        """With [system], the split of sim_time into computing, communicating and waiting (``_time_split``)."""
        return cls.scalars + (CLOCK_COLUMNS[1:] if config.system is not None else ())

    @classmethod
    def concurrency(cls, config):
        return config.section("async").jobs_in_flight(config.run.n_workers)

    @classmethod
    def inputs(cls, config):
        return {"async.replay": config.section("async").replay}

    @classmethod
    def check(cls, config, method, problem_info: dict) -> None:
        """Settings that cannot work together (InputError before anything is read or written; no collectives)."""
        p, n = config.section("async"), config.run.n_workers
        policy = method.policy()
        method.check_async(p)
        if policy.steps > 1:
            p.check_job_steps(n, policy.steps)
        if policy.wait_all and (p.concurrency not in (0, n) or p.assignment != "finisher"):
            raise InputError("async.concurrency" if p.concurrency not in (0, n) else "async.assignment",
                             p.concurrency if p.concurrency not in (0, n) else p.assignment,
                             f"{method.name} waits for every worker each step (use concurrency = 0, assignment = 'finisher')")
        if policy.stops and p.assignment != "finisher":
            raise InputError("async.assignment", p.assignment, "stopping stale jobs needs assignment = 'finisher'")
        if p.oracle == "minibatch" and not problem_info["samples"]:
            raise InputError("async.oracle", "minibatch", f"problem {config.problem.name!r} has no samples to draw")
        if config.system is not None:
            cls._check_network(config, method, problem_info["d"])
        if p.replay:
            replay = read_replay(p.replay)
            attrs, want = replay["attrs"], {"n_workers": n, "problem": config.problem.name, "d": problem_info["d"],
                                            "dataset_checksum": problem_info["checksum"]}
            for key, value in want.items():
                if attrs.get(key) is not None and str(attrs[key]) != str(value):
                    raise InputError("async.replay", p.replay, f"is a run with {key} = {attrs[key]}, this run has {value}")
            fault = schedule_fault(replay["events"], n)
            if fault:
                raise InputError("async.replay", p.replay, fault)

    @classmethod
    def _check_network(cls, config, method, d: int) -> None:
        """[system] with this clock: not on a replayed schedule (its times are recorded), and a job's transfers must
        keep the clock finite as its compute times do."""
        p, n = config.section("async"), config.run.n_workers
        if p.replay:
            raise InputError("async.replay", p.replay, "re-applies recorded arrival times: [system]'s links would not "
                             "apply; drop [system] or the replay")
        down_bytes, up_bytes = network_bytes(config.system, method, d, config.run.seed)
        links = worker_links(config.system, n)
        compute = p.time_range(n)[1] * method.policy().steps
        for w in range(n):  # Python floats: a product past the largest double is inf, without a warning
            parts = {"system.latency": (2 * float(links.latency[w]), float(links.latency[w])),
                     "system.bandwidth_down": (down_bytes / float(links.down[w]), float(links.down[w])),
                     "system.bandwidth_up": (up_bytes / float(links.up[w]), float(links.up[w]))}
            network = sum(seconds for seconds, _ in parts.values())
            if not math.isfinite((compute + network) * CLOCK_JOBS):
                field = max(parts, key=lambda key: parts[key][0])
                raise InputError(field, parts[field][1], f"worker {w}'s job would take {network:.3g} s on the network: "
                                 f"the simulated clock would overflow ({CLOCK_JOBS:.0g} jobs must add up to a finite time)")

    @classmethod
    def checkpoint_arrays(cls, config):
        if config.section("async").replay:  # ReplaySchedule.saved
            return {"delays": ((None,), "i"), "schedule_inflight": (("n",), "b")}
        counts = {f"schedule_{name}": (("n",), "i") for name in ("start", "job", "started", "queued")}
        return {"delays": ((None,), "i"), "schedule_finish": (("n",), "f"), **counts}  # Schedule.saved

    @classmethod
    def resolve(cls, config):
        return RUNNERS.get("asynchronous-real", "async.mode") if config.section("async").mode == "real" else cls

    @classmethod
    def job_workers(cls, config, rank, size):
        return np.arange(config.run.n_workers) if config.section("async").data == "homogeneous" else None

    def __init__(self, setup):
        super().__init__(setup)
        s = setup
        self.p, self.n = s.config.section("async"), s.config.run.n_workers
        self.policy = s.method.policy()
        self.owner = np.repeat(np.arange(s.comm.size), s.comm.workers_per_rank).tolist()
        self.rank, self.size, self.seed = s.comm.rank, s.comm.size, s.config.run.seed
        self.keyed = s.method.compressor.randomized  # the upload draws from the (seed, worker, job) generators
        self.first = int(s.worker_ids[0])
        self.oracle = JobOracle(s.jobs if s.jobs is not None else s.problem, self.p, s.config.run.seed)
        d = len(s.x0)
        self.buffer = np.zeros(d + E)  # the vector the server uses and its bits, from the worker's rank
        self.replay = read_replay(self.p.replay)["events"] if self.p.replay else None
        self.splits_time = s.config.system is not None  # rows carry sim_compute, sim_comm, sim_wait
        # what every arrival uses, looked up once
        self.method, self.timing, self.add_event, self.add_rows = s.method, s.timing, s.recorder.add, s.recorder.add_rows
        # more than one rank: (worker, job, t, x^t) of this rank's jobs started and not computed yet, oldest first,
        # and how many of them each local worker has
        self.defers = self.size > 1
        self.pending: collections.deque = collections.deque()
        self.waiting = [0] * len(s.worker_ids)
        # one rank: the shortcuts of the arrival loop (``_arrivals``)
        self.plain_bits = s.method.plain_upload(d)
        self.plain_gamma = s.method.plain_step()
        plain_work = type(s.method).work is AsynchronousMethod.work
        self.job_result = self.oracle.gradient if plain_work else functools.partial(s.method.work, self.oracle)

    # ---------------------------------------------------------------- state
    def start(self, state: Optional[RunState]) -> RunState:
        s = self.setup
        if state is None:
            workers, server = self.initial_states(s.config, s.method, s.x0, len(s.worker_ids))
            state = RunState(0, s.x0.copy(), workers, server, Ledger.empty(len(s.worker_ids)))
            state.runner_data = {"now": 0.0, "recorded": -1, "delays": np.zeros(1, dtype=np.int64), "discarded": 0}
            if self.splits_time:  # seconds summed over workers: of all arrivals, and of those up to the last step
                state.runner_data.update(dict.fromkeys(BUSY, 0.0))
            self.schedule = self._schedule(None)
            self._compute(state, self.schedule.begin())
        else:
            self.schedule = self._schedule(state.runner_data)
        # several ranks: arrivals exchanged in blocks where every rank can tell the blocks apart from its copy of the
        # clock (a simulated schedule, decisions by the delay alone); else one broadcast per arrival (``_arrive``)
        blocks = self.defers and self.replay is None and s.method.decisions(state.server) is not None
        self.blocks = BlockExchange(self) if blocks else None
        self.started = time.perf_counter() - state.elapsed
        return state

    def _schedule(self, saved: Optional[dict]):
        if self.replay is not None:
            return ReplaySchedule(self.replay, self.n, saved)
        system, transfers = self.setup.config.system, None
        if system is not None:
            nbytes = network_bytes(system, self.setup.method, len(self.setup.x0), self.seed)
            transfers = tuple(seconds.tolist() for seconds in job_transfers(system, self.n, *nbytes))
        return Schedule(self.p, self.n, self.seed, self.policy, saved, transfers=transfers)

    def snapshot(self, state: RunState) -> RunState:
        self._catch_up(state)
        state.runner_data.update(self.schedule.saved())
        return state

    # ---------------------------------------------------------------- one server update
    def advance(self, state: RunState) -> RunState:
        s, run = self.setup, self.setup.config.run
        t = state.t
        next_time = self.schedule.next_time()
        out_of_time = bool(self.p.max_time) and next_time > self.p.max_time
        ended = out_of_time or math.isinf(next_time)
        if state.runner_data["recorded"] != t and (t % run.eval_every == 0 or t == run.rounds or ended):
            if not self._evaluate(state, ended, out_of_time):
                return state
        elif ended:  # the row of x^t is already written
            self._catch_up(state)
            state.status = self._ended(t, out_of_time)
            return state
        if t and t % run.check_every == 0:
            self._check_step(state)
            if s.control.stop or state.status != "running":
                return state
        if not self.defers:
            self._arrivals(state, self._horizon(t))
            return state
        if self.blocks is not None:
            self.blocks.run(state, self._horizon(t))
            return state
        while not self._arrive(state, self.schedule.pop()):  # arrivals until the method steps
            following = self.schedule.next_time()
            if math.isinf(following) or (self.p.max_time and following > self.p.max_time):
                break  # the schedule or the time runs out first
        return state

    def _horizon(self, t: int) -> int:
        """The first update after t at which the session or ``advance`` has something to do: a row, a check of the
        ranks, a checkpoint, the last round; t + 1 when a save or a stop was agreed at this update's check (the
        session acts on it after this update); at most BLOCK_UPDATES on (a block's events wait in Python lists)."""
        run, control = self.setup.config.run, self.setup.control
        if control.save or control.stop:
            return t + 1
        due = [run.rounds, _next_multiple(t, run.eval_every), _next_multiple(t, run.check_every), t + BLOCK_UPDATES]
        if run.checkpoint_every:
            due.append(_next_multiple(t, run.checkpoint_every))
        return max(t + 1, min(due))

    def _arrivals(self, state: RunState, until: int) -> None:
        """One rank: the arrivals of updates state.t up to ``until`` in one loop, each as ``_arrive`` and ``_apply``
        process it (the same calls in the same order: the same bits), until the schedule or the time budget runs out
        first. Between updates t and ``until`` no row, check or checkpoint is due, so nothing outside reads the state
        in between: the /events rows, the delay counts and (uploads of fixed bits) the ledger's counts are gathered over
        the block and handed over once at its end, also when an arrival fails the run."""
        schedule, method, data, ledger = self.schedule, self.method, state.runner_data, state.ledger
        pop, after, next_time, job_result = schedule.pop, schedule.after, schedule.next_time, self.job_result
        gradients = state.workers.gradient
        first, max_time, splits_time, gamma, fixed_bits = self.first, self.p.max_time, self.splits_time, \
            self.plain_gamma, self.plain_bits
        clock, isinf = time.perf_counter, math.isinf
        events: list = []  # /events rows
        sent: list = []  # fixed bits: the local worker of each upload; else each upload's bits
        delays: list = []
        t, x, server = state.t, state.x, state.server
        began = clock()
        computing = uploading = 0.0
        try:
            while True:
                arrival = pop()
                w, start, job, arrived = arrival
                if t < start:
                    self._too_early(arrival, t)
                delay, i = t - start, w - first
                if fixed_bits is not None:
                    vector, bits = gradients[i], fixed_bits
                    sent.append(i)
                else:
                    t0 = clock()
                    vector, bits = self._send(state, w, job)
                    sent.append(bits)
                    uploading += clock() - t0
                if gamma is not None:  # AsyncSGD.receive's batch-1 step, unclipped
                    admitted = stepped = True
                    norm, clipped = vector_norm(vector), False
                    x = x - gamma * vector
                else:
                    server, x, (admitted, stepped, norm, clipped) = method.receive(server, x, vector, delay)
                events.append((t if admitted else -1, w, start, delay, arrived, norm, clipped, job))
                delays.append(delay)
                if not admitted:
                    data["discarded"] += 1
                if splits_time:
                    self._count_busy(data, arrival, stepped)
                if stepped:
                    t += 1
                    data["now"] = arrived
                starts = after(arrival, stepped, t)
                t0 = clock()
                for v, k in starts:
                    gradients[v - first] = job_result(x, v - first, v, k, t)
                computing += clock() - t0
                if stepped and t == until:
                    break
                following = next_time()
                if isinf(following) or (max_time and following > max_time):
                    break  # the schedule or the time runs out first: ``advance`` ends the run
        finally:
            state.t, state.x, state.server = t, x, server
            writing = self._hand_over(ledger, events, sent, delays, data)
            spent = self.timing
            spent["gradient"] += computing
            spent["upload"] += uploading
            spent["trace"] += writing
            spent["update"] += clock() - began - computing - uploading - writing

    def _send(self, state: RunState, w: int, job: int) -> tuple[np.ndarray, np.ndarray]:
        """Worker w's upload on its own rank: (the vector the server uses, its bits), counted in the ledger."""
        i, workers, ledger = w - self.first, state.workers, state.ledger
        rng = WorkerRandomness(self.seed, COMPRESSOR, np.array([w]), job) if self.keyed else None
        estimate, vector, bits = self.method.send(workers.estimate[i], workers.gradient[i], rng)
        if workers.estimate.size:
            workers.estimate[i] = estimate
        ledger.sent_up[i] += bits
        ledger.pending_up[i] += bits
        return vector, bits

    def _hand_over(self, ledger: Ledger, events: list, sent: list, delays: list, data: dict) -> float:
        """A block's /events rows to the recorder, its delays to the histogram and, for uploads of fixed bits, their
        bits to the ledger (``count_uploads``). Returns the seconds the recorder took (it writes its buffer to the trace
        whenever it fills: trace time, as the other writes)."""
        if not events:
            return 0.0
        bits, rows = self.plain_bits, np.array(events, dtype=np.float64)
        t0 = time.perf_counter()
        self.add_rows("events", rows, np.array(sent) if bits is None else bits)
        writing = time.perf_counter() - t0
        if bits is not None:
            count_uploads(ledger, sent, bits)
        self.count_delays(data, delays)
        return writing

    @staticmethod
    def count_delays(data: dict, delays: list) -> None:
        """A block's delays added to the run's histogram (:func:`delay_histogram`)."""
        histogram = delay_histogram(data, delays)
        histogram += np.bincount(delays, minlength=len(histogram))

    def _too_early(self, arrival, t: int) -> None:
        raise RunFailed(f"the replayed schedule does not fit this method: an arrival computed at update "
                        f"{arrival.start} reaches the server at update {t}")

    def _count_busy(self, data: dict, arrival, stepped: bool) -> None:
        """[system]: the compute and transfer seconds of an arrival, and of those up to the last step."""
        w, schedule = arrival.worker, self.schedule
        data["arrived_compute"] += schedule.times.duration(w, arrival.job)
        data["arrived_comm"] += schedule.download[w] + schedule.upload[w]
        if stepped:  # a row's time is its last step's: arrivals after it are counted at the next
            data["stepped_compute"], data["stepped_comm"] = data["arrived_compute"], data["arrived_comm"]

    def _arrive(self, state: RunState, arrival) -> bool:
        """One gradient reaches the server: the worker's upload, the server's use of it, the next jobs."""
        clock, spent = time.perf_counter, self.timing
        w = arrival.worker
        if state.t < arrival.start:
            self._too_early(arrival, state.t)
        t0 = clock()
        owner = self.owner[w]
        if owner == self.rank:
            i = w - self.first
            while self.waiting[i]:  # its gradient is due: this rank's jobs up to it are computed now
                self._work_one(state)
            t0 = clock()
            vector, bits = self._send(state, w, arrival.job)
        t1 = clock()
        if self.size > 1:  # the arriving vector and its bits, from the worker's rank to every rank
            if owner == self.rank:
                self.buffer[:-E] = vector
                self.buffer[-E:] = bits
            worked = self.timing["gradient"]
            self._receive(state, self.setup.comm.ibcast_array(self.buffer, owner))
            t1 += self.timing["gradient"] - worked  # pending jobs computed while it waited are gradient time
            vector, bits = self.buffer[:-E], self.buffer[-E:]
        t2 = clock()
        stepped = self._apply(state, arrival, vector, bits).stepped
        t3 = clock()
        spent["upload"] += t1 - t0
        spent["communication"] += t2 - t1
        spent["update"] += t3 - t2
        self._compute(state, self.schedule.after(arrival, stepped, state.t))
        return stepped

    def _apply(self, state: RunState, arrival, vector: np.ndarray, bits: np.ndarray) -> Received:
        """The server's use of an arrival at update state.t: its step, the /events row, the delay histogram and
        the discarded count (the trace's summary attributes)."""
        t = state.t
        delay = t - arrival.start
        state.server, state.x, received = self.method.receive(state.server, state.x, vector, delay)
        admitted = received.admitted
        self.add_event("events", (t if admitted else -1, arrival.worker, arrival.start, delay, arrival.time,
                                  received.norm, received.clipped, arrival.job), bits)
        data = state.runner_data
        delay_histogram(data, (delay,))[delay] += 1
        if not admitted:
            data["discarded"] += 1
        if self.splits_time:
            self._count_busy(data, arrival, received.stepped)
        if received.stepped:
            state.t = t + 1
            data["now"] = arrival.time
        return received

    def _compute(self, state: RunState, starts: list) -> None:
        """The work of the jobs that start now, at x^t, each on its worker's rank: at once on one rank, else when
        the rank has time (``_work_one``)."""
        owner, rank, first = self.owner, self.rank, self.first
        if self.defers:
            for w, job in starts:
                if owner[w] == rank:
                    self.pending.append((w, job, state.t, state.x))
                    self.waiting[w - first] += 1
            return
        t0 = time.perf_counter()
        work, oracle = self.method.work, self.oracle
        for w, job in starts:
            if owner[w] == rank:
                state.workers.gradient[w - first] = work(oracle, state.x, w - first, w, job, state.t)
        self.timing["gradient"] += time.perf_counter() - t0

    def _work_one(self, state: RunState) -> None:
        """Compute this rank's oldest pending job."""
        t0 = time.perf_counter()
        w, job, t, x = self.pending.popleft()
        i = w - self.first
        self.waiting[i] -= 1
        state.workers.gradient[i] = self.method.work(self.oracle, x, i, w, job, t)
        self.timing["gradient"] += time.perf_counter() - t0

    def _receive(self, state: RunState, request) -> None:
        """Complete a broadcast, computing pending jobs while it is not done."""
        while request.test() is None:
            if not self.pending:
                request.wait()
                return
            self._work_one(state)

    def _catch_up(self, state: RunState) -> None:
        """Compute every pending job: before a row (the problem's calls in one order on any number of ranks), a
        checkpoint (it keeps the jobs' gradients) or the end."""
        while self.pending:
            self._work_one(state)

    # ---------------------------------------------------------------- rows
    def _evaluate(self, state: RunState, ended: bool, out_of_time: bool) -> bool:
        """Record row t; False if the loop ends here."""
        s, run, t = self.setup, self.setup.config.run, state.t
        self._catch_up(state)
        t1 = time.perf_counter()
        losses, grads = s.problem.loss_grads(state.x, with_loss=True)
        row = exact_row(s, state, grads, losses)
        status = end_status(run, t, row)
        if status == "running" and ended:
            status = self._ended(t, out_of_time)
        if status == "running" and s.control.stop:
            return False
        s.recorder.add_row(state.ledger, t, t1 - self.started, row.loss, row.grad_norm_sq,
                           {"sim_time": state.runner_data["now"], **self._time_split(state), **row.scores})
        s.recorder.set_metrics({})
        if s.recorder.full or s.control.flush:
            s.recorder.flush(state.ledger)
            s.control.flushed()
        state.runner_data["recorded"] = t
        self.recorded(state, row, status, t1, f"  time {state.runner_data['now']:.6g}")
        return status == "running"

    def _time_split(self, state: RunState) -> dict:
        """sim_time = sim_compute + sim_comm + sim_wait, per worker averaged over workers (docs/algorithms.md §12):
        the compute and transfer seconds of the jobs that arrived up to the row's last step, and the rest of the
        time: idle (no job handed out: a buffer, a batch, minibatch SGD's slowest worker), paused through outages,
        or on jobs still in flight or stopped. Rounding can leave the rest a hair below 0: it is clamped."""
        if not self.splits_time:
            return {}
        data = state.runner_data
        compute, comm = data["stepped_compute"] / self.n, data["stepped_comm"] / self.n
        return {"sim_compute": compute, "sim_comm": comm, "sim_wait": max(0.0, data["now"] - compute - comm)}

    def _ended(self, t: int, out_of_time: bool) -> str:
        if out_of_time:
            return f"completed: time budget {self.p.max_time:g} reached at update {t}"
        if self.replay is not None:
            return f"completed: the replayed schedule ends at update {t}"
        return f"failed: no job in flight at update {t}"  # the clock always has one: never a false 'completed'

    def _check_step(self, state: RunState) -> None:
        s = self.setup
        same, sums = s.comm.same_on_all(state.x)
        if not same:
            raise RunFailed(f"ranks hold different x at update {state.t} (checksums {sums})")
        if not np.isfinite(state.x).all():  # between recorded rows (a recorded row reports it itself)
            state.status = f"failed: diverged at update {state.t} (x is not finite)"
            return
        s.control.settle(s.comm.max_flags(s.control.requests(flush_check=False)))

    # ---------------------------------------------------------------- the end
    def summary(self, state: RunState) -> dict:
        """Trace attributes: the delays seen (all arrivals), τ_C, and the share of gradients discarded."""
        counts = state.runner_data["delays"]
        arrivals = int(counts.sum())
        seen = np.flatnonzero(counts)
        cumulative = np.cumsum(counts)
        return {
            "tau_max": int(seen[-1]) if len(seen) else 0,
            "delay_mean": float(np.arange(len(counts)) @ counts / arrivals) if arrivals else math.nan,
            "delay_p99": int(np.searchsorted(cumulative, 0.99 * arrivals)) if arrivals else 0,
            "concurrency": self.p.jobs_in_flight(self.n) if not self.policy.wait_all else self.n,
            "arrivals": arrivals,
            "discarded_fraction": state.runner_data["discarded"] / arrivals if arrivals else 0.0,
            "stopped_jobs": int(self.schedule.stopped),
            "sim_time": float(state.runner_data["now"]),
        }
