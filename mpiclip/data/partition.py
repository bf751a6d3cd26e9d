"""Splits of the N samples over n workers: pure functions of the labels (DESIGN §2).

Each returns n arrays of global row numbers, each sorted ascending. The block sizes of every split
but Dirichlet follow the official EF21 code (ALGORITHMS §8.2): n shards of ⌊N/n⌋ rows and the
remainder on the *last* worker (not ``np.array_split``, which spreads it over the first ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiclip.errors import InputError
from mpiclip.params import param, positive
from mpiclip.registry import NoParams, Registry


class Split:
    """Interface: ``make(labels, n_workers, params)`` returns n arrays of global row numbers, each sorted."""

    params: type = NoParams

    @staticmethod
    def make(labels: np.ndarray, n_workers: int, params) -> list[np.ndarray]:
        raise NotImplementedError


SPLITS: Registry[type[Split]] = Registry("split")


def block_sizes(n_rows: int, n_workers: int) -> np.ndarray:
    sizes = np.full(n_workers, n_rows // n_workers, dtype=np.int64)
    sizes[-1] += n_rows - sizes.sum()
    return sizes


def _cut(order: np.ndarray, n_workers: int) -> list[np.ndarray]:
    bounds = np.concatenate([[0], np.cumsum(block_sizes(len(order), n_workers))])
    return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class SeededParams:
    split_seed: int = param(0, "seed of the shuffle (independent of run.seed, so x0 sweeps keep the split)")


@dataclass(frozen=True)
class DirichletParams:
    alpha: float = param(0.5, "concentration of the per-class Dirichlet(alpha) worker proportions", check=positive)
    split_seed: int = param(0, "seed of the proportions and of the shuffle within each class")


@SPLITS.register("contiguous")
class Contiguous(Split):
    """File order cut into contiguous blocks (the official EF21 split)."""

    params = NoParams

    @staticmethod
    def make(labels: np.ndarray, n_workers: int, params: NoParams) -> list[np.ndarray]:
        return _cut(np.arange(len(labels)), n_workers)


@SPLITS.register("iid")
class IID(Split):
    """A seeded random permutation cut into blocks."""

    params = SeededParams

    @staticmethod
    def make(labels: np.ndarray, n_workers: int, params: SeededParams) -> list[np.ndarray]:
        return _cut(np.random.default_rng([params.split_seed, 1]).permutation(len(labels)), n_workers)


@SPLITS.register("label_sorted")
class LabelSorted(Split):
    """Rows stably sorted by label, then cut into blocks (maximal label skew)."""

    params = NoParams

    @staticmethod
    def make(labels: np.ndarray, n_workers: int, params: NoParams) -> list[np.ndarray]:
        return _cut(np.argsort(labels, kind="stable"), n_workers)


@SPLITS.register("dirichlet")
class Dirichlet(Split):
    """Each class spread over workers with Dirichlet(alpha) proportions."""

    params = DirichletParams

    @staticmethod
    def make(labels: np.ndarray, n_workers: int, params: DirichletParams) -> list[np.ndarray]:
        rng = np.random.default_rng([params.split_seed, 2])
        classes = np.unique(labels)
        for _ in range(100):
            parts: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
            for c in classes:
                members = rng.permutation(np.flatnonzero(labels == c))
                share = rng.dirichlet(np.full(n_workers, params.alpha))
                cuts = np.floor(np.cumsum(share)[:-1] * len(members)).astype(np.int64)
                for w, piece in enumerate(np.split(members, cuts)):
                    parts[w].append(piece)
            shards = [np.sort(np.concatenate(p)) for p in parts]
            if all(len(s) for s in shards):
                return shards
        raise InputError("data.alpha", params.alpha,
                         f"the Dirichlet split left a worker without samples in 100 draws ({len(labels)} samples, "
                         f"{n_workers} workers); use a larger alpha or fewer workers")
