"""The data sources that generate their rows (synthetic, regression, LEAF's Synthetic(α, β)) and a user's own
``.npz`` file, with their parameters: imported when one of them is first looked up (``mpiclip.data.SOURCES``), so
that a run on a LibSVM file does not build them (start-up time). The row makers are in the modules of the same
names (``synthetic``, ``regression``, ``leaf``, ``npz``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mpiclip.data import SOURCES, Source, Summary, leaf, npz, regression, synthetic
from mpiclip.errors import InputError
from mpiclip.params import at_least, finite_nonnegative, nonnegative, param


@dataclass(frozen=True)
class SyntheticParams:
    n_samples: int = param(2000, "number of samples N", check=at_least(1))
    n_features: int = param(50, "number of features d", check=at_least(1))
    density: float = param(0.2, "probability that a feature is present in a sample",
                           check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    values: str = param("binary", "value of a present feature", choices=("binary", "gaussian"))
    noise: float = param(0.5, "label noise: y = sign(a.w* + noise*N(0,1))", check=nonnegative)
    seed: int = param(0, "seed of the generated data (independent of run.seed)", check=nonnegative)


@dataclass(frozen=True)
class RegressionParams:
    n_samples: int = param(10000, "number of samples N", check=at_least(1))
    n_features: int = param(400, "number of features d", check=at_least(1))
    noise: float = param(1e-5, "target noise: b = A x* + noise*N(0,1)", check=finite_nonnegative)
    seed: int = param(0, "seed of the generated data (independent of run.seed)", check=nonnegative)


@dataclass(frozen=True)
class NpzParams:
    path: str = param("", "a numpy .npz file with a feature array (one row per sample; images of N×H×W or N×C×H×W are "
                      "flattened, their shape kept as the layout) and labels")
    x_key: str = param("X", "name of the feature array in the file")
    y_key: str = param("y", "name of the label vector in the file")


@dataclass(frozen=True)
class LeafSyntheticParams:
    alpha: float = param(1.0, "α: spread of the users' models (u_k ~ N(0, α²))", check=finite_nonnegative)
    beta: float = param(1.0, "β: spread of the users' feature means (B_k ~ N(0, β²))", check=finite_nonnegative)
    users: int = param(30, "number of users (natural clients)", check=at_least(1))
    n_features: int = param(60, "number of features d", check=at_least(1))
    classes: int = param(10, "number of classes K", check=at_least(2))
    iid: bool = param(False, "one shared model and feature means B_k·1 (the code's iid variant)")
    seed: int = param(0, "seed of the generated data (independent of run.seed)", check=nonnegative)


@SOURCES.register("synthetic")
class SyntheticSource(Source):
    """Sparse data from a planted logistic model, made in fixed chunks."""

    params = SyntheticParams

    @staticmethod
    def _chunks(p: SyntheticParams, chunks):
        w = synthetic.planted_weights(p.seed, p.n_features, p.density)
        for c in chunks:
            yield c, synthetic.chunk(p.seed, c, p.n_samples, p.n_features, p.density, p.values, p.noise, w)

    @staticmethod
    def footprint(p: SyntheticParams):
        return 16.0 * p.n_samples, 40.0 * min(p.n_samples, synthetic.CHUNK_ROWS) * p.n_features * p.density

    @staticmethod
    def summarize(p: SyntheticParams) -> Summary:
        labels = [y for _, (_, y) in SyntheticSource._chunks(p, range(synthetic.n_chunks(p.n_samples)))]
        text = ",".join(f"{k}={v}" for k, v in vars(p).items())
        return Summary(p.n_samples, p.n_features, np.concatenate(labels), f"synthetic:{text}", f"synthetic({text})")

    @staticmethod
    def read(p: SyntheticParams, rows: np.ndarray, d: int):
        needed = np.unique(rows // synthetic.CHUNK_ROWS)
        parts, labels = [], []
        for c, (X, y) in SyntheticSource._chunks(p, needed):
            local = rows[(rows // synthetic.CHUNK_ROWS) == c] - c * synthetic.CHUNK_ROWS
            parts.append(X[local])
            labels.append(y[local])
        if not parts:
            return sp.csr_matrix((0, d)), np.zeros(0)
        return sp.vstack(parts, format="csr"), np.concatenate(labels)


@SOURCES.register("regression")
class RegressionSource(Source):
    """Dense least-squares data, A ~ U[0,1)/sqrt(d), b = A x* + noise*N(0,1) (konstmish/asynchronous_sgd)."""

    params = RegressionParams

    @staticmethod
    def footprint(p: RegressionParams):
        return 16.0 * p.n_samples, 24.0 * min(p.n_samples, regression.CHUNK_ROWS) * p.n_features

    @staticmethod
    def summarize(p: RegressionParams) -> Summary:
        labels = regression.targets(p.seed, p.n_samples, p.n_features, p.noise)
        text = ",".join(f"{k}={v!r}" for k, v in vars(p).items())
        return Summary(p.n_samples, p.n_features, labels, f"regression:{text}", f"regression({text})")

    @staticmethod
    def read(p: RegressionParams, rows: np.ndarray, d: int):
        return regression.read(p.seed, p.n_samples, p.n_features, p.noise, rows)


@SOURCES.register("npz")
class NpzSource(Source):
    """A numpy .npz file of features and labels (the user's own data set); rows keep their order."""

    params = NpzParams

    @staticmethod
    def summarize(p: NpzParams) -> Summary:
        if not p.path:
            raise InputError("data.path", p.path, "an npz source needs a file path")
        rows, d, labels, sha, layout = npz.summarize(p.path, p.x_key, p.y_key)
        return Summary(rows, d, labels, f"sha256:{sha}", f"npz:{p.path}", layout=layout)

    @staticmethod
    def read(p: NpzParams, rows: np.ndarray, d: int):
        return npz.read(p.path, p.x_key, p.y_key, rows, d)


@SOURCES.register("leaf_synthetic")
class LeafSyntheticSource(Source):
    """LEAF/FedProx Synthetic(α, β): users with their own softmax model and feature mean; rows user by user."""

    params = LeafSyntheticParams

    @staticmethod
    def _users(p: LeafSyntheticParams, which):
        counts = leaf.sizes(p.seed, p.users)
        for k in which:
            yield k, leaf.user(p.seed, int(k), int(counts[k]), p.n_features, p.classes, p.alpha, p.beta, p.iid)

    @staticmethod
    def summarize(p: LeafSyntheticParams) -> Summary:
        counts = leaf.sizes(p.seed, p.users)
        labels = np.concatenate([y for _, (_, y) in LeafSyntheticSource._users(p, range(p.users))])
        text = ",".join(f"{k}={v!r}" for k, v in vars(p).items())
        return Summary(int(counts.sum()), p.n_features, labels, f"leaf_synthetic:{text}", f"leaf_synthetic({text})",
                       np.repeat(np.arange(p.users), counts))

    @staticmethod
    def read(p: LeafSyntheticParams, rows: np.ndarray, d: int):
        starts = np.concatenate([[0], np.cumsum(leaf.sizes(p.seed, p.users))])
        owner = np.searchsorted(starts, rows, side="right") - 1
        X, y = np.empty((len(rows), d)), np.empty(len(rows))
        for k, (Xk, yk) in LeafSyntheticSource._users(p, np.unique(owner)):
            mine = np.flatnonzero(owner == k)
            X[mine], y[mine] = Xk[rows[mine] - starts[k]], yk[rows[mine] - starts[k]]
        return sp.csr_matrix(X), y
