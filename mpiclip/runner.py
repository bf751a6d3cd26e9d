"""The synchronous round loop, and the setup around it.

Setup runs in two stages. :meth:`Run.prepare` checks everything that can be wrong with the input
(config against the data, ranks against workers, the output path) without any collective, and the
ranks then agree on the first error, so bad input ends every rank with the same message and nothing
written. :meth:`Run.build` loads each rank's shard, computes the smoothness constants and the step
size (collectives) and opens the trace. :meth:`Run.loop` runs the rounds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from mpiclip import data as datamod
from mpiclip import rng, stepsize
from mpiclip.comm import Comm
from mpiclip.compressors import COMPRESSORS, ENCODINGS
from mpiclip.config import Config
from mpiclip.errors import InputError, MpiclipError, RunFailed
from mpiclip.methods import METHODS, RoundContext
from mpiclip.methods.base import RunInfo
from mpiclip.problems import PROBLEMS
from mpiclip.recorder import Recorder
from mpiclip.rounds import LocalOracle, exchange
from mpiclip.trace import TraceWriter

PHASES = ("gradient", "compression", "communication", "update", "evaluation", "trace")


@dataclass
class Result:
    name: str
    path: str
    status: str
    rounds: int = 0
    loss: float = math.nan
    grad_norm_sq: float = math.nan
    bits_per_worker: dict = field(default_factory=dict)  # encoding -> mean over workers, initial round excluded
    wall: float = 0.0
    timing: dict = field(default_factory=dict)
    gamma: float = math.nan
    skipped: bool = False


class _Signals:
    """SIGINT/SIGTERM set a flag that the ranks agree on at the next evaluated round; a second one aborts."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. under some test runners)
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Run:
    def __init__(self, config: Config, comm: Comm, command: str = "", log=print):
        self.config, self.comm, self.command, self.log = config, comm, command, log
        self.timer_totals = dict.fromkeys(PHASES, 0.0)

    # ------------------------------------------------------------------ stage 1: checks only
    def prepare(self, check_output: bool = True) -> bool:
        """Validate against the data and the world; False if the run is to be skipped. No collectives."""
        c, comm = self.config, self.comm
        if comm.size > c.run.n_workers:
            raise InputError("run.n_workers", c.run.n_workers,
                             f"is less than the {comm.size} MPI ranks; every rank needs at least one worker")
        problem_spec = PROBLEMS.get(c.problem.name, "problem.name")
        if problem_spec.check is not None:
            problem_spec.check(c.problem.params, c.run.n_workers)
        self.plan = None
        if problem_spec.labels is not None:
            self.plan = datamod.plan(c.data, c.run.n_workers, problem_spec.labels)
            self.d = self.plan.n_features
        else:
            self.d = c.problem.params.d
        self.compressor = COMPRESSORS.get(c.compressor.name, "compressor.name").build(c.compressor.params)
        self.compressor.validate(self.d)
        self.method_cls = METHODS.get(c.method.name, "method.name")
        if self.method_cls.needs_samples and self.plan is None:
            raise InputError("method.name", c.method.name, f"samples minibatches, and problem {c.problem.name!r} has no samples")
        if self.compressor.clips and not self.method_cls.accepts_clipping:
            raise InputError("compressor.name", c.compressor.name, f"clips, and method {c.method.name!r} does not "
                             "support clipping (use clip_gd, clip21_gd, clip21_sgd, or ef21/cgd with compressor clip)")
        stepsize.check(c.stepsize, self.method_cls.default_rule, self.compressor.alpha(self.d),
                       self.compressor.omega(self.d), c.compressor.name)
        trial = self.method_cls.create(c.method.params, self.compressor, 1.0)
        trial.validate(self.d, c.run.n_workers)
        # resolved here (e.g. σ for a privacy target) so that impossible settings fail before any collective
        self.bound_method = trial.bind(RunInfo(c.run.n_workers, c.run.rounds, self.d,
                                                self.plan.sample_counts if self.plan is not None else None))
        self.x0 = self._initial_point()
        return self._check_output() if check_output else True

    def _initial_point(self) -> np.ndarray:
        c = self.config.run
        if c.x0 == "zeros":
            return np.zeros(self.d)
        if c.x0 == "normal":
            return c.x0_scale * rng.generator(c.seed, rng.X0, 0, 0).standard_normal(self.d)
        if not c.x0.endswith(".npy"):
            raise InputError("run.x0", c.x0, "must be 'normal', 'zeros' or a .npy file")
        try:
            x0 = np.load(c.x0).astype(np.float64).ravel()
        except (OSError, ValueError) as e:
            raise InputError("run.x0", c.x0, f"cannot be loaded: {e}") from None
        if x0.shape != (self.d,) or not np.isfinite(x0).all():
            raise InputError("run.x0", c.x0, f"must hold {self.d} finite numbers (has shape {x0.shape})")
        return x0

    def _check_output(self) -> bool:
        path, policy = self.config.trace_path, self.config.output.exists
        if os.path.isdir(path):
            raise InputError("output.path", path, "is a directory")
        if os.path.exists(path):
            if policy == "error":
                raise InputError("output.path", path, "exists (set output.exists = 'overwrite' or 'skip')")
            if policy == "skip":
                return False
            if not os.access(path, os.W_OK):
                raise InputError("output.path", path, "exists and is not writable")
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise InputError("output.path", path, f"cannot be created ({parent} is not a writable directory)")
        return True

    # ------------------------------------------------------------------ stage 2: collectives
    def build(self, with_trace: bool = True) -> None:
        c, comm = self.config, self.comm
        layout = comm.bind(c.run.n_workers)
        self.worker_ids = layout.workers_of(comm.rank)
        self.problem, self.smooth = _problem(c, self.plan, self.worker_ids, comm)
        constants = stepsize.Constants(self.smooth.L, self.smooth.L_tilde, self.smooth.mu, self.compressor.alpha(self.d),
                                       self.compressor.omega(self.d), c.run.n_workers)
        self.rule, self.gamma = stepsize.resolve(c.stepsize, self.method_cls.default_rule, constants)
        self.method = dataclasses.replace(self.bound_method, gamma=self.gamma)
        self.hostnames = comm.hostnames()
        error, self.writer = None, None
        if comm.rank == 0 and with_trace:
            try:
                self.writer = self._create_trace()
            except OSError as e:
                error = InputError("output.path", c.trace_path, f"cannot be written: {e.strerror or e}")
        comm.agree(error)

    def _create_trace(self) -> TraceWriter:
        c, comm, s = self.config, self.comm, self.smooth
        os.makedirs(os.path.dirname(os.path.abspath(c.trace_path)), exist_ok=True)
        attrs = {
            "name": c.run.name, "config": c.to_json(), "command": self.command, "n_workers": c.run.n_workers,
            "n_ranks": comm.size, "mpi_library": comm.library, "hostnames": ",".join(self.hostnames),
            "seed": c.run.seed, "method": c.method.name, "compressor": c.compressor.name, "problem": c.problem.name,
            "d": self.d, "gamma": self.gamma, "stepsize_rule": self.rule, "stepsize_factor": c.stepsize.factor,
            "L": s.L, "L_tilde": s.L_tilde, "mu": s.mu if s.mu is not None else math.nan,
            "f_star": s.f_star if s.f_star is not None else math.nan,
            "deterministic": c.run.deterministic,
            "dataset_checksum": self.plan.summary.checksum if self.plan else f"generated:{c.problem.name}",
            "dataset": self.plan.summary.description if self.plan else c.problem.name,
        }
        arrays = {"problem/L_workers": s.L_workers, "x0": self.x0}
        if self.plan is not None:
            arrays["partition/sample_counts"] = self.plan.sample_counts
            arrays["partition/label_counts"] = self.plan.label_counts
            arrays["partition/label_values"] = self.plan.label_values
        return TraceWriter(c.trace_path, attrs, c.run.n_workers, self.method.metrics, arrays,
                           self.method.extra + self.problem.score_names)

    # ------------------------------------------------------------------ stage 3: rounds
    def loop(self) -> Result:
        c, comm, method, problem = self.config, self.comm, self.method, self.problem
        n, T, ordered, d = c.run.n_workers, c.run.rounds, c.run.deterministic, self.d
        all_ids = np.arange(n)
        extra = method.extra + problem.score_names
        recorder = Recorder(comm, len(self.worker_ids), method.metrics, self.writer, c.output.flush_rows, extra)
        x = self.x0.copy()
        worker_state, server_state = method.initial_state(x, len(self.worker_ids))
        # per local worker: [stop requested, flush requested (first row only), paper bits so far]
        control = np.zeros((len(self.worker_ids), 3))
        spent = self.timer_totals
        clock = time.perf_counter
        status, t, loss, gnorm = "running", 0, math.nan, math.nan
        start = last_flush = last_log = clock()
        with _Signals() as signals, np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
            while True:
                record = t % c.run.eval_every == 0 or t == T
                oracle = LocalOracle(problem, x, with_loss=record)
                if record:
                    grads, losses = oracle.full(), oracle.losses()
                spent["gradient"] += oracle.seconds
                t1 = clock()
                if record:
                    control[0, :2] = (signals.received is not None, t1 - last_flush > c.output.flush_seconds)
                    control[:, 2] = recorder.paper_bits()
                    total = comm.sum_rows(np.hstack([grads, losses[:, None], control, problem.scores()]), ordered)
                    g = total[:d] / n
                    loss, gnorm = float(total[d] / n), float(g @ g)
                    scores = dict(zip(problem.score_names, total[d + 4 :] / n))
                    recorder.add_row(t, t1 - start, loss, gnorm, {**method.evaluate(server_state, x, g, t), **scores})
                    t0 = clock()
                    spent["evaluation"] += t0 - t1
                    if t0 - last_log > 2.0 and comm.rank == 0:
                        last_log = t0
                        self.log(f"      round {t}/{T}  f = {loss:.6g}  ‖∇f‖² = {gnorm:.4g}")
                    if not (math.isfinite(loss) and math.isfinite(gnorm)):
                        status = f"failed: diverged at round {t}"
                    elif gnorm < c.run.tol:
                        status = f"completed: tolerance reached at round {t}"
                    elif total[d + 1] > 0:
                        status = "interrupted"
                    elif t == T:
                        status = f"completed: round budget {T} reached"
                    elif c.run.max_bits and total[d + 3] / n >= c.run.max_bits:
                        status = f"completed: bit budget reached at round {t}"
                    if status != "running":
                        break
                    if recorder.full or total[d + 2] > 0:
                        recorder.flush()
                        last_flush = clock()
                        spent["trace"] += last_flush - t0
                if t and t % c.run.check_every == 0:
                    same, sums = comm.same_on_all(x)
                    if not same:
                        raise RunFailed(f"ranks hold different x at round {t} (checksums {sums})")
                    if not record and comm.any(signals.received is not None):  # long stretches between records
                        status = "interrupted"
                        break
                ctx = RoundContext(t, c.run.seed, self.worker_ids, n, record, x)
                before = oracle.seconds
                t0 = clock()
                worker_state, msg, metrics = method.worker_step(worker_state, oracle, ctx)
                t1 = clock()
                inside = oracle.seconds - before  # gradients the step asked for count as gradient time
                agg = exchange(comm, msg, n, ordered, method.per_worker, all_ids)
                t2 = clock()
                server_state, x, downlink = method.server_step(server_state, x, agg, ctx)
                finite = bool(np.isfinite(x).all())
                t3 = clock()
                if record:
                    recorder.set_metrics(metrics)
                recorder.add_message(msg, downlink)
                spent["gradient"] += inside
                spent["compression"] += t1 - t0 - inside
                spent["communication"] += t2 - t1
                spent["update"] += t3 - t2
                spent["trace"] += clock() - t3
                t += 1
                if not finite:
                    status = f"failed: diverged at round {t} (x is not finite)"
                    break
        t0 = clock()
        recorder.flush()
        spent["trace"] += clock() - t0
        self.x_final = x
        result = Result(c.run.name, c.trace_path, status, t, loss, gnorm, gamma=self.gamma, wall=clock() - start)
        result.bits_per_worker = self._bits_per_worker(recorder)
        result.timing = dict(spent)
        if status == "interrupted":
            self.signal = signals.received or signal.SIGTERM
            result.status = f"interrupted: {signal.Signals(self.signal).name} at round {t}"
        return result

    def _bits_per_worker(self, recorder: Recorder) -> dict:
        """Mean over all workers of the bits each sent, initial round excluded (the papers' #bits/n)."""
        per_worker = self.comm.allgather_rows(recorder.total_up - recorder.initial_total)
        return {e: float(per_worker[:, j].mean()) for j, e in enumerate(ENCODINGS)}

    def finish(self, result: Result) -> None:
        if self.writer is not None:
            attrs = {"stop_reason": result.status, "rounds_run": result.rounds, "wall_seconds": result.wall,
                     "timing": str(result.timing)}
            status = result.status if result.status.startswith("failed") else result.status.split(":")[0]
            self.writer.finish(status, attrs, {"x_final": self.x_final})


_PROBLEMS: "OrderedDict[tuple, tuple]" = OrderedDict()


def _problem(c: Config, plan, worker_ids: np.ndarray, comm: Comm):
    """(problem, smoothness) of this rank's workers; consecutive runs on the same data (a sweep) reuse them.

    Every rank of ``comm`` runs the same sequence of configs, so all hit or miss the cache together and the
    collectives of a miss stay matched."""
    checksum = plan.summary.checksum if plan is not None else None
    key = (checksum, c.data, c.problem.name, c.problem.params, tuple(worker_ids), c.run.n_workers, id(comm))
    if key not in _PROBLEMS:
        spec = PROBLEMS.get(c.problem.name, "problem.name")
        shard = plan.load(worker_ids) if plan is not None else None
        problem = spec.build(c.problem.params, shard, worker_ids, c.run.n_workers)
        _PROBLEMS[key] = (problem, comm.bcast(problem.smoothness(comm)))
        while len(_PROBLEMS) > 2:
            _PROBLEMS.popitem(last=False)
    return _PROBLEMS[key]


def prepare_all(configs: list[Config], comm: Comm, command: str = "", log=print) -> list[Run]:
    """Stage 1 for every config, then one agreement: bad input anywhere stops everything before any run."""
    runs, error = [], None
    try:
        for config in configs:
            run = Run(config, comm, command, log)
            run.skip = not run.prepare()
            runs.append(run)
    except InputError as e:
        error = e
    comm.agree(error)
    skips = comm.bcast([run.skip for run in runs])
    for run, skip in zip(runs, skips):
        run.skip = skip
    return runs


def execute(run: Run) -> Result:
    """Stages 2 and 3 of a prepared run on every rank; the same Result everywhere."""
    config = run.config
    if run.skip:
        return Result(config.run.name, config.trace_path, "skipped: trace exists", skipped=True)
    run.build()
    try:
        result = run.loop()
    except BaseException as e:
        if run.writer is not None:
            reason = "interrupted" if isinstance(e, KeyboardInterrupt) else (
                f"failed: {e}" if isinstance(e, MpiclipError) else f"failed: {type(e).__name__}: {e}")
            run.writer.abandon(reason)
        raise
    run.finish(result)
    return result
