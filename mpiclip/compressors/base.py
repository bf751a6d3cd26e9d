"""The compressor interface and the registry."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from mpiclip.compressors.message import Message
from mpiclip.errors import InputError
from mpiclip.params import parse_params
from mpiclip.registry import NoParams, Registry
from mpiclip.rng import WorkerRandomness


class Compressor:
    """C(v) for the stacked vectors v (n_local, d) of a rank's workers; row i uses ``rng[i]``.

    ``alpha(d)``: the contraction constant, E‖C(x) − x‖² ≤ (1 − α)‖x‖², or None if C is not contractive.
    ``omega(d)``: the variance constant of an unbiased C, E‖C(x) − x‖² ≤ ω‖x‖², or None if C is biased.
    ``exact_values``: C keeps some coordinates of x unchanged and zeroes the rest (a sparsifier), so a
    quantizer composed on top of it acts on the kept values only.
    """

    name = "?"  # set by registration
    params: type = NoParams
    randomized = False
    exact_values = False
    positions_sent = True  # False when the receiver regenerates a sparse message's positions
    clips = False  # applies clip_τ somewhere (only methods that accept clipping may use it)

    def __init__(self, params: Any = None):
        pass

    @classmethod
    def build(cls, params: Any) -> "Compressor":
        return cls(params)

    def __call__(self, v: np.ndarray, rng: WorkerRandomness) -> Message:
        raise NotImplementedError

    def alpha(self, d: int) -> Optional[float]:
        raise NotImplementedError

    def omega(self, d: int) -> Optional[float]:
        return None

    def validate(self, d: int) -> None:
        """Raise InputError if the compressor cannot act in dimension d."""

    def for_blocks(self, blocks: Optional[np.ndarray]) -> "Compressor":
        """This compressor for vectors made of consecutive parts of these sizes (a network's tensors; None: one
        part); only compressors that act part by part care."""
        return self


COMPRESSORS: Registry[type[Compressor]] = Registry("compressor")


def build_compressor(table: Any, where: str) -> Compressor:
    """A compressor from an inline table such as {name = "topk", k = 2}; errors name ``where``."""
    if not isinstance(table, dict) or "name" not in table:
        raise InputError(where, table, 'expected an inline table naming a compressor, e.g. {name = "topk", k = 2}')
    name = table["name"]
    cls = COMPRESSORS.get(name, f"{where}.name")
    params = parse_params(cls.params, {k: v for k, v in table.items() if k != "name"}, where,
                          skip=("name",), owner=f"compressor {name!r}")
    return cls.build(params)
