"""Command line: ``mpiclip run | info | presets | options``.

Launch runs on several ranks with ``mpiexec -n P python -m mpi4py -m mpiclip run CONFIG``; without a
launcher a run is one process. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from importlib import resources

from mpiclip import __version__

EPILOG = """examples:
  mpiexec -n 4 python -m mpi4py -m mpiclip run quickstart --plot results/quickstart.png
  mpiclip run my.toml --set compressor.k=2 --set stepsize.factor=64
  mpiclip run ef21-libsvm --set data.path=a9a.txt --dry-run
  mpiclip stepsize ef21-libsvm --set data.path=a9a.txt --k 1 2 4 8
  mpiclip info results/*.h5
  mpiclip options compressor
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpiclip", description="Communication-efficient and clipped distributed "
                                "optimization on MPI ranks, with HDF5 traces.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mpiclip {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    run.add_argument("--dry-run", action="store_true", help="validate, load the data and print the constants "
                     "and step sizes, without running or writing anything")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    run.set_defaults(func=cmd_run)

    info = sub.add_parser("info", help="summarise traces", description="One trace: its metadata, final values, "
                          "bits under every encoding and timing. Several: a comparison table.")
    info.add_argument("traces", nargs="+", metavar="TRACE")
    info.add_argument("--encoding", default="paper", help="bit encoding of the table's bits columns (default paper)")
    info.add_argument("--to", type=float, nargs="+", default=(), metavar="EPS",
                      help="add columns: bits per worker until ‖∇f‖² first reached each EPS (a comparison table)")
    info.set_defaults(func=cmd_info)

    presets = sub.add_parser("presets", help="list the packaged configs, or print one",
                             description="Without NAME, list the presets; with NAME, print its TOML (a starting "
                             "point for your own config).")
    presets.add_argument("name", nargs="?")
    presets.set_defaults(func=cmd_presets)

    steps = sub.add_parser("stepsize", help="print L, L̃, μ and the theoretical step sizes of a config",
                           description="Load a config's data in this one process and print its smoothness "
                           "constants and, for each k (or the config's compressor), α or ω and the step size of "
                           "every rule that applies (without the config's factor). Nothing is run or written.")
    steps.add_argument("config", metavar="CONFIG")
    steps.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    steps.add_argument("--k", type=int, nargs="+", help="values of compressor.k to tabulate (e.g. 1 2 4 8)")
    steps.set_defaults(func=cmd_stepsize)

    sweep = sub.add_parser("sweep", help="grids of runs: list, run (locally or as a Slurm array task), best",
                           description="A sweep file (TOML; see mpiclip/sweep.py) expands a grid over config keys "
                           "into runs. `list` shows them with their trace status; `run` runs them on the ranks of "
                           "the job, in groups of --ranks-per-run ranks, skipping runs whose trace completed; "
                           "`best` picks the best run of each group and can draw the paper-style figure.")
    sweep_sub = sweep.add_subparsers(dest="action", required=True, metavar="ACTION")
    s_list = sweep_sub.add_parser("list", help="the runs, their labels and trace status")
    s_list.add_argument("sweep", metavar="SWEEP")
    s_list.add_argument("--count", action="store_true", help="print only the number of runs")
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
    s_run.set_defaults(func=cmd_sweep_run)
    s_best = sweep_sub.add_parser("best", help="the best run of each group, and the paper-style figure")
    s_best.add_argument("sweep", metavar="SWEEP")
    s_best.add_argument("--plot", metavar="FILE", help="‖∇f‖² of each group's best run against bits per worker")
    s_best.add_argument("--title")
    s_best.set_defaults(func=cmd_sweep_best)

    priv = sub.add_parser("privacy", help="ε of a noise level, or the noise level for an (ε, δ) target",
                          description="Privacy of the DP clipping methods: each round every worker sends a clipped "
                          "message plus N(0, σ² I), a Gaussian mechanism of sensitivity 2τ (replace-one) or τ "
                          "(add/remove a worker), composed over the rounds with Rényi DP (dp-accounting). Give "
                          "--sigma for ε, or --epsilon for the σ that uses exactly that budget.")
    priv.add_argument("--tau", type=float, required=True, help="clipping threshold τ")
    priv.add_argument("--rounds", type=int, required=True, help="number of rounds (messages per worker)")
    priv.add_argument("--delta", type=float, default=1e-5, help="δ (default 1e-5)")
    group = priv.add_mutually_exclusive_group(required=True)
    group.add_argument("--sigma", type=float, help="noise standard deviation: print ε")
    group.add_argument("--epsilon", type=float, help="privacy target: print σ")
    priv.add_argument("--relation", choices=("replace", "add_remove"), default="replace")
    priv.add_argument("--records", type=int, help="samples per worker, for minibatch methods")
    priv.add_argument("--batch", type=int, help="minibatch size per worker (sampled without replacement)")
    priv.set_defaults(func=cmd_privacy)

    options = sub.add_parser("options", help="document every config key",
                             description="Every section and key of a config, with type, default and meaning; "
                             "registry sections list each component's own keys.")
    options.add_argument("section", nargs="?", help="only this section")
    options.set_defaults(func=cmd_options)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


# ------------------------------------------------------------------------------------ run
def cmd_run(args) -> int:
    from mpiclip import config as cfg
    from mpiclip import runner
    from mpiclip.comm import make_comm
    from mpiclip.errors import InputError, MpiclipError

    comm = None
    try:
        comm = make_comm()
        say = print if comm.rank == 0 and not args.quiet else (lambda *a, **k: None)
        error, configs = None, []
        try:
            configs = [c for ref in args.configs for c in cfg.load(ref, args.overrides)]
            names = [c.trace_path for c in configs]
            duplicate = next((p for p in names if names.count(p) > 1), None)
            if duplicate:
                raise InputError("output.path", duplicate, "is the trace of several runs; give them distinct run.name")
        except MpiclipError as e:
            error = e
        comm.agree(error)
        command = shlex.join(["mpiclip"] + sys.argv[1:]) if sys.argv else "mpiclip"
        runs = runner.prepare_all(configs, comm, command, say)
        results = []
        for i, run in enumerate(runs, 1):
            c = run.config
            if run.skip:
                say(f"[{i}/{len(runs)}] {c.run.name}: skipped, {c.trace_path} exists (output.exists = 'skip')")
                continue
            if args.dry_run:
                run.build(with_trace=False)
                say(_header(i, len(runs), run))
                continue
            say(f"[{i}/{len(runs)}] {c.run.name}: starting")
            result = runner.execute(run)
            say(_header(i, len(runs), run))
            say(f"      {result.status}; f = {result.loss:.6g}, ‖∇f‖² = {result.grad_norm_sq:.4g}; "
                f"{result.bits_per_worker.get('paper', 0):.4g} bits/worker; {result.wall:.2f} s -> {result.path}")
            results.append(result)
            if result.status.startswith("interrupted"):
                _finish_table(comm, results, args, say)
                return _exit(comm, 128 + run.signal)
        if args.dry_run:
            return _exit(comm, 0)
        _finish_table(comm, results, args, say)
        failed = [r for r in results if r.status.startswith("failed")]
        return _exit(comm, 1 if failed else 0)
    except MpiclipError as e:
        if comm is None or comm.rank == 0:
            print(f"mpiclip: error: {e}", file=sys.stderr, flush=True)
        return _exit(comm, e.exit_code)


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

    traces = [load_trace(r.path) for r in results]
    print()
    print(report.comparison(traces))
    if args.plot:
        from mpiclip import plotting

        try:
            plotting.plot(traces, args.plot)
            print(f"\nplot: {args.plot}")
        except ImportError:
            print("mpiclip: --plot needs matplotlib: pip install 'mpiclip[plot]'", file=sys.stderr)


def _exit(comm, code: int) -> int:
    """Finalize MPI before a non-zero exit, so that `python -m mpi4py` does not turn it into MPI_Abort noise."""
    sys.stdout.flush()
    sys.stderr.flush()
    if comm is not None and code != 0:
        comm.finalize()
    return code


# ----------------------------------------------------------------------------------- info
def cmd_info(args) -> int:
    import os

    from mpiclip import report
    from mpiclip.trace import load_trace

    traces = []
    for path in args.traces:
        if not os.path.isfile(path):
            print(f"mpiclip: error: trace = {path!r}: no such file", file=sys.stderr)
            return 2
        try:
            traces.append(load_trace(path))
        except OSError as e:
            print(f"mpiclip: error: trace = {path!r}: not a readable HDF5 trace ({e})", file=sys.stderr)
            return 2
    if len(traces) == 1 and not args.to:
        print(report.describe(traces[0]))
    else:
        try:
            print(report.comparison(traces, args.encoding, tuple(args.to)))
        except KeyError as e:
            print(f"mpiclip: error: --encoding = {args.encoding!r}: {e.args[0]}", file=sys.stderr)
            return 2
    return 0


# ------------------------------------------------------------------------------- stepsize
def cmd_stepsize(args) -> int:
    from mpiclip import config as cfg
    from mpiclip import report, stepsize
    from mpiclip.comm import SerialComm
    from mpiclip.compressors import COMPRESSORS
    from mpiclip.errors import InputError, MpiclipError
    from mpiclip.runner import Run

    try:
        # every rule is tabulated below, so the config's own rule need not fit its compressor
        config = cfg.load(args.config, args.overrides + ['stepsize={rule = "inverse_L"}'])[0]
        name, params = config.compressor.name, config.compressor.params
        if args.k and not hasattr(params, "k"):
            raise InputError("--k", args.k, f"compressor {name!r} has no k")
        run = Run(config, SerialComm(), log=lambda *a: None)
        run.prepare(check_output=False)
        run.build(with_trace=False)
        s, n, d = run.smooth, config.run.n_workers, run.d
        print(f"{run.plan.summary.description if run.plan else config.problem.name}: n = {n} workers, d = {d}")
        print(f"L = {s.L:.10g}   L̃ = {s.L_tilde:.10g}   max L_i = {s.L_workers.max():.10g}   "
              f"μ = {s.mu if s.mu is not None else '-'}")
        ks = args.k or [getattr(params, "k", None)]
        rows = []
        for k in ks:
            compressor = COMPRESSORS.get(name, "compressor.name").build(type(params)(**{**vars(params), "k": k}) if k else params)
            compressor.validate(d)
            c = stepsize.Constants(s.L, s.L_tilde, s.mu, compressor.alpha(d), compressor.omega(d), n)
            gammas = []
            for rule in ("ef21", "ef21_pl", "diana", "inverse_L"):
                try:
                    gammas.append(f"{stepsize.RULES[rule](c, config.stepsize):.6g}")
                except InputError:
                    gammas.append("-")
            rows.append([f"{name}" + (f" k={k}" if k else ""), _num(c.alpha), _num(c.omega), *gammas])
        print()
        print(report.table(rows, ["compressor", "α", "ω", "ef21", "ef21_pl", "diana", "inverse_L"]))
        print(f"\nthe method's default rule: {run.method_cls.default_rule}; a run uses γ = stepsize.factor × rule")
        return 0
    except MpiclipError as e:
        print(f"mpiclip: error: {e}", file=sys.stderr)
        return e.exit_code


def _num(v) -> str:
    return "-" if v is None else f"{v:.6g}"


# ---------------------------------------------------------------------------------- sweeps
def _sweep_or_report(path: str):
    """The sweep, or None after printing its input error (sweep files hold no runtime errors)."""
    from mpiclip.errors import MpiclipError
    from mpiclip.sweep import load_sweep

    try:
        return load_sweep(path)
    except MpiclipError as e:
        print(f"mpiclip: error: {e}", file=sys.stderr)
        return None


def cmd_sweep_list(args) -> int:
    from mpiclip.sweep import status_of

    sweep = _sweep_or_report(args.sweep)
    if sweep is None:
        return 2
    if args.count:
        print(len(sweep.runs))
        return 0
    statuses = [status_of(run.config.trace_path) for run in sweep.runs]
    for run, status in zip(sweep.runs, statuses):
        print(f"{run.index:5d}  {status.split(':')[0]:11s}  {run.label}")
    counts = {s: sum(1 for x in statuses if x.split(":")[0] == s) for s in sorted({x.split(":")[0] for x in statuses})}
    print(f"{len(sweep.runs)} runs in {sweep.output}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


def cmd_sweep_run(args) -> int:
    from mpiclip import runner
    from mpiclip.comm import make_comm
    from mpiclip.errors import InputError, MpiclipError, RunFailed
    from mpiclip.sweep import load_sweep, status_of

    comm = None
    try:
        comm = make_comm()
        error, sweep = None, None
        try:
            sweep = load_sweep(args.sweep, args.overrides)
            if args.ranks_per_run < 1 or comm.size % args.ranks_per_run:
                raise InputError("--ranks-per-run", args.ranks_per_run, f"must divide the {comm.size} ranks of the job")
            if args.runs_per_task < 1:
                raise InputError("--runs-per-task", args.runs_per_task, "must be >= 1")
            if args.task is not None and not 0 <= args.task * args.runs_per_task < len(sweep.runs):
                raise InputError("--task", args.task, f"is out of range: {len(sweep.runs)} runs, {args.runs_per_task} per task")
        except MpiclipError as e:
            error = e
        comm.agree(error)
        runs = list(sweep.runs)
        if args.task is not None:
            runs = runs[args.task * args.runs_per_task : (args.task + 1) * args.runs_per_task]
        groups = comm.size // args.ranks_per_run
        group = comm.rank // args.ranks_per_run
        team = comm.split(group) if groups > 1 else comm
        mine = runs[group::groups]
        say = print if team.rank == 0 else (lambda *a, **k: None)
        done = {"completed": 0, "skipped": 0, "failed": 0}
        for run in mine:
            status = team.bcast(status_of(run.config.trace_path) if team.rank == 0 else None)
            if status.startswith("completed") and not args.force:
                done["skipped"] += 1
                continue
            (prepared,) = runner.prepare_all([run.config], team, f"mpiclip sweep run {args.sweep}", lambda *a: None)
            try:
                result = runner.execute(prepared)
            except RunFailed as e:  # ranks out of step: recorded in the trace; go on with the sweep
                say(f"[{run.index}] {run.label}: failed: {e}")
                done["failed"] += 1
                continue
            key = "completed" if result.status.startswith("completed") else "failed"
            done[key] += 1
            say(f"[{run.index}] {run.label}: {result.status}; ‖∇f‖² = {result.grad_norm_sq:.4g} "
                f"({result.wall:.1f} s)")
            if result.status.startswith("interrupted"):
                return _exit(comm, 128 + prepared.signal)
        totals = comm.allgather_objects(done if team.rank == 0 else None)
        if comm.rank == 0:
            summary = {k: sum(t[k] for t in totals if t) for k in done}
            print(f"sweep {sweep.params.name}: {len(runs)} runs on {groups} group(s) of {args.ranks_per_run} rank(s): "
                  + ", ".join(f"{v} {k}" for k, v in summary.items()))
        return _exit(comm, 0)
    except MpiclipError as e:
        if comm is None or comm.rank == 0:
            print(f"mpiclip: error: {e}", file=sys.stderr, flush=True)
        return _exit(comm, e.exit_code)


def cmd_sweep_best(args) -> int:
    from mpiclip import plotting, report
    from mpiclip.sweep import best_runs

    sweep = _sweep_or_report(args.sweep)
    if sweep is None:
        return 2
    best = best_runs(sweep)
    sel = sweep.select
    rows = []
    for b in best:
        if b.run is None:
            rows.append([b.group, "-", "-", "-", "-", f"{b.tried} runs, none completed"])
            continue
        tr = b.trace
        final = plotting.y_values(tr, sel.metric)[-1]
        reached, value = b.score
        how = f"{value:.4g} bits to {sel.target:g}" if reached == 0 else f"{value:.4g} ({'min' if sel.criterion == 'min' else 'final'})"
        rows.append([b.group, b.run.label, f"{final:.3g}", f"{tr.bits_per_worker(sel.encoding)[-1]:.4g}", how,
                     f"{b.tried} runs, {b.failed} failed"])
    print(report.table(rows, ["group", "best run", f"final {sel.metric}", f"bits/worker ({sel.encoding})",
                              f"chosen by ({sel.criterion})", "tried"]))
    if args.plot:
        chosen = [b.trace for b in best if b.trace is not None]
        for b in best:
            if b.trace is not None:
                short = lambda key: key if key.endswith(".name") else key.split(".")[-1]
                b.trace.attrs["name"] = f"{b.group}: " + ",".join(f"{short(k)}={v}" for k, v in b.run.values
                                                                   if k not in sel.group)
        plotting.plot(chosen, args.plot, y=sel.metric, encoding=sel.encoding, title=args.title or sweep.params.name,
                      xmax=None)  # runs stop at the tolerance: show each chosen run whole
        print(f"plot: {args.plot}")
    return 0


# -------------------------------------------------------------------------------- privacy
def cmd_privacy(args) -> int:
    from mpiclip import privacy
    from mpiclip.errors import InputError, MpiclipError

    try:
        checks = [("--tau", args.tau, args.tau > 0, "must be > 0"), ("--rounds", args.rounds, args.rounds >= 1, "must be >= 1"),
                  ("--delta", args.delta, 0 < args.delta < 1, "must be in (0, 1)"),
                  ("--sigma", args.sigma, args.sigma is None or args.sigma >= 0, "must be >= 0"),
                  ("--epsilon", args.epsilon, args.epsilon is None or args.epsilon > 0, "must be > 0"),
                  ("--batch", args.batch, (args.batch is None) == (args.records is None), "goes with --records"),
                  ("--batch", args.batch, args.batch is None or 1 <= args.batch <= args.records, "must be in 1..--records")]
        for field, value, ok, reason in checks:
            if not ok:
                raise InputError(field, value, reason)
        sensitivity = 2 * args.tau if args.relation == "replace" else args.tau
        mech = lambda sigma: [privacy.Mechanism(sigma, sensitivity, args.relation, args.records, args.batch)]
        if args.sigma is not None:
            eps = privacy.Accountant(mech(args.sigma), args.delta, "--sigma").epsilon(args.rounds)
            print(f"σ = {args.sigma:g}, τ = {args.tau:g} ({args.relation}, sensitivity {sensitivity:g}), "
                  f"{args.rounds} rounds: ε = {eps:.6g} at δ = {args.delta:g}")
        else:
            sigma = privacy.sigma_for(args.epsilon, args.delta, args.rounds, mech(1.0), "--epsilon")
            print(f"ε = {args.epsilon:g} at δ = {args.delta:g} after {args.rounds} rounds with τ = {args.tau:g} "
                  f"({args.relation}): σ = {sigma:.6g} (noise multiplier σ/Δ = {sigma / sensitivity:.6g})")
        return 0
    except MpiclipError as e:
        print(f"mpiclip: error: {e}", file=sys.stderr)
        return e.exit_code


# -------------------------------------------------------------------------------- presets
def cmd_presets(args) -> int:
    from mpiclip.config import preset_names

    names = preset_names()
    if args.name is None:
        for name in names:
            text = resources.files("mpiclip.presets").joinpath(name + ".toml").read_text()
            first = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
            print(f"{name:24s} {first}")
        return 0
    if args.name not in names:
        print(f"mpiclip: error: preset = {args.name!r}: unknown (presets: {', '.join(names)})", file=sys.stderr)
        return 2
    print(resources.files("mpiclip.presets").joinpath(args.name + ".toml").read_text(), end="")
    return 0


# -------------------------------------------------------------------------------- options
def cmd_options(args) -> int:
    from mpiclip import config as cfg
    from mpiclip.compressors import COMPRESSORS
    from mpiclip.data import SOURCES, DataParams
    from mpiclip.data.partition import SPLITS
    from mpiclip.methods import METHODS
    from mpiclip.params import describe
    from mpiclip.problems import PROBLEMS
    from mpiclip.stepsize import StepsizeParams

    def keys(cls, indent="  "):
        return [f"{indent}{name} ({kind}, default {default!r}): {doc}" for name, kind, default, doc in describe(cls)]

    def registry(reg, selector, doc_of):
        out = []
        for name, entry in reg.items():
            out.append(f"  {selector} = {name!r}: {doc_of(entry)}")
            out += keys(entry.params, "      ")
        return out

    sections = {
        "run": keys(cfg.RunParams),
        "data": keys(DataParams) + ["  sources:"] + registry(SOURCES, "source", lambda s: s.doc)
        + ["  splits:"] + registry(SPLITS, "split", lambda s: s.doc),
        "problem": registry(PROBLEMS, "name", lambda s: s.doc),
        "method": registry(METHODS, "name", lambda m: (m.__doc__ or "").strip().split("\n")[0]),
        "compressor": registry(COMPRESSORS, "name", lambda s: s.doc),
        "stepsize": keys(StepsizeParams),
        "output": keys(cfg.OutputParams),
    }
    if args.section and args.section not in sections:
        print(f"mpiclip: error: section = {args.section!r}: unknown (sections: {', '.join(sections)})", file=sys.stderr)
        return 2
    for name, lines in sections.items():
        if args.section in (None, name):
            print(f"[{name}]")
            print("\n".join(lines))
            print()
    return 0
