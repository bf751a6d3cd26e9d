"""Privacy accounting of the Gaussian mechanism applied each round (DP variants of the clipping methods).

Each round a worker sends a clipped message plus N(0, σ² I): a Gaussian mechanism of sensitivity Δ on its
data, with noise multiplier z = σ/Δ. Δ = 2τ under replace-one neighbours (one record changed: both messages
lie in the τ-ball, and worker i's state is a function of its past noisy, public messages; docs/algorithms.md §5),
or Δ = τ under add/remove of a whole worker's contribution (worker-level DP). Full-batch methods touch every
record every round; the minibatch variants sample b_i of the N_i records without replacement, which
amplifies record-level privacy (not worker-level: the worker takes part in every round).

All arithmetic is Google's dp-accounting (extra ``dp``: ``pip install 'mpiclip[dp]'``), with one of two
accountants:

* ``rdp``: Rényi DP composed over the rounds and converted to (ε, δ) (its ``RdpAccountant``), with or
  without subsampling. A slight over-estimate: at z = 50, T = 1000, δ = 1e-5 it gives ε = 2.81.
* ``pld``: the privacy loss distribution, tight. T full-batch Gaussian rounds of multiplier z are exactly
  one Gaussian mechanism of multiplier z/√T, whose privacy curve is known in closed form (Balle & Wang
  2018); dp-accounting computes it in ``gaussian_mechanism`` and its ``PLDAccountant`` agrees to 1e-8
  (tested): ε = 2.59 at the point above. dp-accounting's PLD handles Poisson sampling only, not the
  fixed-size sampling without replacement of the minibatch methods, so they need ``rdp``.

Workers share σ; their sampling ratios q_i = b_i/N_i may differ. Subsampled RDP increases with q at every
order (each term of Wang, Balle & Kasiviswanathan's bound does), so the worker with the largest ratio
spends the most and the run's ε is its ε. A target (ε, δ) is met by calibrating z for that worker with
dp-accounting's ``calibrate_dp_mechanism`` (``rdp``) or ``get_sigma_gaussian`` (``pld``); z does not depend
on τ, so the points of a sweep that differ in τ, step size or seed share one calibration per process.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mpiclip.errors import InputError

RELATIONS = ("replace", "add_remove")
ACCOUNTANTS = ("rdp", "pld")
WORKER_SAMPLINGS = ("fixed", "poisson")  # how the workers of a round are drawn (partial participation)
_Z_RANGE = (1e-3, 1e5)  # noise multipliers searched by a calibration
_PLD_GRID = 1e-3  # PLDAccountant's value_discretization_interval for worker-sampled rounds


def _library(field: str, value):
    try:
        import dp_accounting
    except ImportError:
        raise InputError(field, value, "privacy accounting needs dp-accounting: pip install 'mpiclip[dp]'") from None
    return dp_accounting


def sensitivity(tau: float, relation: str) -> float:
    """Δ of a message in the τ-ball: 2τ for replace-one, τ for add/remove."""
    return 2.0 * tau if relation == "replace" else tau


@dataclass(frozen=True)
class WorkerSampling:
    """Partial participation: each round ``rule`` = 'fixed' draws m = int(rate·n) of the n workers without
    replacement, 'poisson' each worker on its own with probability ``rate``. A worker not drawn releases nothing
    that round, so a record (or a worker) is exposed only in the rounds its worker is drawn."""

    rule: str
    n: int
    rate: float

    @property
    def size(self) -> int:
        return int(self.rate * self.n)

    @property
    def everyone(self) -> bool:
        return self.rate == 1


@dataclass(frozen=True)
class Mechanism:
    """One round of one worker: noise σ, sensitivity Δ, and the minibatch sampling (None: full batch)."""

    sigma: float
    sensitivity: float
    relation: str = "replace"
    records: Optional[int] = None  # N_i, for minibatch sampling without replacement
    batch: Optional[int] = None  # b_i
    workers: Optional[WorkerSampling] = None  # who takes part in a round (None: every worker, every round)

    @property
    def worker_sampled(self) -> Optional[WorkerSampling]:
        """The round's worker sampling when it leaves workers out (then it amplifies), else None."""
        return None if self.workers is None or self.workers.everyone else self.workers

    @property
    def noise_multiplier(self) -> float:
        return self.sigma / self.sensitivity

    @property
    def sampled(self) -> Optional[tuple[int, int]]:
        """(N_i, b_i) when a round sees a strict subset of the records and that hides a record, else None (the
        unit of add/remove is the worker, whom sampling its own records does not hide)."""
        if self.batch is None or self.batch >= self.records or self.relation != "replace":
            return None
        return self.records, self.batch

    @property
    def sampling_ratio(self) -> float:
        return 1.0 if self.sampled is None else self.batch / self.records


def most_exposed(mechanisms: list[Mechanism]) -> Mechanism:
    """The worker that spends the most budget at a shared σ: the largest sampling ratio, then the smallest
    noise multiplier (the workers' sensitivities differ only for DP-SGD's sums under add/remove)."""
    return max(mechanisms, key=lambda m: (m.sampling_ratio, -m.noise_multiplier))


def _check(mechanism: Mechanism, accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise InputError("method.accountant", accountant, f"must be one of {', '.join(ACCOUNTANTS)}")
    if mechanism.sampled is not None and accountant == "pld":
        raise InputError("method.accountant", "pld", "dp-accounting's PLD accountant handles Poisson sampling only, "
                         "not the minibatches sampled without replacement here; use 'rdp'")
    _check_workers(mechanism, accountant)


# which (relation, worker sampling) dp-accounting amplifies, and with which of its neighbouring relations
_WORKER_RELATIONS = {("add_remove", "poisson"): "ADD_OR_REMOVE_ONE", ("replace", "fixed"): "REPLACE_ONE"}


def _check_workers(mechanism: Mechanism, accountant: str) -> None:
    workers = mechanism.worker_sampled
    if workers is None:
        return
    if (mechanism.relation, workers.rule) not in _WORKER_RELATIONS:
        pair = "add_remove with 'poisson'" if workers.rule == "fixed" else "replace with 'fixed'"
        raise InputError("method.participation_sampling", workers.rule, f"with method.relation = "
                         f"{mechanism.relation} is not an event dp-accounting amplifies (it composes {pair}"
                         ": set method.relation or method.participation_sampling)")
    if workers.rule == "fixed" and accountant == "pld":
        raise InputError("method.accountant", "pld", "dp-accounting's PLD accountant handles Poisson sampling only, "
                         "not the fixed-size worker sampling of method.participation_sampling = fixed; use 'rdp'")


def _worker_event(dpa, z: float, workers: WorkerSampling):
    """The round of a drawn worker's Gaussian message, amplified by the worker sampling."""
    gaussian = dpa.GaussianDpEvent(z)
    if workers.rule == "poisson":
        return dpa.PoissonSampledDpEvent(workers.rate, gaussian)
    return dpa.SampledWithoutReplacementDpEvent(workers.n, workers.size, gaussian)


def _worker_neighbours(dpa, workers: WorkerSampling):
    """dp-accounting's neighbouring relation for a worker-sampled round: add/remove for Poisson, replace-one for
    fixed-size sampling (the only pairs ``_check_workers`` lets through)."""
    return dpa.NeighboringRelation.ADD_OR_REMOVE_ONE if workers.rule == "poisson" else dpa.NeighboringRelation.REPLACE_ONE


def _round_event(dpa, z: float, sampled: Optional[tuple[int, int]]):
    gaussian = dpa.GaussianDpEvent(z)
    return gaussian if sampled is None else dpa.SampledWithoutReplacementDpEvent(*sampled, gaussian)


@functools.lru_cache(maxsize=256)
def _rdp_per_round(z: float, sampled: Optional[tuple[int, int]], workers: Optional[WorkerSampling] = None):
    """(orders, RDP of one round) of dp-accounting's RdpAccountant. A sampled round is also a Gaussian
    mechanism on the whole data (each possible minibatch's message moves by at most Δ), and at small z that
    bound is the lower one: the round's RDP is the smaller of the two at each order. With worker sampling
    too, the round is sampled twice over (the worker, then its minibatch), which dp-accounting does not
    compose; each level alone is a valid bound, and the round takes the smallest at each order."""
    dpa = _library("method.sigma", z)
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    def per_round(event, relation=dpa.NeighboringRelation.REPLACE_ONE):
        accountant = rdp.RdpAccountant(neighboring_relation=relation)
        accountant.compose(event, 1)
        return np.asarray(accountant.orders, dtype=float), np.asarray(accountant.rdp, dtype=float)

    orders, bound = per_round(_round_event(dpa, z, None))
    if sampled is not None:
        bound = np.minimum(per_round(_round_event(dpa, z, sampled))[1], bound)
    if workers is not None:
        bound = np.minimum(per_round(_worker_event(dpa, z, workers), _worker_neighbours(dpa, workers))[1], bound)
    return orders, bound


@functools.lru_cache(maxsize=1024)
def _pld_worker_epsilon(z: float, workers: WorkerSampling, rounds: int, delta: float) -> float:
    """ε of ``rounds`` Poisson worker-sampled Gaussian rounds by dp-accounting's PLDAccountant, on a grid of
    privacy losses 1e-3 wide: its pessimistic discretisation keeps ε an upper bound, within 1e-6 of the default
    grid's (1e-4) at a tenth of the time (it is evaluated at every recorded round)."""
    dpa = _library("method.sigma", z)
    accountant = dpa.pld.PLDAccountant(_worker_neighbours(dpa, workers), _PLD_GRID)
    accountant.compose(_worker_event(dpa, z, workers), rounds)
    return float(accountant.get_epsilon(delta))


class Accountant:
    """ε(t) of a run whose workers send ``mechanisms`` every round (inf without noise)."""

    def __init__(self, mechanisms: list[Mechanism], delta: float, accountant: str = "rdp", field: str = "method.sigma"):
        self.delta, self.accountant = delta, accountant
        self.mechanism = most_exposed(mechanisms)
        _check(self.mechanism, accountant)
        _library(field, self.mechanism.sigma)

    def epsilon(self, rounds: int) -> float:
        """ε after ``rounds`` rounds."""
        z = self.mechanism.noise_multiplier
        if z == 0:
            return math.inf
        if rounds <= 0:
            return 0.0
        workers = self.mechanism.worker_sampled
        if self.accountant == "pld":
            from dp_accounting import gaussian_mechanism

            full = float(gaussian_mechanism.get_epsilon_gaussian(z / math.sqrt(rounds), self.delta))
            return full if workers is None else min(full, _pld_worker_epsilon(z, workers, rounds, self.delta))
        from dp_accounting.rdp import rdp_privacy_accountant as rdp

        orders, per_round = _rdp_per_round(z, self.mechanism.sampled, workers)
        return float(rdp.compute_epsilon(orders, rounds * per_round, self.delta)[0])


def sigma_for(target_epsilon: float, delta: float, rounds: int, mechanisms: list[Mechanism], accountant: str = "rdp",
              field: str = "method.target_epsilon") -> float:
    """The σ (shared by the workers) at which ``rounds`` rounds spend at most, and to 1e-6 in z exactly, the
    budget (ε, δ): z calibrated by dp-accounting for the most exposed worker, times its sensitivity."""
    worst = most_exposed(mechanisms)
    _check(worst, accountant)
    return worst.sensitivity * noise_multiplier_for(target_epsilon, delta, rounds, worst.sampled, accountant, field,
                                                    worst.worker_sampled)


@functools.lru_cache(maxsize=1024)
def noise_multiplier_for(target_epsilon: float, delta: float, rounds: int, sampled: Optional[tuple[int, int]],
                         accountant: str = "rdp", field: str = "method.target_epsilon",
                         workers: Optional[WorkerSampling] = None) -> float:
    """z = σ/Δ for the budget; remembered per process (a subsampled RDP calibration takes seconds)."""
    dpa = _library(field, target_epsilon)
    # the relation only matters to a worker sampling (Poisson: add/remove); a record's is replace-one
    relation = "add_remove" if workers is not None and workers.rule == "poisson" else "replace"
    spent = lambda z: Accountant([Mechanism(z, 1.0, relation, *(sampled or (None, None)), workers)], delta,
                                 accountant, field).epsilon(rounds)
    reached = spent(_Z_RANGE[1])
    if reached > target_epsilon:
        raise InputError(field, target_epsilon, f"is unreachable: even noise multiplier {_Z_RANGE[1]:g} gives ε = "
                         f"{reached:.3g} after {rounds} rounds at δ = {delta:g}")
    from dp_accounting import mechanism_calibration
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    def calibrated(new_accountant, event, bracket=_Z_RANGE):
        return float(dpa.calibrate_dp_mechanism(new_accountant, lambda z: dpa.SelfComposedDpEvent(event(z), rounds),
                                                target_epsilon, delta,
                                                mechanism_calibration.ExplicitBracketInterval(*bracket)))

    if accountant == "pld":
        from dp_accounting import gaussian_mechanism

        full = float(gaussian_mechanism.get_sigma_gaussian(target_epsilon, delta)) * math.sqrt(rounds)
        if workers is None:
            return full
        # search below the full-batch z only, down to a quarter of p times it (sampling at rate p acts at most
        # like dividing the noise by p): a PLD of very small z is slow to build and never the answer
        low = max(_Z_RANGE[0], 0.25 * workers.rate * full)
        if spent(low) <= target_epsilon:
            return low
        return calibrated(lambda: dpa.pld.PLDAccountant(_worker_neighbours(dpa, workers), _PLD_GRID),
                          lambda z: _worker_event(dpa, z, workers), (low, full))
    if spent(_Z_RANGE[0]) <= target_epsilon:
        return _Z_RANGE[0]  # a budget this large allows any noise the search considers

    def replace_one():
        return rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)

    # each bound of a sampled round (see _rdp_per_round) suffices; the smallest z is the best one
    candidates = [calibrated(replace_one, lambda z: _round_event(dpa, z, None))]
    if sampled is not None:
        candidates.append(calibrated(replace_one, lambda z: _round_event(dpa, z, sampled)))
    if workers is not None:
        candidates.append(calibrated(lambda: rdp.RdpAccountant(neighboring_relation=_worker_neighbours(dpa, workers)),
                                     lambda z: _worker_event(dpa, z, workers)))
    return min(candidates)
