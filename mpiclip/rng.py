"""Randomness keyed by (seed, stream, worker id, round), never by rank (docs/design.md §2 rule 5).

A worker's draws in round t are the same whichever rank holds it and however many ranks there are,
so a run's trace does not depend on the number of ranks.
"""

from __future__ import annotations

import numpy as np

# Streams keep independent uses of randomness apart.
X0, COMPRESSOR, SAMPLING, ORACLE, NOISE, SERVER, TIMES, ASSIGN, CLIENTS = range(9)
SERVER_ID = 2**32 - 1  # the "worker id" of draws the (replicated) server makes


def generator(seed: int, stream: int, worker: int, t: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, worker, t, *more])


class Draw(np.ndarray):
    """Row numbers drawn at random that remember the key of the generator that drew them (seed, stream, worker,
    round, ...), so that whatever else is random about those rows (a network's augmentation and dropout) is
    keyed by the same draw: the same on every rank, and the same when one draw is used twice (EF21-PAGE's
    two gradients on one minibatch)."""

    key: tuple = ()

    def __array_finalize__(self, obj) -> None:
        self.key = getattr(obj, "key", ())


def drawn(rows: np.ndarray, *key: int) -> Draw:
    """``rows`` marked as the draw of the generator keyed by ``key``."""
    out = np.asarray(rows).view(Draw)
    out.key = tuple(int(k) for k in key)
    return out


class WorkerRandomness:
    """The generators of the local workers for one round and one stream.

    ``rng[i]`` is a fresh generator for local worker i (the same on every call); ``child(tag)`` gives an
    independent family, for a second random operator in the same round (e.g. a quantizer composed with a
    random sparsifier).
    """

    def __init__(self, seed: int, stream: int, worker_ids: np.ndarray, t: int, path: tuple = ()):
        self.seed, self.stream, self.worker_ids, self.t, self.path = seed, stream, worker_ids, t, path

    def __getitem__(self, local: int) -> np.random.Generator:
        return generator(*self.key(local))

    def key(self, local: int) -> tuple:
        """The key of local worker ``local``'s generator."""
        return (self.seed, self.stream, int(self.worker_ids[local]), self.t, *self.path)

    def child(self, tag: int) -> "WorkerRandomness":
        return WorkerRandomness(self.seed, self.stream, self.worker_ids, self.t, self.path + (tag,))

    def for_workers(self, worker_ids: np.ndarray) -> "WorkerRandomness":
        """The same family for other workers (a receiver regenerating their draws)."""
        return WorkerRandomness(self.seed, self.stream, worker_ids, self.t, self.path)
