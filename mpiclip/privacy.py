"""Privacy accounting of the Gaussian mechanism applied each round (DP variants of the clipping methods).

Each round a worker sends a clipped message plus N(0, σ² I): a Gaussian mechanism of sensitivity Δ on its
data, with noise multiplier z = σ/Δ. Three neighbouring relations (``RELATIONS``; docs/algorithms.md §5):

* ``replace``: one record changed. Both messages lie in the τ-ball (worker i's state is a function of its
  past noisy, public messages), so Δ = 2τ. The minibatch variants sample b_i of the N_i records without
  replacement ("fixed"), which amplifies it.
* ``add_remove_record``: one record added or removed, the convention of the DP-SGD literature (Abadi et al.,
  Opacus). A message that clips a worker's mean gradient or an error-feedback difference can still move
  anywhere in the τ-ball (Δ = 2τ); DP-SGD's clipped *sum* moves by one clipped term (Δ = τ, its override).
  Amplified by Poisson sampling (each record independently with probability q), the case dp-accounting
  accounts under ADD_OR_REMOVE_ONE; fixed-size minibatches under it are refused (``_check``).
* ``add_remove``: a whole worker's contribution added or removed (worker-level DP), Δ = τ; sampling a
  worker's own records does not hide the worker, so nothing is amplified.

Partial participation (``WorkerSampling`` on a ``Mechanism``) amplifies too, where dp-accounting composes the
event (``_WORKER_RELATIONS``): fixed-size draws under ``replace`` and ``add_remove_record`` (the unit's worker is
changed, n is not). Poisson draws are not accounted: a worker not drawn sends no noise, so whether a worker
(or the worker holding a record) took part changes how many noise terms a round's sum carries, which the
Poisson-subsampled Gaussian (one noise, added whoever took part) does not model. With a record sampling as well, each level
alone bounds the round and the round takes the least of them (docs/algorithms.md §5).

All arithmetic is Google's dp-accounting (extra ``dp``: ``pip install 'mpiclip[dp]'``), with one of two
accountants:

* ``rdp``: Rényi DP composed over the rounds and converted to (ε, δ) (its ``RdpAccountant``), with or
  without subsampling. A slight over-estimate: at z = 50, T = 1000, δ = 1e-5 it gives ε = 2.81.
* ``pld``: the privacy loss distribution, tight. T full-batch Gaussian rounds of multiplier z are exactly
  one Gaussian mechanism of multiplier z/√T, whose privacy curve is known in closed form (Balle & Wang
  2018); dp-accounting computes it in ``gaussian_mechanism`` and its ``PLDAccountant`` agrees to 1e-8
  (tested): ε = 2.59 at the point above. dp-accounting's PLD handles Poisson sampling only, not the
  fixed-size sampling without replacement of the minibatch methods, so they need ``rdp``; a Poisson-sampled
  round's PLD is built once by dp-accounting and self-composed for each t.

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

RELATIONS = ("replace", "add_remove", "add_remove_record")
SAMPLINGS = ("fixed", "poisson")  # how a minibatch method draws its records (method.sampling)
ACCOUNTANTS = ("rdp", "pld")
WORKER_SAMPLINGS = ("fixed", "poisson")  # how the workers of a round are drawn (partial participation)
# Δ of a message in the τ-ball, in units of τ: any two such messages differ by at most 2τ (replace, or
# add/remove one record); leaving a worker out entirely moves the sum of the workers' messages by τ
_SENSITIVITY = {"replace": 2.0, "add_remove": 1.0, "add_remove_record": 2.0}
# the relation whose events amplify by a record sampling, and the dp-accounting relation that accounts them
_SAMPLED_RELATION = {"fixed": ("replace", "REPLACE_ONE"), "poisson": ("add_remove_record", "ADD_OR_REMOVE_ONE")}
# the relations a worker sampling amplifies, and the dp-accounting relation that accounts them: a fixed-size draw
# of m of n hides a change to one worker's data (a record replaced, added or removed: n is the same in both
# neighbours, and so is the number of noisy messages), a replace-one event of the workers. A Poisson draw is not
# here: the drawn workers each add their own noise, so with a worker (or its record's worker) drawn the round's
# sum carries one noise term more than without, and nothing is drawn the sum can be noise-free; the
# Poisson-subsampled Gaussian adds one noise whoever is drawn (a server that noised the sum would be that event)
_WORKER_RELATIONS = {"fixed": (("replace", "add_remove_record"), "REPLACE_ONE")}
_Z_RANGE = (1e-3, 1e5)  # noise multipliers searched by a calibration
# below it a Poisson round's PLD spans privacy losses too wide to hold (z = 0.05: minutes, gigabytes), and its ε
# (over 10 after one round at q = 0.2) is far past any budget worth the tight accountant
_PLD_POISSON_MIN_Z = 0.5


def _library(field: str, value):
    try:
        import dp_accounting
    except ImportError:
        raise InputError(field, value, "privacy accounting needs dp-accounting: pip install 'mpiclip[dp]'") from None
    return dp_accounting


def sensitivity(tau: float, relation: str) -> float:
    """Δ of a message in the τ-ball: 2τ for replace-one and for add/remove of one record, τ for add/remove of a
    worker."""
    return _SENSITIVITY[relation] * tau


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
    """One round of one worker: noise σ, sensitivity Δ, and the minibatch sampling (None: full batch): b_i of
    N_i records without replacement, or each record with probability ``poisson``."""

    sigma: float
    sensitivity: float
    relation: str = "replace"
    records: Optional[int] = None  # N_i, for minibatch sampling without replacement
    batch: Optional[int] = None  # b_i
    poisson: Optional[float] = None  # q, for Poisson sampling (records and batch then unset)
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
        if self.batch is None or self.batch >= self.records or self.relation == "add_remove":
            return None
        return self.records, self.batch

    @property
    def record_sampling(self) -> Optional[tuple]:
        """The round's record sampling as the events see it: ("fixed", N_i, b_i), ("poisson", q) or None (every
        record, or a worker-level unit that sampling does not hide)."""
        if self.poisson is not None:
            return ("poisson", self.poisson) if self.poisson < 1 and self.relation != "add_remove" else None
        return None if self.sampled is None else ("fixed", *self.sampled)

    @property
    def sampling_ratio(self) -> float:
        sampling = self.record_sampling
        if sampling is None:
            return 1.0
        return sampling[1] if sampling[0] == "poisson" else self.batch / self.records


def most_exposed(mechanisms: list[Mechanism]) -> Mechanism:
    """The worker that spends the most budget at a shared σ: the largest sampling ratio, then the smallest
    noise multiplier (the workers' sensitivities differ only for DP-SGD's sums under add/remove)."""
    return max(mechanisms, key=lambda m: (m.sampling_ratio, -m.noise_multiplier))


def _check(mechanism: Mechanism, accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise InputError("method.accountant", accountant, f"must be one of {', '.join(ACCOUNTANTS)}")
    _check_records(mechanism, accountant)
    _check_workers(mechanism, accountant)
    _check_pld_width(mechanism, accountant)


def _check_records(mechanism: Mechanism, accountant: str) -> None:
    sampling = mechanism.record_sampling
    if sampling is None:
        return
    kind = sampling[0]
    relation, _ = _SAMPLED_RELATION[kind]
    if mechanism.relation != relation:
        raise InputError("method.sampling", kind, f"is accounted under relation '{relation}' only (dp-accounting "
                         f"amplifies {'Poisson' if kind == 'poisson' else 'fixed-size'} sampling for that relation), "
                         f"not '{mechanism.relation}'; use sampling '{'fixed' if kind == 'poisson' else 'poisson'}'")
    if kind == "fixed" and accountant == "pld":
        raise InputError("method.accountant", "pld", "dp-accounting's PLD accountant handles Poisson sampling only, "
                         "not the minibatches sampled without replacement here; use 'rdp'")


def _check_workers(mechanism: Mechanism, accountant: str) -> None:
    workers = mechanism.worker_sampled
    if workers is None:
        return
    if workers.rule not in _WORKER_RELATIONS:
        raise InputError("method.participation_sampling", workers.rule, "with DP noise is not accounted: each drawn "
                         "worker adds its own noise, so who was drawn changes the noise of a round's sum, which no "
                         "dp-accounting event models; use 'fixed' with method.relation = replace or add_remove_record")
    relations, _ = _WORKER_RELATIONS[workers.rule]
    if mechanism.relation not in relations:
        pairs = "; ".join(f"'{rule}' with {' or '.join(amplified)}" for rule, (amplified, _) in _WORKER_RELATIONS.items())
        raise InputError("method.participation_sampling", workers.rule, f"with method.relation = "
                         f"{mechanism.relation} is not an event dp-accounting amplifies (it composes {pairs}"
                         ": set method.relation or method.participation_sampling)")
    if workers.rule == "fixed" and accountant == "pld":
        raise InputError("method.accountant", "pld", "dp-accounting's PLD accountant handles Poisson sampling only, "
                         "not the fixed-size worker sampling of method.participation_sampling = fixed; use 'rdp'")


def _check_pld_width(mechanism: Mechanism, accountant: str) -> None:
    """A Poisson round's PLD below _PLD_POISSON_MIN_Z cannot be built."""
    poisson = (mechanism.record_sampling or ("",))[0] == "poisson"
    if poisson and accountant == "pld" and 0 < mechanism.noise_multiplier < _PLD_POISSON_MIN_Z:
        raise InputError("method.accountant", "pld", f"a Poisson round's privacy loss distribution at noise multiplier "
                         f"{mechanism.noise_multiplier:.3g} (below {_PLD_POISSON_MIN_Z:g}) is too wide to build; use 'rdp'")


def _worker_event(dpa, z: float, workers: WorkerSampling):
    """The round of a drawn worker's Gaussian message, amplified by the (fixed-size) worker sampling."""
    return dpa.SampledWithoutReplacementDpEvent(workers.n, workers.size, dpa.GaussianDpEvent(z))


def _worker_neighbours(dpa, workers: WorkerSampling):
    """dp-accounting's neighbouring relation for a worker-sampled round (``_WORKER_RELATIONS``)."""
    return getattr(dpa.NeighboringRelation, _WORKER_RELATIONS[workers.rule][1])


def _round_event(dpa, z: float, sampling: Optional[tuple]):
    """One round as a dp-accounting event: the Gaussian of multiplier z, under the record sampling (or none)."""
    gaussian = dpa.GaussianDpEvent(z)
    if sampling is None:
        return gaussian
    if sampling[0] == "poisson":
        return dpa.PoissonSampledDpEvent(sampling[1], gaussian)
    return dpa.SampledWithoutReplacementDpEvent(*sampling[1:], gaussian)


def _neighbouring(dpa, sampling: Optional[tuple]):
    """dp-accounting's relation for the events: its own name for the sampling's (replace-one for unsampled
    Gaussian rounds, whose RDP and PLD do not depend on it)."""
    name = "REPLACE_ONE" if sampling is None else _SAMPLED_RELATION[sampling[0]][1]
    return getattr(dpa.NeighboringRelation, name)


@functools.lru_cache(maxsize=256)
def _rdp_per_round(z: float, sampling: Optional[tuple], workers: Optional[WorkerSampling] = None):
    """(orders, RDP of one round) of dp-accounting's RdpAccountant. A round sampled without replacement is also
    a Gaussian mechanism on the whole data (each possible minibatch's message moves by at most Δ), and at small
    z that bound is the lower one: the round's RDP is the smaller of the two at each order. dp-accounting's
    Poisson bound is exact at integer orders and never above the unsampled one, so it stands alone. With worker
    sampling too, the round is sampled twice over (the worker, then its records), which dp-accounting does not
    compose; each level alone is a valid bound, and the round takes the smallest at each order."""
    dpa = _library("method.sigma", z)
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    def per_round(event, relation):
        accountant = rdp.RdpAccountant(neighboring_relation=relation)
        accountant.compose(event, 1)
        return np.asarray(accountant.orders, dtype=float), np.asarray(accountant.rdp, dtype=float)

    records = _neighbouring(dpa, sampling)
    if sampling is not None and sampling[0] == "poisson":
        orders, bound = per_round(_round_event(dpa, z, sampling), records)
    else:
        orders, bound = per_round(_round_event(dpa, z, None), records)
        if sampling is not None:
            bound = np.minimum(per_round(_round_event(dpa, z, sampling), records)[1], bound)
    if workers is not None:
        bound = np.minimum(per_round(_worker_event(dpa, z, workers), _worker_neighbours(dpa, workers))[1], bound)
    return orders, bound


@functools.lru_cache(maxsize=16)
def _poisson_pld(z: float, q: float):
    """dp-accounting's privacy loss distribution of one Poisson-sampled Gaussian round (add/remove one record)."""
    dpa = _library("method.sigma", z)
    from dp_accounting.pld import privacy_loss_distribution

    return privacy_loss_distribution.from_gaussian_mechanism(z, sampling_prob=q, use_connect_dots=True,
                                                            neighboring_relation=_neighbouring(dpa, ("poisson", q)))


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
        sampling, workers = self.mechanism.record_sampling, self.mechanism.worker_sampled
        if self.accountant == "pld" and sampling is not None:
            # Poisson records (_check refuses fixed-size), then under add_remove_record, which Poisson workers are not
            return float(_poisson_pld(z, sampling[1]).self_compose(rounds).get_epsilon_for_delta(self.delta))
        if self.accountant == "pld":
            from dp_accounting import gaussian_mechanism

            # full batches (_check refuses the PLD with worker sampling)
            return float(gaussian_mechanism.get_epsilon_gaussian(z / math.sqrt(rounds), self.delta))
        from dp_accounting.rdp import rdp_privacy_accountant as rdp

        orders, per_round = _rdp_per_round(z, sampling, workers)
        return float(rdp.compute_epsilon(orders, rounds * per_round, self.delta)[0])


def sigma_for(target_epsilon: float, delta: float, rounds: int, mechanisms: list[Mechanism], accountant: str = "rdp",
              field: str = "method.target_epsilon") -> float:
    """The σ (shared by the workers) at which ``rounds`` rounds spend at most, and to 1e-6 in z exactly, the
    budget (ε, δ): z calibrated by dp-accounting for the most exposed worker, times its sensitivity."""
    worst = most_exposed(mechanisms)
    _check(worst, accountant)
    return worst.sensitivity * noise_multiplier_for(target_epsilon, delta, rounds, worst.record_sampling, accountant,
                                                    field, worst.worker_sampled)


def _unit_mechanism(z: float, sampling: Optional[tuple], workers: Optional[WorkerSampling] = None) -> Mechanism:
    """A mechanism of multiplier z (Δ = 1) with the given record and worker samplings, under a relation that
    amplifies them (the first a record sampling's, then a worker sampling's; their events depend on nothing else)."""
    if sampling is not None:
        relation = _SAMPLED_RELATION[sampling[0]][0]
    else:
        relation = "replace" if workers is None else _WORKER_RELATIONS[workers.rule][0][0]
    if sampling is None:
        return Mechanism(z, 1.0, relation, workers=workers)
    if sampling[0] == "poisson":
        return Mechanism(z, 1.0, relation, poisson=sampling[1], workers=workers)
    return Mechanism(z, 1.0, relation, *sampling[1:], workers=workers)


@functools.lru_cache(maxsize=1024)
def noise_multiplier_for(target_epsilon: float, delta: float, rounds: int, sampling: Optional[tuple],
                         accountant: str = "rdp", field: str = "method.target_epsilon",
                         workers: Optional[WorkerSampling] = None) -> float:
    """z = σ/Δ for the budget; remembered per process (a subsampled RDP calibration takes seconds)."""
    dpa = _library(field, target_epsilon)
    if accountant == "pld" and sampling is not None:  # Poisson records, never with worker sampling (_check)
        return _poisson_pld_multiplier(target_epsilon, delta, rounds, sampling, field)
    spent = lambda z: Accountant([_unit_mechanism(z, sampling, workers)], delta, accountant, field).epsilon(rounds)
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

        return float(gaussian_mechanism.get_sigma_gaussian(target_epsilon, delta)) * math.sqrt(rounds)
    if spent(_Z_RANGE[0]) <= target_epsilon:
        return _Z_RANGE[0]  # a budget this large allows any noise the search considers

    def replace_one():
        return rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)

    # each bound of a round (see _rdp_per_round) suffices; the smallest z is the best one. A Poisson round's own
    # bound is never above the unsampled one; a round sampled without replacement also has the unsampled one
    candidates = [calibrated(lambda: rdp.RdpAccountant(neighboring_relation=_neighbouring(dpa, sampling)),
                             lambda z: _round_event(dpa, z, sampling))]
    if sampling is not None and sampling[0] == "fixed":
        candidates.append(calibrated(replace_one, lambda z: _round_event(dpa, z, None)))
    if workers is not None:
        candidates.append(calibrated(lambda: rdp.RdpAccountant(neighboring_relation=_worker_neighbours(dpa, workers)),
                                     lambda z: _worker_event(dpa, z, workers)))
    return min(candidates)


def _poisson_pld_multiplier(target_epsilon: float, delta: float, rounds: int, sampling: tuple, field: str) -> float:
    """z for the budget by the PLD of Poisson rounds, searched below the RDP's z (the PLD is tighter, so that z
    spends at most the budget) down to half of it (or _PLD_POISSON_MIN_Z): a PLD at the far end of _Z_RANGE
    cannot be built."""
    from dp_accounting import mechanism_calibration
    from dp_accounting.pld import pld_privacy_accountant as pld

    dpa = _library(field, target_epsilon)
    upper = noise_multiplier_for(target_epsilon, delta, rounds, sampling, "rdp", field)
    lower = max(upper / 2, _PLD_POISSON_MIN_Z)
    spent = lambda z: Accountant([_unit_mechanism(z, sampling)], delta, "pld", field).epsilon(rounds)
    if lower >= upper or spent(lower) <= target_epsilon:
        return min(lower, upper)  # the RDP's z or half of it already meets the budget
    return float(dpa.calibrate_dp_mechanism(
        lambda: pld.PLDAccountant(neighboring_relation=_neighbouring(dpa, sampling)),
        lambda z: dpa.SelfComposedDpEvent(_round_event(dpa, z, sampling), rounds),
        target_epsilon, delta, mechanism_calibration.ExplicitBracketInterval(lower, upper)))
