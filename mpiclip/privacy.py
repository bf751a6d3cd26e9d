"""Privacy accounting of the Gaussian mechanism applied each round (DP variants of the clipping methods).

Each round a worker sends clip_τ(·) + N(0, σ² I): a Gaussian mechanism of sensitivity Δ on its data.
Δ = 2τ under replace-one neighbours (one record changed: both messages lie in the τ-ball, and worker
i's state is a function of its past noisy, public messages; ALGORITHMS §4.5), or Δ = τ under add/remove
of a whole worker's contribution. Full-batch methods touch every record every round; the minibatch
variants sample τ_i of the N_i records without replacement, which amplifies privacy. Rounds compose
by Rényi DP, converted to (ε, δ) as Google's dp-accounting does (its `RdpAccountant`), which mpiclip
uses rather than a re-implementation (extra `dp`: ``pip install 'mpiclip[dp]'``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mpiclip.errors import InputError

RELATIONS = ("replace", "add_remove")


def _library(field: str, value):
    try:
        import dp_accounting
        from dp_accounting.rdp import rdp_privacy_accountant
    except ImportError:
        raise InputError(field, value, "privacy accounting needs dp-accounting: pip install 'mpiclip[dp]'") from None
    return dp_accounting, rdp_privacy_accountant


@dataclass(frozen=True)
class Mechanism:
    """One round of one worker: noise σ, sensitivity Δ, and the minibatch sampling (None: full batch)."""

    sigma: float
    sensitivity: float
    relation: str = "replace"
    records: Optional[int] = None  # N_i, for minibatch sampling without replacement
    batch: Optional[int] = None  # τ_i

    @property
    def noise_multiplier(self) -> float:
        return self.sigma / self.sensitivity

    def event(self, dpa):
        gaussian = dpa.GaussianDpEvent(self.noise_multiplier)
        if self.batch is None or self.batch >= self.records:
            return gaussian
        return dpa.SampledWithoutReplacementDpEvent(self.records, self.batch, gaussian)


def _per_round_rdp(mechanism: Mechanism, field: str) -> tuple[np.ndarray, np.ndarray, object]:
    dpa, rdp = _library(field, mechanism.sigma)
    if mechanism.batch is not None and mechanism.batch < mechanism.records and mechanism.relation != "replace":
        raise InputError("method.relation", mechanism.relation, "minibatch (sampled without replacement) accounting "
                         "is available for replace-one neighbours only")
    relations = dpa.NeighboringRelation
    relation = relations.REPLACE_ONE if mechanism.relation == "replace" else relations.ADD_OR_REMOVE_ONE
    accountant = rdp.RdpAccountant(neighboring_relation=relation)
    accountant.compose(mechanism.event(dpa), 1)
    return np.asarray(accountant.orders, dtype=float), np.asarray(accountant.rdp, dtype=float), rdp


class Accountant:
    """ε(t) for a fixed set of per-round mechanisms (one per distinct worker setting), the worst of them."""

    def __init__(self, mechanisms: list[Mechanism], delta: float, field: str = "method.sigma"):
        self.delta = delta
        self.curves = [_per_round_rdp(m, field) for m in set(mechanisms)] if all(m.sigma > 0 for m in mechanisms) else None

    def epsilon(self, rounds: int) -> float:
        """ε after ``rounds`` rounds (inf without noise)."""
        if self.curves is None:
            return math.inf
        if rounds <= 0:
            return 0.0
        return max(rdp.compute_epsilon(orders, rounds * per_round, self.delta)[0] for orders, per_round, rdp in self.curves)


def sigma_for(target_epsilon: float, delta: float, rounds: int, mechanisms: list[Mechanism],
              field: str = "method.target_epsilon") -> float:
    """The σ (shared by the workers) at which ``rounds`` rounds use exactly the budget (ε, δ). Remembered per
    process: the points of a sweep that differ only in seed or step size calibrate once (a minibatch
    calibration costs seconds)."""
    return _calibrated(target_epsilon, delta, rounds, tuple(mechanisms), field)


@functools.lru_cache(maxsize=1024)
def _calibrated(target_epsilon: float, delta: float, rounds: int, mechanisms: tuple, field: str) -> float:
    from scipy.optimize import brentq

    _library(field, target_epsilon)  # fail early if the library is missing

    def excess(log_sigma: float) -> float:
        sigma = math.exp(log_sigma)
        noisy = [Mechanism(sigma, m.sensitivity, m.relation, m.records, m.batch) for m in mechanisms]
        return Accountant(noisy, delta, field).epsilon(rounds) - target_epsilon

    sensitivity = max(m.sensitivity for m in mechanisms)
    lo, hi = math.log(1e-3 * sensitivity), math.log(1e5 * sensitivity)
    if excess(hi) > 0:
        raise InputError(field, target_epsilon, f"is unreachable: even σ = {math.exp(hi):.3g} gives ε = "
                         f"{excess(hi) + target_epsilon:.3g} after {rounds} rounds at δ = {delta:g}")
    if excess(lo) <= 0:
        return math.exp(lo)
    return math.exp(brentq(excess, lo, hi, xtol=1e-10, rtol=1e-10))
