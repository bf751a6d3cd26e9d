"""A synchronous round a chunk of local workers at a time, so that a rank's memory stays near its state.

Stacked, a round holds three (n_local, d) arrays at its peak: the workers' gradients, the method's state and
the differences that become the new state. In chunks a rank holds its state and one chunk's temporaries: the
chunk's gradients come from the problem of those workers alone (:meth:`Problem.workers`), the method steps
them on their rows of the state (written back in place), and only the chunk's message is kept (a sparse one
as its entries). Every worker's gradient, draws (keyed by its id, whichever chunk holds it) and message are
the ones the stacked step gives, and a recorded round's ∇f adds the same rows in the same order
(:func:`~mpiclip.runners.base.exact_row_in_chunks`), so a trace is the same to the last bit.

A method takes part by declaring ``row_separable = True`` in the class that defines its ``worker_step``: each
worker's output depends on its own row of the state, its own draws and the round's shared draws only, and its
worker state is rows (no ``replicated`` field). A subclass that overrides ``worker_step`` is stacked again until
it declares the same. Methods that need all rows at once keep the stacked step: EF21+ (the server keeps every
g_i and the message picks between two candidates), EF21-PAGE (a replicated x^{t−1}), EF21-PP, and GD, whose
message is its dense gradient anyway.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from mpiclip import limits
from mpiclip.compressors import ChunkedMessage, Message

Chunk = tuple[int, int, Any]  # (first local worker, one past the last, the problem of those workers)


def chunk_workers(n_local: int, d: int) -> int:
    """Local workers per chunk: as many as keep one (chunk, d) array of float64 within ``limits.CHUNK_BYTES``, at
    least one."""
    return int(min(n_local, max(1, limits.CHUNK_BYTES // (8 * d))))


def row_separable(method: Any) -> bool:
    """Did the class whose ``worker_step`` the method (or method class) runs declare that step row by row?"""
    cls = method if isinstance(method, type) else type(method)
    owner = next(c for c in cls.__mro__ if "worker_step" in vars(c))
    return bool(vars(owner).get("row_separable", False))


def plan_chunks(method: Any, problem: Any, n_local: int) -> Optional[list[Chunk]]:
    """The chunks of a rank's workers, or None for the stacked step: the method or the problem cannot be split,
    or all the workers fit in one chunk (a9a's 20 workers at d = 123: the round is the stacked one)."""
    size = chunk_workers(n_local, problem.d)
    if size >= n_local or not row_separable(method):
        return None
    chunks = []
    for lo in range(0, n_local, size):
        hi = min(n_local, lo + size)
        part = problem.workers(lo, hi)
        if part is None:
            return None
        chunks.append((lo, hi, part))
    return chunks


def rows_of(state: Any, lo: int, hi: int) -> Any:
    """The state of local workers lo..hi−1: views of its rows."""
    return type(state)(*(field[lo:hi] for field in state))


def step_in_chunks(method: Any, workers: Any, chunks: list[Chunk], ctx: Any,
                   oracle_of: Callable[[Any], Any]) -> tuple[Any, Message, dict, np.ndarray, float]:
    """``method.worker_step`` chunk by chunk: (worker state, message, metrics, the samples each local worker's
    gradients touched, the seconds they took). The state's rows are overwritten in place (its arrays belong to the
    loop: methods never mutate their inputs, and a new state replaces the old one each round); nothing of a chunk
    but its message and metrics outlives its step, its oracle's gradients included."""
    fields = [field if field.flags.writeable else field.copy() for field in workers]
    workers = type(workers)(*fields)
    message, metrics, touched, seconds = ChunkedMessage(len(ctx.worker_ids)), {}, [], 0.0
    for lo, hi, part in chunks:
        oracle = oracle_of(part)
        sub = dataclasses.replace(ctx, worker_ids=ctx.worker_ids[lo:hi])
        new, msg, chunk_metrics = method.worker_step(rows_of(workers, lo, hi), oracle, sub)
        for field, rows in zip(workers, new):
            field[lo:hi] = rows
        # a dense message that is the chunk's new state (EF21's uncompressed first round) is read from the state
        held_in = next((field for field, rows in zip(workers, new) if not msg.sparse and rows is msg.values), None)
        message.add(msg, held_in)
        for name, values in chunk_metrics.items():
            metrics.setdefault(name, []).append(values)
        touched.append(oracle.touched)
        seconds += oracle.seconds
        del oracle, new, msg  # before the next chunk's arrays are made
    metrics = {name: np.concatenate(parts) for name, parts in metrics.items()}
    return workers, message.message(), metrics, np.concatenate(touched), seconds
