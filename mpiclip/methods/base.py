"""The method registry and the helpers the methods share. The base :class:`Method` (and :class:`RunInfo`)
live in :mod:`mpiclip.runners.protocol`, under every runner's protocol (docs/design.md §2 rule 3)."""

from __future__ import annotations

import numpy as np

from mpiclip.compressors import Message
from mpiclip.registry import Registry
from mpiclip.runners.protocol import Method, RunInfo
from mpiclip.wire import row_sq_norms

__all__ = ["METHODS", "Method", "RunInfo", "compression_metrics", "relative_error", "row_sq_norms"]


METHODS: Registry[type[Method]] = Registry("method")


def relative_error(error_sq: np.ndarray, v_sq: np.ndarray) -> np.ndarray:
    """‖C(v) − v‖² / ‖v‖² per worker (nan where v = 0): the α a user sees in practice is 1 − this."""
    if np.count_nonzero(v_sq) == v_sq.size:  # no zero to divide by: no np.errstate to enter, a recorded round's
        return error_sq / v_sq  # usual case (the methods' steps run in the session's loop, which ignores invalid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return error_sq / v_sq


def compression_metrics(msg: Message, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(‖C(v) − v‖², ‖C(v) − v‖²/‖v‖²) per worker."""
    v_sq = row_sq_norms(v)
    error = msg.error_sq(v, v_sq)
    return error, relative_error(error, v_sq)
