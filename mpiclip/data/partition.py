"""Splits of the N samples over n workers: pure functions of the labels (docs/design.md §2).

Each returns n arrays of global row numbers, each sorted ascending. The block sizes of every split
but Dirichlet follow the official EF21 code (docs/algorithms.md §9 item 2): n shards of ⌊N/n⌋ rows and the
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
    by_groups = False  # splits by the source's natural clients (Summary.groups) instead of the labels

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


def _percentage(v: float) -> str | None:
    return None if v == -1 or 0 <= v <= 1 else "must be in [0, 1], or -1 (every worker holds every sample)"


@dataclass(frozen=True)
class PercentageParams:
    percentage: float = param(0.0, "share p of the samples spread iid; the other 1 − p are sorted by label and cut "
                              "into equal contiguous chunks (p = 0 with as many workers as classes: one class each); "
                              "-1: every worker holds every sample", check=_percentage)
    split_seed: int = param(0, "seed of the permutation that picks the iid share")


@SPLITS.register("percentage_iid")
class PercentageIID(Split):
    """GradAlign's split: a share p iid, the rest sorted by label in equal chunks (epfml/GradientAlignment).

    As ``partition_noniid`` in ``utils/data_processing/data_splitter.py``: a random permutation (here numpy's,
    seeded by ``split_seed``, not torch's) gives the first ⌊N·p⌋ rows to the iid share, in n equal chunks; the
    others, grouped by label in increasing row order within each label, are cut into n equal contiguous chunks;
    worker w gets iid chunk w and sorted chunk w. Both shares must divide by n, as the code's ``view(n, -1)``
    requires; p = 1 is an iid split into N/n rows each (``random_split``); p = -1 gives everyone everything."""

    params = PercentageParams

    @staticmethod
    def make(labels: np.ndarray, n_workers: int, params: PercentageParams) -> list[np.ndarray]:
        rows = len(labels)
        if params.percentage == -1:
            return [np.arange(rows) for _ in range(n_workers)]
        perm = np.random.default_rng([params.split_seed, 3]).permutation(rows)
        iid, rest = perm[: int(rows * params.percentage)], perm[int(rows * params.percentage) :]
        structured = np.concatenate([np.intersect1d(np.flatnonzero(labels == c), rest) for c in np.unique(labels)])
        for share, part in (("iid", iid), ("label-sorted", structured)):
            if len(part) % n_workers:
                raise InputError("data.percentage", params.percentage, f"leaves {len(part)} {share} samples of {rows}, "
                                 f"which do not divide into {n_workers} equal chunks (GradAlign's split needs them equal)")
        iid_chunks, sorted_chunks = iid.reshape(n_workers, -1), structured.reshape(n_workers, -1)
        return [np.sort(np.concatenate([iid_chunks[w], sorted_chunks[w]])) for w in range(n_workers)]


@SPLITS.register("one_class")
class OneClass(Split):
    """Worker w holds only class w mod K (of the K classes present); a class shared by n/K workers is cut into
    contiguous blocks of its rows in file order."""

    params = NoParams

    @staticmethod
    def make(labels: np.ndarray, n_workers: int, params: NoParams) -> list[np.ndarray]:
        classes = np.unique(labels)
        if n_workers % len(classes):
            raise InputError("run.n_workers", n_workers, f"one_class needs a multiple of the {len(classes)} classes "
                             "in the data (every worker holds one class, every class the same number of workers)")
        per_class = n_workers // len(classes)
        shards: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n_workers
        for k, c in enumerate(classes):
            members = np.flatnonzero(labels == c)
            if len(members) < per_class:
                raise InputError("data.split", "one_class", f"class {c} has {len(members)} samples for {per_class} "
                                 "workers")
            for q, block in enumerate(_cut(members, per_class)):
                shards[k + q * len(classes)] = block
        return shards


@SPLITS.register("natural")
class Natural(Split):
    """Worker k holds the rows of the source's natural client k (e.g. a LEAF user); needs n = number of clients."""

    params = NoParams
    by_groups = True

    @staticmethod
    def make(groups: np.ndarray, n_workers: int, params: NoParams) -> list[np.ndarray]:
        clients = int(groups.max()) + 1 if len(groups) else 0
        if n_workers != clients:
            raise InputError("run.n_workers", n_workers, f"the natural split needs one worker per client ({clients})")
        order = np.argsort(groups, kind="stable")
        return np.split(order, np.cumsum(np.bincount(groups, minlength=clients))[:-1])
