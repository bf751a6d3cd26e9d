"""Partial participation of the synchronous methods: which workers take part in a round, and the step of the
drawn local workers spread back over all local workers (the others send nothing and keep their state).

The draw is the server's, one generator shared by every rank and keyed by the round (``RoundContext.shared``),
never by rank, so a run gives one trace on 1, 2 or n ranks. Two rules (docs/algorithms.md §4, §5):

* ``fixed``: m = int(rate·n) of the n workers, uniformly without replacement (EF21-PP's rule, the official code);
* ``poisson``: every worker on its own with probability ``rate``; a round may draw nobody.

They shape privacy differently (:mod:`mpiclip.privacy`): fixed-size sampling is amplified under record-level
neighbours; Poisson sampling is not accounted with DP noise (each drawn worker adds its own noise, so who was
drawn changes the noise of the round's sum).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from mpiclip.compressors import Message, empty_message
from mpiclip.rng import SAMPLING
from mpiclip.runners.synchronous import Oracle, RoundContext

RULES = ("fixed", "poisson")


def drawn_workers(ctx: RoundContext, rate: float, rule: str) -> np.ndarray:
    """(n,) bool: the workers S^t of round t, among all ``ctx.n_workers``."""
    rng = ctx.shared(SAMPLING)
    if rule == "poisson":
        return rng.random(ctx.n_workers) < rate
    drawn = np.zeros(ctx.n_workers, dtype=bool)
    drawn[rng.choice(ctx.n_workers, int(rate * ctx.n_workers), replace=False)] = True
    return drawn


def fill(values: np.ndarray, mine: np.ndarray) -> np.ndarray:
    """A metric of the drawn local workers as one of all local workers (nan for those that sat out)."""
    out = np.full(len(mine), np.nan)
    out[mine] = values
    return out


def spread(msg: Message, mine: np.ndarray, shape: tuple[int, int]) -> Message:
    """A message of the drawn local workers as one of all local workers (the rest send nothing: no bits)."""
    n_local, d = shape
    bits = np.zeros((n_local, msg.bits.shape[1]))
    bits[mine] = msg.bits
    if not msg.sparse:
        values = np.zeros(shape)
        values[mine] = msg.values
        return msg.replace(values=values, bits=bits)
    if not mine.any():
        return empty_message(n_local, d, msg.cost)
    counts = np.zeros(n_local, dtype=np.int64)
    counts[mine] = msg.counts
    return msg.replace(counts=counts, bits=bits, fixed_count=None)


class DrawnOracle(Oracle):
    """The round's oracle as the drawn local workers see it: their rows of every answer. A worker that sits
    out is given its first row where a minibatch call needs one per worker (as ``Problem.worker_grad`` does);
    its answer is dropped."""

    def __init__(self, parent: Oracle, mine: np.ndarray):
        self.parent, self.mine = parent, mine

    def _widen(self, batches: list) -> list:
        given = iter(batches)
        return [next(given) if drawn else np.arange(min(1, int(n))) for drawn, n in zip(self.mine, self.parent.sizes)]

    def full(self) -> np.ndarray:
        return self.parent.full()[self.mine]

    def minibatch(self, x, batches):
        return self.parent.minibatch(x, self._widen(batches))[self.mine]

    def clipped_example_sums(self, x, batches, tau):
        widened = self._widen(batches)
        sums, norms = self.parent.clipped_example_sums(x, widened, tau)
        per_worker = np.split(norms, np.cumsum([len(rows) for rows in widened])[:-1])
        kept = [rows for rows, drawn in zip(per_worker, self.mine) if drawn]
        return sums[self.mine], (np.concatenate(kept) if kept else np.zeros(0))

    @property
    def sizes(self) -> np.ndarray:
        return self.parent.sizes[self.mine]


def _rows(state: tuple, mine: np.ndarray) -> tuple:
    return type(state)(*(field[mine] for field in state))


def _merged(state: tuple, drawn_state: tuple, mine: np.ndarray) -> tuple:
    fields = []
    for old, new in zip(state, drawn_state):
        field = old.copy()
        field[mine] = new
        fields.append(field)
    return type(state)(*fields)


Step = Callable[[Any, Oracle, RoundContext], tuple[Any, Message, dict]]


def step_drawn(step: Step, state: tuple, oracle: Oracle, ctx: RoundContext, mine: np.ndarray,
               shape: tuple[int, int]) -> tuple[Any, Message, dict]:
    """``step`` (a worker step over rows of local workers) run by the drawn local workers ``mine`` alone: the
    others keep their state rows, send nothing and record nan, and ``participated`` says who took part.
    ``state`` is a NamedTuple of (n_local, ...) arrays; ``shape`` = (n_local, d)."""
    sub = dataclasses.replace(ctx, worker_ids=ctx.worker_ids[mine])
    drawn_state, msg, metrics = step(_rows(state, mine), DrawnOracle(oracle, mine), sub)
    metrics = {name: fill(values, mine) for name, values in metrics.items()}
    if ctx.record:
        metrics["participated"] = mine.astype(float)
    return _merged(state, drawn_state, mine), spread(msg, mine, shape), metrics
