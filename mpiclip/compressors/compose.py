"""Composition C = outer ∘ inner, e.g. a quantizer on the values kept by a sparsifier.

Bits are counted from the final message: the inner operator's positions, the outer quantizer's header
and bits per value. Constants (docs/algorithms.md §2, derived here):

* outer a quantizer acting on inner's kept values (inner a sparsifier with exact values, or identity):
  if the outer is unbiased with variance ω(m) on m values and ``scale = true``, its output is divided by
  1 + ω, which makes it contractive with α_Q = 1/(1 + ω); for a biased contractive outer, α_Q is its own.
  Then α = α_inner · α_Q, since E‖C(x) − x‖² = ‖x − y‖² + E‖Q(y) − y‖² ≤ ‖x‖² − α_Q‖y‖² for y = inner(x).
* both unbiased and ``scale = false``: unbiased with ω = ω_in + ω_out + ω_in·ω_out.
* anything else: no constant is claimed (the conformance tests measure it; use a constant step size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from mpiclip.compressors.base import COMPRESSORS, Compressor, build_compressor
from mpiclip.compressors.message import Message
from mpiclip.compressors.quantizers import Quantizer
from mpiclip.errors import InputError
from mpiclip.params import param


def _component(table: Any, where: str) -> Compressor:
    if isinstance(table, dict) and table.get("name") == "compose":
        raise InputError(f"{where}.name", "compose", "compositions nest only one level")
    return build_compressor(table, where)


@dataclass(frozen=True)
class ComposeParams:
    inner: Optional[dict] = param(None, "the first operator, an inline table such as {name = \"topk\", k = 2}")
    outer: Optional[dict] = param(None, "the second operator, applied to the first one's output, e.g. "
                                  "{name = \"natural\"}")
    scale: bool = param(True, "divide an unbiased outer quantizer's output by 1 + ω, making the composition contractive")

    def check(self) -> None:
        if self.inner is None or self.outer is None:
            raise InputError("compressor.inner" if self.inner is None else "compressor.outer", "missing",
                             "compose needs inner and outer operators")
        _component(self.inner, "compressor.inner")
        _component(self.outer, "compressor.outer")


@COMPRESSORS.register("compose")
class Compose(Compressor):
    """outer ∘ inner, e.g. inner = {name = "topk", k = 2}, outer = {name = "natural"}."""

    params = ComposeParams

    def __init__(self, params: ComposeParams):
        self.inner = _component(params.inner, "compressor.inner")
        self.outer = _component(params.outer, "compressor.outer")
        self.scale = params.scale
        self.randomized = self.inner.randomized or self.outer.randomized
        self.quantizes = isinstance(self.outer, Quantizer)
        self.positions_sent = (self.inner if self.quantizes else self.outer).positions_sent
        self.clips = self.inner.clips or self.outer.clips

    def validate(self, d):
        self.inner.validate(d)
        self.outer.validate(d)

    def for_blocks(self, blocks):
        self.inner, self.outer = self.inner.for_blocks(blocks), self.outer.for_blocks(blocks)
        return self

    def __call__(self, v, rng):
        inner = self.inner(v, rng.child(1))
        if not self.quantizes:  # e.g. a sparsifier on a quantized vector: it acts on the decoded vector
            return _keep_value_cost(self.outer(inner.dense(v.shape), rng.child(2)), inner)
        msg = self.outer.on(inner, rng.child(2))
        factor = self._factor(self._count(inner, v.shape[1]))
        return msg if factor == 1.0 else msg.replace(values=msg.values * factor)

    @staticmethod
    def _count(msg: Message, d: int) -> int:
        return msg.fixed_count if msg.sparse and msg.fixed_count is not None else d

    def _factor(self, m: int) -> float:
        omega = self.outer.omega(m)
        return 1.0 / (1.0 + omega) if self.scale and omega is not None else 1.0

    def _inner_count(self, d: int) -> int:
        return getattr(self.inner, "k", d)

    def alpha(self, d):
        m = self._inner_count(d)
        if self.quantizes and (self.inner.exact_values and self.inner.alpha(d) is not None):
            omega = self.outer.omega(m)
            alpha_q = 1.0 / (1.0 + omega) if (self.scale and omega is not None) else self.outer.alpha(m)
            return None if alpha_q is None else self.inner.alpha(d) * alpha_q
        return None

    def omega(self, d):
        if self.scale:
            return None
        w_in, w_out = self.inner.omega(d), self.outer.omega(self._inner_count(d))
        if w_in is None or w_out is None:
            return None
        return w_in + w_out + w_in * w_out


def _keep_value_cost(outer: Message, inner: Message) -> Message:
    """A sparsifier on a quantized vector: its positions, the quantizer's bits per value."""
    cost = dataclasses.replace(outer.cost, value_bits=inner.cost.value_bits, header_bits=inner.cost.header_bits)
    return outer.with_values(outer.values, cost)

