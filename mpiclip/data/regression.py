"""The random least-squares problem of Mishchenko, Bach, Even and Woodworth (NeurIPS 2022), made in fixed row chunks.

Source: https://github.com/konstmish/asynchronous_sgd, ``code.ipynb`` (commit 98ef4aa), "Parameters" cell::

    rng = np.random.default_rng(42)
    seeds = [rng.choice(max_seed, size=1, replace=False)[0] for _ in range(n_seeds)]   # n_seeds = 5
    n_data = 10000
    dim = 400
    noise_scale = 1e-5
    A = rng.uniform(size=(n_data, dim)) / np.sqrt(dim)
    x_rand = rng.normal(size=dim)
    b = A @ x_rand + noise_scale * rng.normal(size=n_data)

and the objective there is ``0.5 * np.mean((A @ x - b)**2)``, which is problem ``least_squares`` when the
workers hold equally many rows.

Here, with N = ``n_samples``, d = ``n_features`` and σ = ``noise``:

* every entry of A is U[0, 1)/sqrt(d), independently;
* the planted x* has N(0, 1) entries: ``default_rng([seed, TRUTH]).standard_normal(d)``;
* the label (a raw, real-valued target) of row i is ``b_i = a_i·x* + σ·ξ_i`` with ξ_i ~ N(0, 1).

The distribution is that of the notebook; the numbers are not (the notebook draws everything from one
stream, after five seed draws). Row chunk c (rows [c·CHUNK_ROWS, (c+1)·CHUNK_ROWS)) takes its features
from ``default_rng([seed, FEATURES, c]).uniform(size=(rows, d))`` and its noise from
``default_rng([seed, NOISE, c]).standard_normal(rows)``, so the data do not depend on how many ranks
make them or which rows each reads, and a smaller N gives a prefix of the rows of a larger one (same seed
and d).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CHUNK_ROWS = 1024
TRUTH, FEATURES, NOISE = 11, 12, 13  # purposes in the seed sequence (apart from those of synthetic.py)


def truth(seed: int, d: int) -> np.ndarray:
    """The planted x* ~ N(0, I_d)."""
    return np.random.default_rng([seed, TRUTH]).standard_normal(d)


def chunk(seed: int, c: int, n_rows: int, d: int, noise: float, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [c*CHUNK_ROWS, min((c+1)*CHUNK_ROWS, n_rows)) as a dense array, with their targets."""
    rows = min(CHUNK_ROWS, n_rows - c * CHUNK_ROWS)
    A = np.random.default_rng([seed, FEATURES, c]).uniform(size=(rows, d)) / np.sqrt(d)
    xi = np.random.default_rng([seed, NOISE, c]).standard_normal(rows)
    return A, A @ x + noise * xi


def n_chunks(n_rows: int) -> int:
    return -(-n_rows // CHUNK_ROWS)


def read(seed: int, n_rows: int, d: int, noise: float, rows: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """The given global rows (any order, each < n_rows) as CSR, with their targets."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return sp.csr_matrix((0, d)), np.zeros(0)
    x = truth(seed, d)
    X, y = np.empty((len(rows), d)), np.empty(len(rows))
    which = rows // CHUNK_ROWS
    for c in np.unique(which):
        A, b = chunk(seed, int(c), n_rows, d, noise, x)
        mine = np.flatnonzero(which == c)
        local = rows[mine] - c * CHUNK_ROWS
        X[mine], y[mine] = A[local], b[local]
    return sp.csr_matrix(X), y


def targets(seed: int, n_rows: int, d: int, noise: float) -> np.ndarray:
    """The targets of all rows, one chunk in memory at a time."""
    x = truth(seed, d)
    return np.concatenate([chunk(seed, c, n_rows, d, noise, x)[1] for c in range(n_chunks(n_rows))])
