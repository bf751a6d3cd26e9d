"""One run's life, for every kind of runner (docs/design.md §6): validate → build → open the trace → loop → close.

:meth:`Session.prepare` checks everything that can be wrong with the input (config against the data,
ranks against workers, the output path) without any collective; the ranks then agree on the first
error, so bad input ends every rank with the same message and nothing written. :meth:`Session.build`
loads each rank's shard, computes the problem's constants through the communicator's ordered
reductions and the step size, and opens the trace. :meth:`Session.run` drives the method's runner,
turns signals into an orderly stop, and writes an honest final status.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from mpiclip import checkpoint, constants_cache, limits, provenance, rng, stepsize, writer_lock
from mpiclip import data as datamod
from mpiclip.comm import Comm
from mpiclip.compressors import COMPRESSORS, ENCODINGS
from mpiclip.config import Config
from mpiclip.errors import InputError, MpiclipError
from mpiclip.methods import METHODS
from mpiclip.paths import dangling_link, existing_parent, takes_files
from mpiclip.problems import PROBLEMS
from mpiclip.progress import as_log
from mpiclip.recorder import Recorder
from mpiclip.runners import RUNNERS, Control, RunState, Setup
from mpiclip.runners.protocol import RunInfo
from mpiclip.trace import CORRUPT, TraceWriteError, TraceWriter, open_trace, remove_leftovers, timestamp, trace_status

MAX_LABELS = 1000  # distinct labels beyond which a trace does not count them per worker


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


class Session:
    """One run in four stages: ``prepare`` (checks, no collectives), ``build`` (collectives: the problem, γ, the
    trace), ``run`` (the runner's loop) and ``finish`` (the trace's end). What each stage makes is declared here,
    None until the stage has run."""

    def __init__(self, config: Config, comm: Comm, command: str = "", log=print):
        self.config, self.comm, self.command, self.log = config, comm, command, as_log(log)
        self.skip = False  # prepare_all: the run is done already (run.resume = "auto")
        # prepare
        self.plan: Optional[datamod.Plan] = None  # the data: which rows each worker holds (None: generated problems)
        self.d = 0
        self.compressor: Any = None
        self.method_cls: Any = None
        self.runner_cls: Any = None
        self.bound_method: Any = None  # with the settings that depend on the run, before γ
        self.x0: Optional[np.ndarray] = None
        self.resume: Optional[checkpoint.Stamp] = None  # the checkpoint the run continues from
        # build
        self.worker_ids: Optional[np.ndarray] = None
        self.problem: Any = None
        self.smooth: Any = None  # the problem's smoothness constants
        self.jobs: Any = None  # the problem of the workers whose jobs this rank computes, if not its own
        self.rule, self.gamma = "", math.nan
        self.method: Any = None  # the bound method with its step size γ
        self.hostnames: list[str] = []
        self.run_id = ""
        self.writer: Optional[TraceWriter] = None  # rank 0's
        self.resumed: Optional[RunState] = None  # this rank's part of the checkpoint's state
        # run
        self.timing: dict = {}
        self.state: Optional[RunState] = None
        self.summary: dict = {}
        self.signal: Optional[int] = None  # that stopped the run

    # ------------------------------------------------------------------ stage 1: checks only
    def prepare(self, check_output: bool = True) -> bool:
        """Validate against the data and the world; False if the run is to be skipped. No collectives."""
        c, comm = self.config, self.comm
        if comm.size > c.run.n_workers:
            raise InputError("run.n_workers", c.run.n_workers,
                             f"is less than the {comm.size} MPI ranks; every rank needs at least one worker"
                             f"{_ranks_note(c)}")
        problem_cls = PROBLEMS.get(c.problem.name, "problem.name")
        problem_cls.check(c.problem.params, c.run.n_workers)
        if problem_cls.labels is not None:
            self.plan = datamod.plan(c.data, c.run.n_workers, problem_cls.labels)
            problem_cls.check_data(c.problem.params, self.plan)
            self.d = problem_cls.dimension(c.problem.params, self.plan)
        else:
            self.d = c.problem.params.d
        per_rank = -(-c.run.n_workers // comm.size)
        where = ("data.path", c.data.source.path) if self.plan is not None and getattr(c.data.source, "path", "") else \
            ("data.n_features", self.d) if self.plan is not None else ("problem.d", self.d)
        limits.check_run(self.d, per_rank, *where)
        blocks = problem_cls.blocks(c.problem.params, self.plan)
        self.compressor = COMPRESSORS.get(c.compressor.name, "compressor.name").build(c.compressor.params).for_blocks(blocks)
        self.compressor.validate(self.d)
        self.method_cls = METHODS.get(c.method.name, "method.name")
        self.runner_cls = RUNNERS.get(self.method_cls.runner, "method.name").resolve(c)
        counts = self.plan.sample_counts if self.plan is not None else problem_cls.sample_counts(c.problem.params,
                                                                                                 c.run.n_workers)
        if self.method_cls.needs_samples and counts is None:
            raise InputError("method.name", c.method.name, f"samples minibatches, and problem {c.problem.name!r} has no samples")
        why_not = problem_cls.example_gradients(c.problem.params) if self.method_cls.example_gradients else None
        if why_not:
            raise InputError("method.name", c.method.name, f"clips per-example gradients, and {why_not}")
        if problem_cls.carries_state(c.problem.params) and self.runner_cls.job_workers(c, 0, comm.size) is not None:
            raise InputError("problem.name", c.problem.name, "keeps per-worker state (BatchNorm statistics), and this "
                             "runner computes workers' gradients away from their rank (async.data = 'homogeneous'); "
                             "use problem.norm = 'group' or 'none'")
        if self.compressor.clips and not self.method_cls.accepts_clipping:
            raise InputError("compressor.name", c.compressor.name, f"clips, and method {c.method.name!r} does not "
                             "support clipping (use clip_gd, clip21_gd, clip21_sgd, or ef21/cgd with compressor clip)")
        if not problem_cls.smooth and stepsize.rule_for(c.stepsize, self.method_cls.default_rule) != "constant":
            raise InputError("stepsize.rule", c.stepsize.rule, f"problem {c.problem.name!r} has no smoothness constant "
                             "to derive γ from; set rule = 'constant' and value")
        stepsize.check(c.stepsize, self.method_cls.default_rule, self.compressor.alpha(self.d),
                       self.compressor.omega(self.d), c.compressor.name)
        trial = self.method_cls.create(c.method.params, self.compressor, 1.0)
        trial.validate(self.d, c.run.n_workers)
        # resolved here (e.g. σ for a privacy target) so that impossible settings fail before any collective
        self.bound_method = trial.bind(RunInfo(c.run.n_workers, c.run.rounds, self.d, counts,
                                                self.runner_cls.concurrency(c)))
        limits.check_row_buffer(c.output.flush_rows, per_rank, len(ENCODINGS) + len(self.bound_method.worker_metrics),
                                len(ENCODINGS) + 8)
        if c.system is not None and c.system.compute_unit == "sample" and self.plan is None:
            raise InputError("system.compute_unit", "sample", f"counts the samples gradients touch; problem "
                             f"{c.problem.name!r} is not made of samples (use 'step')")
        self.runner_cls.check(c, self.bound_method, {"d": self.d, "samples": counts is not None,
                                                     "checksum": self._dataset_checksum(), "ranks": comm.size})
        self.x0 = self._initial_point()
        return self._plan_output() if check_output else True

    def _dataset_checksum(self) -> str:
        return self.plan.summary.checksum if self.plan else f"generated:{self.config.problem.name}"

    def _initial_point(self) -> np.ndarray:
        c = self.config.run
        if c.x0 == "zeros":
            return np.zeros(self.d)
        if c.x0 == "normal":
            return c.x0_scale * rng.generator(c.seed, rng.X0, 0, 0).standard_normal(self.d)
        if c.x0 == "model":
            problem = self.config.problem
            x0 = PROBLEMS.get(problem.name, "problem.name").model_init(problem.params, self.plan,
                                                                       rng.generator(c.seed, rng.X0, 0, 0))
            if x0 is None:
                raise InputError("run.x0", c.x0, f"problem {problem.name!r} has no model initialisation (softmax and mlp "
                                 "do); use 'normal', 'zeros' or a .npy file")
            return x0
        if not c.x0.endswith(".npy"):
            raise InputError("run.x0", c.x0, "must be 'normal', 'zeros', 'model' or a .npy file")
        try:
            x0 = np.load(c.x0).astype(np.float64).ravel()
        except (OSError, ValueError) as e:
            raise InputError("run.x0", c.x0, f"cannot be loaded: {e}") from None
        if x0.shape != (self.d,) or not np.isfinite(x0).all():
            raise InputError("run.x0", c.x0, f"must hold {self.d} finite numbers (has shape {x0.shape})")
        return x0

    def _plan_output(self) -> bool:
        """Resume from the checkpoint beside the trace, start afresh, or skip (False), as run.resume and
        output.exists say; every reason not to is an InputError."""
        c = self.config
        self._check_output_place()
        if c.run.resume != "no" and os.path.exists(c.checkpoint_path):
            self.resume = checkpoint.inspect(c.checkpoint_path, c.hash)
            self._check_checkpoint(self.resume)
            self._check_resumable(self.resume)
            return True
        if c.run.resume == "yes":
            raise InputError("run.resume", "yes", f"there is no checkpoint {c.checkpoint_path} to resume from")
        if c.run.resume == "auto" and self._completed_here():
            return False
        return self._check_output()

    def _completed_here(self) -> bool:
        """Is the trace a completed run of this very config and data (which ``resume = "auto"`` and
        ``exists = "skip"`` skip)? A completed trace of another config or data is not this run's result: it is
        run again where output.exists allows (a sweep's points do), and refused otherwise."""
        c, path = self.config, self.config.trace_path
        if not trace_status(path).startswith("completed"):
            return False
        try:
            with open_trace(path) as f:
                recorded = {key: f.attrs.get(key) for key in ("config_hash", "dataset_checksum")}
        except CORRUPT:
            return False
        now = {"config_hash": c.hash, "dataset_checksum": self._dataset_checksum()}
        changed = [key for key in now if recorded[key] is not None and recorded[key] != now[key]]
        if not changed:  # (traces of earlier versions without these attributes are taken as they are)
            return True
        if c.output.exists == "overwrite":
            return False
        what = "config" if changed[0] == "config_hash" else "data"
        raise InputError("output.path", path, f"holds a completed run of another {what} ({changed[0]} "
                         f"{str(recorded[changed[0]])[:19]}…, this run's {now[changed[0]][:19]}…); set output.exists = "
                         "'overwrite' to run it again, or write elsewhere")

    def _check_checkpoint(self, stamp: checkpoint.Stamp) -> None:
        """The checkpoint is one of this run (runner, method, workers, round, data) and holds every array in the
        shape and dtype the run keeps; checked on every rank before anything is restored or written."""
        c, path = self.config, stamp.path
        expected = {"runner": self.runner_cls.name, "method": c.method.name, "n_workers": c.run.n_workers}
        for key, value in expected.items():
            if getattr(stamp, key) != value:
                raise InputError("checkpoint", path, f"was written by a run with {key} = {getattr(stamp, key)!r}; this "
                                 f"run has {value!r}")
        if stamp.t > c.run.rounds or stamp.rows > stamp.t + 1:
            raise InputError("checkpoint", path, f"stands at round {stamp.t} with {stamp.rows} rows, beyond this run's "
                             f"{c.run.rounds} rounds")
        if stamp.dataset_checksum and stamp.dataset_checksum != self._dataset_checksum():
            raise InputError("checkpoint", path, self._data_changed(stamp.dataset_checksum))
        like = self.runner_cls.initial_states(c, self.bound_method, self.x0, 0)
        checkpoint.validate(path, like, c.run.n_workers, self.d, self.runner_cls.checkpoint_arrays(c))

    def _data_changed(self, recorded: str) -> str:
        return (f"was written on data {recorded[:40]}, and the data now is {self._dataset_checksum()[:40]}: the data "
                "changed since the run began; restore it, or start again (output.exists = 'overwrite')")

    def _check_resumable(self, stamp: checkpoint.Stamp) -> None:
        c, path = self.config, self.config.trace_path
        if stamp.n_ranks != self.comm.size and not c.run.deterministic:
            raise InputError("run.deterministic", False, f"the checkpoint was written on {stamp.n_ranks} ranks and "
                             f"Allreduce sums depend on the rank count; resume on {stamp.n_ranks} ranks")
        needed = {"rounds": stamp.rows, **self._table_rows(stamp)}
        try:
            with open_trace(path) as f:
                run_id, data = f.attrs.get("run_id"), f.attrs.get("dataset_checksum")
                held = {name: len(f[name]) if name in f else 0 for name in needed}
        except CORRUPT as e:
            raise InputError("output.path", path, f"cannot be resumed: the trace is unreadable ({e})") from None
        if data is not None and str(data) != self._dataset_checksum():  # checkpoints of earlier versions: the trace
            raise InputError("checkpoint", stamp.path, self._data_changed(str(data)))
        if run_id != stamp.run_id:
            raise InputError("output.path", path, f"is not the trace of the checkpoint's run {stamp.run_id} "
                             f"(the trace's run is {run_id}); move the checkpoint away or resume into the right trace")
        short = [name for name in needed if held[name] < needed[name]]
        if short:
            holds = " and ".join(f"{held[name]} rows of /{name}" for name in short)
            counts = " and ".join(str(needed[name]) for name in short)
            raise InputError("output.path", path, f"holds {holds}, fewer than the {counts} the checkpoint counts; the "
                             "trace was damaged after the checkpoint was written")
        if not os.access(path, os.W_OK):
            raise InputError("output.path", path, "exists and is not writable")

    def _check_output_place(self) -> None:
        """The trace stays inside the directory its path template names, and is never one of the run's inputs."""
        c = self.config
        lock = writer_lock.lock_path(c.trace_path)
        for path in (c.trace_path, lock, c.checkpoint_path):  # the files a run makes (and their directories)
            link = dangling_link(path)
            if link is not None:
                raise InputError("output.path", c.trace_path, f"passes a symbolic link to nothing: {link} -> "
                                 f"{os.readlink(link)!r}; a file made through it would land wherever it points: remove "
                                 "it or write elsewhere")
        if os.path.islink(lock):  # written in place, never renamed over: it would write wherever it points
            raise InputError("output.path", c.trace_path, f"its lock file is a symbolic link: {lock} -> "
                             f"{os.readlink(lock)!r}; the lock file is mpiclip's own: remove the link")
        template = c.output.path
        if "{name}" in template:
            base = os.path.realpath(os.path.dirname(template.split("{name}")[0]) or ".")
            if os.path.commonpath([base, os.path.realpath(c.trace_path)]) != base:
                raise InputError("run.name", c.run.name, f"puts the trace at {c.trace_path}, outside the output "
                                 f"directory {base} (output.path = {template!r})")
        inputs = {"run.x0": c.run.x0 if c.run.x0.endswith(".npy") else "", **self.runner_cls.inputs(c)}
        if c.data is not None:
            inputs["data.path"] = getattr(c.data.source, "path", "")
        if self.comm.rank == 0:  # the writer's host tests the lock
            alive, holder = writer_lock.holder_alive(c.trace_path)
            if alive:
                raise InputError("output.path", c.trace_path, f"is being written by {writer_lock.describe(holder)}; "
                                 "wait for that run to end or write elsewhere")
        for out in (c.trace_path, c.checkpoint_path):
            for key, path in inputs.items():
                if path and os.path.exists(path) and os.path.exists(out) and os.path.samefile(path, out):
                    raise InputError("output.path", c.trace_path, f"would overwrite the run's input {key} = {path!r}; "
                                     "mpiclip never writes its inputs")

    def _check_output(self) -> bool:
        path, policy = self.config.trace_path, self.config.output.exists
        if os.path.isdir(path):
            raise InputError("output.path", path, "is a directory")
        if os.path.exists(path):
            if policy == "error":
                raise InputError("output.path", path, "exists (set output.exists = 'overwrite' or 'skip')")
            if policy == "skip" and self._completed_here():
                return False  # a failed, interrupted or unreadable trace is run again
            if not os.access(path, os.W_OK):
                raise InputError("output.path", path, "exists and is not writable")
        parent = existing_parent(path)
        if not os.path.isdir(parent) or not takes_files(parent):
            raise InputError("output.path", path, f"cannot be created ({parent} is not a writable directory)")
        return True

    # ------------------------------------------------------------------ stage 2: collectives
    def build(self, with_trace: bool = True) -> None:
        c, comm = self.config, self.comm
        layout = comm.bind(c.run.n_workers)
        self.worker_ids = layout.workers_of(comm.rank)
        local_rank = comm.local_rank()
        self.problem, self.smooth, storage = _problem(c, self.plan, self.worker_ids, comm, local_rank)
        job_workers = self.runner_cls.job_workers(c, comm.rank, comm.size)
        if job_workers is not None and len(job_workers):  # e.g. every worker's data on every rank (homogeneous)
            shard = self.plan.load(job_workers, storage=storage) if self.plan is not None else None
            self.jobs = PROBLEMS.get(c.problem.name, "problem.name").build(c.problem.params, shard, job_workers,
                                                                            c.run.n_workers)
            self.jobs.place(local_rank)
        constants = stepsize.Constants(self.smooth.L, self.smooth.L_tilde, self.smooth.mu, self.compressor.alpha(self.d),
                                       self.compressor.omega(self.d), c.run.n_workers)
        self.rule, self.gamma = stepsize.resolve(c.stepsize, self.method_cls.default_rule, constants)
        self.method = dataclasses.replace(self.bound_method, gamma=self.gamma)
        self.hostnames = comm.hostnames()
        self.run_id = self.resume.run_id if self.resume else comm.bcast(provenance.new_run_id())
        error = None
        if self.resume is not None and with_trace:
            try:  # every rank reads its own workers' rows
                # the classes of the state records, built for no worker: only their types and fields matter
                like = self.runner_cls.initial_states(c, self.method, self.x0, 0)
                self.resumed = checkpoint.read(c.checkpoint_path, self.worker_ids, like)
                if self.resumed.x.shape != (self.d,):
                    raise InputError("checkpoint", c.checkpoint_path, f"holds x of shape {self.resumed.x.shape}, not ({self.d},)")
                expected = self.problem.worker_state()
                held = self.resumed.problem
                if (expected is None) != (held is None) or (held is not None and held.shape != expected.shape):
                    raise InputError("checkpoint", c.checkpoint_path, "holds no problem state of the shape this problem "
                                     f"keeps ({None if expected is None else expected.shape}, found "
                                     f"{None if held is None else held.shape})")
            except (*CORRUPT, ValueError) as e:
                error = InputError("checkpoint", c.checkpoint_path, f"cannot be read: {e}")
            except InputError as e:
                error = e
        if comm.rank == 0 and with_trace and error is None:
            try:
                self.writer = self._reopen_trace() if self.resume else self._create_trace()
                for path in (c.trace_path, c.checkpoint_path):
                    remove_leftovers(path)
            except writer_lock.WriterBusy as e:  # a run that started after this one's checks
                error = InputError("output.path", c.trace_path, str(e))
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
            "dataset_checksum": self._dataset_checksum(),
            "dataset": self.plan.summary.description if self.plan else c.problem.name,
            "run_id": self.run_id, "config_toml": c.to_toml(), "config_hash": c.hash, "runner": self.runner_cls.name,
            "provenance": json.dumps(provenance.collect(comm.library, self.hostnames, comm.size)),
        }
        arrays = {"problem/L_workers": s.L_workers, "x0": self.x0}
        if self.plan is not None:
            arrays["partition/sample_counts"] = self.plan.sample_counts
            if len(self.plan.label_values) <= MAX_LABELS:  # classes, not real-valued regression targets
                arrays["partition/label_counts"] = self.plan.label_counts
                arrays["partition/label_values"] = self.plan.label_values
            arrays["partition/indices"] = np.concatenate(self.plan.shards)
            arrays["partition/offsets"] = np.concatenate([[0], np.cumsum(self.plan.sample_counts)])
            if len(self.plan.test_rows):
                arrays["partition/test_indices"] = self.plan.test_rows
        writer = TraceWriter.create(c.trace_path, attrs, c.run.n_workers, self.method.worker_metrics, arrays,
                                    self._row_scalars(), self._tables())
        if os.path.exists(c.checkpoint_path):  # a stale checkpoint of an earlier run must not be resumed into this trace
            os.remove(c.checkpoint_path)
        return writer

    def _reopen_trace(self) -> TraceWriter:
        c, stamp = self.config, self.resume
        with open_trace(c.trace_path) as f:
            history = json.loads(f.attrs.get("resumed", "[]"))
        history.append({"round": stamp.t, "rows": stamp.rows, "at": timestamp(),
                        "provenance": provenance.collect(self.comm.library, self.hostnames, self.comm.size)})
        return TraceWriter.reopen(c.trace_path, stamp.run_id, stamp.rows, c.run.n_workers, self.method.worker_metrics,
                                  {"resumed": json.dumps(history), "n_ranks": self.comm.size}, self._table_rows(stamp))

    def _row_scalars(self) -> tuple[str, ...]:
        """Per-row scalars besides f and ‖∇f‖²: the runner's, the method's and the problem's scores."""
        return self.runner_cls.row_scalars(self.config) + self.method.round_metrics + self.problem.score_names

    def _tables(self) -> tuple:
        """(table, width) of the runner's tables."""
        return tuple((t, self.runner_cls.table_width(self.config, t) if t.per_round else 0) for t in self.runner_cls.tables)

    def _table_rows(self, stamp: checkpoint.Stamp) -> dict:
        """Rows of each of the runner's tables that the checkpoint counts, by the dataset that indexes them: one per
        round run, or the count the checkpoint kept."""
        return {t.index: stamp.t if t.per_round else stamp.tables.get(t.name, 0) for t in self.runner_cls.tables}

    # ------------------------------------------------------------------ stage 3: the loop
    def run(self) -> Result:
        c, comm, method = self.config, self.comm, self.method
        recorder = Recorder(comm, len(self.worker_ids), method.worker_metrics, self.writer, c.output.flush_rows,
                            self._row_scalars(), self._tables())
        self.timing = dict.fromkeys(self.runner_cls.phases + ("checkpoint",), 0.0)
        start = time.perf_counter()
        every = c.run.checkpoint_every
        # divergence is reported in the status (non-finite x or f), not warned about
        control = Control(c.output.flush_seconds, c.run.checkpoint_seconds or math.inf)
        with control, np.errstate(over="ignore", invalid="ignore"):
            setup = Setup(c, comm, method, self.problem, self.worker_ids, self.x0, recorder, control, self.timing, self.log,
                          self.jobs)
            runner = self.runner_cls(setup)
            self.problem.restore_state(self.resumed.problem if self.resumed is not None else None)
            if self.jobs is not None:
                self.jobs.restore_state(None)
            if self.resumed is not None:
                for name, rows in checkpoint.table_rows(self.resumed.runner_data).items():
                    recorder.resume_table(name, rows)
            state = runner.start(self.resumed)
            saved_at = state.t
            while not runner.done(state):
                if control.save or (every and state.t % every == 0 and saved_at != state.t < c.run.rounds):
                    self._checkpoint(state, runner, recorder)
                    saved_at = state.t
                state = runner.advance(state)
            stopped = control.stop and state.status == "running"  # a run that ends at that very round just ends
            if stopped:
                self._checkpoint(state, runner, recorder)
            state.elapsed = runner.elapsed()
        t0 = time.perf_counter()
        recorder.flush(state.ledger)
        self.timing["trace"] = self.timing.get("trace", 0.0) + time.perf_counter() - t0
        self.state, self.summary = state, runner.summary(state)
        result = Result(c.run.name, c.trace_path, state.status, state.t, state.loss, state.grad_norm_sq, gamma=self.gamma,
                        wall=time.perf_counter() - start, timing=dict(self.timing))
        result.bits_per_worker = self._bits_per_worker(state)
        if stopped:
            self.signal = control.stop_signal or signal.SIGTERM
            result.status = f"interrupted: {signal.Signals(self.signal).name} at round {state.t}"
        elif state.status.startswith("interrupted"):  # a runner that stops on a signal by itself (real asynchrony)
            self.signal = control.stop_signal or signal.SIGTERM
        return result

    def _checkpoint(self, state: RunState, runner, recorder: Recorder) -> None:
        """Collective, at the top of round state.t: every recorded row reaches the disk, then the state does."""
        c, comm = self.config, self.comm
        t0 = time.perf_counter()
        recorder.flush(state.ledger)
        error = None
        if self.writer is not None:
            try:
                self.writer.sync()
            except TraceWriteError as e:
                error = e
        comm.agree(error)
        state.elapsed = runner.elapsed()
        state = runner.snapshot(state)
        state.problem = self.problem.worker_state()
        state.runner_data["tables"] = {t.name: recorder.written(t.name) for t in self.runner_cls.tables if not t.per_round}
        stamp = {"run_id": self.run_id, "config_hash": c.hash, "runner": self.runner_cls.name, "method": c.method.name,
                 "n_workers": c.run.n_workers, "deterministic": c.run.deterministic,
                 "dataset_checksum": self._dataset_checksum()}
        checkpoint.write(c.checkpoint_path, state, comm, stamp)
        runner.setup.control.saved()
        self.timing["checkpoint"] += time.perf_counter() - t0

    def _bits_per_worker(self, state: RunState) -> dict:
        """Mean over all workers of the bits each sent, initial round excluded (the papers' #bits/n)."""
        per_worker = self.comm.allgather_rows(state.ledger.counted_up())
        return {e: float(per_worker[:, j].mean()) for j, e in enumerate(ENCODINGS)}

    def finish(self, result: Result) -> None:
        if self.writer is not None:
            attrs = {"stop_reason": result.status, "rounds_run": result.rounds, "wall_seconds": self.state.elapsed,
                     "timing": str(result.timing), **self.summary}
            status = result.status if result.status.startswith("failed") else result.status.split(":")[0]
            self.writer.finish(status, attrs, {"x_final": self.state.x})
            if not status.startswith("interrupted") and os.path.exists(self.config.checkpoint_path):
                os.remove(self.config.checkpoint_path)  # the run has ended for good: nothing to resume


_PROBLEMS: "OrderedDict[tuple, tuple]" = OrderedDict()


def _ranks_note(c: Config) -> str:
    """The runner's addition to the refusal of fewer workers than ranks ('' where the method is unknown: that
    refusal comes later, in its own line)."""
    try:
        runner = RUNNERS.get(METHODS.get(c.method.name, "method.name").runner, "method.name").resolve(c)
    except InputError:
        return ""
    return runner.ranks_note(c)


def _problem(c: Config, plan, worker_ids: np.ndarray, comm: Comm, local_rank: int):
    """(problem, smoothness, storage of its rows) of this rank's workers; consecutive runs on the same data (a sweep) reuse them.

    The ranks agree on hit or miss (one tiny reduction), so the collectives of a miss stay matched even if
    the ranks' caches differ. An entry keeps its communicator alive, so that ``id(comm)`` is not reused."""
    checksum = plan.summary.checksum if plan is not None else None
    key = (checksum, c.data, c.problem.name, c.problem.params, tuple(worker_ids), c.run.n_workers, id(comm))
    if comm.max_flags(np.array([key not in _PROBLEMS]))[0] > 0:
        problem_cls = PROBLEMS.get(c.problem.name, "problem.name")
        shard = plan.load(worker_ids, comm.row_reduce().sum) if plan is not None else None
        problem = problem_cls.build(c.problem.params, shard, worker_ids, c.run.n_workers)
        problem.place(local_rank)
        entry = constants_cache.key(checksum, c.data, problem_cls, c.problem.params, c.run.n_workers)
        constants = comm.bcast(constants_cache.load(entry, c.run.n_workers) if comm.rank == 0 else None)
        if constants is None:  # every rank knows: rank 0 found nothing
            constants = comm.bcast(problem.smoothness(comm.row_reduce()))
            if comm.rank == 0:
                constants_cache.store(entry, constants)
        _PROBLEMS[key] = (problem, constants, shard and shard.storage, comm)
        while len(_PROBLEMS) > 2:
            _PROBLEMS.popitem(last=False)
    return _PROBLEMS[key][:3]


def prepare_all(configs: list[Config], comm: Comm, command: str = "", log=print) -> list[Session]:
    """Stage 1 for every config, then one agreement: bad input anywhere stops everything before any run."""
    sessions, error = [], None
    try:
        for config in configs:
            session = Session(config, comm, command, log)
            session.skip = not session.prepare()
            sessions.append(session)
    except InputError as e:
        error = e
    comm.agree(error)
    skips = comm.bcast([s.skip for s in sessions])
    for session, skip in zip(sessions, skips):
        session.skip = skip
    return sessions


def execute(session: Session) -> Result:
    """Stages 2 and 3 of a prepared session on every rank; the same Result everywhere."""
    config = session.config
    if session.skip:
        return Result(config.run.name, config.trace_path, "skipped: trace exists", skipped=True)
    session.build()
    try:
        result = session.run()
    except BaseException as e:
        if session.writer is not None:
            reason = "interrupted" if isinstance(e, KeyboardInterrupt) else (
                f"failed: {e}" if isinstance(e, MpiclipError) else f"failed: {type(e).__name__}: {e}")
            session.writer.abandon(reason)
        raise
    session.finish(result)
    return result
