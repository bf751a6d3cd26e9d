"""Image and text data sets: CIFAR-10/100, idx files (MNIST, Fashion-MNIST, EMNIST), LEAF JSON (FEMNIST,
Shakespeare, Sent140) and generated images.

The files are decoded once per process (the summary and every shard read need them; the cache is keyed by
the path and the size and time of every file under it) and kept compact: pixels as bytes, divided by 255
as rows are read (as torchvision's ToTensor does), tokens as small integers. A data set's official test
split, read when ``test`` is on, follows the training rows and is the plan's test set. The checksum is
the sha256 of the bytes of every file read, in a fixed order.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mpiclip.data import SOURCES, Source, Summary, file_stamp, images
from mpiclip.data.layout import Layout, image_layout
from mpiclip.errors import InputError
from mpiclip.params import at_least, finite_nonnegative, nonnegative, param

_TEST_DOC = "hold out the data set's official test split as the test set (false: read the training split alone)"


@dataclass(frozen=True)
class Cifar10Params:
    path: str = param("", "the CIFAR-10 python version: its cifar-10-batches-py directory or cifar-10-python.tar.gz")
    test: bool = param(True, _TEST_DOC)


@dataclass(frozen=True)
class Cifar100Params:
    path: str = param("", "the CIFAR-100 python version: its cifar-100-python directory or cifar-100-python.tar.gz")
    test: bool = param(True, _TEST_DOC)
    coarse: bool = param(False, "the 20 superclasses (coarse_labels) instead of the 100 classes (fine_labels)")


@dataclass(frozen=True)
class IdxParams:
    path: str = param("", "directory of the idx files: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                      "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may end in .gz; test- for t10k- too)")
    prefix: str = param("", "what precedes the file names: '' for MNIST and Fashion-MNIST, e.g. 'emnist-balanced-' "
                        "for EMNIST")
    test: bool = param(True, _TEST_DOC)


@dataclass(frozen=True)
class LeafParams:
    path: str = param("", "LEAF JSON: a file, a directory of .json files, or one with train/ and test/ directories")
    task: str = param("auto", "how to read x and y ('auto' tells by the first sample)", choices=("auto", *images.LEAF_TASKS))
    vocab: int = param(10000, "sent140: the most token ids: padding (0), unknown word (1) and the vocab − 2 most frequent "
                       "words of the training rows", check=at_least(3))
    seq_len: int = param(25, "sent140: tokens per text, cut or padded at the end", check=at_least(1))
    test: bool = param(True, "hold out the files of test/ (LEAF's split) as the test set (false: read train/ alone)")


@dataclass(frozen=True)
class SyntheticImagesParams:
    n_samples: int = param(2000, "number of images N", check=at_least(1))
    classes: int = param(10, "number of classes K", check=at_least(2))
    channels: int = param(1, "channels C: 1 (grey) or 3 (colour)", check=lambda v: None if v in (1, 3) else "must be 1 or 3")
    size: int = param(28, "height and width of the images", check=at_least(4))
    noise: float = param(0.6, "σ of the pixel noise added to the shifted class template", check=finite_nonnegative)
    seed: int = param(0, "seed of the generated data (independent of run.seed)", check=nonnegative)


@dataclass(frozen=True)
class Decoded:
    """A decoded data set, training rows first."""

    X: np.ndarray  # (rows, features): uint8 pixels (÷255 when read), float32 pixels, or integer token ids
    labels: np.ndarray  # float64
    n_train: int
    sha256: str
    layout: Layout
    classes: int
    description: str
    groups: Optional[np.ndarray] = None


class DecodedSource(Source):
    """A data set decoded whole by ``decode(params)``, once per process."""

    @staticmethod
    def decode(p) -> Decoded:
        raise NotImplementedError

    @classmethod
    def summarize(cls, p) -> Summary:
        if not p.path:
            raise InputError("data.path", p.path, f"the {cls.name} source needs a path")
        d = _decoded(cls, p, file_stamp(p.path))
        test_rows = np.arange(d.n_train, len(d.X)) if len(d.X) > d.n_train else None
        return Summary(len(d.X), d.X.shape[1], d.labels, f"sha256:{d.sha256}", d.description, d.groups, d.layout,
                       d.classes, test_rows)

    @classmethod
    def read(cls, p, rows: np.ndarray, d: int):
        dec = _decoded(cls, p, file_stamp(p.path))
        X = dec.X[rows].astype(np.float32)
        if dec.X.dtype == np.uint8 and dec.layout.kind == "image":
            X /= 255
        return X, dec.labels[rows]


@functools.lru_cache(maxsize=2)
def _decoded(source: type, params, stamp: tuple) -> Decoded:
    return source.decode(params)


class _Divided:
    """Rows of uint8 pixels read as values in [0, 1], block by block (what image_layout reads)."""

    def __init__(self, X: np.ndarray):
        self.X = X

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, rows):
        return self.X[rows] / 255.0 if self.X.dtype == np.uint8 else self.X[rows]


def _pixel_layout(X: np.ndarray, shape: tuple) -> Layout:
    return image_layout(_Divided(X), shape)


@SOURCES.register("cifar10")
class Cifar10Source(DecodedSource):
    """CIFAR-10, python version: 50,000 training and 10,000 test colour images of 32×32, 10 classes."""

    params = Cifar10Params

    @staticmethod
    def decode(p: Cifar10Params) -> Decoded:
        return _cifar(p, "cifar10", "labels", 10)


@SOURCES.register("cifar100")
class Cifar100Source(DecodedSource):
    """CIFAR-100, python version: 50,000 training and 10,000 test colour images of 32×32, 100 classes (or 20)."""

    params = Cifar100Params

    @staticmethod
    def decode(p: Cifar100Params) -> Decoded:
        return _cifar(p, "cifar100", "coarse_labels" if p.coarse else "fine_labels", 20 if p.coarse else 100)


def _cifar(p, kind: str, key: str, classes: int) -> Decoded:
    sha = hashlib.sha256()
    X, y, n_train = images.read_cifar(p.path, kind, key, classes, p.test, sha)
    return Decoded(X, y.astype(np.float64), n_train, sha.hexdigest(), _pixel_layout(X[:n_train], (3, 32, 32)), classes,
                   f"{kind}{' (coarse)' if key == 'coarse_labels' else ''}:{p.path}")


@SOURCES.register("idx")
class IdxSource(DecodedSource):
    """idx files of grey images and labels (MNIST, Fashion-MNIST, EMNIST); classes 0..(largest label).

    EMNIST's images are stored transposed; they are kept as stored (a network learns either way)."""

    params = IdxParams

    @staticmethod
    def decode(p: IdxParams) -> Decoded:
        if not os.path.isdir(p.path):
            raise InputError("data.path", p.path, "must be the directory of the idx files")
        sha, parts = hashlib.sha256(), []
        for split in ("train", "test") if p.test else ("train",):
            image_file, label_file = (_idx_file(p.path, p.prefix, split, kind) for kind in ("images", "labels"))
            X, y = images.read_idx(image_file, sha), images.read_idx(label_file, sha)
            if X.ndim != 3 or min(X.shape[1:]) == 0 or (parts and X.shape[1:] != parts[0][0].shape[1:]):
                raise InputError("data.path", image_file, f"holds an array of shape {X.shape}, not N images of "
                                 + ("H×W" if not parts else "{}×{} as the training images".format(*parts[0][0].shape[1:])))
            if len(X) == 0:
                raise InputError("data.path", image_file, "holds no images")
            if y.ndim != 1 or len(y) != len(X):
                raise InputError("data.path", label_file, f"holds an array of shape {y.shape}, not one label for each of "
                                 f"the {len(X):,} images of {os.path.basename(image_file)}")
            parts.append((X, y))
        X = np.concatenate([X.reshape(len(X), -1) for X, _ in parts])
        y = np.concatenate([y for _, y in parts]).astype(np.float64)
        n_train, (h, w) = len(parts[0][1]), parts[0][0].shape[1:]
        return Decoded(X, y, n_train, sha.hexdigest(), _pixel_layout(X[:n_train], (1, h, w)), int(y.max()) + 1,
                       f"idx:{os.path.join(p.path, p.prefix)}")


def _idx_file(directory: str, prefix: str, split: str, kind: str) -> str:
    name = f"{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for stem in ("train",) if split == "train" else ("t10k", "test"):
        for ending in ("", ".gz"):
            path = os.path.join(directory, f"{prefix}{stem}-{name}{ending}")
            if os.path.isfile(path):
                return path
    wanted = f"{prefix}{'train' if split == 'train' else 't10k'}-{name}[.gz]"
    there = sorted(os.listdir(directory))
    shown = ", ".join(there[:6]) + (", ..." if len(there) > 6 else "") or "nothing"
    hint = "data.test = false reads the training files alone" if split == "test" else "data.prefix names e.g. 'emnist-balanced-'"
    raise InputError("data.path", directory, f"has no {wanted}{' (nor test-...)' if split == 'test' else ''}; it holds "
                     f"{shown}; {hint}")


_LEAF_CLASSES = {"femnist": 62, "shakespeare": 100, "sent140": 2}


@SOURCES.register("leaf")
class LeafSource(DecodedSource):
    """LEAF's JSON data sets (FEMNIST, Shakespeare, Sent140): users are the natural clients."""

    params = LeafParams

    @staticmethod
    def decode(p: LeafParams) -> Decoded:
        sha = hashlib.sha256()
        s = images.read_leaf(p.path, p.task, p.vocab, p.seq_len, p.test, sha)
        if s.task == "femnist":
            layout = _pixel_layout(s.X[: s.n_train], (1, 28, 28))
        else:
            layout = Layout("tokens", (s.X.shape[1],), vocab=s.vocab)
        return Decoded(s.X, s.labels.astype(np.float64), s.n_train, sha.hexdigest(), layout, _LEAF_CLASSES[s.task],
                       f"leaf {s.task}:{p.path}", s.groups)


@SOURCES.register("synthetic_images")
class SyntheticImagesSource(Source):
    """Generated images: each class a smooth random template, each image it shifted a little plus noise."""

    params = SyntheticImagesParams

    @staticmethod
    def footprint(p: SyntheticImagesParams):
        return 16.0 * p.n_samples, 40.0 * min(p.n_samples, images.SYNTHETIC_CHUNK) * p.channels * p.size**2

    @staticmethod
    def _chunks(p: SyntheticImagesParams, chunks):
        templates = images.synthetic_templates(p.seed, p.classes, p.channels, p.size)
        for c in chunks:
            yield c, images.synthetic_chunk(p.seed, int(c), p.n_samples, p.noise, templates)

    @staticmethod
    def summarize(p: SyntheticImagesParams) -> Summary:
        """The layout's statistics are those of the first chunk of images (every chunk is drawn alike)."""
        n_chunks = -(-p.n_samples // images.SYNTHETIC_CHUNK)
        labels = np.concatenate([images.synthetic_labels(p.seed, c, p.n_samples, p.classes) for c in range(n_chunks)])
        first = next(SyntheticImagesSource._chunks(p, [0]))[1][0]
        text = ",".join(f"{k}={v!r}" for k, v in vars(p).items())
        return Summary(p.n_samples, p.channels * p.size**2, labels.astype(np.float64), f"synthetic_images:{text}",
                       f"synthetic_images({text})", layout=image_layout(first, (p.channels, p.size, p.size)),
                       classes=p.classes)

    @staticmethod
    def read(p: SyntheticImagesParams, rows: np.ndarray, d: int):
        X, y = np.empty((len(rows), d), dtype=np.float32), np.empty(len(rows))
        chunk_of = rows // images.SYNTHETIC_CHUNK
        for c, (Xc, yc) in SyntheticImagesSource._chunks(p, np.unique(chunk_of)):
            mine = chunk_of == c
            X[mine], y[mine] = Xc[rows[mine] - c * images.SYNTHETIC_CHUNK], yc[rows[mine] - c * images.SYNTHETIC_CHUNK]
        return X, y
