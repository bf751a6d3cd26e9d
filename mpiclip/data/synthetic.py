"""Synthetic classification data generated in fixed row chunks, so any rank can make any row alone.

Rows come from a planted sparse logistic model: each feature is present with probability
``density`` (value 1, or N(0, 1) when ``values = "gaussian"``), and the label is the sign of
``a·w* + noise·N(0, 1)`` for a fixed w* ~ N(0, I/(density·d)). Row chunk c is drawn from
``default_rng([seed, CHUNK, c])``, so the data do not depend on how many ranks generate them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CHUNK_ROWS = 4096
_WEIGHTS, _CHUNK = 1, 2  # purposes in the seed sequence


def planted_weights(seed: int, d: int, density: float) -> np.ndarray:
    return np.random.default_rng([seed, _WEIGHTS]).standard_normal(d) / np.sqrt(max(density * d, 1.0))


def chunk(seed: int, c: int, n_rows: int, d: int, density: float, values: str, noise: float,
          w: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Rows [c*CHUNK_ROWS, min((c+1)*CHUNK_ROWS, n_rows)) as CSR, with labels in {-1, +1}."""
    rows = min(CHUNK_ROWS, n_rows - c * CHUNK_ROWS)
    rng = np.random.default_rng([seed, _CHUNK, c])
    per_row = rng.binomial(d, density, size=rows)
    row_of = np.repeat(np.arange(rows), per_row)
    cols = rng.integers(0, d, size=len(row_of))
    keys = np.unique(row_of.astype(np.int64) * d + cols)  # drops repeated columns, sorts each row
    r, col = np.divmod(keys, d)
    data = np.ones(len(keys)) if values == "binary" else rng.standard_normal(len(keys))
    X = sp.csr_matrix((data, (r, col)), shape=(rows, d))
    score = X @ w + noise * rng.standard_normal(rows)
    return X, np.where(score >= 0, 1.0, -1.0)


def n_chunks(n_rows: int) -> int:
    return -(-n_rows // CHUNK_ROWS)
