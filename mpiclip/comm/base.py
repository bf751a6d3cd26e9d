"""The communicator interface shared by SerialComm and MPIComm; no MPI here.

Also the worker layout over ranks and the point-to-point statuses and requests."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np

from mpiclip.errors import MpiclipError
from mpiclip.wire import ANY_SOURCE, ANY_TAG, Layout, RowReduce, SparseGather  # noqa: F401  (re-exported)

_RING_TAG, _STREAM_TAG = 11, 12


@dataclass(frozen=True)
class Status:
    """A received or probed message: its sender, its tag and its length in elements.

    ``count`` counts elements of the receive buffer's dtype after a receive, and of the ``dtype``
    argument after a probe (bytes unless given). So a receiver of a message of known dtype but
    unknown length probes, allocates, then receives exactly that message::

        st = comm.probe(tag=TAG, dtype=np.float64)
        buf = np.empty(st.count, dtype=np.float64)
        comm.recv(buf, st.source, st.tag)

    (the receive matches the probed message because messages between two ranks do not overtake
    each other; this holds when a single thread receives.)
    """

    source: int
    tag: int
    count: int


CANCELLED = Status(ANY_SOURCE, ANY_TAG, 0)  # what a cancelled receive completes with


class Request:
    """A pending :meth:`Comm.isend` or :meth:`Comm.irecv`.

    It holds ``buf`` so that the array outlives the transfer even if the caller drops it. Once the
    request has completed (through ``wait``, ``test``, ``cancel`` or the comm's ``waitany``/``waitall``)
    it is inactive: ``waitany`` skips it and ``wait``/``test`` return the same status again. A send's
    status describes the message sent (source is the sender's own rank).
    """

    def __init__(self, buf: np.ndarray):
        self.buf = buf
        self._status: Optional[Status] = None

    @property
    def active(self) -> bool:
        """Not completed yet (as far as the caller has been told)."""
        return self._status is None

    def wait(self) -> Status:
        """Block until the transfer is complete; its status."""
        raise NotImplementedError

    def test(self) -> Optional[Status]:
        """The status if the transfer is complete, else None (never blocks)."""
        raise NotImplementedError

    def cancel(self) -> bool:
        """Withdraw a receive that has not matched a message yet.

        Returns True if it was withdrawn (it then completes with :data:`CANCELLED`), False if it
        had already completed. Meant for receives: MPI 4.1 deprecates cancelling sends.
        """
        raise NotImplementedError


def _element_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind not in "biufc" or dt.fields is not None:
        raise ValueError(f"point-to-point messages carry numeric arrays; dtype {dt} is not supported")
    return dt


def _check_buffer(buf, writable: bool) -> np.ndarray:
    # MPI reads and writes the array's memory in place, so a copy (non-contiguous) would be wrong
    if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous or (writable and not buf.flags.writeable):
        raise ValueError("point-to-point buffers must be C-contiguous numpy arrays"
                         + (" and writable" if writable else ""))
    _element_dtype(buf.dtype)
    return buf


def _elements(nbytes: int, dtype) -> int:
    dt = np.dtype(dtype)
    if nbytes % dt.itemsize:
        raise ValueError(f"a message of {nbytes} bytes is not a whole number of {dt} elements")
    return nbytes // dt.itemsize


class AgreedError(MpiclipError):
    """An error found on some rank during setup, raised on every rank after :meth:`Comm.agree`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Comm:
    """Interface shared by :class:`SerialComm` and :class:`MPIComm`."""

    rank: int = 0
    size: int = 1
    library: str = "none (serial)"

    workers_per_rank: np.ndarray = np.ones(1, dtype=np.int64)
    # workers_per_rank as a tuple (to key what a collective caches for the layout) and its sum, made once by bind:
    # the hot collectives would otherwise convert or sum the array at every call
    layout_key: tuple = (1,)
    bound_workers: int = 1

    def bind(self, n_workers: int) -> Layout:
        """Fix the worker layout used by the collectives below; returns it."""
        layout = Layout(n_workers, self.size)
        self.workers_per_rank = layout.counts
        self.layout_key = tuple(int(c) for c in layout.counts)
        self.bound_workers = sum(self.layout_key)
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

    def local_rank(self) -> int:
        """Collective: this rank's index among the ranks of its node (which GPU it takes)."""
        return 0

    # -- hot path (buffer-based) ---------------------------------------------------------------
    def sum_rows(self, rows: np.ndarray, ordered: bool) -> np.ndarray:
        """Σ over all workers of their rows (local ``rows`` is (n_local, m)); the result on every rank."""
        raise NotImplementedError

    def sum_rows_of(self, rows: np.ndarray, senders: np.ndarray, ordered: bool, columns: Optional[np.ndarray] = None):
        """:meth:`sum_rows` where only some workers send (a federated round's sampled clients): ``senders`` the
        increasing ids of the workers that do, the same on every rank; ``rows`` (k, m) this rank's senders' rows
        in that order; every other worker's row is zero. The same bits as :meth:`sum_rows` of those rows filled
        in with zeros, without the n − P rows of zeros. ``columns`` (n_local, c), if given, are columns every
        worker sends (metrics), summed in worker order in the same collective where the sum is ordered: the
        result is then (the rows' sum, the columns' sum)."""
        if columns is None:
            return self.sum_rows(self._filled(rows, senders), ordered)
        if not ordered:  # as two sums of their own, whose bits the unordered reduction keeps
            return self.sum_rows(self._filled(rows, senders), ordered), self.sum_rows(columns, ordered)
        total = self.sum_rows(np.hstack([self._filled(rows, senders), columns]), ordered)
        return total[: rows.shape[1]], total[rows.shape[1] :]

    def _filled(self, rows: np.ndarray, senders: np.ndarray) -> np.ndarray:
        """(n_local, m): this rank's senders' ``rows`` in their places, zeros elsewhere."""
        first, n_local = self._block()
        mine = senders[(senders >= first) & (senders < first + n_local)]
        if len(mine) != len(rows):
            raise ValueError(f"{len(rows)} rows for the {len(mine)} senders of rank {self.rank}")
        dense = np.zeros((n_local, rows.shape[1]))
        dense[mine - first] = rows
        return dense

    def _block(self) -> tuple[int, int]:
        """(the first worker of this rank, its number of workers)."""
        counts = self.workers_per_rank
        return int(counts[: self.rank].sum()), int(counts[self.rank])

    def sum_row_blocks(self, blocks: Iterable[list], m: int, ordered: bool) -> np.ndarray:
        """``sum_rows`` of the local rows given as consecutive blocks, each made only when it is taken (a rank never
        holds all its rows at once) and each a list of pieces side by side (b rows each, m columns in all, never
        stacked into one array), with the same bits as ``sum_rows`` of the rows stacked, and the same collective:
        the ranks decide how to sum from the rows' size in all, never from how a rank holds its rows. Ordered and
        above the size ``sum_rows`` gathers, a rank takes its first block only once the ranks before it have
        summed theirs (the worker-order sum needs their partial sum first), so the ranks make their blocks one
        after another."""
        raise NotImplementedError

    def gather_sparse(self, counts, values, indices, flags=None, fixed_count=None) -> SparseGather:
        """Allgatherv of every worker's (values, indices) payload, in worker order.

        ``fixed_count`` promises that every worker on every rank sends exactly that many entries and
        saves the exchange of counts.
        """
        raise NotImplementedError

    def bcast_array(self, buf: np.ndarray, root: int) -> None:
        """Collective: ``buf`` (C-contiguous, the same shape everywhere) takes the root's values on every rank."""
        raise NotImplementedError

    def ibcast_array(self, buf: np.ndarray, root: int) -> "Request":
        """Collective, nonblocking: ``bcast_array`` begun; ``buf`` holds the root's values once the request completes.
        Every rank must begin it (in the same order as its other collectives) and complete it before reusing ``buf``."""
        raise NotImplementedError

    def allgather_sized(self, values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Collective: every rank's 1-D float ``values``, concatenated in rank order on every rank, where every rank
        already knows each rank's length (``sizes``, one per rank, the same everywhere): one Allgatherv, no exchange
        of counts (the asynchronous runner's block of arrivals, whose owners the replicated clock names)."""
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

    def split(self, color: int, key: Optional[int] = None) -> "Comm":
        """Collective: the communicator of the ranks that pass the same ``color``, ranked by ``key``
        (default: the rank here). Messages sent on one communicator never match receives on another."""
        raise NotImplementedError

    # -- point-to-point (buffer-based; arrays must be C-contiguous and numeric) --------------------
    def send(self, buf: np.ndarray, dest: int, tag: int = 0) -> None:
        """Send ``buf`` to rank ``dest``; returns once ``buf`` may be reused.

        MPI may wait for the matching receive (MPICH does for a send to one's own rank): post that
        receive first or use :meth:`isend`. SerialComm always buffers.
        """
        raise NotImplementedError

    def recv(self, buf: np.ndarray, source: int = ANY_SOURCE, tag: int = ANY_TAG) -> Status:
        """Receive the oldest matching message into ``buf``, which must be at least as long.

        ``status.count`` is the number of elements of ``buf.dtype`` written (the message may be shorter).
        """
        raise NotImplementedError

    def isend(self, buf: np.ndarray, dest: int, tag: int = 0) -> Request:
        """Start a send; ``buf`` must not be modified until the request completes."""
        raise NotImplementedError

    def irecv(self, buf: np.ndarray, source: int = ANY_SOURCE, tag: int = ANY_TAG) -> Request:
        """Start a receive into ``buf``; read it only after the request completes."""
        raise NotImplementedError

    def iprobe(self, source: int = ANY_SOURCE, tag: int = ANY_TAG, dtype=np.uint8) -> Optional[Status]:
        """The status of the oldest matching message, without receiving it, or None if there is none yet.

        ``count`` is in elements of ``dtype`` (bytes by default); ValueError if the message is not a
        whole number of them.
        """
        raise NotImplementedError

    def probe(self, source: int = ANY_SOURCE, tag: int = ANY_TAG, dtype=np.uint8) -> Status:
        """Like :meth:`iprobe`, but block until a matching message is there."""
        raise NotImplementedError

    def waitany(self, requests: list[Request]) -> tuple[int, Status]:
        """Block until one active request of ``requests`` completes; its index and status.

        Called repeatedly on the same list it returns every index once. ValueError if none is active.
        """
        raise NotImplementedError

    def waitall(self, requests: list[Request]) -> list[Status]:
        """Block until every request completes; their statuses, in order."""
        raise NotImplementedError

    def _peer(self, rank: int, wildcard: bool) -> int:
        if (wildcard and rank == ANY_SOURCE) or 0 <= rank < self.size:
            return rank
        raise ValueError(f"rank {rank} is not in this communicator of {self.size} rank(s)"
                         + (" nor ANY_SOURCE" if wildcard else ""))

    @staticmethod
    def _tag(tag: int, wildcard: bool) -> int:
        if (wildcard and tag == ANY_TAG) or tag >= 0:
            return tag
        raise ValueError(f"tag {tag} must be >= 0" + (" or ANY_TAG" if wildcard else ""))

    def finalize(self) -> None:
        pass

    def row_reduce(self) -> RowReduce:
        """The ordered cross-rank reductions, for code that must not see the communicator (problems)."""
        return RowReduce(sum=lambda rows: self.sum_rows(rows, ordered=True), gather=self.allgather_rows)


def _checksum(x: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(x).view(np.uint8))
