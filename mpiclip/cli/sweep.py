"""`mpiclip sweep list | run | best`: grids of runs."""

from __future__ import annotations

import sys

from mpiclip.cli.run import collective, show_configs


def add_parsers(sub) -> None:
    sweep = sub.add_parser("sweep", help="grids of runs: list, run (locally or as a Slurm array task), best",
                           description="A sweep file (TOML; see mpiclip/sweep.py) expands a grid over config keys "
                           "into runs. `list` shows them with their trace status; `run` runs them on the ranks of "
                           "the job, in groups of --ranks-per-run ranks, skipping runs whose trace completed; "
                           "`best` picks the best run of each group and can draw the paper-style figure. SWEEP is a "
                           "sweep file or the name of a shipped sweep (`shipped` lists them).")
    sweep_sub = sweep.add_subparsers(dest="action", required=True, metavar="ACTION")
    s_list = sweep_sub.add_parser("list", help="the runs, their labels and trace status")
    s_list.add_argument("sweep", metavar="SWEEP")
    s_list.add_argument("--count", action="store_true", help="print only the number of runs (counted from the "
                        "grids' sizes, without expanding them); with --runs-per-task M, the number of array tasks")
    s_list.add_argument("--task", type=int, metavar="I", help="list only slice I (the runs `sweep run --task I` runs)")
    s_list.add_argument("--runs-per-task", type=int, default=None, metavar="M", help="runs per slice (default 1)")
    s_list.set_defaults(func=cmd_sweep_list)
    s_run = sweep_sub.add_parser("run", help="run the sweep (or a slice of it) on this job's ranks")
    s_run.add_argument("sweep", metavar="SWEEP")
    s_run.add_argument("--ranks-per-run", type=int, default=1, metavar="R",
                       help="ranks per run; the job's ranks form size/R groups that take runs in turn (default 1)")
    s_run.add_argument("--task", type=int, metavar="I", help="run only slice I (e.g. $SLURM_ARRAY_TASK_ID)")
    s_run.add_argument("--runs-per-task", type=int, default=1, metavar="M", help="runs per slice (default 1)")
    s_run.add_argument("--force", action="store_true", help="rerun runs whose trace already completed")
    s_run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a key of every run (e.g. data.path)")
    s_run.add_argument("--data-dir", metavar="DIR", help="look for the runs' data files in DIR too")
    s_run.add_argument("--show-config", action="store_true", help="print the composed config of each run (of slice "
                       "I with --task) as TOML, validated and with every default, and exit without running")
    s_run.set_defaults(func=cmd_sweep_run)
    s_shipped = sweep_sub.add_parser("shipped", help="the sweeps that come with mpiclip (the papers' experiments)")
    s_shipped.set_defaults(func=cmd_sweep_shipped)
    s_best = sweep_sub.add_parser("best", help="the best run of each group, and the paper-style figure")
    s_best.add_argument("sweep", metavar="SWEEP")
    s_best.add_argument("--plot", metavar="FILE", help="the metric of each group's best run against --x")
    s_best.add_argument("--x", choices=("bits", "rounds", "sim_time", "epochs"), default="bits",
                        help="x axis of --plot: bits per worker (default), rounds, simulated time (/sim_time: "
                        "asynchronous runs and runs with a system model), or epochs (data passes of runs that count "
                        "samples and record every round)")
    s_best.add_argument("--title")
    s_best.set_defaults(func=cmd_sweep_best)


def _sweep_or_report(path: str):
    """The sweep, or None after printing its input error (sweep files hold no runtime errors)."""
    from mpiclip.errors import MpiclipError
    from mpiclip.sweep import load_sweep

    try:
        return load_sweep(path)
    except MpiclipError as e:
        print(f"mpiclip: error: {e}", file=sys.stderr)
        return None


def cmd_sweep_shipped(args) -> int:
    """Each shipped sweep's name and the first line of its description."""
    from mpiclip.sweep import shipped_sweeps, sweep_file

    names = shipped_sweeps()
    width = max(map(len, names))
    for name in names:
        with open(sweep_file(name)) as f:
            first = next((line[1:].strip() for line in f if line.startswith("#")), "")
        print(f"{name:{width}s}  {first if len(first) < 90 else first[:89] + '…'}")
    return 0


def cmd_sweep_list(args) -> int:
    from collections import Counter

    from mpiclip.errors import MpiclipError
    from mpiclip.limits import MAX_LISTED
    from mpiclip.sweep import status_of
    from mpiclip.sweep_run import slice_of

    sweep = _sweep_or_report(args.sweep)
    if sweep is None:
        return 2
    total = len(sweep.runs)
    per_task = args.runs_per_task
    if per_task is not None and per_task < 1:
        print(f"mpiclip: error: --runs-per-task = {per_task}: must be >= 1", file=sys.stderr)
        return 2
    if args.count:
        print(total if per_task is None else -(-total // per_task))  # runs, or array tasks of M runs
        return 0
    if args.task is None and total > MAX_LISTED:
        print(f"{total:,} runs in {sweep.output}: too many to list one line each (at most {MAX_LISTED:,}); "
              "`--count` counts them, `--task I --runs-per-task M` lists slice I")
        return 0
    try:
        runs = sweep.runs if args.task is None else slice_of(sweep.runs, args.task, per_task or 1)
    except MpiclipError as e:
        print(f"mpiclip: error: {e}", file=sys.stderr)
        return 2
    counts = Counter()
    for run in runs:  # one run at a time: a listing of 10^6 runs keeps none of them
        word, _, why = status_of(run.trace_path).partition(": ")
        counts[word] += 1
        print(f"{run.index:5d}  {word:11s}  {run.label}" + (f"  ({why})" if word == "unreadable" else ""))
    what = f"{len(runs)} runs" if args.task is None else f"{len(runs)} of {total} runs (slice {args.task})"
    print(f"{what} in {sweep.output}: " + ", ".join(f"{counts[k]} {k}" for k in sorted(counts)))
    return 0


def cmd_sweep_run(args) -> int:
    return collective(lambda comm: _sweep_run(args, comm))


def _sweep_run(args, comm) -> int:
    from mpiclip.errors import InputError, MpiclipError
    from mpiclip.paths import use_data_dir
    from mpiclip.sweep import load_sweep
    from mpiclip.sweep_run import run_sweep, slice_of

    error, sweep = None, None
    try:
        use_data_dir(args.data_dir)
        sweep = load_sweep(args.sweep, args.overrides)
        if args.ranks_per_run < 1 or comm.size % args.ranks_per_run:
            raise InputError("--ranks-per-run", args.ranks_per_run, f"must divide the {comm.size} ranks of the job")
        runs = slice_of(sweep.runs, args.task, args.runs_per_task)
        for run in runs:  # every config of the slice is composed and validated before the first run starts
            run.config  # noqa: B018
    except MpiclipError as e:
        error = e
    comm.agree(error)
    if args.show_config:
        if comm.rank == 0:
            show_configs([run.config for run in runs], print)
        return 0
    summary, stopped = run_sweep(runs, comm, args.ranks_per_run, args.force, f"mpiclip sweep run {args.sweep}")
    if stopped is not None:  # every group stops: a signal reaches the whole job
        return 128 + stopped
    if comm.rank == 0:
        print(f"sweep {sweep.params.name}: {len(runs)} runs on {comm.size // args.ranks_per_run} group(s) of "
              f"{args.ranks_per_run} rank(s): " + ", ".join(f"{v} {k}" for k, v in summary.items()))
    return 0


def cmd_sweep_best(args) -> int:
    from mpiclip import plotting, report
    from mpiclip.errors import InputError
    from mpiclip.results import NO_SIM_TIME, sim_time, sim_time_unit
    from mpiclip.sweep import best_runs, larger_is_better

    sweep = _sweep_or_report(args.sweep)
    if sweep is None:
        return 2
    if args.plot:
        try:
            plotting.check_figure_path(args.plot)
        except InputError as e:
            print(f"mpiclip: error: {e}", file=sys.stderr)
            return 2
    best = best_runs(sweep)
    sel = sweep.select
    fig = None
    if args.plot:  # drawn first: a run that cannot be drawn against --x is said before anything is printed
        chosen = [b.trace for b in best if b.trace is not None]
        for b in best:
            if b.trace is not None:
                short = lambda key: key if key.endswith(".name") else key.split(".")[-1]
                b.trace.attrs["name"] = f"{b.group}: " + ",".join(f"{short(k)}={v}" for k, v in b.run.values
                                                                   if k not in sel.group)
        try:
            fig = plotting.draw(chosen, x=args.x, y=sel.metric, encoding=sel.encoding,
                                title=args.title or sweep.params.name, xmax=None)  # runs stop at the tolerance: whole
        except ValueError as e:  # e.g. --x sim_time of a run without a clock, or of runs in different units
            print(f"mpiclip: error: --plot = {args.plot!r}: {e}", file=sys.stderr)
            return 2
    rows = []
    for b in best:
        tried = f"{b.tried} runs, {b.failed} failed" + (f", {len(b.unreadable)} unreadable" if b.unreadable else "")
        if b.run is None:
            rows.append([b.group, "-", "-", "-", "-", f"{tried}, none completed"])
            continue
        tr = b.trace
        final = plotting.y_values(tr, sel.metric)[-1]
        reached, value = b.score
        kind = "min" if sel.criterion == "min" else "final"
        shown = -value if reached and larger_is_better(sel.metric) else value  # scores are smaller-is-better
        unit = "bits" if sel.criterion == "bits_to" else sim_time_unit(tr)
        clockless = f"; {NO_SIM_TIME}" if sel.criterion == "time_to" and sim_time(tr) is None else ""
        how = f"{value:.4g} {unit} to {sel.target:g}" if reached == 0 else f"{shown:.4g} ({kind}{clockless})"
        rows.append([b.group, b.run.label, f"{final:.3g}", f"{tr.bits_per_worker(sel.encoding)[-1]:.4g}", how, tried])
    print(report.table(rows, ["group", "best run", f"final {sel.metric}", f"bits/worker ({sel.encoding})",
                              f"chosen by ({sel.criterion})", "tried"]))
    for label, why in (item for b in best for item in b.unreadable):
        print(f"{label}: unreadable: {why}")
    if fig is not None:
        plotting.save_checked(fig, args.plot, lambda problem: print(f"mpiclip: warning: {problem}", file=sys.stderr))
        print(f"plot: {args.plot}")
    return 0
