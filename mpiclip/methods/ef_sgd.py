"""Stochastic-gradient EF and EF21-HB, as the EF21 papers' deep-learning experiments run them.

* ``ef14_sgd``, EF-SGD: EF on each worker's minibatch gradient, the baseline of the EF21 paper's
  deep-learning figures (Richtárik, Sokolov, Fatkhullin, NeurIPS 2021; official code DL/EF_100K.py):
  w_i = C(e_i + γ∇̃f_i(x^t)), e_i ← e_i + γ∇̃f_i(x^t) − w_i, x^{t+1} = x^t − (1/n) Σ_i w_i (Seide et al. 2014;
  Stich & Karimireddy 2019), e_i^0 = 0.
* ``ef21_sgd_hb``, EF21-SGD with heavy ball: EF21-SGD's estimate g stepped by SGD with momentum, the deep-
  learning method of "EF21 with Bells & Whistles" (Fatkhullin et al., arXiv:2110.03294; code DL/gen_sgd.py,
  which applies torch's SGD momentum to the aggregated estimate): g as EF21-SGD, v^t = η v^{t−1} + g^t,
  x^{t+1} = x^t − γ v^t. (That file compresses a second time for EF and EF21, its `else` belonging to the EF21+ test
  alone: not ported.)

∇̃f_i is the mean gradient of a τ_i-nice minibatch, τ_i = int(batch·N_i), drawn as EF21-SGD draws it. With
batch = 1 they are EF (``ef14``) and EF21-HB (``ef21_hb``) bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpiclip.methods.base import METHODS
from mpiclip.methods.ef21 import EF14
from mpiclip.methods.ef21_extensions import EF21HB, EF21SGD, HBParams, SGDParams, minibatch_gradients
from mpiclip.params import param


@dataclass(frozen=True)
class EFSGDParams:
    batch: float = param(0.25, "minibatch fraction: each worker samples τ_i = int(batch·N_i) of its rows per round, "
                         "without replacement (τ-nice)", check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")


@METHODS.register("ef14_sgd")
@dataclass(frozen=True)
class EF14SGD(EFSGDParams, EF14):
    """EF-SGD: EF (the EF21 paper's baseline) on τ_i-nice minibatch gradients."""

    display_name = "EF-SGD"
    style = (1, 3)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = EFSGDParams
    worker_metrics = ("error_sq", "compress_error", "samples")
    needs_samples = True

    def gradients(self, oracle, ctx):
        return minibatch_gradients(oracle, ctx, self.batch)


@dataclass(frozen=True)
class HBSGDParams(SGDParams, HBParams):
    pass


@METHODS.register("ef21_sgd_hb")
@dataclass(frozen=True)
class EF21SGDHB(HBSGDParams, EF21SGD, EF21HB):
    """EF21-SGD with heavy ball: EF21-SGD's g, then v = ηv + g and x ← x − γv (the B&W deep-learning method)."""

    display_name = "EF21-SGD-HB"
    style = (6, 4)  # (colour, marker) in its figures: indices into plotting.COLORS, MARKERS
    params = HBSGDParams
