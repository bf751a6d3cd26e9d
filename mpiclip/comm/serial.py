"""One process holds every worker: :class:`SerialComm`, with a loopback mailbox for point-to-point calls."""

from __future__ import annotations

import socket
from typing import Optional

import numpy as np

from mpiclip.comm.base import (
    ANY_SOURCE,
    ANY_TAG,
    CANCELLED,
    Comm,
    Request,
    Status,
    _check_buffer,
    _checksum,
    _element_dtype,
    _elements,
)
from mpiclip.wire import SparseGather, sequential_sum, sequential_sum_of, sequential_sum_of_pieces


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

    def sum_rows_of(self, rows, senders, ordered, columns=None):
        if len(rows) != len(senders):
            raise ValueError(f"{len(rows)} rows for {len(senders)} senders")
        total = sequential_sum_of(np.asarray(rows, dtype=np.float64), senders, int(self.workers_per_rank.sum()))
        return total if columns is None else (total, sequential_sum(columns))

    def sum_row_blocks(self, blocks, m, ordered):
        acc = None
        for pieces in blocks:
            acc = sequential_sum_of_pieces(pieces, acc, in_place=True)
            del pieces  # before the next block is made
        return acc

    def gather_sparse(self, counts, values, indices, flags=None, fixed_count=None):
        return SparseGather(counts, values, indices, flags)

    def allgather_rows(self, rows):
        return np.asarray(rows, dtype=np.float64)

    def allgather_sized(self, values, sizes):
        if len(values) != int(sizes[0]):
            raise ValueError(f"rank 0 sends {len(values)} values, its size says {int(sizes[0])}")
        return np.array(values, dtype=np.float64)

    def gather_to_root(self, block):
        return block

    def stream_to_root(self, block, write):
        write(0, block)

    def bcast_array(self, buf, root):
        self._peer(root, wildcard=False)

    def ibcast_array(self, buf, root):
        self._peer(root, wildcard=False)
        return _LoopbackRequest(buf, root, 0, done=Status(root, 0, buf.size))  # complete: the root's values are buf's

    def any(self, flag):
        return bool(flag)

    def max_flags(self, flags):
        return np.asarray(flags, dtype=np.float64).copy()

    def same_on_all(self, x):
        return True, [_checksum(x)]
