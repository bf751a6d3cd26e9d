"""Real asynchrony over MPI ([async] mode = "real"): rank 0 is the server, the other ranks are the workers.

The server hands out jobs (worker id, job index, the update index t and x^t) with non-blocking sends,
by the same rules as the simulated clock (:class:`~mpiclip.asynchrony.Schedule` without its clock),
and applies gradients in the order they really arrive (a receive from any source): the delays in
``/events`` are the ones the run saw, and ``sim_time`` is the server's wall time since the start.
Worker rank r computes the jobs of its block of workers (``Layout(n, P − 1)``) one at a time, in the
order they came, each at the iterate it came with, then sleeps ``time_unit`` × the job's drawn compute
time (stragglers on a laptop) and sends [worker, job, start, seconds, bits, vector] back.

The recorded iterates are kept by the server; once the loop has ended, every rank evaluates them
exactly (the same reduction as the simulated runner), so the rows cost the asynchronous phase nothing.
A real run's schedule is recorded in full, so ``[async] replay`` reproduces it in simulated mode, with
the same trajectory bit for bit (a job's draws are keyed by (seed, worker, job index)).

Not resumable (its schedule depends on real timing: replay it instead); ``tol`` and ``max_bits`` are not
applied during the loop (the server does not evaluate f), so they are refused.
"""

from __future__ import annotations

import collections
import math
import signal
import time

import numpy as np

from mpiclip.asynchrony import ComputeTimes, Schedule
from mpiclip.errors import InputError, RunFailed
from mpiclip.oracles import JobOracle
from mpiclip.rng import COMPRESSOR, WorkerRandomness
from mpiclip.runners.asynchronous import AsynchronousRunner, E
from mpiclip.runners.base import RUNNERS, RunState, exact_row
from mpiclip.trace import TraceWriteError
from mpiclip.wire import ANY_SOURCE, ANY_TAG, Layout

JOB, GRADIENT, STOP, DONE = 21, 22, 23, 24  # STOP: the server's word to the workers, or a worker's signal passed on
HEAD = 4  # worker, job, start, seconds: then the bits and the vector
PAUSE = 2e-3  # seconds a sleeping worker sleeps between looks at its messages: it stops within that of the server's word


@RUNNERS.register("asynchronous-real")
class RealAsynchronousRunner(AsynchronousRunner):
    """Server rank 0 and worker ranks exchanging jobs and gradients with point-to-point calls."""

    phases = ("asynchronous", "evaluation", "trace")

    @classmethod
    def ranks_note(cls, config):
        """Rank 0 computes no job, but every rank evaluates the recorded rows on its own block of workers (Layout(n, P))
        and the collectives need a worker on each rank: n = P − 1 would need them all to accept a rank with none."""
        n = config.run.n_workers
        why = ", in real mode too (rank 0 serves, and every rank evaluates the recorded rows on its own workers)"
        if n < 2:
            return f"{why}: real mode needs 2 ranks, so 2 workers or more (or use mode = 'simulated')"
        computing = f"ranks 1..{n - 1} compute" if n > 2 else "rank 1 computes"
        ranks = "2 ranks" if n == 2 else f"2 to {n} ranks"
        return (f"{why}: run {n} workers on {ranks} (with mpiexec -n {n}, {computing}, a rank holding several "
                "workers their jobs one after another)")

    @classmethod
    def check(cls, config, method, problem_info):
        if config.system is not None:
            raise InputError("async.mode", "real", "times the run on the wall clock, whose messages take the machine's "
                             "own network: [system]'s links price the simulated mode's messages only")
        super().check(config, method, problem_info)
        p, run, ranks = config.section("async"), config.run, problem_info["ranks"]
        if ranks < 2:
            raise InputError("async.mode", "real", "needs a server rank and at least one worker rank: run it under "
                             "mpiexec -n 2 or more (or use mode = 'simulated')")
        if method.policy().stops:
            raise InputError("method.stops", True, "real mode cannot stop a running job; use the simulated mode")
        if p.outages:
            raise InputError("async.outages", [list(o) for o in p.outages], "are a simulated-mode setting")
        if (p.slow_workers or p.factors or p.compute_time != "exponential") and p.time_unit == 0:
            raise InputError("async.time_unit", 0.0, "real mode slows workers down by sleeping time_unit × their drawn "
                             "compute time; set it > 0 to use slow workers, factors or a compute-time model")
        for key, value in (("checkpoint_every", run.checkpoint_every), ("resume", run.resume == "yes"),
                           ("tol", run.tol), ("max_bits", run.max_bits)):
            if value:
                raise InputError(f"run.{key}", getattr(run, key), "is not available in real mode (its schedule depends "
                                 "on real timing and the server does not evaluate f); replay the trace in simulated mode")

    @classmethod
    def resolve(cls, config):
        return cls

    @classmethod
    def job_workers(cls, config, rank, size):
        if rank == 0:
            return np.zeros(0, dtype=np.int64)
        if config.section("async").data == "homogeneous":
            return np.arange(config.run.n_workers)
        return Layout(config.run.n_workers, size - 1).workers_of(rank - 1)

    def _schedule(self, saved):
        return Schedule(self.p, self.n, self.setup.config.run.seed, self.policy, saved, simulated=False)

    def _compute(self, state, starts):  # jobs are computed on the worker ranks, as they arrive there
        self.handed_out = starts

    # ---------------------------------------------------------------- the whole run
    def advance(self, state: RunState) -> RunState:
        s = self.setup
        t0 = time.perf_counter()
        rows = self._serve(state) if s.comm.rank == 0 else self._work()
        s.timing["asynchronous"] += time.perf_counter() - t0
        return self._evaluate_rows(state, rows)

    def _serve(self, state: RunState) -> list:
        """Rank 0: hand out jobs, apply gradients as they arrive; the recorded iterates, with their bits."""
        s, run, comm, p = self.setup, self.setup.config.run, self.setup.comm, self.p
        d, n = len(state.x), self.n
        owner = 1 + np.repeat(np.arange(comm.size - 1), Layout(n, comm.size - 1).counts)
        sends: list = []

        def hand_out(starts, t):
            for w, k in starts:
                job = np.empty(3 + d)
                job[:3] = (w, k, t)
                job[3:] = state.x
                sends.append(comm.isend(job, int(owner[w]), JOB))

        hand_out(self.handed_out, 0)
        rows = [(0, 0.0, state.x.copy(), np.zeros((n, E)))]
        bits_since = np.zeros((n, E))
        incoming = np.empty(HEAD + E + d)
        started, status = time.perf_counter(), "running"
        while status == "running":
            try:
                arrived = self._next_gradient(incoming)
            except TraceWriteError as e:  # the arrivals cannot be kept: end as a failure, the rows say where
                status = f"failed: {e}"
                break
            if not arrived:  # a stop signal, here or on a worker rank
                status = self._interrupted(state.t)
                break
            now = time.perf_counter() - started
            w, k, start = (int(v) for v in incoming[:3])
            arrival = self.schedule.arrived(w, now)
            if (arrival.job, arrival.start) != (k, start):
                raise RunFailed(f"worker {w} sent job {k} computed at update {start}, which the server did not hand out "
                                f"(it expects job {arrival.job} at update {arrival.start})")
            bits, vector = incoming[HEAD : HEAD + E], incoming[HEAD + E :]
            bits_since[w] += bits
            received = self._apply(state, arrival, vector, bits)
            t = state.t
            out_of_time = bool(p.max_time) and now > p.max_time
            if received.stepped and (t % run.eval_every == 0 or t == run.rounds) or (out_of_time and rows[-1][0] != t):
                rows.append((t, state.runner_data["now"], state.x.copy(), bits_since.copy()))
                bits_since[:] = 0
            if not np.isfinite(state.x).all():
                status = f"failed: diverged at update {t} (x is not finite)"
            elif t == run.rounds:
                status = f"completed: round budget {run.rounds} reached"
            elif out_of_time:
                status = f"completed: time budget {p.max_time:g} reached at update {t}"
            elif s.control.stop_signal is not None:
                status = self._interrupted(t)
            else:
                hand_out(self.schedule.after(arrival, received.stepped, t), t)
                sends = [r for r in sends if r.test() is None]
        for r in range(1, comm.size):
            comm.send(np.zeros(1), r, STOP)
        done = 0
        while done < comm.size - 1:  # gradients still in flight are received and dropped; the workers stop at once
            done += comm.recv(incoming, ANY_SOURCE, ANY_TAG).tag == DONE
        comm.waitall(sends)
        state.status = status
        return rows

    def _interrupted(self, t: int) -> str:
        return f"interrupted: {signal.Signals(self.setup.control.stop_signal).name} at update {t} (real mode: not resumable)"

    def _next_gradient(self, incoming: np.ndarray) -> bool:
        """Rank 0: receive the next gradient into ``incoming``, or False once a stop is asked (a signal here, or one a
        worker rank passed on). It polls rather than blocks, since a blocking receive would hold the stop until the
        next gradient, which a sleeping straggler may send hours later; meanwhile the arrivals reach the trace. (A
        pause between polls costs far more than it saves on a busy node: a woken process waits for a core.)"""
        comm, control = self.setup.comm, self.setup.control
        while control.stop_signal is None:
            probe = comm.iprobe(ANY_SOURCE, ANY_TAG)
            if probe is None:  # it spins, as MPI's blocking receive does, so arrivals are served as promptly
                self._keep_arrivals()
                continue
            comm.recv(incoming, probe.source, probe.tag)
            if probe.tag == GRADIENT:
                self._keep_arrivals()
                return True
            control.ask_stop(int(incoming[0]))  # STOP from a worker rank: the signal it got
        return False

    def _keep_arrivals(self) -> None:
        """Rank 0: the arrivals so far (/events) reach the trace every output.flush_rows arrivals or flush_seconds, as
        rows do, so a kill -9 loses no more of them; `replay` turns them into the rows they make."""
        s = self.setup
        if s.recorder.buffered("events") >= s.config.output.flush_rows or s.control.flush_due():
            s.recorder.write_tables()
            s.control.flushed()

    def _work(self) -> list:
        """A worker rank: compute the jobs of its workers in the order they come until the server says stop."""
        s, comm, p = self.setup, self.setup.comm, self.p
        problem = s.jobs
        d = len(s.x0)
        oracle = JobOracle(problem, p, s.config.run.seed)
        first = int(problem.worker_ids[0])
        workers, _ = s.method.initial_state(s.x0, len(problem.worker_ids))
        estimates = workers.estimate
        times = ComputeTimes(p, self.n, s.config.run.seed, self.policy.steps)
        inbox = np.empty(3 + d)
        out = np.empty(HEAD + E + d)
        jobs: collections.deque = collections.deque()
        stopping = passed_on = False

        def poll() -> None:
            """Take the server's messages waiting here, and pass a stop signal of this rank on to the server."""
            nonlocal stopping, passed_on
            if s.control.stop_signal is not None and not passed_on:
                comm.send(np.array([float(s.control.stop_signal)]), 0, STOP)
                passed_on = True
            while not stopping and comm.iprobe(0, ANY_TAG) is not None:
                status = comm.recv(inbox, 0, ANY_TAG)
                if status.tag == STOP:
                    stopping = True
                else:
                    jobs.append((int(inbox[0]), int(inbox[1]), int(inbox[2]), inbox[3:].copy()))

        def sleep(until: float) -> None:
            """Until the perf_counter time ``until`` or the server's stop: a sleeping straggler stops within PAUSE
            seconds of the server's word, whatever its time_unit."""
            while True:
                poll()
                left = until - time.perf_counter()
                if stopping or left <= 0:
                    return
                time.sleep(min(left, PAUSE))

        while not stopping:
            poll()
            if not jobs and not stopping:  # idle: the next job or the server's stop wakes this rank at once
                comm.probe(0, ANY_TAG)
                poll()
            if stopping:
                break
            w, k, t, x = jobs.popleft()
            began = time.perf_counter()
            row = w - first  # in the job problem (all workers for homogeneous data, then first = 0)
            gradient = s.method.work(oracle, x, row, w, k, t)
            rng = WorkerRandomness(s.config.run.seed, COMPRESSOR, np.array([w]), k)
            estimate, vector, bits = s.method.send(estimates[row], gradient, rng)
            if estimates.size:
                estimates[row] = estimate
            if p.time_unit:
                sleep(time.perf_counter() + p.time_unit * times.duration(w, k))
                if stopping:  # the run ended while this worker slept: its gradient never arrived
                    break
            out[:HEAD] = (w, k, t, time.perf_counter() - began)
            out[HEAD : HEAD + E] = bits
            out[HEAD + E :] = vector
            comm.send(out, 0, GRADIENT)
        comm.send(np.zeros(1), 0, DONE)
        return []

    # ---------------------------------------------------------------- rows, after the loop
    def _evaluate_rows(self, state: RunState, rows: list) -> RunState:
        """Collective: every rank evaluates the server's recorded iterates in turn and records them."""
        s, comm = self.setup, self.setup.comm
        d, n = len(state.x), self.n
        count = comm.bcast(len(rows))
        status = comm.bcast(state.status)
        buf = np.empty(2 + d + n * E)
        ids = s.worker_ids
        t1 = time.perf_counter()
        for r in range(count):
            if comm.rank == 0:
                t, now, x, bits = rows[r]
                buf[:2] = (t, now)
                buf[2 : 2 + d] = x
                buf[2 + d :] = bits.ravel()
            comm.bcast_array(buf, 0)
            t, now = int(buf[0]), float(buf[1])
            state.x = buf[2 : 2 + d].copy()
            bits = buf[2 + d :].reshape(n, E)[ids]
            state.ledger.sent_up += bits
            state.ledger.pending_up += bits
            losses, grads = s.problem.loss_grads(state.x, with_loss=True)
            row = exact_row(s, state, grads, losses)
            s.recorder.add_row(state.ledger, t, now, row.loss, row.grad_norm_sq, {"sim_time": now, **row.scores})
            if s.recorder.full:
                s.recorder.flush(state.ledger)
            state.t, state.rows = t, state.rows + 1
            state.loss, state.grad_norm_sq = row.loss, row.grad_norm_sq
            if not (math.isfinite(row.loss) and math.isfinite(row.grad_norm_sq)) and not status.startswith("failed"):
                status = f"failed: diverged at update {t}"
        s.timing["evaluation"] += time.perf_counter() - t1
        state.runner_data["delays"] = comm.bcast(state.runner_data["delays"])
        state.runner_data["discarded"] = comm.bcast(state.runner_data["discarded"])
        state.runner_data["now"] = comm.bcast(state.runner_data["now"])
        state.status = status
        return state
