"""Communicators: the only module that imports mpi4py (DESIGN §2 rule 1, §3).

Two implementations share one interface: :class:`SerialComm` (one process holds every worker; no
MPI at all) and :class:`MPIComm` (buffer-based collectives on numpy arrays). Workers are laid out
over ranks in contiguous blocks (:class:`Layout`), so gathering in rank order is gathering in
worker order. Every reduction that shapes the trajectory can be made *ordered*: the per-worker
terms are summed one after another in worker-id order, which gives the same bits on 1, 2 or n
ranks.
"""

from __future__ import annotations

import os
import socket
import sys
import zlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from mpiclip.errors import InputError, MpiclipError
from mpiclip.wire import ENTRY, RowReduce, SparseGather, sequential_sum

_RING_TAG, _STREAM_TAG = 11, 12


class AgreedError(MpiclipError):
    """An error found on some rank during setup, raised on every rank after :meth:`Comm.agree`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Layout:
    """Contiguous blocks of workers per rank; the first ``n % P`` ranks hold one more."""

    n_workers: int
    n_ranks: int

    @property
    def counts(self) -> np.ndarray:
        base, extra = divmod(self.n_workers, self.n_ranks)
        return np.array([base + (r < extra) for r in range(self.n_ranks)], dtype=np.int64)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def workers_of(self, rank: int) -> np.ndarray:
        return np.arange(self.starts[rank], self.starts[rank] + self.counts[rank])


class Comm:
    """Interface shared by :class:`SerialComm` and :class:`MPIComm`."""

    rank: int = 0
    size: int = 1
    library: str = "none (serial)"

    workers_per_rank: np.ndarray = np.ones(1, dtype=np.int64)

    def bind(self, n_workers: int) -> Layout:
        """Fix the worker layout used by the collectives below; returns it."""
        layout = Layout(n_workers, self.size)
        self.workers_per_rank = layout.counts
        return layout

    # -- setup-time (pickle-based, small objects) --------------------------------------------------
    def agree(self, error: Optional[BaseException]) -> None:
        """Collective: if any rank passes an error, raise the lowest rank's error on every rank."""
        raise NotImplementedError

    def bcast(self, obj, root: int = 0):
        raise NotImplementedError

    def allgather_objects(self, obj) -> list:
        """Every rank's ``obj`` (pickled; for small setup and report data, never per round)."""
        raise NotImplementedError

    def hostnames(self) -> list[str]:
        raise NotImplementedError

    # -- hot path (buffer-based) ---------------------------------------------------------------
    def sum_rows(self, rows: np.ndarray, ordered: bool) -> np.ndarray:
        """Σ over all workers of their rows (local ``rows`` is (n_local, m)); the result on every rank."""
        raise NotImplementedError

    def gather_sparse(self, counts, values, indices, flags=None, fixed_count=None) -> SparseGather:
        """Allgatherv of every worker's (values, indices) payload, in worker order.

        ``fixed_count`` promises that every worker on every rank sends exactly that many entries and
        saves the exchange of counts.
        """
        raise NotImplementedError

    def allgather_rows(self, rows: np.ndarray) -> np.ndarray:
        """(n_local, m) float rows of every rank -> (n, m) on every rank, in worker order."""
        raise NotImplementedError

    def gather_to_root(self, block: np.ndarray) -> Optional[np.ndarray]:
        """(rows, n_local, m) blocks of all ranks -> (rows, n, m) on rank 0 (None elsewhere)."""
        raise NotImplementedError

    def stream_to_root(self, block: np.ndarray, write: Callable[[int, np.ndarray], None]) -> None:
        """Hand every rank's (n_local, ...) block, in rank order, to ``write(first_worker, block)`` on rank 0.

        One rank's block crosses the wire at a time, so rank 0 never holds more than its own and one other
        rank's rows (a checkpoint of n workers' d-vectors must not need n·d memory on one rank)."""
        raise NotImplementedError

    def any(self, flag: bool) -> bool:
        raise NotImplementedError

    def max_flags(self, flags: np.ndarray) -> np.ndarray:
        """Elementwise maximum over ranks of a small float array (requests every rank must act on)."""
        raise NotImplementedError

    def same_on_all(self, x: np.ndarray) -> tuple[bool, list[int]]:
        """Compare a checksum of ``x`` across ranks; returns (all equal, per-rank checksums)."""
        raise NotImplementedError

    def finalize(self) -> None:
        pass

    def row_reduce(self) -> RowReduce:
        """The ordered cross-rank reductions, for code that must not see the communicator (problems)."""
        return RowReduce(sum=lambda rows: self.sum_rows(rows, ordered=True), gather=self.allgather_rows)


class SerialComm(Comm):
    """One process holds every worker; the same results as MPIComm in ordered mode."""

    def split(self, color: int) -> "SerialComm":
        return self

    def agree(self, error):
        if error is not None:
            raise error

    def bcast(self, obj, root=0):
        return obj

    def allgather_objects(self, obj):
        return [obj]

    def hostnames(self):
        return [socket.gethostname()]

    def sum_rows(self, rows, ordered):
        return sequential_sum(rows)

    def gather_sparse(self, counts, values, indices, flags=None, fixed_count=None):
        return SparseGather(counts, values, indices, flags)

    def allgather_rows(self, rows):
        return np.asarray(rows, dtype=np.float64)

    def gather_to_root(self, block):
        return block

    def stream_to_root(self, block, write):
        write(0, block)

    def any(self, flag):
        return bool(flag)

    def max_flags(self, flags):
        return np.asarray(flags, dtype=np.float64).copy()

    def same_on_all(self, x):
        return True, [_checksum(x)]


class MPIComm(Comm):
    """Collectives over an mpi4py communicator (COMM_WORLD unless given)."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self._MPI = MPI
        self._c = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self._c.Get_rank(), self._c.Get_size()
        self._layouts: dict = {}
        self.library = MPI.Get_library_version().strip().splitlines()[0].strip()

    def split(self, color: int) -> "MPIComm":
        """A sub-communicator (used by tests to run 1, 2 and 4 ranks in one job)."""
        return MPIComm(self._c.Split(color, self.rank))

    def agree(self, error):
        report = None if error is None else (str(error), getattr(error, "exit_code", 1))
        reports = self.allgather_objects(report)
        first = next((r for r in reports if r is not None), None)
        if first is not None:
            if report == first:
                raise error
            raise AgreedError(*first) from error

    def bcast(self, obj, root=0):
        return self._c.bcast(obj, root=root)

    def allgather_objects(self, obj):
        return self._c.allgather(obj)

    def hostnames(self):
        return sorted(set(self.allgather_objects(self._MPI.Get_processor_name())))

    def sum_rows(self, rows, ordered):
        MPI = self._MPI
        m = rows.shape[1]
        if not ordered:
            local = rows.sum(axis=0)
            out = np.empty(m, dtype=np.float64)
            self._c.Allreduce(local, out, op=MPI.SUM)
            return out
        # Ring: rank r adds its workers, in order, to the partial sum of ranks < r.
        start = None
        if self.rank > 0:
            start = np.empty(m, dtype=np.float64)
            self._c.Recv(start, source=self.rank - 1, tag=_RING_TAG)
        acc = sequential_sum(np.ascontiguousarray(rows, dtype=np.float64), start)
        if self.rank < self.size - 1:
            self._c.Send(acc, dest=self.rank + 1, tag=_RING_TAG)
        self._c.Bcast(acc, root=self.size - 1)
        return acc

    def gather_sparse(self, counts, values, indices, flags=None, fixed_count=None):
        workers = self.workers_per_rank
        if fixed_count is not None:
            all_counts, recv_spec = self._fixed_layout(fixed_count)
        else:
            all_counts = np.empty(int(workers.sum()), dtype=np.int64)
            self._c.Allgatherv(np.ascontiguousarray(counts, dtype=np.int64), (all_counts, workers))
            recv_spec = self._entry_layout(all_counts)
        all_flags = None
        if flags is not None:
            all_flags = np.empty(int(workers.sum()), dtype=np.int8)
            self._c.Allgatherv(np.ascontiguousarray(flags, dtype=np.int8), (all_flags, workers))
        total, sizes, displacements = recv_spec
        if indices is None:  # positions regenerated by the receiver: values only
            vals = np.empty(total, dtype=np.float64)
            count = sizes // ENTRY.itemsize
            self._c.Allgatherv(np.ascontiguousarray(values, dtype=np.float64),
                               (vals, (count, displacements // ENTRY.itemsize)))
            return SparseGather(all_counts, vals, None, all_flags)
        # one collective for values and indices: packed (float64, int32) records of 12 bytes
        send = np.empty(len(values), dtype=ENTRY)
        send["v"] = values
        send["i"] = indices
        recv = np.empty(total, dtype=ENTRY)
        self._c.Allgatherv([send, self._MPI.BYTE], [recv, (sizes, displacements), self._MPI.BYTE])
        return SparseGather(all_counts, recv["v"], recv["i"], all_flags)

    def _entry_layout(self, all_counts: np.ndarray):
        workers = self.workers_per_rank
        per_rank = np.add.reduceat(all_counts, np.concatenate([[0], np.cumsum(workers)[:-1]]))
        sizes = per_rank * ENTRY.itemsize
        return int(per_rank.sum()), sizes, np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def _fixed_layout(self, k: int):
        key = (k, tuple(self.workers_per_rank))
        if key not in self._layouts:
            all_counts = np.full(int(self.workers_per_rank.sum()), k, dtype=np.int64)
            all_counts.flags.writeable = False
            self._layouts[key] = (all_counts, self._entry_layout(all_counts))
        return self._layouts[key]

    def allgather_rows(self, rows):
        m = rows.shape[1]
        out = np.empty((int(self.workers_per_rank.sum()), m), dtype=np.float64)
        self._c.Allgatherv(np.ascontiguousarray(rows, dtype=np.float64), (out, self.workers_per_rank * m))
        return out

    def gather_to_root(self, block):
        rows, n_local, m = block.shape
        sizes = self.workers_per_rank
        recv = np.empty(rows * int(sizes.sum()) * m, dtype=np.float64) if self.rank == 0 else None
        spec = (recv, sizes * rows * m) if self.rank == 0 else None
        self._c.Gatherv(np.ascontiguousarray(block, dtype=np.float64), spec, root=0)
        if self.rank != 0:
            return None
        parts = np.split(recv, np.cumsum(sizes * rows * m)[:-1])
        return np.concatenate([p.reshape(rows, s, m) for p, s in zip(parts, sizes)], axis=1)

    def stream_to_root(self, block, write):
        block = np.ascontiguousarray(block)
        if self.rank != 0:
            self._c.Send(block, dest=0, tag=_STREAM_TAG)
            return
        write(0, block)
        layout = Layout(int(self.workers_per_rank.sum()), self.size)
        for r in range(1, self.size):
            part = np.empty((int(layout.counts[r]),) + block.shape[1:], dtype=block.dtype)
            self._c.Recv(part, source=r, tag=_STREAM_TAG)
            write(int(layout.starts[r]), part)

    def any(self, flag):
        out = np.zeros(1, dtype=np.int64)
        self._c.Allreduce(np.array([int(bool(flag))], dtype=np.int64), out, op=self._MPI.MAX)
        return bool(out[0])

    def max_flags(self, flags):
        out = np.empty(len(flags), dtype=np.float64)
        self._c.Allreduce(np.ascontiguousarray(flags, dtype=np.float64), out, op=self._MPI.MAX)
        return out

    def same_on_all(self, x):
        sums = np.empty(self.size, dtype=np.int64)
        self._c.Allgather(np.array([_checksum(x)], dtype=np.int64), sums)
        return bool(np.all(sums == sums[0])), [int(s) for s in sums]

    def finalize(self):
        if not self._MPI.Is_finalized():
            self._MPI.Finalize()


def _checksum(x: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(x).view(np.uint8))


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
