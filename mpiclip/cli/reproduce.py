"""`mpiclip reproduce FAMILY...`: a family's sweeps, then its figures and tables (see mpiclip/reproduce)."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from mpiclip.cli.run import collective


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="a paper family's sweeps, then its figures (PNG, PDF) and tables (Markdown, CSV)",
        description="Runs the sweeps of a paper family (ef21, clip21, async, fed, dp, the deep-learning ef21-dl, clip21-dl, "
        "dp-dl, fed-dl, async-dl, or all) on the ranks of the job, "
        "at a laptop's size unless --full, skipping runs whose trace completed, then writes the family's page "
        "with its figures and tables. Launch it with mpiexec to use several cores.",
        epilog="examples:\n  mpiexec -n 2 python -m mpi4py -m mpiclip reproduce ef21 --data-dir ~/libsvm\n"
        "  mpiclip reproduce clip21 --full --slurm --sbatch='--time=02:00:00'\n"
        "  mpiclip reproduce ef21-dl --full --slurm --gpus 1 --data-dir ~/data --dry-run\n"
        "  mpiclip reproduce ef21 --full --report-only --out docs/reproduction",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="+", metavar="FAMILY", help="ef21, clip21, async, fed, dp; the deep-learning "
                   "ef21-dl, clip21-dl, dp-dl, fed-dl, async-dl; or all")
    p.add_argument("--full", action="store_true", help="the papers' sizes (default: the laptop preset)")
    p.add_argument("--out", metavar="DIR", help="the page, figures and tables (default: results/reproduce/FAMILY[-full]; "
                   "several families: FAMILY-FAMILY..., or all)")
    p.add_argument("--traces", metavar="DIR", help="sweep files and traces (default: results/sweeps/laptop, or "
                   "results/sweeps with --full: where `mpiclip sweep run` puts the shipped sweeps' traces)")
    p.add_argument("--data-dir", metavar="DIR", help="look for the data files (a9a.txt, ...) in DIR too")
    p.add_argument("--ranks-per-run", type=int, default=1, metavar="R", help="ranks per run (default 1)")
    p.add_argument("--force", action="store_true", help="rerun runs whose trace already completed")
    p.add_argument("--report-only", action="store_true", help="write the pages from the traces there are; run nothing")
    p.add_argument("--slurm", action="store_true", help="submit each sweep as a job array and the pages as a job "
                   "that waits for them, then return")
    p.add_argument("--runs-per-task", type=int, default=None, metavar="M", help="with --slurm: runs per array task "
                   "(default: the family's, 20, or 1 for the deep-learning families, whose runs take hours)")
    p.add_argument("--sbatch", default="", metavar="OPTIONS", help="with --slurm: more sbatch options, given with =, e.g. "
                   "--sbatch='--time=01:00:00 --partition=cpu'")
    p.add_argument("--max-array-size", type=int, default=None, metavar="N", help="with --slurm: the cluster's "
                   f"MaxArraySize (default: what `scontrol show config` says, else {MAX_ARRAY_SIZE}, Slurm's): larger sweeps "
                   "go in several arrays")
    p.add_argument("--gpus", type=int, default=0, metavar="G", help="run the networks on CUDA (problem.device = 'cuda'); "
                   "with --slurm each array task asks for G GPUs per task")
    p.add_argument("--dry-run", action="store_true", help="with --slurm: print the sbatch commands instead of submitting")
    p.set_defaults(func=cmd_reproduce)


MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize: array indices 0..1000


def command_line(args) -> str:
    """The command that made a page, as a reader would type it (no machine-specific directories)."""
    words = ["mpiclip", "reproduce", *args.families] + (["--full"] if args.full else [])
    return " ".join(words)


def cmd_reproduce(args) -> int:
    return collective(lambda comm: _reproduce(args, comm))


def _reproduce(args, comm) -> int:
    from mpiclip import reproduce
    from mpiclip.errors import InputError, MpiclipError
    from mpiclip.paths import check_printable, use_data_dir
    from mpiclip.sweep_run import run_sweep

    preset = "full" if args.full else "laptop"
    error, planned, jobs = None, [], None
    try:
        use_data_dir(args.data_dir)
        fams = reproduce.families(args.families)
        out, traces = reproduce.default_dirs(args.families, preset, args.out, args.traces)
        check_printable("--out", out)
        check_printable("--traces", traces)
        if args.ranks_per_run < 1 or comm.size % args.ranks_per_run:
            raise InputError("--ranks-per-run", args.ranks_per_run, f"must divide the {comm.size} ranks of the job")
        if args.slurm and comm.size > 1:
            raise InputError("--slurm", True, "submits jobs and returns: run it without mpiexec")
        if args.slurm and args.report_only:
            raise InputError("--report-only", True, "and --slurm are alternatives (the pages' job runs --report-only)")
        if args.runs_per_task is not None and args.runs_per_task < 1:
            raise InputError("--runs-per-task", args.runs_per_task, "must be >= 1")
        if args.max_array_size is not None and args.max_array_size < 1:
            raise InputError("--max-array-size", args.max_array_size, "must be >= 1")
        if args.gpus < 0:
            raise InputError("--gpus", args.gpus, "must be >= 0")
        if args.dry_run and not args.slurm:
            raise InputError("--dry-run", True, "prints what --slurm would submit; add --slurm")
        planned = [p for fam in fams for p in reproduce.plan(fam, preset, traces, cuda=args.gpus > 0)]
        if not args.report_only and not args.dry_run:
            reproduce.check_data([p.sweep for p in planned])
        jobs = submission(args, planned, out, traces) if args.slurm else None
    except MpiclipError as e:
        error = e
    comm.agree(error)
    if args.dry_run:
        for i, (what, cmd) in enumerate(jobs):
            if i == len(jobs) - 1:
                cmd = cmd[:2] + ["--dependency=afterany:<the job ids of the arrays above>"] + cmd[2:]
            print(f"# {what}\n{shlex.join(cmd)}")
        return 0
    if comm.rank == 0:
        reproduce.write_sweep_files(planned)
    if jobs is not None:
        return submit(jobs, out)
    failed = 0
    if not args.report_only:
        runs = [run for p in planned for run in p.sweep.runs]
        summary, stopped = run_sweep(runs, comm, args.ranks_per_run, args.force, f"mpiclip reproduce {' '.join(args.families)}")
        if stopped is not None:
            return 128 + stopped
        failed = summary["failed"]
        if comm.rank == 0:
            print(f"reproduce: {len(runs)} runs: " + ", ".join(f"{v} {k}" for k, v in summary.items()), flush=True)
    if comm.rank == 0:
        written, problems = reproduce.write_pages(planned, preset, out, command_line(args))
        for problem in problems:
            print(f"mpiclip: warning: figure {problem}", file=sys.stderr)
        for path in written:
            print(f"page: {path}")
        if failed:
            print(f"mpiclip: error: {failed} runs failed; the pages count them (see the traces' status)", file=sys.stderr)
    return 1 if failed else 0


def submission(args, planned, out: str, traces: str) -> list[tuple[str, list[str]]]:
    """The jobs of --slurm as (what, sbatch command): one array per sweep (several, each of at most
    --max-array-size tasks, with the offset of its first task in MPICLIP_TASK_OFFSET, where a sweep has more
    tasks), then the pages, which wait for them; InputError, before anything is submitted, if Slurm or the batch
    script is missing."""
    import shutil

    from mpiclip.errors import InputError

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "jobs", "slurm", "sweep.sbatch")
    if not os.path.isfile(script):
        raise InputError("--slurm", True, f"needs {script} (the batch script of an mpiclip checkout)")
    if shutil.which("sbatch") is None and not args.dry_run:
        raise InputError("--slurm", True, "needs sbatch on PATH (no Slurm here)")
    extra = shlex.split(args.sbatch)
    gpus = [f"--gpus-per-task={args.gpus}"] if args.gpus else []  # the arrays' tasks; the pages need none
    limit = args.max_array_size or cluster_max_array_size()
    jobs = []
    for p in planned:
        name = p.sweep.params.name
        per_task = args.runs_per_task or p.family.runs_per_task
        tasks = (len(p.sweep.runs) + per_task - 1) // per_task
        arrays = range(0, tasks, limit)
        for first in arrays:
            count = min(limit, tasks - first)
            part = f", tasks {first}-{first + count - 1}" if len(arrays) > 1 else ""
            jobs.append((f"sweep {name}, {len(p.sweep.runs)} runs in {tasks} array tasks{part}",
                         ["sbatch", "--parsable", f"--array=0-{count - 1}", f"--ntasks={args.ranks_per_run}",
                          f"--job-name=mpiclip-{name}", *([f"--export=ALL,MPICLIP_TASK_OFFSET={first}"] if first else []),
                          *gpus, *extra, script, os.path.abspath(p.path), str(per_task), str(args.ranks_per_run)]
                         + (["--force"] if args.force else [])))
    pages = [sys.executable, "-m", "mpiclip", "reproduce", *args.families, "--report-only",
             "--out", os.path.abspath(out), "--traces", os.path.abspath(traces)] + (["--full"] if args.full else []) \
        + ([f"--gpus={args.gpus}"] if args.gpus else [])
    jobs.append((f"the pages in {out}, after the sweeps",
                 ["sbatch", "--parsable", "--ntasks=1", "--job-name=mpiclip-reproduce", *extra,
                  "--output=" + os.path.join(os.path.abspath(out), "reproduce-%j.out"), "--wrap", shlex.join(pages)]))
    return jobs


def cluster_max_array_size() -> int:
    """The cluster's MaxArraySize as `scontrol show config` reports it, or Slurm's default where it says nothing."""
    import shutil
    import subprocess

    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "MaxArraySize" and value.strip().isdigit() and int(value) >= 1:
                return int(value)
    return MAX_ARRAY_SIZE


def submit(jobs: list[tuple[str, list[str]]], out: str) -> int:
    """Submit the arrays, then the pages' job with a dependency on all of them; print the job ids."""
    env = dict(os.environ)
    if os.path.isfile(os.path.join(sys.prefix, "bin", "activate")):
        env.setdefault("MPICLIP_VENV", sys.prefix)  # the batch script activates this environment
    os.makedirs(out, exist_ok=True)  # the pages' job writes its log there
    ids: list[str] = []
    for i, (what, cmd) in enumerate(jobs):
        if i == len(jobs) - 1:  # afterany: the pages count failed runs too
            cmd = cmd[:2] + [f"--dependency=afterany:{':'.join(ids)}"] + cmd[2:]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"mpiclip: error: sbatch failed: {proc.stderr.strip()} (submitted so far: {', '.join(ids) or 'none'})",
                  file=sys.stderr)
            return 1
        ids.append(proc.stdout.strip().split(";")[0])
        print(f"submitted job {ids[-1]}: {what}")
    return 0
