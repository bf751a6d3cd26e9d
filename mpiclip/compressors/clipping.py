"""The clipping operator clip_τ(x) = min(1, τ/‖x‖)·x as a compressor (Clip21, docs/algorithms.md §5; the
operator itself is :mod:`mpiclip.clipping`).

A dense message of 32·d bits, or, acting on another compressor's message, the same positions with the
kept values clipped as one vector. Not contractive with a fixed α (‖clip_τ(x) − x‖ = max(0, ‖x‖ − τ)),
so theory-based step sizes do not apply. clip_τ(0) = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpiclip.clipping import clip_rows
from mpiclip.compressors.base import COMPRESSORS
from mpiclip.compressors.message import FLOAT
from mpiclip.compressors.quantizers import Quantizer
from mpiclip.params import param, positive
from mpiclip.wire import row_sq_norms


@dataclass(frozen=True)
class ClipParams:
    tau: float = param(1.0, "clipping threshold τ", check=positive)


def message_norms(msg) -> np.ndarray:
    """(n_local,) ‖c_i‖ of each worker's message, computed as clip_τ would compute them on it (``Quantizer.on``)."""
    if not msg.sparse:
        return np.sqrt(row_sq_norms(msg.values))
    n_local = len(msg.counts)
    if msg.fixed_count is not None:
        values = msg.values.reshape(n_local, msg.fixed_count)
        return np.sqrt(row_sq_norms(values))
    offsets = np.concatenate([[0], np.cumsum(msg.counts)])
    rows = [msg.values[None, a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return np.array([np.sqrt(row_sq_norms(r))[0] for r in rows])


@COMPRESSORS.register("clip")
class Clip(Quantizer):
    """clip_τ(x) = min(1, τ/‖x‖)·x, dense 32·d bits (EF21-family methods only; Clip21 is the clip21_* methods)."""

    params = ClipParams
    clips = True
    cost = FLOAT

    def __init__(self, params: ClipParams):
        self.tau = params.tau

    def quantize(self, values, rng):
        return clip_rows(values, self.tau)[0]

    def alpha(self, d):
        return None

