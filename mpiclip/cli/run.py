"""`mpiclip run`: run configs on the ranks of the job."""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys


def add_parsers(sub) -> None:
    run = sub.add_parser("run", help="run one or more configs (files or preset names)",
                         description="Run configs on the ranks of the MPI job (one process without a launcher). "
                         "Each CONFIG is a TOML file or a preset name (`mpiclip presets`); a config with "
                         "[variants.*] tables runs once per variant. Every config is validated, against its data "
                         "too, before the first run starts. One HDF5 trace per run; rank 0 prints a summary table.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("configs", nargs="+", metavar="CONFIG")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a config key (TOML value; a bare word is a string); repeatable; applied to "
                     "every config. SECTION={...} replaces a whole section")
    run.add_argument("--plot", metavar="FILE", help="after the runs, draw ‖∇f‖² against bits per worker "
                     "(paper encoding) of all of them into FILE (.png/.pdf/.svg; needs matplotlib)")
    run.add_argument("--resume", action="store_true", help="continue each run from the checkpoint beside its trace "
                     "(an error if there is none; `[run] resume = \"auto\"` resumes when there is one)")
    run.add_argument("--dry-run", action="store_true", help="validate, load the data and print the constants "
                     "and step sizes, without running or writing anything")
    run.add_argument("--multirun", action="store_true", help="a --set value that is a comma list (compressor.k=1,2,4), "
                     "a range(start, stop[, step]) (stop excluded: range(1,4) is 1,2,3; floats too) or a choice(a,b) "
                     "is an axis of a grid: one run, named <name>-<key>=<value>,..., and one trace per point of the "
                     "product of the axes")
    run.add_argument("--show-config", action="store_true", help="print the composed config of each run (validated, "
                     "every default filled in) as TOML, which `mpiclip run` reads back, and exit without running")
    run.add_argument("--task", type=int, metavar="I", help="run only slice I of the runs (e.g. $SLURM_ARRAY_TASK_ID; "
                     "--dry-run lists the runs)")
    run.add_argument("--runs-per-task", type=int, default=1, metavar="M", help="runs per slice (default 1)")
    run.add_argument("--data-dir", metavar="DIR", help="look for relative data paths that are not in the current "
                     "directory in DIR (before those of $MPICLIP_DATA_DIR)")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    run.add_argument("--log-json", metavar="FILE", help="rank 0 appends one JSON object per line to FILE: a start, "
                     "progress and end event for each run (for batch jobs; also with -q)")
    run.add_argument("--log-every", type=float, default=2.0, metavar="SECONDS",
                     help="seconds between two progress reports of a run (default %(default)s)")
    run.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    return collective(lambda comm: _run(args, comm))


def _run(args, comm) -> int:
    if comm.rank == 0 and not (args.dry_run or args.show_config):  # the trace's provenance: git runs during start-up
        from mpiclip.provenance import start_git

        start_git()
    from mpiclip import config as cfg
    from mpiclip import session as sessions
    from mpiclip.errors import InputError, MpiclipError
    from mpiclip.grid import Chain
    from mpiclip.paths import use_data_dir
    from mpiclip.progress import Log
    from mpiclip.sweep_run import slice_of

    say = print if comm.rank == 0 and not args.quiet else (lambda *a, **k: None)
    error, configs, log = None, [], Log(say)
    try:
        try:
            if not (math.isfinite(args.log_every) and args.log_every >= 0):
                raise InputError("--log-every", args.log_every, "must be a finite number of seconds >= 0")
            use_data_dir(args.data_dir)
            overrides = args.overrides + (["run.resume='yes'"] if args.resume else [])
            every = Chain([cfg.ConfigRuns(ref, overrides, args.multirun) for ref in args.configs])
            configs = slice_of(every, args.task, args.runs_per_task)  # a task makes only its own configs
            names = [c.trace_path for c in configs]
            duplicate = next((p for p in names if names.count(p) > 1), None)
            if duplicate:
                raise InputError("output.path", duplicate, "is the trace of several runs; give them distinct run.name")
            if args.plot:
                from mpiclip.plotting import check_figure_path

                check_figure_path(args.plot)
            log = Log(say, args.log_json if comm.rank == 0 else None, args.log_every)  # last: bad input writes nothing
        except MpiclipError as e:
            error = e
        comm.agree(error)
        if args.show_config:
            if comm.rank == 0:
                show_configs(configs, print)
            return 0
        command = shlex.join(["mpiclip"] + sys.argv[1:]) if sys.argv else "mpiclip"
        runs = sessions.prepare_all(configs, comm, command, log)
        results = []
        for i, run in enumerate(runs, 1):
            c = run.config
            if run.skip:
                say(f"[{i}/{len(runs)}] {c.run.name}: skipped, {c.trace_path} exists (output.exists = 'skip')")
                log.event("skipped", c.run.name, trace=c.trace_path)
                continue
            if args.dry_run:
                run.build(with_trace=False)
                say(_header(i, len(runs), run))
                continue
            say(f"[{i}/{len(runs)}] {c.run.name}: starting")
            log.event("start", c.run.name, trace=c.trace_path, index=i, of=len(runs), ranks=comm.size,
                      rounds=c.run.rounds)
            result = sessions.execute(run)
            say(_header(i, len(runs), run))
            say(f"      {result.status}; f = {result.loss:.6g}, ‖∇f‖² = {result.grad_norm_sq:.4g}; "
                f"{result.bits_per_worker.get('paper', 0):.4g} bits/worker; {result.wall:.2f} s -> {result.path}")
            log.event("end", c.run.name, trace=result.path, status=result.status, rounds=result.rounds, loss=result.loss,
                      grad_norm_sq=result.grad_norm_sq, wall=result.wall,
                      bits_per_worker=result.bits_per_worker.get("paper", 0.0))
            results.append(result)
            if result.status.startswith("interrupted"):
                _finish_table(comm, results, args, say)
                return 128 + run.signal
        if args.dry_run:
            return 0
        _finish_table(comm, results, args, say)
        failed = [r for r in results if r.status.startswith("failed")]
        return 1 if failed else 0
    finally:
        log.close()


def show_configs(configs: list, say) -> None:
    """Each config as TOML after a comment naming its run (one config is a file `mpiclip run` reads back)."""
    for i, config in enumerate(configs, 1):
        say(f"# [{i}/{len(configs)}] {config.run.name}: {config.trace_path}")
        say(config.to_toml())


def _aborted(comm, e: KeyboardInterrupt) -> int:
    """A second stop signal (or Ctrl-C before a run took over the signals): one line, and the signal's exit
    code. MPI is not finalized, so that under ``python -m mpi4py`` the non-zero exit aborts the whole job."""
    signum = getattr(e, "signum", signal.SIGINT)
    if comm is None or comm.rank == 0:
        print(f"mpiclip: aborted by {signal.Signals(signum).name}: a trace being written says 'interrupted', and "
              "its last complete checkpoint is kept", file=sys.stderr, flush=True)
    return 128 + signum


def _header(i: int, total: int, run) -> str:
    c, s = run.config, run.smooth
    comp = run.compressor.name + "".join(f" {k}={v}" for k, v in vars(c.compressor.params).items())
    return (f"[{i}/{total}] {c.run.name}: {c.method.name} with {comp} on {c.problem.name} "
            f"({run.plan.summary.description if run.plan else 'generated'}), n = {c.run.n_workers} workers on "
            f"{run.comm.size} rank(s), d = {run.d}\n"
            f"      L = {s.L:.6g}, L̃ = {s.L_tilde:.6g}, γ = {run.gamma:.6g} ({run.rule} × {c.stepsize.factor:g})")


def _finish_table(comm, results, args, say) -> None:
    if comm.rank != 0 or not results:
        return
    from mpiclip import report
    from mpiclip.trace import load_trace

    traces = [load_trace(r.path) if args.plot else load_trace(r.path, **report.comparison_read()) for r in results]
    print()
    print(report.comparison(traces))
    if args.plot:
        from mpiclip import plotting

        plotting.plot(traces, args.plot)
        print(f"\nplot: {args.plot}")


def _exit(comm, code: int) -> int:
    """Finalize MPI before a non-zero exit, so that `python -m mpi4py` does not turn it into MPI_Abort noise."""
    sys.stdout.flush()
    sys.stderr.flush()
    if comm is not None and code != 0:
        comm.finalize()
    return code


def collective(body) -> int:
    """``body(comm)`` on a new communicator, with the command line's endings: an input or run error printed
    once (by rank 0) with its exit code, a second stop signal as an abort; MPI finalized before a non-zero exit."""
    from mpiclip.comm import make_comm
    from mpiclip.errors import MpiclipError

    comm = None
    try:
        comm = make_comm()
        return _exit(comm, body(comm))
    except MpiclipError as e:
        if comm is None or comm.rank == 0:
            print(f"mpiclip: error: {e}", file=sys.stderr, flush=True)
        return _exit(comm, e.exit_code)
    except KeyboardInterrupt as e:
        return _aborted(comm, e)
