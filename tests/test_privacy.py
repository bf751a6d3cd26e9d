"""The privacy accountant against published values and independent closed forms: the Gaussian mechanism's
exact privacy curve (Balle & Wang 2018), Rényi DP of Gaussian rounds, the calibration of σ for a budget,
the worker that decides a run's ε, and bad input."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from mpiclip import privacy
from mpiclip.errors import InputError

dp_accounting = pytest.importorskip("dp_accounting")


def gaussian_delta(z: float, eps: float) -> float:
    """δ(ε) of one Gaussian mechanism with noise multiplier z (Balle & Wang 2018, Theorem 8)."""
    return norm.cdf(1 / (2 * z) - eps * z) - math.exp(eps) * norm.cdf(-1 / (2 * z) - eps * z)


def test_the_issue_values_rdp_2_81_and_pld_2_59():
    """z = 50, T = 1000, δ = 1e-5: ε = 2.81 by RDP, 2.59 by the privacy loss distribution."""
    rounds = [privacy.Mechanism(50.0, 1.0)]
    assert privacy.Accountant(rounds, 1e-5, "rdp").epsilon(1000) == pytest.approx(2.81, rel=0.01)
    assert privacy.Accountant(rounds, 1e-5, "pld").epsilon(1000) == pytest.approx(2.59, rel=0.01)
    # and the calibration inverts both: the budget gives back z = 50
    assert privacy.sigma_for(2.8136, 1e-5, 1000, [privacy.Mechanism(1.0, 1.0)], "rdp") == pytest.approx(50, rel=0.01)
    assert privacy.sigma_for(2.5944, 1e-5, 1000, [privacy.Mechanism(1.0, 1.0)], "pld") == pytest.approx(50, rel=0.01)


def test_gaussian_dp_published_point_and_closed_form():
    """1-GDP is (1, 0.1269)-DP (Dong, Roth & Su 2019): one Gaussian round at z = 1 spends ε = 1 at that δ;
    and every ε of the pld accountant solves the closed form δ(ε) of T composed rounds (multiplier z/√T)."""
    assert gaussian_delta(1.0, 1.0) == pytest.approx(0.1269, abs=1e-4)
    assert privacy.Accountant([privacy.Mechanism(1.0, 1.0)], 0.1269, "pld").epsilon(1) == pytest.approx(1.0, rel=0.01)
    for z, rounds, delta in [(50.0, 1000, 1e-5), (3.0, 1, 1e-6), (12.0, 300, 1 / 8124)]:
        eps = privacy.Accountant([privacy.Mechanism(2 * z, 2.0)], delta, "pld").epsilon(rounds)
        assert gaussian_delta(z / math.sqrt(rounds), eps) == pytest.approx(delta, rel=1e-6)


def test_pld_is_dp_accounting_pld_accountant():
    """The closed form the pld accountant uses is what dp-accounting's PLDAccountant composes round by round."""
    from dp_accounting.pld import pld_privacy_accountant

    accountant = pld_privacy_accountant.PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    accountant.compose(dp_accounting.GaussianDpEvent(50.0), 1000)
    ours = privacy.Accountant([privacy.Mechanism(100.0, 2.0)], 1e-5, "pld").epsilon(1000)
    assert ours == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-6)


@pytest.mark.parametrize("eps, delta, rounds", [(1.0, 1e-5, 1), (4.0, 1 / 8124, 300), (16.0, 1 / 32561, 1000)])
def test_pld_calibration_solves_the_closed_form(eps, delta, rounds):
    """σ for a budget: z/√T is the analytic Gaussian mechanism's noise, found here by an independent root."""
    tau = 0.3
    sigma = privacy.sigma_for(eps, delta, rounds, [privacy.Mechanism(1.0, 2 * tau)], "pld")
    z_one = brentq(lambda z: gaussian_delta(z, eps) - delta, 1e-3, 1e3, xtol=1e-14)
    assert sigma / (2 * tau) / math.sqrt(rounds) == pytest.approx(z_one, rel=1e-6)
    if eps <= 1:  # the classical sufficient σ = √(2 ln(1.25/δ))·Δ/ε (Dwork & Roth, Thm A.1) is larger
        assert z_one < math.sqrt(2 * math.log(1.25 / delta)) / eps


def test_rdp_is_the_closed_form_of_gaussian_rounds():
    """One Gaussian round has RDP α/(2z²) at every order α; T rounds spend at most the classic conversion
    min_α Tα/(2z²) + log(1/δ)/(α − 1) (dp-accounting's conversion is tighter, by less than 20 % here)."""
    orders, per_round = privacy._rdp_per_round(1.5, None)
    np.testing.assert_allclose(per_round, orders / (2 * 1.5**2), rtol=1e-12)
    ours = privacy.Accountant([privacy.Mechanism(3.0, 2.0)], 1e-5).epsilon(50)
    classic = min(50 * a / (2 * 1.5**2) + math.log(1e5) / (a - 1) for a in np.linspace(1.01, 200, 20000))
    assert 0.8 * classic < ours <= classic


def test_opacus_published_example():
    """Opacus' example (60000 records, batch 256, noise 1.12, 60 epochs, δ = 1e-5, orders 10, 20, 100, the
    classic conversion) gives ε = 2.95; dp-accounting's RDP with that conversion reproduces it."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    accountant = rdp.RdpAccountant(orders=[10, 20, 100])
    accountant.compose(dp_accounting.PoissonSampledDpEvent(256 / 60000, dp_accounting.GaussianDpEvent(1.12)),
                       int(60 * 60000 / 256))
    classic = min(r + math.log(1e5) / (a - 1) for a, r in zip([10, 20, 100], accountant.rdp))
    assert classic == pytest.approx(2.95, abs=0.02)


@pytest.mark.parametrize("accountant, sampled", [("rdp", None), ("pld", None), ("rdp", (400, 100))])
def test_calibration_meets_the_budget_from_below(accountant, sampled):
    records, batch = sampled or (None, None)
    mechanism = lambda sigma: [privacy.Mechanism(sigma, 0.4, "replace", records, batch)]
    sigma = privacy.sigma_for(4.0, 1e-5, 200, mechanism(1.0), accountant)
    spent = privacy.Accountant(mechanism(sigma), 1e-5, accountant).epsilon(200)
    assert spent <= 4.0 and spent == pytest.approx(4.0, rel=1e-5)
    more = privacy.Accountant(mechanism(sigma * (1 - 1e-4)), 1e-5, accountant).epsilon(200)
    assert more > 4.0  # less noise would overspend: σ is the smallest within the budget


def test_the_worker_with_the_largest_sampling_ratio_decides():
    """Subsampled RDP grows with the ratio b/N: the run's ε is the largest of the workers' own ε."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    shards = [(400, 99), (410, 103), (397, 99), (1000, 249), (30, 7)]
    mechanisms = [privacy.Mechanism(1.0, 0.5, "replace", n, b) for n, b in shards]
    each = []
    for n, b in shards:
        acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        acc.compose(dp_accounting.SampledWithoutReplacementDpEvent(n, b, dp_accounting.GaussianDpEvent(2.0)), 100)
        each.append(acc.get_epsilon(1e-5))
    assert privacy.most_exposed(mechanisms).sampled == (410, 103)  # 0.2512 is the largest ratio
    assert privacy.Accountant(mechanisms, 1e-5).epsilon(100) == pytest.approx(max(each), rel=1e-9)
    assert np.argmax(each) == 1


def test_worker_level_privacy_is_not_amplified_by_sampling_records():
    """Add/remove of a whole worker: it takes part in every round whatever records it samples."""
    sampled = privacy.Accountant([privacy.Mechanism(1.0, 0.5, "add_remove", 400, 40)], 1e-5).epsilon(100)
    assert sampled == privacy.Accountant([privacy.Mechanism(1.0, 0.5, "add_remove")], 1e-5).epsilon(100)
    assert privacy.Accountant([privacy.Mechanism(1.0, 0.5, "add_remove", 400, 40)], 1e-5, "pld").epsilon(100) < sampled
    # DP-SGD's sums under add/remove: sensitivity b_i·τ, so the worker with the largest batch decides
    workers = [privacy.Mechanism(1.0, 0.1 * b, "add_remove") for b in (30, 50, 40)]
    assert privacy.most_exposed(workers).sensitivity == pytest.approx(5.0)
    assert privacy.sigma_for(4.0, 1e-5, 100, workers) == pytest.approx(
        5.0 * privacy.sigma_for(4.0, 1e-5, 100, [privacy.Mechanism(1.0, 1.0)]), rel=1e-12)


def test_a_calibration_is_shared_by_every_tau_and_equals_a_fresh_one():
    """z does not depend on τ: sweep points that differ in τ, seed or step size calibrate once per process."""
    privacy.noise_multiplier_for.cache_clear()
    first = privacy.sigma_for(4.0, 1e-5, 50, [privacy.Mechanism(1.0, 0.2, "replace", 400, 40)])
    other_tau = privacy.sigma_for(4.0, 1e-5, 50, [privacy.Mechanism(1.0, 0.6, "replace", 400, 40)])
    info = privacy.noise_multiplier_for.cache_info()
    assert (info.hits, info.misses) == (1, 1) and other_tau == 3 * first
    privacy.noise_multiplier_for.cache_clear()
    assert privacy.sigma_for(4.0, 1e-5, 50, [privacy.Mechanism(1.0, 0.2, "replace", 400, 40)]) == first  # bit for bit
    assert privacy.sigma_for(4.0, 1e-5, 60, [privacy.Mechanism(1.0, 0.2, "replace", 400, 40)]) > first  # more rounds


def test_a_huge_budget_takes_the_least_noise_searched():
    assert privacy.sigma_for(1e7, 1e-5, 1, [privacy.Mechanism(1.0, 2.0)]) == pytest.approx(2e-3)
    assert privacy.sigma_for(1e7, 1e-5, 1, [privacy.Mechanism(1.0, 2.0)], "pld") < 1e-3


@pytest.mark.parametrize("call, message", [
    (lambda: privacy.sigma_for(1e-9, 1e-5, 100, [privacy.Mechanism(1.0, 2.0)]),
     r"^method.target_epsilon = 1e-09: is unreachable"),
    (lambda: privacy.sigma_for(2.0, 1e-5, 100, [privacy.Mechanism(1.0, 2.0, "replace", 100, 10)], "pld"),
     r"^method.accountant = 'pld': dp-accounting's PLD accountant handles Poisson sampling only"),
    (lambda: privacy.Accountant([privacy.Mechanism(1.0, 1.0)], 1e-5, "moments"),
     r"^method.accountant = 'moments': must be one of rdp, pld"),
])
def test_bad_privacy_input(call, message):
    with pytest.raises(InputError, match=message):
        call()
