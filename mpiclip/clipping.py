"""clip_τ(x) = min(1, τ/‖x‖)·x: the one definition of clipping that every part of mpiclip uses — the clip
compressor and Clip21's clipped messages, per-example clipping for DP-SGD, the asynchronous server's clipped
gradients and the federated clients' clipped gradients and updates (docs/algorithms.md §5).

A vector whose norm is at most τ is returned as it is (to the last bit: it is multiplied by exactly 1), so is
the zero vector (clip_τ(0) = 0), and so is a vector whose norm is NaN: clipping neither hides a NaN nor
spreads it over the vector. Where the norm comes from is the caller's: the rows of a stack use
:func:`~mpiclip.wire.row_sq_norms` (bits independent of the other rows), a single vector its dot product.
"""

from __future__ import annotations

import math

import numpy as np

from mpiclip.wire import row_sq_norms


def clip_scale(norms: np.ndarray, tau: float) -> np.ndarray:
    """min(1, τ/‖x‖) for each norm: τ/‖x‖ where ‖x‖ > τ, else exactly 1."""
    norms = np.asarray(norms, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > tau, tau / norms, 1.0)


def clip_rows(values: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """(each row clipped to τ, the rows' norms before clipping)."""
    norms = np.sqrt(row_sq_norms(values))
    return values * clip_scale(norms, tau)[:, None], norms


def vector_norm(v: np.ndarray) -> float:
    """‖v‖ of a 1-D vector: v.dot(v) is the BLAS dot product that v @ v calls too (the same bits), without matmul's
    dispatch (a third of the time at d ≈ 100, where an asynchronous arrival pays it)."""
    return math.sqrt(float(v.dot(v)))


def clip_vector(v: np.ndarray, tau: float) -> tuple[np.ndarray, float, bool]:
    """(clip_τ(v), ‖v‖, whether it was scaled down)."""
    norm = vector_norm(v)
    clipped = norm > tau
    return (v * (tau / norm) if clipped else v), norm, clipped
