"""Quantizers: natural compression, random dithering (QSGD), scaled sign.

Each acts on a worker's vector of m values (m = d alone, or the k values of a sparse message when
composed after a sparsifier) and states its own bit formula per message: header + m · value_bits.
Values travel as float64 after decoding, so ``wire`` stays 64 bits per value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpiclip.compressors.base import COMPRESSORS, Compressor
from mpiclip.compressors.message import Cost, Message, dense_message
from mpiclip.params import at_least, param
from mpiclip.wire import row_sq_norms


class Quantizer(Compressor):
    """A compressor that changes values but not positions; usable alone or on top of a sparsifier."""

    def quantize(self, values: np.ndarray, rng) -> np.ndarray:
        """values (rows, m), one row per worker (row i draws from rng[i]) -> quantized (rows, m)."""
        raise NotImplementedError

    cost: Cost  # bits per value and per message

    def alpha(self, d):
        """As a compressor alone; unbiased quantizers are not contractive unless scaled (see compose)."""
        return None

    def __call__(self, v, rng):
        return dense_message(self.quantize(v, rng), cost=self.cost)

    def on(self, msg: Message, rng) -> Message:
        """Quantize the values of another compressor's message (same positions)."""
        if not msg.sparse:
            return msg.with_values(self.quantize(msg.values, rng), self.cost)
        n_local = len(msg.counts)
        if msg.fixed_count is not None:
            k = msg.fixed_count
            values = self.quantize(msg.values.reshape(n_local, k), rng).ravel() if n_local else msg.values
            return msg.with_values(values, self.cost)
        offsets = np.concatenate([[0], np.cumsum(msg.counts)])
        parts = [self.quantize(msg.values[None, a:b], _One(rng, i))[0] for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:]))]
        return msg.with_values(np.concatenate(parts) if parts else msg.values, self.cost)


class _One:
    """rng[0] -> the parent's rng[i] (quantizing one worker's values at a time)."""

    def __init__(self, rng, i):
        self.rng, self.i = rng, i

    def __getitem__(self, _):
        return self.rng[self.i]


@COMPRESSORS.register("natural")
class Natural(Quantizer):
    """Natural compression (Horváth et al. 2019): unbiased rounding to a power of two; ω = 1/8; 9 bits/value.

    Each nonzero x_j becomes sign(x_j)·2^⌊log2|x_j|⌋ or sign(x_j)·2^⌈log2|x_j|⌉, with the probabilities
    that make it unbiased; 9 bits per value are the sign and exponent of a float32."""

    randomized = True

    def quantize(self, values, rng):
        mantissa, exponent = np.frexp(values)  # |x| = |m|·2^e with |m| in [0.5, 1)
        low = np.ldexp(np.sign(values) * 0.5, exponent)  # sign(x)·2^⌊log2|x|⌋, exactly
        up_probability = 2.0 * np.abs(mantissa) - 1.0  # (|x| − a)/a with a = 2^⌊log2|x|⌋
        draws = np.stack([rng[i].random(values.shape[1]) for i in range(len(values))]) if len(values) else values
        return np.where(draws < up_probability, 2.0 * low, low)

    cost = Cost(value_bits=9.0)

    def omega(self, d):
        return 1.0 / 8.0


@dataclass(frozen=True)
class DitheringParams:
    s: int = param(1, "number of levels s (QSGD); ω = min(m/s², √m/s) for m values", check=at_least(1))


@COMPRESSORS.register("dithering")
class Dithering(Quantizer):
    """Random dithering / QSGD (Alistarh et al. 2017) with s levels and the ℓ2 norm; ω = min(d/s², √d/s).

    C(x)_j = ‖x‖ sign(x_j) ξ_j/s, ξ_j = ⌊s|x_j|/‖x‖⌋ + Bernoulli(fractional part); unbiased,
    ω = min(m/s², √m/s); 32 bits for the norm plus 1 + ⌈log2(s + 1)⌉ bits per value."""

    params = DitheringParams
    randomized = True

    def __init__(self, params: DitheringParams):
        self.s = params.s
        self.cost = Cost(value_bits=1.0 + math.ceil(math.log2(self.s + 1)), header_bits=32.0)

    def quantize(self, values, rng):
        norms = np.sqrt(row_sq_norms(values))[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = np.where(norms > 0, self.s * np.abs(values) / norms, 0.0)
        level = np.floor(scaled)
        draws = np.stack([rng[i].random(values.shape[1]) for i in range(len(values))]) if len(values) else values
        level += draws < (scaled - level)
        return norms * np.sign(values) * level / self.s


    def omega(self, d):
        return min(d / self.s**2, math.sqrt(d) / self.s)


@COMPRESSORS.register("sign")
class ScaledSign(Quantizer):
    """Scaled sign (‖x‖₁/m)·sign(x) over m values; biased, α ≥ 1/m; 32 bits for the scale, 1 per value.

    Deterministic and contractive with α = ‖x‖₁²/(m‖x‖²) ≥ 1/m."""


    def quantize(self, values, rng):
        m = values.shape[1]
        if m == 0:
            return values
        return (np.abs(values).sum(axis=1, keepdims=True) / m) * np.sign(values)

    cost = Cost(value_bits=1.0, header_bits=32.0)

    def alpha(self, d):
        return 1.0 / d

