"""Sizes checked before anything is allocated: a run that cannot fit fails in one line instead of stalling.

The estimates are deliberately rough upper bounds of what a rank keeps: the data it holds, and a few
d-vectors per local worker (gradients, method states, messages). A rank's share of the machine is the
available memory divided by the ranks on its node (``MPI_LOCALNRANKS`` of MPICH's launcher, Open MPI's
``OMPI_COMM_WORLD_LOCAL_SIZE``, or Slurm's tasks per node; 1 if none is set).
"""

from __future__ import annotations

import math
import os

from mpiclip.errors import InputError

MAX_INDEX = 2**31 - 1  # CSR column indices are int32 (scipy's and the wire's layout)
WORKER_VECTORS = 4  # d-vectors a rank keeps per local worker: gradient, two method states, message
SHARED_VECTORS = 10  # d-vectors per rank: x, the server state, sums, the trace's and checkpoint's buffers
# A synchronous round steps its local workers in chunks whose (chunk, d) arrays stay within this many bytes (at
# least one worker): a chunk's temporaries (its gradients, their differences, a message) are then a few times
# 32 MiB or a few d-vectors, against the (n_local, d) state a rank keeps anyway, while a chunk's arrays are still
# large enough that its Python work (the step's calls, ~0.1 ms) is small next to passing over them (~10 ms).
CHUNK_BYTES = 32 * 2**20
MAX_LISTED = 10**6  # runs `sweep list` prints one line each; a larger grid is counted, and listed a slice at a time
MAX_RUNS_AT_ONCE = 10**5  # runs one process composes and validates before its first starts (`run`, `sweep run`)


def available_memory() -> float:
    """Bytes this process may still use: MemAvailable (Linux), else the free physical pages; inf if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def ranks_on_this_node() -> int:
    for key in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def gigabytes(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GB"


def check_fits(nbytes: float, field: str, value, what: str) -> None:
    """Raise InputError(field, value) if ``nbytes`` (per rank) exceed this rank's share of the memory."""
    share = available_memory() / ranks_on_this_node()
    if nbytes > share:
        raise InputError(field, value, f"needs about {gigabytes(nbytes)} per rank for {what}, and each of the "
                         f"{ranks_on_this_node()} rank(s) on this node has about {gigabytes(share)} available")


def check_run(d: int, workers_per_rank: int, field: str, value) -> None:
    """The vectors a rank keeps for its workers, in dimension d."""
    vectors = WORKER_VECTORS * workers_per_rank + SHARED_VECTORS
    check_fits(8.0 * d * vectors, field, value, f"{vectors} vectors of dimension d = {d:,} "
               f"({workers_per_rank} worker(s) on the rank)")


def check_row_buffer(rows: int, workers_per_rank: int, per_worker: int, per_row: int) -> None:
    """The trace rows a rank buffers between flushes (``output.flush_rows``): ``per_worker`` numbers per local worker
    and ``per_row`` more per row (recorder.Recorder)."""
    numbers = rows * (workers_per_rank * per_worker + per_row)
    check_fits(8.0 * numbers, "output.flush_rows", rows, f"the trace's buffer of {rows:,} rows × {workers_per_rank} "
               f"worker(s) × {per_worker} values")
