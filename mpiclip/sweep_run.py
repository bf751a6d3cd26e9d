"""Running a sweep (:mod:`mpiclip.sweep` defines it): the job's ranks form groups that take runs in turn.

Runs whose trace completed with the same config and data are skipped (the session's ``prepare`` decides,
comparing the trace's config hash and data checksum: a point whose config or data changed runs again); a
run stopped by a signal resumes from its checkpoint the next time (the sweep's runs use ``run.resume =
"auto"``), any other unfinished run starts again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Optional

from mpiclip import session as sessions
from mpiclip.comm import Comm
from mpiclip.errors import InputError, RunFailed
from mpiclip.limits import MAX_RUNS_AT_ONCE

if TYPE_CHECKING:  # `mpiclip run` slices its runs here without reading any sweep file
    from mpiclip.sweep import SweepRun


def slice_of(runs: Sequence, task: Optional[int], runs_per_task: int) -> list:
    """The runs of array task ``task`` (all of them without one), made from a lazy sequence of runs (only the
    slice's); InputError for a slice that does not exist, or for more runs than one process takes at once."""
    if runs_per_task < 1:
        raise InputError("--runs-per-task", runs_per_task, "must be >= 1")
    if task is None:
        if len(runs) > MAX_RUNS_AT_ONCE:
            raise InputError("runs", len(runs), f"too many for one process (at most {MAX_RUNS_AT_ONCE:,}): run slices "
                             "of them with --task I --runs-per-task M, e.g. as a Slurm array (jobs/slurm/submit_sweep.sh)")
        return list(runs)
    if runs_per_task > MAX_RUNS_AT_ONCE:
        raise InputError("--runs-per-task", runs_per_task, f"is more runs than one process takes at once "
                         f"(at most {MAX_RUNS_AT_ONCE:,})")
    if not 0 <= task * runs_per_task < len(runs):
        raise InputError("--task", task, f"is out of range: {len(runs)} runs, {runs_per_task} per task")
    return list(runs[task * runs_per_task : (task + 1) * runs_per_task])


def run_sweep(runs: list[SweepRun], comm: Comm, ranks_per_run: int = 1, force: bool = False, command: str = "",
              say: Callable[[str], None] = print) -> tuple[dict, Optional[int]]:
    """Collective over ``comm``: (counts of completed/skipped/failed runs over all groups, the signal that
    stopped a run or None). ``say`` prints on each group's first rank."""
    groups = comm.size // ranks_per_run
    group = comm.rank // ranks_per_run
    team = comm.split(group) if groups > 1 else comm
    tell = say if team.rank == 0 else (lambda *a, **k: None)
    done = {"completed": 0, "skipped": 0, "failed": 0}
    stopped = None
    for run in runs[group::groups]:
        config = run.config
        if force:  # start again, whatever checkpoint there is
            config = dataclasses.replace(config, run=dataclasses.replace(config.run, resume="no"))
        (prepared,) = sessions.prepare_all([config], team, command, lambda *a: None)
        if prepared.skip:  # completed with this config and data
            done["skipped"] += 1
            continue
        try:
            result = sessions.execute(prepared)
        except RunFailed as e:  # ranks out of step: recorded in the trace; go on with the sweep
            tell(f"[{run.index}] {run.label}: failed: {e}")
            done["failed"] += 1
            continue
        done["completed" if result.status.startswith("completed") else "failed"] += 1
        tell(f"[{run.index}] {run.label}: {result.status}; ‖∇f‖² = {result.grad_norm_sq:.4g} ({result.wall:.1f} s)")
        if result.status.startswith("interrupted"):
            stopped = prepared.signal
            break
    totals = comm.allgather_objects(done if team.rank == 0 else None)
    return {k: sum(t[k] for t in totals if t) for k in done}, stopped
