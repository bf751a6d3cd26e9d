"""Grids as lazy sequences: a Cartesian product is counted, indexed and walked without being expanded.

A sweep of 10^9 points holds a few short lists: ``len`` is the product of the axis lengths, point ``i``
is ``i`` written in mixed radix (the last axis changes fastest, the order of ``itertools.product``), and a
Slurm array task decodes only its own indices. :class:`Chain` puts several grids one after another;
:class:`Indexed` is the base of sequences that make their items from the index when asked (a sweep's runs).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import Any


class Indexed(Sequence):
    """A sequence defined by its length and ``_item(i)`` for 0 <= i < len; slices are lists of the items."""

    def _item(self, i: int) -> Any:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._item(j) for j in range(len(self))[i]]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._item(i)


class Product(Indexed):
    """The points (tuples, one value per axis) of the product of ``axes``, in itertools.product's order."""

    def __init__(self, axes: Sequence[Sequence]):
        self.axes = [a if isinstance(a, Sequence) else list(a) for a in axes]  # a range stays a range
        self._len = math.prod(len(a) for a in self.axes)

    def __len__(self) -> int:
        return self._len

    def _item(self, i: int) -> tuple:
        digits = []
        for axis in reversed(self.axes):  # the last axis is the lowest digit
            i, d = divmod(i, len(axis))
            digits.append(axis[d])
        return tuple(reversed(digits))

    def index_of(self, positions: Sequence[int]) -> int:
        """The index of the point made of value ``positions[j]`` of each axis j (the inverse of decoding)."""
        i = 0
        for axis, p in zip(self.axes, positions):
            i = i * len(axis) + p
        return i

    def __iter__(self):
        return itertools.product(*self.axes)


class Chain(Indexed):
    """The items of ``parts`` one after another; ``locate(i)`` says which part and where in it."""

    def __init__(self, parts: Sequence[Sequence]):
        self.parts = list(parts)
        self.starts = list(itertools.accumulate((len(p) for p in self.parts), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, i: int) -> tuple[int, int]:
        part = bisect.bisect_right(self.starts, i) - 1
        return part, i - self.starts[part]

    def _item(self, i: int) -> Any:
        part, j = self.locate(i)
        return self.parts[part][j]

    def __iter__(self):
        return itertools.chain.from_iterable(self.parts)
