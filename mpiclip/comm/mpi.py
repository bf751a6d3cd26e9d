"""Buffer-based collectives and point-to-point calls over an mpi4py communicator: the only module that
imports mpi4py (docs/design.md §2 rule 1), and only when an :class:`MPIComm` is made."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np

from mpiclip.comm.base import (
    _RING_TAG,
    _STREAM_TAG,
    ANY_SOURCE,
    ANY_TAG,
    CANCELLED,
    AgreedError,
    Comm,
    Layout,
    Request,
    Status,
    _check_buffer,
    _checksum,
    _element_dtype,
)
from mpiclip.wire import ENTRY, SparseGather, sequential_sum, sequential_sum_of, sequential_sum_of_pieces

# An ordered sum (sum_rows, sum_rows_of) gathers the rows it adds to every rank up to this many bytes and sums
# them in worker order there: one collective whatever the rank count (a9a's recorded rounds: 20 rows of 130
# values, 21 KB). Above it a ring keeps memory to one row: size − 1 hops one after another and a broadcast.
ORDERED_GATHER_BYTES = 4 << 20


class CallCounter:
    """An mpi4py communicator that counts, by name, its calls that move data between ranks, and passes every
    call on (benchmarks and tests count the collectives of a loop with it: :meth:`MPIComm.count_calls`)."""

    MOVES = frozenset(("Allgather", "Allgatherv", "Allreduce", "Bcast", "Gatherv", "Recv", "Send", "Isend", "Irecv",
                       "allgather", "allreduce", "bcast", "gather"))

    def __init__(self, comm):
        self._comm, self.calls = comm, Counter()

    def __getattr__(self, name):
        found = getattr(self._comm, name)
        if name not in self.MOVES:
            return found

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return found(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class MPIComm(Comm):
    """Collectives over an mpi4py communicator (COMM_WORLD unless given)."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self._MPI = MPI
        self._c = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self._c.Get_rank(), self._c.Get_size()
        self._layouts: dict = {}
        self.library = MPI.Get_library_version().strip().splitlines()[0].strip()

    def count_calls(self) -> CallCounter:
        """From now on, count this communicator's calls that move data; the counter."""
        if not isinstance(self._c, CallCounter):
            self._c = CallCounter(self._c)
        return self._c

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

    def local_rank(self):
        node = self._c.Split_type(self._MPI.COMM_TYPE_SHARED, key=self.rank)
        try:
            return node.Get_rank()
        finally:
            node.Free()

    def sum_rows(self, rows, ordered):
        MPI = self._MPI
        m = rows.shape[1]
        if not ordered:
            local = rows.sum(axis=0)
            out = np.empty(m, dtype=np.float64)
            self._c.Allreduce(local, out, op=MPI.SUM)
            return out
        if self.bound_workers * m * 8 <= ORDERED_GATHER_BYTES:
            return sequential_sum(self.allgather_rows(rows))
        return self._ring_sum([[np.ascontiguousarray(rows, dtype=np.float64)]], m)

    def sum_rows_of(self, rows, senders, ordered, columns=None):
        m, c = rows.shape[1], 0 if columns is None else columns.shape[1]
        if not ordered or len(senders) * m * 8 > ORDERED_GATHER_BYTES:
            return super().sum_rows_of(rows, senders, ordered, columns)
        # One Allgatherv of the senders' rows (and every worker's columns), then every rank sums them in worker
        # order: one collective, where the ring is size − 1 hops one after another and a broadcast
        workers = self.workers_per_rank
        ends = np.cumsum(workers)
        per_rank = np.diff(np.searchsorted(senders, ends), prepend=0)
        if per_rank[self.rank] != len(rows):
            raise ValueError(f"{len(rows)} rows for the {per_rank[self.rank]} senders of rank {self.rank}")
        send = np.ascontiguousarray(rows, dtype=np.float64).ravel()
        if c:  # each rank's block: its senders' rows, then its workers' columns
            send = np.concatenate([send, np.ascontiguousarray(columns, dtype=np.float64).ravel()])
        sizes = per_rank * m + workers * c
        gathered = np.empty(int(sizes.sum()), dtype=np.float64)
        self._c.Allgatherv(send, (gathered, sizes))
        if not c:
            return sequential_sum_of(gathered.reshape(len(senders), m), senders, int(ends[-1]))
        starts, column_starts = np.cumsum(sizes) - sizes, np.cumsum(workers * c) - workers * c
        at = np.arange(int(ends[-1]) * c) + np.repeat(starts + per_rank * m - column_starts, workers * c)
        in_rows = np.ones(len(gathered), dtype=bool)
        in_rows[at] = False
        total = sequential_sum_of(gathered[in_rows].reshape(len(senders), m), senders, int(ends[-1]))
        return total, sequential_sum(gathered[at].reshape(-1, c))

    def sum_row_blocks(self, blocks, m, ordered):
        MPI = self._MPI
        if ordered and int(self.workers_per_rank.sum()) * m * 8 <= ORDERED_GATHER_BYTES:
            # small enough to gather: the collective of sum_rows, so that a rank stepping its workers in chunks
            # and one stepping them stacked (fewer workers) make the same call
            return self.sum_rows(np.vstack([np.hstack(pieces) for pieces in blocks]), ordered)
        if not ordered:
            # rows.sum(axis=0) of an (n, m > 1) array adds the rows one after another onto 0.0: the same bits
            local = np.zeros(m, dtype=np.float64)
            for pieces in blocks:
                local = sequential_sum_of_pieces(pieces, local, in_place=True)
                del pieces  # before the next block is made
            out = np.empty(m, dtype=np.float64)
            self._c.Allreduce(local, out, op=MPI.SUM)
            return out
        return self._ring_sum(blocks, m)

    def _ring_sum(self, blocks, m: int) -> np.ndarray:
        """The ordered sum as a ring: rank r adds the rows of its blocks (lists of pieces side by side), in worker
        order, to the partial sum of ranks < r, passes it on, and the last rank broadcasts it (memory: one row)."""
        acc = None
        if self.rank > 0:
            acc = np.empty(m, dtype=np.float64)
            self._c.Recv(acc, source=self.rank - 1, tag=_RING_TAG)
        for pieces in blocks:
            acc = sequential_sum_of_pieces(pieces, acc, in_place=True)  # the received buffer, or ours
            del pieces  # before the next block is made
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
        key = (k, self.layout_key)  # made once per bind: the tuple of an array costs a conversion per worker
        if key not in self._layouts:
            all_counts = np.full(int(self.workers_per_rank.sum()), k, dtype=np.int64)
            all_counts.flags.writeable = False
            self._layouts[key] = (all_counts, self._entry_layout(all_counts))
        return self._layouts[key]

    def allgather_rows(self, rows):
        m = rows.shape[1]
        out = np.empty((self.bound_workers, m), dtype=np.float64)
        self._c.Allgatherv(np.ascontiguousarray(rows, dtype=np.float64), (out, self.workers_per_rank * m))
        return out

    def allgather_sized(self, values, sizes):
        sizes = np.asarray(sizes, dtype=np.int64)
        if len(values) != sizes[self.rank]:
            raise ValueError(f"rank {self.rank} sends {len(values)} values, its size says {sizes[self.rank]}")
        out = np.empty(int(sizes.sum()), dtype=np.float64)
        self._c.Allgatherv(np.ascontiguousarray(values, dtype=np.float64), (out, sizes))
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

    def bcast_array(self, buf, root):
        self._c.Bcast(_check_buffer(buf, writable=True), root=self._peer(root, wildcard=False))

    def ibcast_array(self, buf, root):
        request = self._c.Ibcast(_check_buffer(buf, writable=True), root=self._peer(root, wildcard=False))
        return _MPIRequest(self, request, buf, sent=Status(root, 0, buf.size))  # a collective's status is undefined

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
