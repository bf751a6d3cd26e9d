"""Data sources, partitions and the rank-local shard.

Setup happens in two steps so that every input problem is found before any collective:
:func:`plan` reads a summary of the whole data set (labels, size, checksum), validates it and
partitions the rows over the workers; :meth:`Plan.load` then materialises only the rows of the
workers this rank holds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import scipy.sparse as sp

from mpiclip import limits
from mpiclip.data import libsvm
from mpiclip.data.layout import Layout, image_layout
from mpiclip.data.partition import SPLITS, block_sizes
from mpiclip.errors import InputError
from mpiclip.limits import MAX_INDEX
from mpiclip.params import nonnegative, param
from mpiclip.paths import find_data, missing_data
from mpiclip.registry import NoParams, Registry, lazy_exports


@dataclass(frozen=True)
class DataParams:
    """Keys of [data] shared by every source."""

    source: str = param("synthetic", "where the samples come from: 'synthetic', 'regression', 'leaf_synthetic', "
                        "'digits', 'libsvm', 'npz', 'cifar10', 'cifar100', 'idx' (MNIST, Fashion-MNIST, EMNIST), "
                        "'leaf' (FEMNIST, Shakespeare, Sent140) or 'synthetic_images'")
    split: str = param("contiguous", "how samples are spread over workers (see `mpiclip options`)")
    labels: str = param("auto", "'pm1' maps the smaller of two labels to -1 and the larger to +1; 'raw' keeps "
                        "them; 'classes' numbers the distinct (integer) labels 0..K-1; 'auto' asks the problem",
                        choices=("auto", "pm1", "raw", "classes"))
    storage: str = param("auto", "feature matrix layout; 'auto' is dense above 50% nonzeros in the whole data set",
                         choices=("auto", "csr", "dense"))
    test_fraction: float = param(0.0, "share of the samples held out as a test set before the split (per natural "
                                 "client for sources that have them); classifiers report test loss and accuracy "
                                 "on it (0: no test set)", check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    test_seed: int = param(0, "seed of the test rows' draw (independent of run.seed and the split's seed)",
                           check=nonnegative)

    UNSET_UNHASHED = ("test_fraction", "test_seed")  # left out of the config hash while there is no test set


@dataclass(frozen=True)
class LibsvmParams:
    path: str = param("", "LibSVM file: plain text, .gz, .bz2 or .xz (recognised by content)")
    n_features: int = param(0, "number of features d; 0 takes the largest index in the file", check=nonnegative)


@dataclass(frozen=True)
class Summary:
    n_rows: int
    n_features: int
    labels: np.ndarray  # raw labels of all rows
    checksum: str
    description: str
    groups: Optional[np.ndarray] = None  # the natural client of every row, for sources that have them
    layout: Optional[Layout] = None  # images or token sequences (None: a vector of features)
    classes: int = 0  # the label space 0..K−1 the source defines (0: the distinct labels found)
    test_rows: Optional[np.ndarray] = None  # sorted rows of the source's own test split, held out as the test set


class Source:
    """Interface: ``summarize(params)`` reads what validation and splitting need (labels, size, checksum);
    ``read(params, rows, d)`` materialises the given global rows, in increasing order, as (features, labels):
    features as a CSR matrix, or as a dense array for sources of images or token sequences (which keep their
    dtype, float32 for images, so that a data set is not held in float64)."""

    params: type

    @staticmethod
    def summarize(params) -> Summary:
        raise NotImplementedError

    @staticmethod
    def read(params, rows: np.ndarray, d: int) -> tuple[sp.csr_matrix, np.ndarray]:
        raise NotImplementedError

    @staticmethod
    def footprint(params) -> tuple[float, float]:
        """Bytes that a generated source's labels and one of its chunks need at most (0: unknown)."""
        return 0.0, 0.0


SOURCES: Registry[type[Source]] = Registry("data source")
# each source's module, imported when one of its sources is first looked up (this package's own: libsvm, digits)
for _name, _module in (("libsvm", ""), ("synthetic", ".sources"), ("regression", ".sources"), ("digits", ""),
                       ("npz", ".sources"), ("leaf_synthetic", ".sources")):
    SOURCES.declare(__name__ + _module, (_name,))
SOURCES.declare(f"{__name__}.vision", ("cifar10", "cifar100", "idx", "leaf", "synthetic_images"))

_EXPORTS = {  # name -> its module, imported on first use (PEP 562)
    "SyntheticParams": "sources", "RegressionParams": "sources", "NpzParams": "sources", "LeafSyntheticParams": "sources",
    "SyntheticSource": "sources", "RegressionSource": "sources", "NpzSource": "sources", "LeafSyntheticSource": "sources",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


@SOURCES.register("libsvm")
class LibsvmSource(Source):
    """A LibSVM file; rows keep their file order."""

    params = LibsvmParams

    @staticmethod
    def summarize(p: LibsvmParams) -> Summary:
        if not p.path:
            raise InputError("data.path", p.path, "a LibSVM source needs a file path")
        s = libsvm.summarize(p.path, "data.path")
        d = s.n_features
        if p.n_features:
            if p.n_features < s.n_features:
                raise InputError("data.n_features", p.n_features, f"the file uses feature index {s.n_features}")
            d = p.n_features
        return Summary(s.n_rows, d, s.labels, f"sha256:{s.sha256}", f"libsvm:{p.path}")

    @staticmethod
    def read(p: LibsvmParams, rows: np.ndarray, d: int):
        return libsvm.read_rows(p.path, "data.path", rows, d)


@SOURCES.register("digits")
class DigitsSource(Source):
    """scikit-learn's handwritten digits (1,797 8×8 images, 10 classes), features scaled to [0, 1] (extra `fed`)."""

    params = NoParams

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def _arrays() -> tuple[np.ndarray, np.ndarray]:
        """(features / 16, labels), loaded once per process (the summary and every shard read them)."""
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise InputError("data.source", "digits", "needs scikit-learn, which ships the data set: "
                             "pip install 'mpiclip[fed]'") from None
        digits = load_digits()
        return digits.data / 16.0, digits.target.astype(np.float64)

    @staticmethod
    def summarize(p: NoParams) -> Summary:
        X, y = DigitsSource._arrays()
        digest = hashlib.sha256(X.tobytes() + y.tobytes()).hexdigest()
        return Summary(X.shape[0], X.shape[1], y, f"sha256:{digest}", "digits (scikit-learn, features / 16)",
                       layout=image_layout(X, (1, 8, 8)))

    @staticmethod
    def read(p: NoParams, rows: np.ndarray, d: int):
        X, y = DigitsSource._arrays()
        return sp.csr_matrix(X[rows]), y[rows]


@dataclass(frozen=True)
class DataSpec:
    """The parsed [data] section."""

    common: DataParams
    source: Any
    split: Any


@dataclass
class Shard:
    """The rows of this rank's workers, worker after worker."""

    worker_ids: np.ndarray  # (n_local,) global ids
    offsets: np.ndarray  # (n_local + 1,) row offsets of each local worker
    X: Any  # (rows, d) scipy CSR or numpy array
    y: np.ndarray  # (rows,)
    classes: int = 0  # K, for labels numbered as classes 0..K-1
    test: Optional["Shard"] = None  # the held-out rows this rank's workers evaluate, block by block
    test_total: int = 0  # held-out rows over all workers
    storage: str = "csr"  # the layout of X: 'csr' or 'dense'
    layout: Optional[Layout] = None  # how a row reads as an image or a token sequence (the data set's)

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class Plan:
    """The data set summary and its split over all workers (identical on every rank)."""

    spec: DataSpec
    summary: Summary
    shards: list  # n arrays of global row numbers
    label_values: np.ndarray  # distinct raw labels
    label_map: str  # 'pm1', 'raw' or 'classes'
    # held-out global rows, sorted (in no worker's shard)
    test_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_features(self) -> int:
        return self.summary.n_features

    @property
    def sample_counts(self) -> np.ndarray:
        return np.array([len(s) for s in self.shards], dtype=np.int64)

    @property
    def label_counts(self) -> np.ndarray:
        which = np.searchsorted(self.label_values, self.summary.labels)  # label_values: the sorted distinct labels
        k, n = len(self.label_values), len(self.shards)
        rows = np.concatenate(self.shards) if n else np.zeros(0, dtype=np.int64)
        worker = np.repeat(np.arange(n), self.sample_counts)
        return np.bincount(worker * k + which[rows], minlength=n * k).reshape(n, k)  # one count for all workers

    @property
    def test_blocks(self) -> list:
        """The held-out rows cut into one block per worker (evaluation only), so that test metrics are sums
        in worker order and the same on any number of ranks."""
        return _cut_blocks(self.test_rows, len(self.shards))

    def load(self, worker_ids: np.ndarray, sum_rows: Optional[Callable[[np.ndarray], np.ndarray]] = None,
             storage: Optional[str] = None) -> Shard:
        """The rows of ``worker_ids``, stored as ``storage`` ('dense' or 'csr'; default: data.storage).

        With "auto" the layout follows the density of the whole data set, which ``sum_rows`` (an ordered sum
        over every worker's rows, all ranks taking part) measures when the rank holds only part of it: a
        worker's gradient is computed differently on CSR and dense rows, so the layout must not depend on
        how the workers are spread over ranks. ``Shard.storage`` tells the choice."""
        shard = self._read([self.shards[w] for w in worker_ids], worker_ids)
        if len(self.test_rows):
            shard.test = self._read([self.test_blocks[w] for w in worker_ids], worker_ids)
            shard.test_total = len(self.test_rows)
        storage = storage or self.spec.common.storage
        if storage == "auto":
            counts = _nonzeros(shard)
            nnz, size = (sum_rows(counts) if sum_rows is not None else counts.sum(axis=0))
            storage = "dense" if nnz > 0.5 * size else "csr"
        for part in (shard, shard.test):
            if part is not None:
                part.X = _storage(part.X, storage)
        shard.storage = storage
        shard.layout = self.summary.layout
        return shard

    def _read(self, parts: list, worker_ids: np.ndarray) -> Shard:
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        source = SOURCES.get(self.spec.common.source, "data.source")
        X, y = source.read(self.spec.source, rows[order], self.n_features)
        if (np.diff(order) != 1).any():  # back in the shards' order (a contiguous split's rows are in file order)
            position = np.empty(len(rows), dtype=np.int64)
            position[order] = np.arange(len(rows))
            X, y = X[position], y[position]
        if sp.issparse(X):
            X = X.tocsr()
        if self.label_map == "pm1":
            y = np.where(y == self.label_values.max(), 1.0, -1.0)
        elif self.label_map == "classes":
            y = np.searchsorted(self.label_values, y).astype(np.float64)
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        classes = len(self.label_values) if self.label_map == "classes" else 0
        return Shard(np.asarray(worker_ids), offsets, X, y, classes)


def _cut_blocks(rows: np.ndarray, n: int) -> list:
    bounds = np.concatenate([[0], np.cumsum(block_sizes(len(rows), n))])
    return [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _nonzeros(shard: Shard) -> np.ndarray:
    """(n_local, 2): each local worker's [nonzeros, entries] of its training rows."""
    if sp.issparse(shard.X):
        nnz = np.diff(shard.X.indptr[shard.offsets]).astype(np.float64)
    else:
        cumulative = np.concatenate([[0], np.cumsum(np.count_nonzero(shard.X, axis=1))])
        nnz = np.diff(cumulative[shard.offsets]).astype(np.float64)
    return np.column_stack([nnz, shard.sizes * float(shard.n_features)])


def _storage(X, storage: str):
    """X as a dense array (a dense source's array as it is) or as a CSR matrix with sorted indices."""
    if storage == "dense":
        return X.toarray() if sp.issparse(X) else X
    X = sp.csr_matrix(X)
    X.sort_indices()
    return X


@functools.lru_cache(maxsize=4)
def _summary(source: str, params, stamp) -> Summary:
    """A data set's summary; the runs of a sweep on one file read it once per process (``stamp``, the
    file's size and modification time, makes a changed file a new entry)."""
    return SOURCES.get(source, "data.source").summarize(params)


def _stamp(params) -> tuple:
    return file_stamp(getattr(params, "path", ""))


def file_stamp(path: str, depth: int = 2) -> tuple:
    """Name, size and time of the file, or of every file in the directory and its subdirectories to the depth of
    any data set's layout (cifar-10-batches-py/…, train/…): what changes when a data file changes."""
    try:
        if not os.path.isdir(path):
            st = os.stat(path)
            return ((path, st.st_size, st.st_mtime_ns),)
        with os.scandir(path) as entries:
            entries = sorted(entries, key=lambda e: e.name)
        stamps = []
        for e in entries:
            if e.is_dir() and depth > 1:
                stamps.extend(file_stamp(e.path, depth - 1))
            elif e.is_file():
                stamps.append((e.path, e.stat().st_size, e.stat().st_mtime_ns))
        return tuple(stamps)
    except OSError:
        return ()


def located(spec: DataSpec) -> DataSpec:
    """The spec with its data file found (paths.find_data): the config keeps the name the user gave, so its
    hash does not depend on where the data lives; the summary's description records the file read."""
    path = getattr(spec.source, "path", "")
    if not path:
        return spec
    return dataclasses.replace(spec, source=dataclasses.replace(spec.source, path=find_data(path)))


def plan(spec: DataSpec, n_workers: int, problem_labels: str) -> Plan:
    """Summarise and split the data; every check of the data set itself happens here."""
    spec = located(spec)
    source = SOURCES.get(spec.common.source, "data.source")
    rows = getattr(spec.source, "n_samples", 0)
    if rows > MAX_INDEX:
        raise InputError("data.n_samples", rows, f"exceeds {MAX_INDEX}, the most samples supported")
    labels, chunk = source.footprint(spec.source)
    limits.check_fits(labels, "data.n_samples", rows, f"the labels of {rows:,} samples")
    limits.check_fits(chunk, "data.n_features", getattr(spec.source, "n_features", 0), "making the samples chunk by chunk")
    path = getattr(spec.source, "path", "")
    if path and not os.path.exists(path):
        raise InputError("data.path", path, missing_data(path))
    summary = _summary(spec.common.source, spec.source, _stamp(spec.source))
    where, value = ("data.path", spec.source.path) if hasattr(spec.source, "path") else ("data.source", spec.common.source)
    if summary.n_rows < n_workers:
        raise InputError("run.n_workers", n_workers, f"exceeds the {summary.n_rows} samples of {summary.description}")
    label_map = problem_labels if spec.common.labels == "auto" else spec.common.labels
    values = np.arange(summary.classes, dtype=np.float64) if summary.classes else np.unique(summary.labels)
    if label_map == "pm1" and len(values) != 2:
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise InputError(where, value, f"has {len(values)} distinct labels ({shown}); a binary problem needs exactly 2 "
                         "(problem softmax takes several classes)")
    if label_map == "classes" and (len(values) < 2 or not np.array_equal(values, np.round(values))):
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise InputError(where, value, f"has labels {shown}: a classifier needs at least 2 classes with integer labels")
    split = SPLITS.get(spec.common.split, "data.split")
    if split.by_groups and summary.groups is None:
        raise InputError("data.split", spec.common.split, f"needs a source with natural clients (leaf_synthetic, leaf), not "
                         f"{spec.common.source!r}")
    if summary.test_rows is not None and spec.common.test_fraction:
        raise InputError("data.test_fraction", spec.common.test_fraction, f"{summary.description} has its own test "
                         "split, held out as the test set (set data.test = false to hold out a share of the training "
                         "rows instead)")
    test_rows = summary.test_rows if summary.test_rows is not None else \
        held_out(summary, spec.common.test_fraction, spec.common.test_seed)
    train = np.setdiff1d(np.arange(summary.n_rows), test_rows, assume_unique=True)
    if len(train) < n_workers:
        raise InputError("data.test_fraction", spec.common.test_fraction, f"leaves {len(train)} training samples for "
                         f"{n_workers} workers")
    by = summary.groups if split.by_groups else summary.labels
    shards = [train[s] for s in split.make(by[train], n_workers, spec.split)]
    empty = [w for w, s in enumerate(shards) if len(s) == 0]
    if empty:
        raise InputError("data.split", spec.common.split, f"leaves worker {empty[0]} without samples")
    return Plan(spec, summary, shards, values, label_map, test_rows)


def held_out(summary: Summary, fraction: float, seed: int) -> np.ndarray:
    """The sorted test rows: round(fraction·N) rows drawn without replacement, or that share of each natural
    client's rows (as LEAF holds out part of every user's data)."""
    if fraction == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed, 4])
    if summary.groups is None:
        return np.sort(rng.permutation(summary.n_rows)[: round(fraction * summary.n_rows)])
    picked = []
    for g in np.unique(summary.groups):
        members = np.flatnonzero(summary.groups == g)
        picked.append(rng.permutation(members)[: round(fraction * len(members))])
    return np.sort(np.concatenate(picked)).astype(np.int64)
