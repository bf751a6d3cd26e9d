"""The clock of asynchronous runs ([async]): workers' compute times, stragglers, outages, job assignment.

A :class:`Schedule` is the simulated world of an asynchronous run, replicated on every rank: each
worker computes one gradient (a *job*) at a time; job k of worker j takes ``factor_j · base(j, k)``
units of simulated time per gradient (a job of S gradients, FedBuff's local steps, S times that; paused
through the worker's outages), and a priority queue of arrival times (ties by worker id) says who arrives
next. With a network model ([system]'s links, ``transfers``), a job first downloads the model, then computes,
then uploads its message: it arrives at start + download + compute (paused through outages) + upload, each
transfer α_w + bytes/β of the worker's link; without one both are 0 seconds. Every draw is keyed by
(seed, worker, job index) or (seed, request index), never by the rank or by real time, so the schedule
depends on the config only, and a run gives the same trace on any number of ranks (docs/design.md §3).

Jobs are handed out after each arrival by the method's policy (:class:`Policy`): back to the worker
that finished, or (``assignment = "random"``, Koloskova et al., NeurIPS 2022) to a uniformly random
worker. A busy worker queues the request and starts it when it becomes free, at the newest iterate
(the worker pulls the model when it starts, as in a parameter server), so that no worker ever holds
more than one gradient in flight. ``concurrency`` τ_C jobs are handed out at the start, so τ_C jobs
are always in flight (computing or queued).

A :class:`ReplaySchedule` instead re-applies the arrivals recorded in another trace's ``/events``
(worker, start, job index, time), so a simulated or a real run is reproduced in simulated mode.
"""

from __future__ import annotations

import collections
import functools
import heapq
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from mpiclip.errors import InputError, RunFailed
from mpiclip.params import at_least, finite_nonnegative, finite_positive, param
from mpiclip.rng import ASSIGN, SERVER_ID, TIMES, generator

BLOCK = 1024  # draws made at once per key: a generator costs ~20 µs to make, a draw from a block ~0.1 µs
# The largest draws numpy's ziggurat samplers can return (their tails invert a double u ≥ 2⁻⁵³): an exponential
# r_e + 53 ln 2 (r_e = 7.697), a standard normal r_n + 53 ln 2 / r_n in magnitude (r_n = 3.654); bounds of the
# compute times below, so that a config whose clock could leave the floats is refused before the run.
EXPONENTIAL_MAX = 44.44
NORMAL_MAX = 13.71
CLOCK_JOBS = 2.0**53  # arrivals whose summed compute times must stay finite (beyond any run's length)


@dataclass(frozen=True)
class AsyncParams:
    mode: str = param("simulated", "'simulated': a deterministic clock, the same trace on any number of ranks; "
                      "'real': rank 0 is the server and the other ranks' workers send gradients as they finish",
                      choices=("simulated", "real"))
    assignment: str = param("finisher", "who gets the job handed out after an arrival: the worker that finished, or "
                            "a uniformly 'random' worker (a busy one queues it)", choices=("finisher", "random"))
    concurrency: int = param(0, "jobs in flight τ_C (0: one per worker)", check=at_least(0))
    compute_time: str = param("exponential", "compute-time model of one gradient: 'constant' (mean_time), "
                              "'exponential' or 'lognormal' with mean mean_time, or 'list' (the times in `times`)",
                              choices=("constant", "exponential", "lognormal", "list"))
    mean_time: float = param(1.0, "mean compute time of a gradient (simulated time units; seconds with [system], "
                             "whose links add each job's transfers)", check=finite_positive)
    lognormal_sigma: float = param(0.5, "σ of log(compute time) for compute_time = 'lognormal'", check=finite_nonnegative)
    times: tuple[tuple[float, ...], ...] = param((), "compute_time = 'list': the compute times of successive jobs, "
                                                 "cycled; one list for every worker or one per worker")
    slow_workers: tuple[int, ...] = param((), "ids of straggling workers, whose compute times are multiplied by "
                                          "slow_factor")
    slow_factor: float = param(10.0, "compute-time factor of the slow workers", check=finite_positive)
    factors: tuple[float, ...] = param((), "compute-time factor of every worker (n numbers; instead of slow_workers)")
    outages: tuple[tuple[float, ...], ...] = param((), "[worker, from, to] triples: the worker computes nothing in "
                                                   "[from, to) (its job is paused)")
    oracle: str = param("full", "a worker's gradient: its 'full' gradient, a seeded 'minibatch' of batch_size samples, "
                        "or the full gradient plus sub-Weibull 'noise' (docs/algorithms.md §7)",
                        choices=("full", "minibatch", "noise"))
    batch_size: int = param(1, "samples per minibatch gradient (oracle = 'minibatch')", check=at_least(1))
    noise_theta: float = param(1.0, "tail parameter θ of the sub-Weibull noise (1/2 sub-Gaussian, 1 sub-exponential, "
                               "> 1 heavier)", check=finite_positive)
    noise_sigma: float = param(1.0, "scale σ of the noise: P(‖ξ‖ ≥ t) = exp(−(t/σ)^(1/θ))", check=finite_nonnegative)
    data: str = param("heterogeneous", "'heterogeneous': each worker's gradients are of its own shard f_i; "
                      "'homogeneous': every worker samples the whole objective f", choices=("heterogeneous", "homogeneous"))
    max_time: float = param(0.0, "simulated (or, in real mode, wall) time budget; 0: none", check=finite_nonnegative)
    replay: str = param("", "a trace whose recorded arrivals (/events) this simulated run re-applies")
    time_unit: float = param(0.0, "real mode: seconds a worker sleeps per unit of drawn compute time after each "
                             "gradient (stragglers on a laptop; 0: none)", check=finite_nonnegative)

    def validate(self, n: int) -> None:
        """Checks that need the number of workers (InputError, before anything is read or written)."""
        if self.concurrency > n:
            raise InputError("async.concurrency", self.concurrency, f"exceeds the {n} workers (at most one job computes "
                             "per worker; 0 means one per worker)")
        if self.compute_time == "list":
            if len(self.times) not in (1, n):
                raise InputError("async.times", len(self.times), f"lists given: need 1 or n = {n}")
            for times in self.times:
                if not times or not all(0 < v < math.inf for v in times):
                    raise InputError("async.times", list(times), "each list needs finite times > 0")
        elif self.times:
            raise InputError("async.times", list(self.times[0]), f"is only used with compute_time = 'list' "
                             f"(compute_time is {self.compute_time!r})")
        for w in self.slow_workers:
            if not 0 <= w < n:
                raise InputError("async.slow_workers", w, f"is not a worker id (0..{n - 1})")
        if self.factors:
            if self.slow_workers:
                raise InputError("async.factors", list(self.factors), "and async.slow_workers both set; give one")
            if len(self.factors) != n:
                raise InputError("async.factors", len(self.factors), f"factors given for n = {n} workers")
            bad = next((v for v in self.factors if not 0 < v < math.inf), None)
            if bad is not None:
                raise InputError("async.factors", bad, "must be a finite number > 0")
        for outage in self.outages:
            if len(outage) != 3 or outage[0] != int(outage[0]) or not 0 <= outage[0] < n:
                raise InputError("async.outages", list(outage), f"expected [worker, from, to] with a worker id in 0..{n - 1}")
            if not 0 <= outage[1] < outage[2] < math.inf:
                raise InputError("async.outages", list(outage), "needs 0 <= from < to < inf")
        if self.mode == "real" and self.replay:
            raise InputError("async.replay", self.replay, "is a simulated-mode setting (mode is 'real')")
        self._check_clock(n)

    def time_range(self, n: int) -> tuple[float, float]:
        """The smallest and the largest compute time of one gradient any worker can draw (units; inf or 0 where
        the product of the settings leaves the floats)."""
        factors = self.worker_factors(n)
        if self.compute_time == "list":
            lo, hi = min(min(t) for t in self.times), max(max(t) for t in self.times)
        elif self.compute_time == "constant":
            lo = hi = self.mean_time
        elif self.compute_time == "exponential":
            lo, hi = 0.0, self.mean_time * EXPONENTIAL_MAX
        else:
            lo, hi = (self.mean_time * v for v in self.lognormal_range())
        return float(factors.min()) * lo, float(factors.max()) * hi

    def lognormal_range(self) -> tuple[float, float]:
        """The smallest and the largest draw of the mean-1 log-normal, exp(σz − σ²/2) with |z| ≤ NORMAL_MAX."""
        s = self.lognormal_sigma
        return math.exp(-s * NORMAL_MAX - 0.5 * s * s), math.exp(s * NORMAL_MAX - 0.5 * s * s)

    def _blame(self, n: int, smallest: bool = False) -> tuple[str, object]:
        """The setting that dominates the compute times' product at its largest (or smallest): a factor or the base."""
        factors = self.worker_factors(n)
        pick = min if smallest else max
        times = [v for t in self.times for v in t] if self.compute_time == "list" else [self.mean_time]
        base = (pick(times), "async.times" if self.compute_time == "list" else "async.mean_time")
        factor = float(pick(factors))
        if (factor < base[0]) if smallest else (factor > base[0]):
            return "async.factors" if self.factors else "async.slow_factor", factor
        return base[1], base[0]

    def _check_clock(self, n: int) -> None:
        """Compute times, the simulated clock and real mode's sleeps are products and sums of the settings: each
        of them must stay a finite number > 0, or the run would end early with a false reason."""
        if self.compute_time == "lognormal" and self.lognormal_range()[0] == 0.0:
            raise InputError("async.lognormal_sigma", self.lognormal_sigma, "draws of the log-normal compute time "
                             "would underflow to 0 (the smallest is exp(−13.71σ − σ²/2)); use σ ≤ 27")
        lo, hi = self.time_range(n)
        outages = max((o[2] for o in self.outages), default=0.0)
        if not math.isfinite(outages + hi * CLOCK_JOBS):
            field, value = self._blame(n)
            raise InputError(field, value, f"the simulated clock would overflow: the largest per-gradient time is {hi:.3g} "
                             f"units, and {CLOCK_JOBS:.0g} of them must add up to a finite time (keep it below 1e292)")
        if lo == 0.0 and self.compute_time != "exponential":
            field, value = self._blame(n, smallest=True)
            raise InputError(field, value, "the smallest per-gradient time underflows to 0 (a compute time must be > 0)")
        if self.mode == "real" and not math.isfinite(self.time_unit * hi):
            raise InputError("async.time_unit", self.time_unit, f"a worker would sleep time_unit × {hi:.3g} (the largest "
                             "per-gradient time) = inf seconds")

    def worker_factors(self, n: int) -> np.ndarray:
        if self.factors:
            return np.array(self.factors, dtype=np.float64)
        factors = np.ones(n)
        factors[list(self.slow_workers)] = self.slow_factor
        return factors

    def jobs_in_flight(self, n: int) -> int:
        return self.concurrency or n

    def check_job_steps(self, n: int, steps: int) -> None:
        """Jobs of ``steps`` gradients each (FedBuff's local steps) take ``steps`` times a drawn compute time: the clock
        and real mode's sleeps must stay finite with them too (``validate`` has checked one gradient per job)."""
        hi = self.time_range(n)[1] * steps
        outages = max((o[2] for o in self.outages), default=0.0)
        if not math.isfinite(outages + hi * CLOCK_JOBS) or (self.mode == "real" and not math.isfinite(self.time_unit * hi)):
            raise InputError("method.local_steps", steps, f"jobs of {steps} gradients would overflow the simulated clock "
                             f"(or real mode's sleeps): the largest per-job time is {hi:.3g} units")


class Policy(NamedTuple):
    """How a method consumes arrivals: the server steps once ``batch`` gradients are admitted; a gradient
    ``max_delay`` or more updates stale is discarded; ``stops`` restarts jobs that become that stale
    (Ringmaster); ``wait_all`` hands out jobs only after a step, one to every worker (minibatch SGD)."""

    batch: int = 1
    max_delay: float = math.inf
    stops: bool = False
    wait_all: bool = False
    steps: int = 1  # gradients a job computes (FedBuff's local steps): its compute time is steps × a drawn time


class Arrival(NamedTuple):
    worker: int
    start: int  # the update index of the iterate the gradient was computed at
    job: int  # the worker's job index (keys its minibatch and noise draws)
    time: float


_arrival = functools.partial(tuple.__new__, Arrival)  # Arrival(w, start, job, time) without its Python-level __new__


class ComputeTimes:
    """Compute time of job k of worker j: factor_j × a draw of the model, keyed by (seed, j, k), × the gradients a job
    computes (``steps``: one draw per job, scaled, so a job's time keeps the model's shape)."""

    def __init__(self, params: AsyncParams, n: int, seed: int, steps: int = 1):
        self.p, self.seed, self.steps = params, seed, steps
        self.factors = params.worker_factors(n).tolist()
        self.scales = [factor * params.mean_time for factor in self.factors]  # the product's first factors, once
        self.outages: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        for w, lo, hi in sorted((int(o[0]), o[1], o[2]) for o in params.outages):
            windows = self.outages[w]
            if windows and lo <= windows[-1][1]:  # overlapping windows merge
                windows[-1] = (windows[-1][0], max(windows[-1][1], hi))
            else:
                windows.append((lo, hi))
        self.paused = any(self.outages)
        # per worker: [block index, its generator, the block's draws so far]
        self._blocks: list = [[-1, None, []] for _ in range(n)]
        # duration(w, k): units of compute of job k of worker w (before outages), the model's own function
        self.duration = {"list": self._listed, "constant": self._constant}.get(params.compute_time, self._drawn)

    def _listed(self, w: int, k: int) -> float:
        times = self.p.times[w if len(self.p.times) > 1 else 0]
        return self.factors[w] * times[k % len(times)] * self.steps

    def _constant(self, w: int, k: int) -> float:
        return self.scales[w] * self.steps

    def _drawn(self, w: int, k: int) -> float:
        """Draw k mod BLOCK of the generator of block k // BLOCK: a block is drawn as far as it is asked for (a run of
        many workers asks for a few draws each), in chunks whose concatenation is the block's one draw."""
        block, index = k // BLOCK, k % BLOCK
        cached = self._blocks[w]
        if cached[0] != block:
            cached = self._blocks[w] = [block, generator(self.seed, TIMES, w, block), []]
        values = cached[2]
        if index >= len(values):
            self._draw(cached[1], values, min(BLOCK, max(index + 1, 2 * len(values), 16)) - len(values))
        return self.scales[w] * values[index] * self.steps

    def _draw(self, rng: np.random.Generator, values: list, count: int) -> None:
        if self.p.compute_time == "exponential":
            drawn = rng.standard_exponential(count)
        else:  # log-normal with mean 1
            s = self.p.lognormal_sigma
            drawn = np.exp(s * rng.standard_normal(count) - 0.5 * s * s)
        values += drawn.tolist()  # Python floats: a scalar read from a list is 20× cheaper than from an array

    def finish(self, w: int, k: int, now: float) -> float:
        """When job k of worker w, started at ``now``, is done: its compute pauses through the outages."""
        t, remaining = now, self.duration(w, k)
        if not self.paused:
            return t + remaining
        for lo, hi in self.outages[w]:
            if hi <= t:
                continue
            if lo >= t + remaining:
                break
            if lo > t:
                remaining -= lo - t
            t = hi
        return t + remaining


class Schedule:
    """The simulated clock and the workers' jobs (replicated; plain arrays, saved in checkpoints)."""

    def __init__(self, params: AsyncParams, n: int, seed: int, policy: Policy, saved: Optional[dict] = None,
                 simulated: bool = True, transfers: Optional[tuple[list, list]] = None):
        self.p, self.n, self.seed, self.policy, self.simulated = params, n, seed, policy, simulated
        self.times = ComputeTimes(params, n, seed, policy.steps)
        # per worker: seconds of a job's download of x and of its message's upload (x + 0.0 is x: no network, no change)
        self.download, self.upload = transfers if transfers is not None else ([0.0] * n, [0.0] * n)
        self.random = params.assignment == "random"
        self.plain = not (self.random or policy.wait_all or policy.stops)  # a job back to the finisher, nothing else
        # per-worker lists of Python numbers: the event loop reads and writes single entries
        if saved is None:
            self.finish = [math.inf] * n  # finish time of the job in progress (inf: idle)
            self.start = [-1] * n  # its iterate's update index
            self.job = [-1] * n  # its job index
            self.started = [0] * n  # jobs started so far
            self.queued = [0] * n  # requests waiting for the worker to become free
            self.clock, self.arrivals, self.requests, self.stopped = 0.0, 0, 0, 0
        else:
            for name in ("finish", "start", "job", "started", "queued"):
                setattr(self, name, np.asarray(saved[f"schedule_{name}"]).tolist())
            self.clock, self.arrivals = float(saved["schedule_clock"]), int(saved["schedule_arrivals"])
            self.requests, self.stopped = int(saved["schedule_requests"]), int(saved["schedule_stopped"])
        self.heap = [(f, w, self.job[w]) for w, f in enumerate(self.finish) if f < math.inf]
        heapq.heapify(self.heap)
        self._draws: tuple[int, list] = (-1, [])

    def saved(self) -> dict:
        """The state a checkpoint keeps (in RunState.runner_data)."""
        out = {f"schedule_{name}": np.array(getattr(self, name)) for name in ("finish", "start", "job", "started", "queued")}
        out.update(schedule_clock=self.clock, schedule_arrivals=self.arrivals, schedule_requests=self.requests,
                   schedule_stopped=self.stopped)
        return out

    # ---------------------------------------------------------------- the run's side
    def begin(self) -> list[tuple[int, int]]:
        """The jobs handed out at x^0, as (worker, job index)."""
        if self.policy.wait_all:
            return [self._start(w, 0) for w in range(self.n)]
        jobs = self.p.jobs_in_flight(self.n)
        if not self.random:
            return [self._start(w, 0) for w in range(jobs)]
        starts: list[tuple[int, int]] = []
        for _ in range(jobs):
            self._request(0, starts)
        return starts

    def next_time(self) -> float:
        """When the next arrival happens (inf if no job is in flight)."""
        if self.policy.stops:
            self._drop_stale()
        return self.heap[0][0] if self.heap else math.inf

    def next_job(self) -> tuple[int, int]:
        """(worker, job index) of the next arrival without taking it; only after ``next_time`` found one (it drops the
        stopped jobs' entries first)."""
        _, w, k = self.heap[0]
        return w, k

    def pop(self) -> Arrival:
        if self.policy.stops:
            self._drop_stale()
        time, w, k = heapq.heappop(self.heap)
        self.clock = time
        self.finish[w] = math.inf
        self.arrivals += 1
        return _arrival((w, self.start[w], k, time))

    def arrived(self, w: int, time: float) -> Arrival:
        """Real mode: worker w's job has arrived (instead of ``pop``, which takes it from the simulated clock)."""
        self.clock = time
        self.finish[w] = math.inf
        self.arrivals += 1
        return Arrival(w, self.start[w], self.job[w], time)

    def after(self, arrival: Arrival, stepped: bool, t: int) -> list[tuple[int, int]]:
        """Jobs handed out after ``arrival`` (x^t is now the newest iterate), as (worker, job index)."""
        if self.plain:
            return [self._start(arrival[0], t)]
        policy, w = self.policy, arrival.worker
        if policy.wait_all:
            return [self._start(v, t) for v in range(self.n)] if stepped else []
        starts: list[tuple[int, int]] = []
        if self.random:
            self._request(t, starts)
            if self.finish[w] == math.inf and self.queued[w]:
                self.queued[w] -= 1
                starts.append(self._start(w, t))
        else:
            starts.append(self._start(w, t))
        if stepped and policy.stops:
            stale = [v for v in range(self.n) if self.finish[v] < math.inf and self.start[v] <= t - policy.max_delay]
            self.stopped += len(stale)
            starts += [self._start(v, t) for v in stale]
        return starts

    # ---------------------------------------------------------------- internals
    def _start(self, w: int, t: int) -> tuple[int, int]:
        k = self.started[w]
        self.started[w] = k + 1
        self.start[w], self.job[w] = t, k
        if not self.simulated:  # busy until its gradient really arrives
            self.finish[w] = self.clock
            return w, k
        self.finish[w] = finish = self.times.finish(w, k, self.clock + self.download[w]) + self.upload[w]
        if not finish < math.inf:  # validation bounds the clock; this guards against anything it missed
            raise RunFailed(f"the simulated clock overflowed: worker {w}'s job {k}, started at time {self.clock:.6g}, "
                            f"would finish at {finish}")
        heapq.heappush(self.heap, (finish, w, k))
        return w, k

    def _request(self, t: int, starts: list) -> None:
        """A job for a uniformly random worker: started now if it is idle, queued otherwise."""
        block, draws = self._draws
        if block != self.requests // BLOCK:
            draws = generator(self.seed, ASSIGN, SERVER_ID, self.requests // BLOCK).integers(0, self.n, BLOCK).tolist()
            self._draws = (self.requests // BLOCK, draws)
        w = draws[self.requests % BLOCK]
        self.requests += 1
        if self.finish[w] < math.inf:
            self.queued[w] += 1
        else:
            starts.append(self._start(w, t))

    def _drop_stale(self) -> None:
        """Heap entries of jobs that were stopped and restarted are skipped."""
        heap, job, finish = self.heap, self.job, self.finish
        while heap and (heap[0][2] != job[heap[0][1]] or finish[heap[0][1]] == math.inf):
            heapq.heappop(heap)


REPLAY_COLUMNS = {"worker": "iu", "start": "iu", "job": "iu", "sim_time": "iuf"}  # /events columns a replay reads


def schedule_fault(events: dict, n: int) -> Optional[str]:
    """Why recorded arrivals (``REPLAY_COLUMNS`` of a trace's /events) cannot be replayed by n workers, naming the
    first bad event; None if they can. A schedule is data: its columns are 1-D integer (times: numeric) arrays of
    one length; each event's worker is an id in 0..n−1, its start update at least 0 and at most the event's index
    (each update needs an arrival), its time finite, at least 0 and no earlier than the event before; each
    worker's job indices are at least 0 and grow from one of its arrivals to the next, and so do its starts."""
    lengths = set()
    for name, kinds in REPLAY_COLUMNS.items():
        column = events[name]
        if column.ndim != 1 or column.dtype.kind not in kinds:
            return f"/events/{name} is not a column of {'numbers' if 'f' in kinds else 'integers'} (dtype {column.dtype}, " \
                   f"shape {column.shape})"
        lengths.add(len(column))
    if len(lengths) > 1:
        return f"its /events columns have different lengths ({', '.join(str(len(events[c])) for c in REPLAY_COLUMNS)})"
    worker, start, job = (events[c].astype(np.int64) for c in ("worker", "start", "job"))
    time = events["sim_time"].astype(np.float64)
    if not len(worker):
        return "records no arrival"
    index = np.arange(len(worker))
    previous = np.concatenate([[0.0], time[:-1]])
    faults = [(~((worker >= 0) & (worker < n)), f"worker is not a worker id (0..{n - 1})"),
              (start < 0, "start update is negative"),
              (start > index, "start update is beyond the updates that can have happened before it"),
              (job < 0, "job index is negative"),
              (~np.isfinite(time), "time is not finite"),
              (time < 0, "time is negative"),
              (time < previous, "time is earlier than the event before")]
    order = np.lexsort((index, worker))  # each worker's events in the order they arrived
    same = worker[order[1:]] == worker[order[:-1]]
    for column, what in ((job, "job index"), (start, "start update")):
        back = np.zeros(len(worker), dtype=bool)
        later = column[order[1:]]
        back[order[1:]] = same & ((later <= column[order[:-1]]) if column is job else (later < column[order[:-1]]))
        faults.append((back, f"{what} is not past that of the worker's previous arrival"))
    first = min(((int(np.argmax(bad)), j) for j, (bad, _) in enumerate(faults) if bad.any()), default=None)
    if first is None:
        return None
    i, why = first[0], faults[first[1]][1]
    return f"event {i} (worker {worker[i]}, start {start[i]}, job {job[i]}, time {time[i]:g}): its {why}"


class ReplaySchedule:
    """Arrivals re-applied from a recorded trace: the same workers, start indices, job indices and times.

    A worker starts its next recorded job once its previous one has arrived and the run has reached the
    job's start index, at which x^start is the newest iterate; a schedule that does not fit the replaying
    method (a job due at an update the run has already left) is a RunFailed."""

    def __init__(self, events: dict, n: int, saved: Optional[dict] = None):
        self.worker = events["worker"].astype(np.int64)
        self.start = events["start"].astype(np.int64)
        self.job = events["job"].astype(np.int64)
        self.time = events["sim_time"].astype(np.float64)
        self.n = n
        self.arrivals = int(saved["schedule_arrivals"]) if saved else 0
        self.clock = float(saved["schedule_clock"]) if saved else 0.0
        self.inflight = np.array(saved["schedule_inflight"], dtype=bool) if saved else np.zeros(n, dtype=bool)
        self.stopped = 0
        arrived = np.bincount(self.worker[: self.arrivals], minlength=n)
        self.queues = []
        for w in range(n):
            mine = np.flatnonzero(self.worker == w)
            mine = mine[np.argsort(self.job[mine], kind="stable")]
            self.queues.append(collections.deque(mine[arrived[w] + self.inflight[w] :].tolist()))
        self.due = [(int(self.start[q[0]]), w) for w, q in enumerate(self.queues) if q and not self.inflight[w]]
        heapq.heapify(self.due)

    def saved(self) -> dict:
        return {"schedule_arrivals": self.arrivals, "schedule_clock": self.clock, "schedule_inflight": self.inflight.copy()}

    def begin(self) -> list[tuple[int, int]]:
        return self._launch(0)

    def next_time(self) -> float:
        return float(self.time[self.arrivals]) if self.arrivals < len(self.time) else math.inf

    def pop(self) -> Arrival:
        i = self.arrivals
        w = int(self.worker[i])
        if not self.inflight[w]:
            raise RunFailed(f"the replayed schedule does not fit this method: recorded arrival {i} (worker {w}, "
                            f"computed at update {self.start[i]}) arrives before this run reached that update")
        self.inflight[w] = False
        if self.queues[w]:
            heapq.heappush(self.due, (int(self.start[self.queues[w][0]]), w))
        self.arrivals += 1
        self.clock = float(self.time[i])
        return Arrival(w, int(self.start[i]), int(self.job[i]), self.clock)

    def after(self, arrival: Arrival, stepped: bool, t: int) -> list[tuple[int, int]]:
        return self._launch(t)

    def _launch(self, t: int) -> list[tuple[int, int]]:
        """Start the recorded jobs that are due at update t on idle workers."""
        out = []
        while self.due and self.due[0][0] <= t:
            start, w = heapq.heappop(self.due)
            e = self.queues[w].popleft()
            if start != t:
                raise RunFailed(f"the replayed schedule does not fit this method: worker {w}'s recorded job {self.job[e]} "
                                f"was computed at update {start}, which this run left before the worker was free")
            self.inflight[w] = True
            out.append((w, int(self.job[e])))
        return out
