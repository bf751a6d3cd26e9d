"""Messages and their bits (docs/design.md §4).

Per worker, a message of ``count`` values (``count = d`` for a dense one) costs, in the four encodings:

* ``paper``: header + count · value_bits (32 for a float, 9 for natural compression, ...; the EF21
  experiments count values only);
* ``coo32``: paper + 32 · count when the positions travel with a sparse message;
* ``compact``: paper + min(count · ⌈log2 d⌉, d) (positions or a bitmap, whichever is shorter);
* ``wire``: 8 × the bytes handed to MPI (float64 values, int32 indices when they are sent).

Dense messages and sparse messages whose positions the receiver can regenerate (a shared seed) carry
no position bits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from mpiclip.wire import INDEX_DTYPE, row_sq_norms

ENCODINGS = ("paper", "coo32", "compact", "wire")
VALUE_BYTES, INDEX_BYTES = 8, np.dtype(INDEX_DTYPE).itemsize


@dataclass(frozen=True)
class Cost:
    """How one worker's message is counted: bits per value and per message in the paper encoding."""

    value_bits: float = 32.0
    header_bits: float = 0.0  # e.g. a norm or a scale sent once per message
    positions: bool = True  # do the positions of a sparse message travel with it?

    def per_worker(self, count: float, d: int, sparse: bool) -> np.ndarray:
        paper = self.header_bits + count * self.value_bits
        with_positions = sparse and self.positions
        coo32 = paper + (32.0 * count if with_positions else 0.0)
        compact = paper + (min(count * math.ceil(math.log2(d)), d) if with_positions and d > 1 else 0.0)
        wire = 8.0 * count * (VALUE_BYTES + (INDEX_BYTES if with_positions else 0))
        return np.array([paper, coo32, compact, wire])


FLOAT = Cost()


@functools.lru_cache(maxsize=256)
def _uniform_bits(n_local: int, count: float, d: int, sparse: bool, cost: Cost) -> np.ndarray:
    bits = np.tile(cost.per_worker(count, d, sparse), (n_local, 1))
    bits.flags.writeable = False
    return bits


def message_bits(counts: Optional[np.ndarray], n_local: int, d: int, cost: Cost, fixed: Optional[int]) -> np.ndarray:
    """(n_local, len(ENCODINGS)) bits; ``counts`` None for a dense message."""
    if counts is None:
        return _uniform_bits(n_local, d, d, False, cost)
    if fixed is not None:
        return _uniform_bits(n_local, fixed, d, True, cost)
    return np.stack([cost.per_worker(float(c), d, True) for c in counts]) if len(counts) else np.zeros((0, 4))


def dense_bits(d: int) -> np.ndarray:
    """(E,) bits of one worker's dense message of d floats."""
    return message_bits(None, 1, d, FLOAT, None)[0]


@dataclass(frozen=True)
class Message:
    """What the local workers send in one round.

    Dense: ``values`` is (n_local, d) and ``indices``/``counts`` are None. Sparse: worker i's entries are
    ``values[o_i:o_i+counts[i]]`` at coordinates ``indices[...]`` (increasing within a worker), flat in
    worker order. ``bits`` is (n_local, len(ENCODINGS)). ``flags`` carries one small integer per worker
    (e.g. EF21+'s choice); ``initial`` marks an initialisation round, whose bits the trace keeps apart.
    ``regenerate``, for messages whose positions are not sent, gives the positions of any workers' messages
    from their ids (the receiver's copy of a shared seed).
    """

    values: np.ndarray
    bits: np.ndarray
    cost: Cost = FLOAT
    indices: Optional[np.ndarray] = None
    counts: Optional[np.ndarray] = None
    fixed_count: Optional[int] = None
    flags: Optional[np.ndarray] = None
    initial: bool = False
    regenerate: Optional[Callable[[np.ndarray], np.ndarray]] = None
    d: int = 0  # dimension of a sparse message (a dense one has it in values.shape)

    @property
    def sparse(self) -> bool:
        return self.indices is not None

    def entry_rows(self) -> np.ndarray:
        return _rows_of(self.counts, self.fixed_count)

    def dense(self, shape: tuple[int, int]) -> np.ndarray:
        if not self.sparse:
            return self.values
        out = np.zeros(shape)
        out[self.entry_rows(), self.indices] = self.values
        return out

    def added_to(self, base: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """base + C(v) as a new array (indices are unique within a worker), or, for a sparse message, in
        ``out`` (a scratch array of base's shape that the message's values do not live in)."""
        if not self.sparse:
            return base + self.values
        if out is None or np.may_share_memory(out, self.values):
            out = base.copy()
        else:
            np.copyto(out, base)
        out[self.entry_rows(), self.indices] += self.values
        return out

    def error_sq(self, v: np.ndarray, v_sq: Optional[np.ndarray] = None) -> np.ndarray:
        """‖C(v) − v‖² per worker (``v_sq`` = ‖v‖² per worker if known), without densifying a sparse message."""
        if not self.sparse:
            diff = self.values - v
            return row_sq_norms(diff)
        kept = v[self.entry_rows(), self.indices]
        change = (self.values - kept) ** 2 - kept**2
        if self.fixed_count is None:
            change = np.bincount(self.entry_rows(), change, minlength=len(v))
        elif self.fixed_count != 1:  # one term a worker is its own sum, +0.0 + term: a square less a square is not −0.0
            change = change.reshape(len(v), self.fixed_count).sum(axis=1)
        return (row_sq_norms(v) if v_sq is None else v_sq) + change

    def with_values(self, values: np.ndarray, cost: Cost) -> "Message":
        """The same positions with new values counted by ``cost`` (a quantizer on top of this message)."""
        n_local, d = self._shape
        return dataclasses.replace(self, values=values, cost=cost,
                                   bits=message_bits(self.counts, n_local, d, cost, self.fixed_count))

    @property
    def _shape(self) -> tuple[int, int]:
        if not self.sparse:
            return self.values.shape
        return len(self.counts), self.d

    def replace(self, **changes) -> "Message":
        return dataclasses.replace(self, **changes)


class ChunkedMessage:
    """One message of a rank's workers put together from the messages of consecutive chunks of them, each taken
    as soon as its chunk is stepped: a dense chunk's rows are copied into one (n_local, d) array, so no chunk's
    arrays outlive its step, and sparse chunks' entries are joined at the end. The result has the values, bits
    and fields the message of all the workers at once has (a fixed count only where every chunk has it)."""

    def __init__(self, n_local: int):
        self.n_local, self.parts, self.rows = n_local, [], 0
        self.dense_values: Optional[np.ndarray] = None
        self.borrowed = False  # dense_values is the caller's array (``held_in``), not one of our own

    def add(self, msg: Message, held_in: Optional[np.ndarray] = None) -> None:
        """The next chunk's message; ``held_in``: an (n_local, d) array whose rows of this chunk already hold its
        dense values (a method's new state that is its message, as EF21's uncompressed first round), read from
        there instead of a copy as long as every chunk's rows are."""
        rows, at = len(msg.bits), self.rows
        if not msg.sparse:
            if held_in is not None and (at == 0 or self.dense_values is held_in):
                self.dense_values, self.borrowed = held_in, True
            else:
                if self.dense_values is None or self.borrowed:  # our own array, with any rows borrowed so far
                    own = np.empty((self.n_local, msg.values.shape[1]))
                    if self.dense_values is not None:
                        own[:at] = self.dense_values[:at]
                    self.dense_values, self.borrowed = own, False
                self.dense_values[at : at + rows] = msg.values
            msg = msg.replace(values=None)
        self.parts.append(msg)
        self.rows += rows

    def message(self) -> Message:
        parts, first = self.parts, self.parts[0]
        if len({p.sparse for p in parts}) > 1 or self.rows != self.n_local:
            raise ValueError("the chunks of a round must send messages of one kind, one row per local worker")
        flags = None if first.flags is None else np.concatenate([p.flags for p in parts])
        common = dict(bits=np.concatenate([p.bits for p in parts]), cost=first.cost, flags=flags,
                      initial=first.initial, regenerate=next((p.regenerate for p in parts if p.regenerate), None))
        if not first.sparse:
            return Message(values=self.dense_values, **common)
        fixed = first.fixed_count if all(p.fixed_count == first.fixed_count for p in parts) else None
        return Message(values=np.concatenate([p.values for p in parts]), indices=np.concatenate([p.indices for p in parts]),
                       counts=np.concatenate([p.counts for p in parts]), fixed_count=fixed, d=first.d, **common)


@functools.lru_cache(maxsize=64)
def _fixed_rows(n_local: int, k: int) -> np.ndarray:
    rows = np.repeat(np.arange(n_local), k)
    rows.flags.writeable = False
    return rows


def _rows_of(counts: np.ndarray, fixed: Optional[int]) -> np.ndarray:
    return _fixed_rows(len(counts), fixed) if fixed is not None else np.repeat(np.arange(len(counts)), counts)


@functools.lru_cache(maxsize=64)
def _fixed_counts(n_local: int, k: int) -> np.ndarray:
    counts = np.full(n_local, k, dtype=np.int64)
    counts.flags.writeable = False
    return counts


def dense_message(v: np.ndarray, cost: Cost = FLOAT, **extra) -> Message:
    n_local, d = v.shape
    return Message(values=v, bits=message_bits(None, n_local, d, cost, None), cost=cost, **extra)


def sparse_message(v: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: Optional[int] = None,
                   values: Optional[np.ndarray] = None, cost: Cost = FLOAT, **extra) -> Message:
    """Entries (rows, cols) of v (row-major order); ``k`` if every worker sends exactly k entries."""
    n_local, d = v.shape
    counts = _fixed_counts(n_local, k) if k is not None else np.bincount(rows, minlength=n_local)
    vals = v[rows, cols] if values is None else values
    return Message(values=vals, bits=message_bits(counts, n_local, d, cost, k), cost=cost,
                   indices=cols.astype(INDEX_DTYPE), counts=counts, fixed_count=k, d=d, **extra)


def empty_message(n_local: int, d: int, cost: Cost = FLOAT, **extra) -> Message:
    """Nobody sends anything (e.g. a round a worker sits out)."""
    counts = np.zeros(n_local, dtype=np.int64)
    return Message(values=np.zeros(0), bits=message_bits(counts, n_local, d, cost, None), cost=cost,
                   indices=np.zeros(0, dtype=INDEX_DTYPE), counts=counts, d=d, **extra)
