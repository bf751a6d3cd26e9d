"""Communicators: the only module that imports mpi4py (DESIGN §2 rule 1, §3).

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
import socket
import sys
import zlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from mpiclip.errors import InputError, MpiclipError
from mpiclip.wire import ENTRY, RowReduce, SparseGather, sequential_sum

_RING_TAG, _STREAM_TAG = 11, 12

# Wildcards of the point-to-point calls. MPI's own values differ between libraries (MPICH's
# MPI_ANY_SOURCE is -2), so callers use these and MPIComm translates them.
ANY_SOURCE = -1
ANY_TAG = -1


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


def _deadlock(call: str) -> RuntimeError:
    return RuntimeError(f"SerialComm: {call} has no matching message to wait for, and a single process "
                        "cannot send one while it waits: in MPI this would block forever (deadlock)")


class _LoopbackRequest(Request):
    """A SerialComm request: a send completes at once (its data is copied), a receive when matched."""

    def __init__(self, buf: np.ndarray, source: int, tag: int, done: Optional[Status] = None):
        super().__init__(buf)
        self.source, self.tag = source, tag
        self._done: Optional[Status] = done  # set when matched; _status only once reported to the caller
        self._error: Optional[Exception] = None
        self._mailbox: Optional[list] = None  # the posted-receive list holding it while unmatched

    def matches(self, tag: int) -> bool:
        return self.tag in (ANY_TAG, tag)

    def deliver(self, tag: int, data: bytes) -> None:
        self._mailbox = None
        if len(data) > self.buf.nbytes:  # MPI_ERR_TRUNCATE: MPI also consumes the message
            self._error = ValueError(f"message truncated: {len(data)} bytes into a buffer of {self.buf.nbytes}")
            return
        self.buf.reshape(-1).view(np.uint8)[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        try:
            self._done = Status(0, tag, _elements(len(data), self.buf.dtype))
        except ValueError as e:
            self._error = e

    def test(self):
        if self._error is not None:
            raise self._error
        if self._status is None and self._done is not None:
            self._status = self._done
        return self._status

    def wait(self):
        status = self.test()
        if status is None:
            raise _deadlock(f"wait() on irecv(source={self.source}, tag={self.tag})")
        return status

    def cancel(self):
        if self._mailbox is None:
            return False
        self._mailbox.remove(self)
        self._mailbox = None
        self._done = self._status = CANCELLED
        return True


class SerialComm(Comm):
    """One process holds every worker; the same results as MPIComm in ordered mode.

    Point-to-point: rank 0 can only talk to itself. A sent message is copied into a FIFO queue
    unless a posted receive is waiting for it; receives and probes take the oldest matching message,
    which is MPI's non-overtaking order for a single sender.
    """

    def __init__(self):
        # one queue for all tags, so that an ANY_TAG receive finds the oldest message of any tag
        self._queue: list[tuple[int, bytes]] = []
        self._posted: list[_LoopbackRequest] = []  # irecvs waiting, oldest first

    def split(self, color: int, key: Optional[int] = None) -> "SerialComm":
        return SerialComm()  # like MPI: a new communicator, its own messages

    def isend(self, buf, dest, tag=0):
        self._peer(dest, wildcard=False)
        self._tag(tag, wildcard=False)
        data = _check_buffer(buf, writable=False).tobytes()  # a copy: the caller may reuse buf at once
        receiver = next((r for r in self._posted if r.matches(tag)), None)
        if receiver is not None:
            self._posted.remove(receiver)
            receiver.deliver(tag, data)
        else:
            self._queue.append((tag, data))
        return _LoopbackRequest(buf, 0, tag, done=Status(0, tag, buf.size))

    def send(self, buf, dest, tag=0):
        self.isend(buf, dest, tag)

    def _oldest(self, source: int, tag: int) -> Optional[int]:
        self._peer(source, wildcard=True)
        self._tag(tag, wildcard=True)
        return next((i for i, (t, _) in enumerate(self._queue) if tag in (ANY_TAG, t)), None)

    def irecv(self, buf, source=ANY_SOURCE, tag=ANY_TAG):
        request = _LoopbackRequest(_check_buffer(buf, writable=True), source, tag)
        i = self._oldest(source, tag)
        if i is not None:
            request.deliver(*self._queue.pop(i))
        else:
            request._mailbox = self._posted
            self._posted.append(request)
        return request

    def recv(self, buf, source=ANY_SOURCE, tag=ANY_TAG):
        request = self.irecv(buf, source, tag)
        if request.cancel():  # still unmatched: nothing can arrive while this process blocks
            raise _deadlock(f"recv(source={source}, tag={tag})")
        return request.wait()

    def iprobe(self, source=ANY_SOURCE, tag=ANY_TAG, dtype=np.uint8):
        dt = _element_dtype(dtype)
        i = self._oldest(source, tag)
        if i is None:
            return None
        found, data = self._queue[i]
        return Status(0, found, _elements(len(data), dt))

    def probe(self, source=ANY_SOURCE, tag=ANY_TAG, dtype=np.uint8):
        status = self.iprobe(source, tag, dtype)
        if status is None:
            raise _deadlock(f"probe(source={source}, tag={tag})")
        return status

    def waitany(self, requests):
        active = [i for i, r in enumerate(requests) if r.active]
        if not active:
            raise ValueError("waitany: no active request")
        for i in active:
            status = requests[i].test()
            if status is not None:
                return i, status
        raise _deadlock(f"waitany over {len(active)} pending receive(s)")

    def waitall(self, requests):
        return [r.wait() for r in requests]

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

    def split(self, color: int, key: Optional[int] = None) -> "MPIComm":
        """A sub-communicator (used by tests to run 1, 2 and 4 ranks in one job)."""
        return MPIComm(self._c.Split(color, self.rank if key is None else key))

    # -- point-to-point ------------------------------------------------------------------------------
    def _mpi_source(self, source: int) -> int:
        return self._MPI.ANY_SOURCE if self._peer(source, wildcard=True) == ANY_SOURCE else source

    def _mpi_tag(self, tag: int) -> int:
        return self._MPI.ANY_TAG if self._tag(tag, wildcard=True) == ANY_TAG else tag

    def _status(self, st, dtype) -> Status:
        """Status of an MPI status, counted in elements of ``dtype``."""
        MPI, dt = self._MPI, _element_dtype(dtype)
        datatype = MPI.Datatype.fromcode(dt.char)  # the type mpi4py itself sends such arrays as
        if datatype.Get_size() != dt.itemsize:
            raise ValueError(f"dtype {dt} has no MPI datatype of its size")
        if st.Is_cancelled():
            return CANCELLED
        count = st.Get_count(datatype)
        if count == MPI.UNDEFINED:
            raise ValueError(f"a message of {st.Get_count(MPI.BYTE)} bytes is not a whole number of {dt} elements")
        return Status(st.Get_source(), st.Get_tag(), count)

    def send(self, buf, dest, tag=0):
        self._c.Send(_check_buffer(buf, writable=False), self._peer(dest, wildcard=False),
                     self._tag(tag, wildcard=False))

    def recv(self, buf, source=ANY_SOURCE, tag=ANY_TAG):
        st = self._MPI.Status()
        self._c.Recv(_check_buffer(buf, writable=True), self._mpi_source(source), self._mpi_tag(tag), st)
        return self._status(st, buf.dtype)

    def isend(self, buf, dest, tag=0):
        request = self._c.Isend(_check_buffer(buf, writable=False), self._peer(dest, wildcard=False),
                                self._tag(tag, wildcard=False))
        return _MPIRequest(self, request, buf, sent=Status(self.rank, tag, buf.size))

    def irecv(self, buf, source=ANY_SOURCE, tag=ANY_TAG):
        request = self._c.Irecv(_check_buffer(buf, writable=True), self._mpi_source(source), self._mpi_tag(tag))
        return _MPIRequest(self, request, buf)

    def iprobe(self, source=ANY_SOURCE, tag=ANY_TAG, dtype=np.uint8):
        st = self._MPI.Status()
        if not self._c.Iprobe(self._mpi_source(source), self._mpi_tag(tag), st):
            return None
        return self._status(st, dtype)

    def probe(self, source=ANY_SOURCE, tag=ANY_TAG, dtype=np.uint8):
        st = self._MPI.Status()
        self._c.Probe(self._mpi_source(source), self._mpi_tag(tag), st)
        return self._status(st, dtype)

    def waitany(self, requests):
        # completed requests hold REQUEST_NULL (mpi4py writes the handles back), which Waitany skips
        st = self._MPI.Status()
        i = self._MPI.Request.Waitany([r._request for r in requests], st)
        if i == self._MPI.UNDEFINED:
            raise ValueError("waitany: no active request")
        return i, requests[i]._complete(st)

    def waitall(self, requests):
        pending = [r for r in requests if r.active]
        statuses = [self._MPI.Status() for _ in pending]
        self._MPI.Request.Waitall([r._request for r in pending], statuses)
        for r, st in zip(pending, statuses):
            r._complete(st)
        return [r.wait() for r in requests]

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


class _MPIRequest(Request):
    """An mpi4py request and the buffer it reads or writes."""

    def __init__(self, comm: MPIComm, request, buf: np.ndarray, sent: Optional[Status] = None):
        super().__init__(buf)
        self._comm, self._request, self._sent = comm, request, sent

    def _complete(self, st) -> Status:
        if self._sent is not None and not st.Is_cancelled():
            self._status = self._sent  # MPI leaves a send's status fields undefined
        else:
            self._status = self._comm._status(st, self.buf.dtype)
        return self._status

    def wait(self):
        if self._status is None:
            st = self._comm._MPI.Status()
            self._request.Wait(st)
            self._complete(st)
        return self._status

    def test(self):
        if self._status is None:
            st = self._comm._MPI.Status()
            if self._request.Test(st):
                self._complete(st)
        return self._status

    def cancel(self):
        if self._status is not None:
            return False
        self._request.Cancel()
        # the request only ends (and releases the buffer) once waited for; it may have matched meanwhile
        st = self._comm._MPI.Status()
        self._request.Wait(st)
        self._complete(st)
        return st.Is_cancelled()


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
