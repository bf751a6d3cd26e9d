"""Communicators: only :mod:`mpiclip.comm.mpi` imports mpi4py (docs/design.md §2 rule 1, §3).

Two implementations share one interface: :class:`SerialComm` (one process holds every worker; no
MPI at all) and :class:`MPIComm` (buffer-based collectives on numpy arrays). Workers are laid out
over ranks in contiguous blocks (:class:`Layout`), so gathering in rank order is gathering in
worker order. Every reduction that shapes the trajectory can be made *ordered*: the per-worker
terms are summed one after another in worker-id order, which gives the same bits on 1, 2 or n
ranks.

The point-to-point calls (send/recv, isend/irecv, probe, waitany) serve asynchronous server/worker
protocols. They move contiguous numeric numpy arrays only, never pickles. On :class:`SerialComm` a
process can only talk to itself: messages go through a loopback mailbox, and a blocking call that
nothing could ever satisfy raises instead of hanging.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from mpiclip.comm.base import ANY_SOURCE, ANY_TAG, CANCELLED, AgreedError, Comm, Layout, Request, Status
from mpiclip.comm.mpi import MPIComm
from mpiclip.comm.serial import SerialComm
from mpiclip.errors import InputError

__all__ = ["ANY_SOURCE", "ANY_TAG", "CANCELLED", "AgreedError", "Comm", "Layout", "MPIComm", "Request", "SerialComm",
           "Status", "make_comm"]


_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_ID")


def make_comm(kind: Optional[str] = None) -> Comm:
    """The communicator for this process.

    ``kind`` (or the environment variable MPICLIP_COMM) is 'serial', 'mpi' or 'auto' (default): MPI when
    an MPI launcher or srun started us or mpi4py.MPI is already initialised (``python -m mpi4py``),
    otherwise the serial communicator, so a plain ``python -m mpiclip`` needs no MPI library at all.
    """
    kind = kind or os.environ.get("MPICLIP_COMM", "auto")
    if kind not in ("auto", "serial", "mpi"):
        raise InputError("MPICLIP_COMM", kind, "must be one of auto, serial, mpi")
    launched = any(v in os.environ for v in _LAUNCHER_VARS) or "mpi4py.MPI" in sys.modules
    if kind == "serial" or (kind == "auto" and not launched):
        return SerialComm()
    comm = MPIComm()
    tasks = os.environ.get("SLURM_NTASKS") if "SLURM_STEP_ID" in os.environ else None
    if tasks is not None and tasks.isdigit() and int(tasks) > 1 and comm.size == 1:
        comm.finalize()  # a clean exit: each of these singleton worlds would otherwise MPI_Abort
        raise InputError(
            "SLURM_NTASKS", int(tasks),
            "srun started several tasks but MPI sees a world of size 1; launch with srun --mpi=pmi2 "
            "(MPICH) or --mpi=pmix (Open MPI)",
        )
    return comm
