"""Randomness keyed by (seed, stream, worker id, round), never by rank (DESIGN §2 rule 4).

A worker's draws in round t are the same whichever rank holds it and however many ranks there are,
so a run's trace does not depend on the number of ranks.
"""

from __future__ import annotations

import numpy as np

# Streams keep independent uses of randomness apart.
X0, COMPRESSOR, SAMPLING, ORACLE, NOISE, SERVER = range(6)


def generator(seed: int, stream: int, worker: int, t: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, worker, t])


class WorkerRandomness:
    """The generators of the local workers for one round and one stream."""

    def __init__(self, seed: int, stream: int, worker_ids: np.ndarray, t: int):
        self.seed, self.stream, self.worker_ids, self.t = seed, stream, worker_ids, t

    def __getitem__(self, local: int) -> np.random.Generator:
        return generator(self.seed, self.stream, int(self.worker_ids[local]), self.t)
