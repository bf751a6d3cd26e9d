"""A user's own data set as a numpy ``.npz`` file: a feature array and a label vector (e.g. EMNIST exported
with ``np.savez("emnist.npz", X=images.reshape(len(images), -1), y=labels)``).

Arrays with more than two dimensions are flattened per row; N×H×W and N×C×H×W arrays are images, whose shape
(C = 1 for N×H×W) and per-channel statistics become the layout. Their values are kept as stored: save uint8
pixels divided by 255 to follow the [0, 1] convention of the other image sources. Rows keep their order.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.sparse as sp

from mpiclip.data.layout import Layout, image_layout
from mpiclip.data.libsvm import _sha256
from mpiclip.errors import InputError


def _arrays(path: str, x_key: str, y_key: str, field: str = "data.path"):
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(field, path, f"is not a readable .npz file ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(field, path, "holds a single array; expected an .npz archive with features and labels")
    for key, name in ((x_key, "data.x_key"), (y_key, "data.y_key")):
        if key not in archive.files:
            raise InputError(name, key, f"is not an array of {path} (it has: {', '.join(archive.files)})")
    return archive


def summarize(path: str, x_key: str, y_key: str) -> tuple[int, int, np.ndarray, str, Optional[Layout]]:
    """(rows, features, labels, sha256, layout), with every check of the arrays themselves."""
    with _arrays(path, x_key, y_key) as archive:
        X, y = archive[x_key], archive[y_key]
    if X.ndim < 2 or X.shape[0] == 0 or X.dtype.kind not in "biuf":
        raise InputError("data.x_key", x_key, f"must be a numeric array with one row per sample (has shape {X.shape}, "
                         f"dtype {X.dtype})")
    if y.ndim != 1 or len(y) != X.shape[0] or y.dtype.kind not in "biuf":
        raise InputError("data.y_key", y_key, f"must hold one number per row of {x_key} ({X.shape[0]}); has shape "
                         f"{y.shape} and dtype {y.dtype}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise InputError("data.path", path, "holds non-finite values (nan or inf)")
    shape = (1, *X.shape[1:]) if X.ndim == 3 else X.shape[1:]
    layout = image_layout(X.reshape(len(X), -1), shape) if len(shape) == 3 and min(shape) > 0 else None
    return X.shape[0], int(np.prod(X.shape[1:])), y.astype(np.float64), _sha256(path), layout


def read(path: str, x_key: str, y_key: str, rows: np.ndarray, d: int) -> tuple[sp.csr_matrix, np.ndarray]:
    with _arrays(path, x_key, y_key) as archive:
        X, y = archive[x_key], archive[y_key]
    return sp.csr_matrix(X.reshape(X.shape[0], -1)[rows].astype(np.float64)), y[rows].astype(np.float64)
