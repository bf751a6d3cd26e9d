"""The asynchronous runner's several-rank block exchange: one collective for a block of arrivals instead of one each.

On more than one rank an arrival's vector (the worker's upload after ``send``) exists on the rank that holds the
worker only, and every rank needs it to apply the server's step. Sending each one on its own costs a collective per
arrival, more than the step itself for small gradients. Between two points where something outside reads the state
(``AsynchronousRunner._horizon``: a row, a check, a checkpoint, the end, or the schedule or time budget running out),
:class:`BlockExchange` runs the arrivals in blocks instead:

* a block starts at an exchange. Every job in flight then started at an iterate every rank holds, so the rank of
  each job's worker can compute its result (``_catch_up``) and its upload (``send``: EF21 compression with its keyed
  draws and its estimate, each worker's uploads in its jobs' order, as at each arrival) before the block's steps;
* the block is the run of consecutive arrivals whose jobs were all in flight at its start: a job started during the
  block (a worker's next job, a queued request, a stopped job restarted, even at the same update index) ends it
  before that job's arrival, so a worker arrives at most once per block. Every rank finds the block from its copy
  of the clock: the clock's decisions (which jobs start after an arrival) depend on the server's admitted and
  stepped, and where the method says those follow from the delay alone (``AsynchronousMethod.decisions``: every
  ``AsyncSGD`` whose ``receive`` is its own: ASGD, clipped and delay-adaptive ASGD, Rennala, minibatch SGD,
  Ringmaster, FedBuff) the ranks know them before any vector is seen;
* one ``Comm.allgather_sized`` (an Allgatherv whose sizes every rank knows from the block's owners) moves the
  block's vectors and their bits in rank order; each rank puts them in arrival order and applies them with the
  one-rank loop's calls (``AsynchronousRunner._arrivals``: ``receive``, or its plain step x − γv, /events rows,
  delay counts and the time split; the owners' ``send`` counted the ledger's bits), checking that the server
  decided what the plan said; the jobs the block starts wait in the pending queue with their start iterates (by
  reference, as in ``_compute``), and are computed at the next block's start or before a row.

So every rank makes the same calls to the problem, the compressor and the method as before, in the same order per
worker: the same bits on any number of ranks. Where this cannot hold, ``AsynchronousRunner`` keeps one broadcast per
arrival (``_arrive``): a method whose decisions may depend on the vector (``decisions`` is None) and a replayed
schedule (``ReplaySchedule``, whose jobs start as recorded). Outages, random assignment, stopped jobs, [system]'s
links and the time budget are all the replicated clock's and take the block path; real mode is another runner.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from mpiclip.clipping import vector_norm
from mpiclip.compressors import ENCODINGS
from mpiclip.errors import RunFailed

E = len(ENCODINGS)


class Planned(NamedTuple):
    """One arrival of a block, as the clock decided it before any vector was seen."""

    arrival: tuple  # the clock's Arrival
    admitted: bool
    stepped: bool
    starts: list  # (worker, job index) of the jobs handed out after it


class BlockExchange:
    """The several-rank arrivals of ``AsynchronousRunner`` in blocks, one collective each (the module docstring)."""

    def __init__(self, runner):
        self.runner = runner
        self.width = len(runner.setup.x0) + E  # an arrival's row: the vector the server uses, then its bits

    def run(self, state, until: int) -> None:
        """The arrivals of updates state.t up to ``until``, until the schedule or the time budget runs out first; as
        ``AsynchronousRunner._arrivals`` does on one rank."""
        batch, max_delay, admitted = self.runner.method.decisions(state.server)
        done = False
        while not done:
            block, admitted, done = self._plan(state.t, until, batch, max_delay, admitted)
            rows = self._exchange(state, block)
            self._apply(state, block, rows)

    def _plan(self, t: int, until: int, batch: int, max_delay: float, admitted: int) -> tuple[list, int, bool]:
        """The next block's arrivals, taken from the clock with the decisions the server will make: (the block, the
        admissions since the last step after it, whether ``run`` is done: update ``until`` reached, or the schedule or
        the time budget run out)."""
        runner = self.runner
        schedule, max_time = runner.schedule, runner.p.max_time
        started = list(schedule.started)  # a job is in flight at the block's start iff its index is below these
        block: list = []
        while True:
            arrival = schedule.pop()
            w, start = arrival[0], arrival[1]
            if t < start:
                runner._too_early(arrival, t)
            accepted = t - start < max_delay
            stepped = accepted and admitted + 1 == batch
            admitted = 0 if stepped else admitted + accepted
            t += stepped
            block.append(Planned(arrival, accepted, stepped, schedule.after(arrival, stepped, t)))
            if stepped and t == until:
                return block, admitted, True
            following = schedule.next_time()
            if math.isinf(following) or (max_time and following > max_time):
                return block, admitted, True
            w, job = schedule.next_job()
            if job >= started[w]:  # started during this block: its result is not computed yet
                return block, admitted, False

    def _exchange(self, state, block: list) -> np.ndarray:
        """(len(block), width): each arrival's vector and bits, in arrival order, on every rank: this rank's jobs
        computed and uploaded, then one collective."""
        runner = self.runner
        clock, spent = time.perf_counter, runner.timing
        runner._catch_up(state)  # every pending job was in flight at the block's start
        owner, rank, d = runner.owner, runner.rank, self.width - E
        owners = np.array([owner[planned.arrival[0]] for planned in block])
        t0 = clock()
        mine = np.empty((int(np.count_nonzero(owners == rank)), self.width))
        row = 0
        for planned in block:
            w = planned.arrival[0]
            if owner[w] == rank:
                mine[row, :d], mine[row, d:] = runner._send(state, w, planned.arrival[2])
                row += 1
        t1 = clock()
        sizes = np.bincount(owners, minlength=runner.size) * self.width
        gathered = runner.setup.comm.allgather_sized(mine.ravel(), sizes).reshape(-1, self.width)
        rows = np.empty_like(gathered)
        rows[np.argsort(owners, kind="stable")] = gathered  # rank order back to arrival order
        spent["upload"] += t1 - t0
        spent["communication"] += clock() - t1
        return rows

    def _apply(self, state, block: list, rows: np.ndarray) -> None:
        """Every rank applies the block's arrivals in order and queues the jobs they start: the calls of
        ``AsynchronousRunner._arrivals`` (its step x − γv where the method's is that, ``receive`` otherwise), whose
        admitted and stepped must be those the block was planned with; the block's /events rows, delays and
        discarded count are handed over at its end, as there."""
        runner, method, data = self.runner, self.runner.method, state.runner_data
        d, gamma, splits_time, compute = self.width - E, runner.plain_gamma, runner.splits_time, runner._compute
        events: list = []
        delays: list = []
        t, x, server = state.t, state.x, state.server
        t0 = time.perf_counter()
        try:
            for planned, row in zip(block, rows):
                arrival, vector = planned.arrival, row[:d]
                delay = t - arrival[1]
                if gamma is None:
                    server, x, received = method.receive(server, x, vector, delay)
                    if received[:2] != planned[1:3]:
                        self._disagree(received, planned, t)
                    norm, clipped = received.norm, received.clipped
                else:  # AsyncSGD.receive's batch-1 step, unclipped: every arrival admitted and stepped
                    norm, clipped, x = vector_norm(vector), False, x - gamma * vector
                events.append((t if planned.admitted else -1, arrival[0], arrival[1], delay, arrival[3], norm, clipped,
                               arrival[2]))
                delays.append(delay)
                if splits_time:
                    runner._count_busy(data, arrival, planned.stepped)
                if planned.stepped:
                    t += 1
                    data["now"] = arrival[3]
                state.t, state.x = t, x  # the jobs it starts take x^t
                compute(state, planned.starts)
        finally:
            state.t, state.x, state.server = t, x, server
            writing = self._hand_over(data, block[: len(events)], events, rows[: len(events), d:], delays)
            runner.timing["trace"] += writing
            runner.timing["update"] += time.perf_counter() - t0 - writing

    def _disagree(self, received, planned: Planned, t: int) -> None:
        raise RunFailed(f"{self.runner.method.name}'s server decided (admitted, stepped) = ({received.admitted}, "
                        f"{received.stepped}) at update {t}, its decisions() said ({planned.admitted}, {planned.stepped}): "
                        "the block exchange needs decisions that follow from the delay alone")

    def _hand_over(self, data: dict, block: list, events: list, bits: np.ndarray, delays: list) -> float:
        """The block's /events rows (each with its upload's bits) to the recorder, its delays to the histogram (grown
        as one arrival at a time grows it: the checkpoint keeps its length) and its discarded arrivals to their count;
        the seconds the recorder took. The uploads' ledger counts were made by their owners' ``send``."""
        if not events:
            return 0.0
        t0 = time.perf_counter()
        self.runner.add_rows("events", np.array(events, dtype=np.float64), bits)
        writing = time.perf_counter() - t0
        self.runner.count_delays(data, delays)
        data["discarded"] += sum(not planned.admitted for planned in block)
        return writing
