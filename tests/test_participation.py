"""Partial participation of the clipping methods (issue 30 item 3): the draw, who sends and what the server
averages, full participation to the last bit, and ε of worker sampling against dp-accounting's own events
(rank independence: tests/mpi/test_mpi_runs.py; bad input: the catalogue of tests/test_faults.py)."""

import numpy as np
import pytest
from helpers import config_table, differences, run_completed

from mpiclip import privacy
from mpiclip.comm import SerialComm
from mpiclip.compressors import Identity
from mpiclip.methods.clip21 import Clip21GD, ClipGD
from mpiclip.methods.participation import drawn_workers
from mpiclip.rng import SAMPLING
from mpiclip.runners.synchronous import RoundContext, exchange

dp_accounting = pytest.importorskip("dp_accounting")
from dp_accounting.rdp import rdp_privacy_accountant as rdp  # noqa: E402

N = 6


class Fixed:
    """An oracle with fixed gradients a_i."""

    def __init__(self, a):
        self.a = a

    def full(self):
        return self.a


def one_round(method, a, t, ws, ss, x):
    comm = SerialComm()
    comm.bind(len(a))
    ctx = RoundContext(t, 7, np.arange(len(a)), len(a), True, x)
    ws, msg, metrics = method.worker_step(ws, Fixed(a), ctx)
    ss, x, _ = method.server_step(ss, x, exchange(comm, msg, len(a), True, False, np.arange(len(a))), ctx)
    return ws, ss, x, msg, metrics, drawn_workers(ctx, method.participation, method.participation_sampling)


A = np.random.default_rng(3).normal(size=(N, 4)) * 3


@pytest.mark.parametrize("rule", ["fixed", "poisson"])
def test_clip_gd_averages_the_messages_of_the_drawn_workers(rule):
    method = ClipGD(Identity(), 0.5, tau=1.0, participation=0.5, participation_sampling=rule)
    ws, ss = method.initial_state(np.zeros(4), N)
    sizes = set()
    for t in range(12):
        x0 = np.full(4, 0.1 * t)
        _, _, x, msg, metrics, drawn = one_round(method, A, t, ws, ss, x0)
        clipped = A * np.minimum(1, 1.0 / np.linalg.norm(A, axis=1))[:, None]
        step = clipped[drawn].mean(axis=0) if drawn.any() else np.zeros(4)
        np.testing.assert_allclose(x, x0 - 0.5 * step, rtol=0, atol=1e-15)
        assert (msg.bits[~drawn] == 0).all() and (msg.bits[drawn] > 0).all()  # bits: only what was sent
        assert (msg.values[~drawn] == 0).all()
        np.testing.assert_array_equal(metrics["participated"], drawn.astype(float))
        assert np.isnan(metrics["clip_active"][~drawn]).all() and not np.isnan(metrics["clip_active"][drawn]).any()
        sizes.add(int(drawn.sum()))
    assert sizes == {3} if rule == "fixed" else len(sizes) > 1  # Poisson: the round's size varies


def test_clip21_keeps_the_stale_states_of_the_workers_that_sit_out():
    method = Clip21GD(Identity(), 0.1, tau=0.5, participation=0.5, participation_sampling="poisson")
    ws, ss = method.initial_state(np.zeros(4), N)
    x, seen = np.zeros(4), np.zeros(N, bool)
    for t in range(15):
        before = ws.v.copy()
        ws, ss, x, _, _, drawn = one_round(method, A, t, ws, ss, x)
        np.testing.assert_array_equal(ws.v[~drawn], before[~drawn])  # sat out: state kept
        assert not np.array_equal(ws.v[drawn], before[drawn]) or not drawn.any()
        np.testing.assert_allclose(ss.v, ws.v.mean(axis=0), atol=1e-14)  # the server's (1/n) Σ v_i, stale included
        seen |= drawn
    assert seen.all()


def test_the_draw_is_keyed_by_round_and_ef21_pp_keeps_its_own():
    ctx = lambda t: RoundContext(t, 5, np.arange(2), 10, False)
    fixed = [drawn_workers(ctx(t), 0.3, "fixed") for t in range(20)]
    assert all(d.sum() == 3 for d in fixed) and len({tuple(d) for d in fixed}) > 1
    # the same rows EF21-PP drew before it shared this helper: choice(n, m) of the server's generator
    chosen = ctx(4).shared(SAMPLING).choice(10, 3, replace=False)
    np.testing.assert_array_equal(np.flatnonzero(fixed[4]), np.sort(chosen))
    poisson = np.array([drawn_workers(ctx(t), 0.3, "poisson") for t in range(400)])
    assert abs(poisson.mean() - 0.3) < 0.03


def run(tmp_path, label, rounds=12, **method):
    table = config_table(run={"name": label, "n_workers": 5, "rounds": rounds, "eval_every": 2},
                         method=method, compressor={"name": "identity"}, stepsize={"factor": 1.0})
    return run_completed(table, tmp_path / f"{label}.h5")


CASES = {
    "clip_sgd": {"tau": 0.3, "batch": 0.3, "sigma": 0.05},
    "clip_sgdm": {"tau": 0.3, "batch": 0.3, "beta": 0.5},
    "clip21_gd": {"tau": 0.2, "sigma": 0.05},
    "clip21_sgd2m": {"tau": 0.3, "batch": 0.3, "sigma": 0.05},
    "dp_sgd": {"tau": 0.3, "batch": 0.3, "sigma": 0.5},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_full_participation_is_today_to_the_last_bit(tmp_path, name):
    """participation = 1 draws nothing and adds no dataset, under either rule; ε is the unsampled one."""
    today = run(tmp_path, "today", name=name, **CASES[name])
    poisson = run(tmp_path, "p1", name=name, participation=1.0, participation_sampling="poisson", **CASES[name])
    assert differences(today, poisson) == []
    assert "workers/participated" not in today


@pytest.mark.parametrize("name", sorted(CASES))
def test_partial_runs_record_who_took_part_and_count_only_their_bits(tmp_path, name):
    arrays = run(tmp_path, name, name=name, participation=0.6, **CASES[name])
    took_part = arrays["workers/participated"][:-1]
    assert (took_part.sum(axis=1) == 3).all()  # int(0.6·5) of 5, at every recorded round
    full = run(tmp_path, "full", name=name, **CASES[name])
    sent, everyone = arrays["bits/up/paper"][-1].sum(), full["bits/up/paper"][-1].sum()
    assert sent == pytest.approx(0.6 * everyone, rel=1e-12)  # 3 of 5 dense messages of one size per round


def epsilon_by_events(event, relation, rounds, delta=1e-5):
    accountant = rdp.RdpAccountant(neighboring_relation=relation)
    accountant.compose(event, rounds)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("relation", ["add_remove", "replace", "add_remove_record"])
def test_poisson_worker_draws_with_dp_noise_are_refused_not_amplified(relation, tmp_path):
    """A drawn worker adds its own noise, so under Poisson draws who took part changes the noise of a round's sum
    (and a round that draws only the unit's worker, or nobody else, has no other noise): not the
    Poisson-subsampled Gaussian dp-accounting accounts, whose one noise is there whoever is drawn."""
    mechanism = privacy.Mechanism(0.75, 0.5, relation, workers=privacy.WorkerSampling("poisson", 5, 0.4))
    for accountant in ("rdp", "pld"):
        with pytest.raises(privacy.InputError) as caught:
            privacy.Accountant([mechanism], 1e-5, accountant)
        assert str(caught.value).startswith("method.participation_sampling = 'poisson': with DP noise is not accounted")
    # without noise, Poisson participation runs (nothing to account)
    arrays = run(tmp_path, "poisson", rounds=10, name="clip21_gd", tau=0.5, relation=relation, participation=0.4,
                 participation_sampling="poisson")
    assert np.isfinite(arrays["loss"]).all()


def test_record_level_fixed_size_sampling_is_dp_accounting_event_without_replacement(tmp_path):
    """Replace one record of a full-batch worker (Δ = 2τ): its worker is one of m = 2 drawn of 5."""
    arrays = run(tmp_path, "fixed", rounds=20, name="clip_gd", tau=0.5, sigma=2.0, participation=0.4)
    event = dp_accounting.SampledWithoutReplacementDpEvent(5, 2, dp_accounting.GaussianDpEvent(2.0))
    expected = epsilon_by_events(event, dp_accounting.NeighboringRelation.REPLACE_ONE, 20)
    assert arrays["metrics/epsilon"][-1] == pytest.approx(expected, rel=1e-9)


def test_nested_sampling_takes_the_smallest_single_level_bound_at_each_order():
    """Minibatches inside drawn workers: neither level alone is the round, each bounds it; RDP takes the
    smallest at each order, never above either single-level ε."""
    workers = privacy.WorkerSampling("fixed", 10, 0.3)
    mechanism = privacy.Mechanism(1.6, 1.0, "replace", 400, 40, workers=workers)
    spent = privacy.Accountant([mechanism], 1e-5).epsilon(50)

    def per_round(event):
        accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        accountant.compose(event, 1)
        return np.array(accountant.orders, dtype=float), np.array(accountant.rdp)

    gaussian = dp_accounting.GaussianDpEvent(1.6)
    orders, bounds = per_round(gaussian)
    for event in (dp_accounting.SampledWithoutReplacementDpEvent(400, 40, gaussian),
                  dp_accounting.SampledWithoutReplacementDpEvent(10, 3, gaussian)):
        bounds = np.minimum(bounds, per_round(event)[1])
    assert spent == pytest.approx(rdp.compute_epsilon(orders, 50 * bounds, 1e-5)[0], rel=1e-12)
    records_only = privacy.Accountant([privacy.Mechanism(1.6, 1.0, "replace", 400, 40)], 1e-5).epsilon(50)
    workers_only = privacy.Accountant([privacy.Mechanism(1.6, 1.0, "replace", workers=workers)], 1e-5).epsilon(50)
    assert spent <= min(records_only, workers_only)


@pytest.mark.parametrize("relation, rule, accountant", [("replace", "fixed", "rdp")])
def test_a_target_is_met_from_below_with_worker_sampling(relation, rule, accountant):
    mechanisms = lambda sigma: [privacy.Mechanism(sigma, 0.4, relation, workers=privacy.WorkerSampling(rule, 8, 0.25))]
    sigma = privacy.sigma_for(3.0, 1e-5, 40, mechanisms(1.0), accountant)
    spent = privacy.Accountant(mechanisms(sigma), 1e-5, accountant).epsilon(40)
    assert spent <= 3.0 + 1e-9 and spent == pytest.approx(3.0, rel=1e-3)
    unsampled = privacy.sigma_for(3.0, 1e-5, 40, [privacy.Mechanism(1.0, 0.4, relation)], accountant)
    assert sigma < 0.7 * unsampled  # sampling the workers buys less noise for the same budget


# issue 30 items 3 and 5 together: record-level add/remove (and Poisson records) with worker sampling

def per_round_rdp(event, relation):
    accountant = rdp.RdpAccountant(neighboring_relation=relation)
    accountant.compose(event, 1)
    return np.array(accountant.orders, dtype=float), np.array(accountant.rdp)


def test_add_remove_record_with_fixed_worker_sampling_is_the_event_without_replacement(tmp_path):
    """Add or remove one record of a full-batch worker (Δ = 2τ): n is the same in both neighbours, the record's
    worker one of m = 2 drawn of 5, a replace-one event of the workers."""
    arrays = run(tmp_path, "fixed", rounds=20, name="clip_gd", tau=0.5, sigma=2.0, relation="add_remove_record",
                 participation=0.4)
    event = dp_accounting.SampledWithoutReplacementDpEvent(5, 2, dp_accounting.GaussianDpEvent(2.0))
    expected = epsilon_by_events(event, dp_accounting.NeighboringRelation.REPLACE_ONE, 20)
    assert arrays["metrics/epsilon"][-1] == pytest.approx(expected, rel=1e-9)


def test_poisson_records_inside_fixed_size_drawn_workers_take_the_least_of_the_two_levels(tmp_path):
    """DP-SGD, add/remove one record (Δ = τ), Poisson lots (q) inside m of n drawn workers: the round's RDP is
    the least at each order of the record level (ADD_OR_REMOVE_ONE) and the worker level (REPLACE_ONE)."""
    arrays = run(tmp_path, "nested", rounds=20, name="dp_sgd", tau=0.5, sigma=0.6, batch=0.8, sampling="poisson",
                 relation="add_remove_record", participation=0.2)
    assert (arrays["workers/participated"][:-1].sum(axis=1) == 1).all() and np.isfinite(arrays["loss"]).all()
    gaussian = dp_accounting.GaussianDpEvent(1.2)
    orders, records = per_round_rdp(dp_accounting.PoissonSampledDpEvent(0.8, gaussian),
                                    dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    _, workers = per_round_rdp(dp_accounting.SampledWithoutReplacementDpEvent(5, 1, gaussian),
                               dp_accounting.NeighboringRelation.REPLACE_ONE)
    expected = rdp.compute_epsilon(orders, 20 * np.minimum(records, workers), 1e-5)[0]
    assert arrays["metrics/epsilon"][-1] == pytest.approx(expected, rel=1e-9)
    records_only = rdp.compute_epsilon(orders, 20 * records, 1e-5)[0]
    workers_only = rdp.compute_epsilon(orders, 20 * workers, 1e-5)[0]
    assert expected <= min(records_only, workers_only) and expected < 0.6 * records_only  # here the draw of 1 in 5 wins


def test_clip_sgd_poisson_records_inside_drawn_workers_send_from_the_drawn_only(tmp_path):
    arrays = run(tmp_path, "clip", rounds=12, name="clip_sgd", tau=0.3, sigma=0.05, batch=0.2, sampling="poisson",
                 relation="add_remove_record", participation=0.6)
    took_part = arrays["workers/participated"][:-1].astype(bool)
    norms = arrays["workers/norm_before_clip"][:-1]
    assert np.isnan(norms[~took_part]).all() and not np.isnan(norms[took_part]).any()
    assert np.isfinite(arrays["loss"]).all() and np.isfinite(arrays["metrics/epsilon"][1:]).all()


@pytest.mark.parametrize("mechanism, message", [
    (privacy.Mechanism(1.0, 1.0, "add_remove_record", workers=privacy.WorkerSampling("poisson", 8, 0.5)),
     "method.participation_sampling = 'poisson': with DP noise is not accounted"),
    (privacy.Mechanism(1.0, 1.0, "add_remove_record", poisson=0.2, workers=privacy.WorkerSampling("poisson", 8, 0.5)),
     "method.participation_sampling = 'poisson': with DP noise is not accounted"),
    (privacy.Mechanism(1.0, 1.0, "add_remove_record", poisson=0.2, workers=privacy.WorkerSampling("fixed", 8, 0.5)),
     "method.accountant = 'pld': dp-accounting's PLD accountant handles Poisson sampling only, not the fixed-size"),
    (privacy.Mechanism(1.0, 1.0, "add_remove", workers=privacy.WorkerSampling("fixed", 8, 0.5)),
     "method.participation_sampling = 'fixed': with method.relation = add_remove is not an event"),
])
def test_the_pairs_not_accounted_are_refused_in_one_line(mechanism, message):
    accountant = "pld" if "pld" in message else "rdp"
    with pytest.raises(privacy.InputError) as caught:
        privacy.Accountant([mechanism], 1e-5, accountant)
    assert str(caught.value).startswith(message)
