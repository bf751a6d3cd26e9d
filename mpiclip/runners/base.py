"""What every runner shares: the run state, the bit ledger, the session's controls and the runner interface.

A runner owns one kind of loop (docs/design.md §6): ``start(state)`` makes or accepts the state,
``advance(state)`` moves it by one round (or one event), ``done(state)`` says whether the loop has
ended. Everything around the loop (validation, building, the trace file, signals, checkpoints, the
final status) belongs to :class:`mpiclip.session.Session`.

:class:`RunState` is plain data: a checkpoint writes it and a resumed run reads it and calls
``advance`` again, so a run stopped at round t and resumed gives the trace of the uninterrupted run.
Its ``workers`` part holds one row per local worker (re-split by worker id when a run resumes on another
number of ranks); everything else is the same on every rank.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Optional

import numpy as np

from mpiclip.compressors import ENCODINGS, Message
from mpiclip.errors import Aborted, RunFailed
from mpiclip.progress import Progress, as_log
from mpiclip.registry import NoParams, Registry

E = len(ENCODINGS)


@dataclass
class Ledger:
    """Bits sent, per local worker and encoding (rows) and by the server (replicated vectors).

    ``pending_*`` are the bits since the last trace row; the initial round (e.g. EF21's uncompressed
    ∇f_i(x^0)) is kept apart, as the trace does.
    """

    sent_up: np.ndarray  # (n_local, E) everything each worker sent, the initial round included
    initial_up: np.ndarray  # (n_local, E) of which in the initial round
    pending_up: np.ndarray  # (n_local, E) since the last row, initial round excluded
    pending_down: np.ndarray  # (E,)
    initial_down: np.ndarray  # (E,)
    initial_unwritten: bool = False  # initial-round bits the trace has not received yet

    per_worker: ClassVar[tuple[str, ...]] = ("sent_up", "initial_up", "pending_up")

    @classmethod
    def empty(cls, n_local: int) -> "Ledger":
        return cls(np.zeros((n_local, E)), np.zeros((n_local, E)), np.zeros((n_local, E)), np.zeros(E), np.zeros(E))

    def add(self, msg: Message, downlink: Optional[Message] = None) -> None:
        """Account one round's upload bits (per local worker) and the server's broadcast."""
        up = msg.bits
        self.sent_up += up
        if msg.initial:
            self.initial_up += up
            self.initial_unwritten = True
        else:
            self.pending_up += up
        if downlink is not None:
            if downlink.initial:
                self.initial_down += downlink.bits[0]
                self.initial_unwritten = True
            else:
                self.pending_down += downlink.bits[0]

    def count(self, up: np.ndarray, down: np.ndarray) -> None:
        """Account bits outside any initial round: ``up`` (n_local, E) per local worker, ``down`` (E,)."""
        self.sent_up += up
        self.pending_up += up
        self.pending_down += down

    def counted_up(self) -> np.ndarray:
        """(n_local, E): bits each local worker sent outside the initial round."""
        return self.sent_up - self.initial_up


@dataclass
class RunState:
    """Everything needed to continue a run (docs/design.md §6), as plain data.

    ``workers`` is the method's worker state (a NamedTuple of arrays with one row per local worker; fields
    named in its ``replicated`` attribute are the same on every rank); ``server`` is the replicated server
    state. Randomness of the synchronous methods is keyed by (seed, stream, worker, round), so it needs
    no saved state; runners with persistent generators keep their ``bit_generator.state`` in ``rngs``
    (replicated) or ``worker_rngs`` (one per local worker), and other replicated data (a simulated clock,
    an event queue, the rows written to its tables) in ``runner_data`` (JSON-able values and arrays).
    """

    t: int  # the next round to run: x is x^t
    x: np.ndarray
    workers: Any
    server: Any
    ledger: Ledger
    rows: int = 0  # trace rows recorded so far
    elapsed: float = 0.0  # wall seconds of the run before this process took it over
    loss: float = math.nan  # at the last recorded row
    grad_norm_sq: float = math.nan
    status: str = "running"
    rngs: dict = field(default_factory=dict)  # name -> bit_generator.state of replicated generators
    runner_data: dict = field(default_factory=dict)  # saved in a checkpoint's state["extra"] and /extra/
    worker_rngs: list = field(default_factory=list)  # per local worker: bit_generator.state of its generator
    problem: Optional[np.ndarray] = None  # (n_local, m) the problem's per-worker state (a network's BatchNorm statistics)


class Control:
    """The session's requests to the loop (stop, save a checkpoint, flush the trace) and the ranks' verdict.

    Signal handlers only set local flags; the runner folds ``requests()`` into a reduction that every
    rank makes at the same round and hands the sums to ``settle``, so all ranks act at the same round.
    SIGINT/SIGTERM ask to stop (after a checkpoint), SIGUSR1 to save a checkpoint and go on, and so does
    the passing of ``save_seconds`` (run.checkpoint_seconds); a second SIGINT/SIGTERM aborts at once.
    """

    STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
    SAVE_SIGNALS = (signal.SIGUSR1,)

    def __init__(self, flush_seconds: float = math.inf, save_seconds: float = math.inf):
        self.flush_seconds, self.save_seconds = flush_seconds, save_seconds
        self.stop_signal: Optional[int] = None
        self.save_signal = False
        self.last_flush = self.last_save = time.perf_counter()
        self.stop = self.save = self.flush = False  # agreed by all ranks
        self._previous: dict = {}

    def __enter__(self) -> "Control":
        for sig in self.STOP_SIGNALS + self.SAVE_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under some test runners)
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if signum in self.SAVE_SIGNALS:
            self.save_signal = True
            return
        if self.stop_signal is not None:
            raise Aborted(signum)
        self.stop_signal = signum

    def ask_stop(self, signum: int) -> None:
        """A stop signal that reached another rank and was passed on here (real asynchrony's workers tell the server)."""
        if self.stop_signal is None:
            self.stop_signal = signum

    def flush_due(self) -> bool:
        """output.flush_seconds have passed since the last flush."""
        return time.perf_counter() - self.last_flush > self.flush_seconds

    def requests(self, flush_check: bool = True) -> np.ndarray:
        """[stop, save, flush] wanted on this rank, as numbers a sum over ranks keeps apart."""
        now = time.perf_counter()
        flush = flush_check and self.flush_due()
        save = self.save_signal or now - self.last_save > self.save_seconds
        return np.array([self.stop_signal is not None, save, flush], dtype=np.float64)

    def settle(self, sums: np.ndarray) -> None:
        """The sums over ranks of ``requests()``: what every rank now does."""
        self.stop, self.save, self.flush = (bool(v > 0) for v in sums[:3])

    def saved(self) -> None:
        self.save = self.save_signal = False
        self.last_save = time.perf_counter()

    def flushed(self) -> None:
        self.flush = False
        self.last_flush = time.perf_counter()


@dataclass(frozen=True)
class Table:
    """Rows a runner writes beside the per-round rows, declared on the runner.

    With ``columns``: a group ``name`` of typed columns, one row per event, the first column its row index (a
    dimension scale) and, with ``bits``, the bits of the event's message under every encoding (``bits/<enc>``);
    its row count is its own, kept in checkpoints. Without: one 2-D dataset ``name`` of integers, one row per
    round run (``Runner.table_width`` values each)."""

    name: str
    columns: tuple = ()  # ((column, dtype), ...)
    bits: bool = False
    units: str = ""  # of a 2-D table's values

    @property
    def per_round(self) -> bool:
        return not self.columns

    @property
    def index(self) -> str:
        """The dataset whose length is the table's row count."""
        return f"{self.name}/{self.columns[0][0]}" if self.columns else self.name


@dataclass
class Setup:
    """What the session built for the runner."""

    config: Any  # mpiclip.config.Config
    comm: Any  # mpiclip.comm.Comm
    method: Any  # the bound method with its step size
    problem: Any
    worker_ids: np.ndarray
    x0: np.ndarray
    recorder: Any  # mpiclip.recorder.Recorder
    control: Control
    timing: dict  # phase -> seconds, for the timing split
    log: Callable[[str], None] = print
    jobs: Any = None  # the problem of the workers whose jobs this rank computes, if not its own (``job_workers``)


class Runner:
    """Interface of a loop. A runner declares its own config section (``section``, whose keys are the dataclass
    ``params``; the methods it drives find their settings there), the tables it writes beside the per-round
    rows, and its checks: a new runner is one module and its registration."""

    name: ClassVar[str] = "?"  # set by registration
    protocol: ClassVar[type] = object  # the base class of the methods it drives (declared next to the loop)
    section: ClassVar[str] = ""  # its config section, e.g. "async" for [async]; "" for none
    params: ClassVar[type] = NoParams  # the keys of that section
    phases: ClassVar[tuple[str, ...]] = ()  # keys of the timing split
    scalars: ClassVar[tuple[str, ...]] = ()  # per-row scalars of the runner (at the trace's root)
    tables: ClassVar[tuple[Table, ...]] = ()  # written beside the per-round rows
    keeps_clock: ClassVar[bool] = False  # keeps the [system] clock (the shared system model gives /sim_time)
    unused_system_keys: ClassVar[dict[str, str]] = {}  # [system] keys its clock does not use, and why (refused)

    @classmethod
    def check_section(cls, params: Any, n_workers: int) -> None:
        """Raise InputError for settings of the section that cannot work with this many workers."""

    @classmethod
    def ranks_note(cls, config: Any) -> str:
        """What it adds to the refusal of fewer workers than ranks ('' for nothing)."""
        return ""

    @classmethod
    def row_scalars(cls, config: Any) -> tuple[str, ...]:
        """Its per-row scalars for this config (a runner that keeps the [system] clock adds its columns)."""
        return cls.scalars

    @classmethod
    def table_width(cls, config: Any, table: Table) -> int:
        """Values per row of a 2-D table (e.g. the clients sampled per round)."""
        raise NotImplementedError

    @classmethod
    def concurrency(cls, config: Any) -> int:
        """Jobs in flight τ_C that a method may need to know (``RunInfo.concurrency``; 0: not asynchronous)."""
        return 0

    @classmethod
    def inputs(cls, config: Any) -> dict:
        """Files the run reads besides its data and x^0, by config key (the trace never overwrites them)."""
        return {}

    @classmethod
    def check(cls, config: Any, method: Any, problem_info: dict) -> None:
        """Raise InputError for settings this loop cannot run (no collectives; before anything is written).
        ``problem_info``: d, samples (is the problem made of samples), checksum (of the data)."""

    @classmethod
    def checkpoint_arrays(cls, config: Any) -> dict:
        """The arrays of its ``RunState.runner_data`` a checkpoint holds: name -> (shape, dtype kind), a shape entry
        "n" standing for run.n_workers and None for any length (checked before a resume restores them)."""
        return {}

    @classmethod
    def resolve(cls, config: Any) -> type["Runner"]:
        """The runner class that drives this config (a mode of the loop may be a runner of its own)."""
        return cls

    @classmethod
    def job_workers(cls, config: Any, rank: int, size: int) -> Optional[np.ndarray]:
        """The workers whose data this rank needs besides its own shard (``Setup.jobs``), or None."""
        return None

    unit: ClassVar[str] = "round"  # what the progress line counts

    def __init__(self, setup: Setup):
        self.setup = setup
        self.started = time.perf_counter()
        run = setup.config.run
        self.progress = Progress(as_log(setup.log), run.name, self.unit, run.rounds) if setup.comm.rank == 0 else None

    def elapsed(self) -> float:
        """Wall seconds of the run so far, before a resume included (the trace's /time)."""
        return time.perf_counter() - self.started

    def recorded(self, state: RunState, row: "Row", status: str, since: float, note: str = "") -> None:
        """After row ``state.t`` was added: the state keeps its values, its time counts as evaluation (from
        ``since``) but for the row's reduction, which counts as communication, and rank 0 reports progress (at
        most every ``log.every`` s; ``note``: extra values)."""
        state.rows += 1
        state.loss, state.grad_norm_sq, state.status = row.loss, row.grad_norm_sq, status
        spent, moved = self.setup.timing, row.comm_seconds if "communication" in self.setup.timing else 0.0
        spent["evaluation"] += time.perf_counter() - since - moved
        if moved:
            spent["communication"] += moved
        if self.progress is not None:
            self.progress.report(state.t, self.elapsed(), row.loss, row.grad_norm_sq, status, note)

    @classmethod
    def initial_states(cls, config: Any, method: Any, x0: np.ndarray, n_local: int) -> tuple[Any, Any]:
        """(workers, server): the state records a run starts from. A checkpoint is read back into records of
        the same classes and fields, so renaming or moving a state class never breaks a saved run."""
        return method.initial_state(x0, n_local)

    def start(self, state: Optional[RunState]) -> RunState:
        """The initial state (``state`` None) or the resumed one, ready for ``advance``."""
        raise NotImplementedError

    def advance(self, state: RunState) -> RunState:
        raise NotImplementedError

    def done(self, state: RunState) -> bool:
        return state.status != "running" or self.setup.control.stop

    def snapshot(self, state: RunState) -> RunState:
        """The state with everything a checkpoint needs written into it (e.g. a scheduler's arrays)."""
        return state

    def summary(self, state: RunState) -> dict:
        """Attributes the trace gets when the run ends."""
        return {}


RUNNERS: Registry[type[Runner]] = Registry("runner")

CONTROLS = 4  # columns folded into a recorded row's reduction: stop, save, flush requests; paper bits


@dataclass
class Row:
    """The exact metrics of a recorded iterate, summed over every worker."""

    grad: np.ndarray  # ∇f(x)
    loss: float
    grad_norm_sq: float
    bits: float  # mean paper bits per worker sent so far (initial round excluded)
    scores: dict
    sums: Optional[np.ndarray] = None  # the sums over all workers of the caller's own columns
    comm_seconds: float = 0.0  # the reduction's time: communication, not evaluation, in the phase split


def exact_row(setup: Setup, state: RunState, grads: np.ndarray, losses: np.ndarray,
              also_sum: Optional[np.ndarray] = None) -> Row:
    """Collective: f(x), ∇f(x) and the problem's scores from the local workers' full ``grads`` and ``losses``
    at x, with the session's stop/save/flush requests folded into the same reduction and settled; ``also_sum``
    (n_local, m) columns of the caller are summed over all workers in the same reduction."""
    s, scores = setup, setup.problem.scores()
    pieces = [grads, losses[:, None], _controls(s, state), scores]
    if also_sum is not None:
        pieces.append(also_sum)
    rows = np.concatenate(pieces, axis=1)  # np.hstack's stack of 2-D pieces, without its per-piece checks
    start = time.perf_counter()
    total = s.comm.sum_rows(rows, s.config.run.deterministic)
    return _row(s, len(state.x), total, scores.shape[1], also_sum is not None, time.perf_counter() - start)


def exact_row_in_chunks(setup: Setup, state: RunState, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
                        also_sum: Optional[np.ndarray] = None) -> Row:
    """:func:`exact_row` from ``chunks``, (grads, losses, scores) of consecutive local workers each made only when
    it is taken, so that a rank never holds every worker's gradient: the sum adds the same rows in the same order
    (``Comm.sum_row_blocks``), so the row has the bits :func:`exact_row` gives."""
    s = setup
    controls = _controls(s, state)
    width = len(state.x) + 1 + CONTROLS + len(s.problem.score_names) + (0 if also_sum is None else also_sum.shape[1])

    making = 0.0  # seconds spent making the chunks (their gradients), not communicating

    def blocks():
        nonlocal making
        lo, chunk = 0, iter(chunks)
        while True:
            started = time.perf_counter()
            grads, losses, scores = next(chunk, (None, None, None))
            making += time.perf_counter() - started
            if grads is None:
                return
            hi = lo + len(grads)
            extra = [] if also_sum is None else [also_sum[lo:hi]]
            yield [grads, losses[:, None], controls[lo:hi], scores] + extra  # side by side, never stacked
            del grads  # before the next chunk's gradients are made
            lo = hi

    start = time.perf_counter()
    total = s.comm.sum_row_blocks(blocks(), width, s.config.run.deterministic)
    return _row(s, len(state.x), total, len(s.problem.score_names), also_sum is not None,
                time.perf_counter() - start - making)


def _controls(s: Setup, state: RunState) -> np.ndarray:
    """(n_local, CONTROLS): this rank's requests (on its first worker's row) and each worker's paper bits so far."""
    controls = np.zeros((len(s.worker_ids), CONTROLS))
    controls[0, :3] = s.control.requests()
    controls[:, 3] = state.ledger.counted_up()[:, 0]
    return controls


def _row(s: Setup, d: int, total: np.ndarray, n_scores: int, tail: bool, comm_seconds: float) -> Row:
    """The row from the sum over all workers of [∇f_i | f_i | controls | ``n_scores`` scores | the caller's columns
    (``tail``)], which took ``comm_seconds`` of communication; settles the session's requests."""
    n = s.config.run.n_workers
    g = total[:d]  # ∇f in the sum's own memory: one d-vector fewer at a recorded round
    g /= n
    at = d + 1 + CONTROLS
    # the scalars as Python floats, read at once: a float divided by n has the bits of the float64 division
    loss, *scalars = total[d : at + n_scores].tolist()
    controls, scores = scalars[:CONTROLS], scalars[CONTROLS:]
    s.control.settle(controls)
    named = {name: value / n for name, value in zip(s.problem.score_names, scores)}
    return Row(g, loss / n, float(g @ g), controls[3] / n, named, total[at + n_scores :] if tail else None,
               comm_seconds)


def check_ranks(setup: Setup, state: RunState, recorded: bool) -> None:
    """Collective, every check_every rounds: the ranks hold the same x, and (between records, whose reduction
    settles them) the session's requests are agreed."""
    same, sums = setup.comm.same_on_all(state.x)
    if not same:
        raise RunFailed(f"ranks hold different x at round {state.t} (checksums {sums})")
    if not recorded:
        setup.control.settle(setup.comm.max_flags(setup.control.requests(flush_check=False)))


def end_status(run: Any, t: int, row: Row) -> str:
    """'running', or why the run ends at recorded iterate t (divergence, tolerance, budgets)."""
    if not (math.isfinite(row.loss) and math.isfinite(row.grad_norm_sq)):
        return f"failed: diverged at round {t}"
    if row.grad_norm_sq < run.tol:
        return f"completed: tolerance reached at round {t}"
    if t == run.rounds:
        return f"completed: round budget {run.rounds} reached"
    if run.max_bits and row.bits >= run.max_bits:
        return f"completed: bit budget reached at round {t}"
    return "running"


def time_budget(max_time: float, sim_time: float, t: int) -> str:
    """'running', or the end of a run whose simulated clock has reached system.max_time at recorded round t."""
    if max_time and sim_time >= max_time:
        return f"completed: time budget {max_time:g} s reached at round {t} (simulated time {sim_time:.6g} s)"
    return "running"
