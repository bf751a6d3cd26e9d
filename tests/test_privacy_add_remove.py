"""Record-level add/remove privacy with Poisson sampling (method.relation = "add_remove_record", method.sampling =
"poisson"): the accountant against events built here, an independent closed form and Opacus; runs whose trace's
ε(t) is checked round by round; the Poisson sampler; empty lots; the config hash; bad input."""

import math

import numpy as np
import pytest
from helpers import config_table, mpiclip

from mpiclip import config as cfg
from mpiclip import plotting, privacy, session
from mpiclip.comm import SerialComm
from mpiclip.errors import InputError
from mpiclip.methods.ef21_extensions import sample_poisson
from mpiclip.reproduce import frontier
from mpiclip.rng import WorkerRandomness
from mpiclip.trace import load_trace

dpa = pytest.importorskip("dp_accounting")
from dp_accounting.pld import pld_privacy_accountant  # noqa: E402
from dp_accounting.rdp import rdp_privacy_accountant  # noqa: E402

ADD_REMOVE = dpa.NeighboringRelation.ADD_OR_REMOVE_ONE


def poisson(z: float, q: float) -> privacy.Mechanism:
    return privacy.Mechanism(z, 1.0, "add_remove_record", poisson=q)


def composed(kind, z: float, q: float, rounds: int, delta: float) -> float:
    """ε of ``rounds`` Poisson-sampled Gaussian rounds, composed by a dp-accounting accountant built here."""
    accountant = kind(neighboring_relation=ADD_REMOVE)
    accountant.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), rounds)
    return accountant.get_epsilon(delta)


def closed_form_rdp(z: float, q: float, alpha: int) -> float:
    """Mironov, Talwar & Zhang 2019 (integer α, add/remove one record): log A_α/(α − 1) with
    A_α = Σ_k C(α, k) (1 − q)^{α−k} q^k exp((k² − k)/(2z²)), summed in logs."""
    terms = [math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1) + (alpha - k) * math.log1p(-q)
             + k * math.log(q) + (k * k - k) / (2 * z * z) for k in range(alpha + 1)]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


def closed_form_epsilon(z: float, q: float, rounds: int, delta: float) -> float:
    """RDP to (ε, δ) by Balle et al. 2020's conversion, ε = T·RDP_α + log((α−1)/α) − (log δ + log α)/(α − 1),
    minimised over the integer orders 2..256."""
    return min(rounds * closed_form_rdp(z, q, a) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
               for a in range(2, 257))


@pytest.mark.parametrize("z, q", [(1.0, 0.1), (3.14, 0.1), (0.8, 0.01)])
def test_poisson_rdp_at_integer_orders_is_the_closed_form(z, q):
    orders, per_round = privacy._rdp_per_round(z, ("poisson", q))
    integer = [(a, r) for a, r in zip(orders, per_round) if a == int(a) and 2 <= a <= 64]
    assert len(integer) > 20
    for alpha, rdp in integer:
        assert rdp == pytest.approx(closed_form_rdp(z, q, int(alpha)), rel=1e-7)


@pytest.mark.parametrize("z, q, rounds, delta", [(3.14, 0.1, 300, 1 / 8124), (2.0, 0.05, 50, 1e-5), (0.8, 0.01, 1000, 1e-5)])
def test_poisson_epsilon_against_events_built_here_and_the_closed_form(z, q, rounds, delta):
    ours = privacy.Accountant([poisson(z, q)], delta).epsilon(rounds)
    assert ours == pytest.approx(composed(rdp_privacy_accountant.RdpAccountant, z, q, rounds, delta), rel=1e-12)
    # the closed form searches integer orders only: never below ours, and at these z its best order is an integer
    closed = closed_form_epsilon(z, q, rounds, delta)
    assert ours <= closed * (1 + 1e-9) and ours == pytest.approx(closed, rel=0.01)
    # the tight PLD spends less; its own composition and ours (one round self-composed) agree
    tight = privacy.Accountant([poisson(z, q)], delta, "pld").epsilon(rounds)
    assert tight < ours and tight == pytest.approx(composed(pld_privacy_accountant.PLDAccountant, z, q, rounds, delta),
                                                   rel=1e-3)


def test_opacus_reports_the_same_epsilon():
    opacus = pytest.importorskip("opacus.accountants", reason="Opacus is not installed (pip install opacus)")
    z, q, rounds, delta = 3.14, 0.1, 300, 1 / 8124
    accountant = opacus.RDPAccountant()
    for _ in range(rounds):
        accountant.step(noise_multiplier=z, sample_rate=q)
    assert privacy.Accountant([poisson(z, q)], delta).epsilon(rounds) == pytest.approx(accountant.get_epsilon(delta),
                                                                                         rel=0.02)


def test_the_issues_dp_sgd_run_in_both_conventions():
    """Mushrooms' DP-SGD (20 workers of ~406 records, q = 0.1, 300 rounds, δ = 1/8124) at the σ that spends
    ε = 2.2 under add/remove with Poisson sampling (Δ = τ) reads ε ≈ 12.8 under replace-one (Δ = 2τ, fixed-size
    batches of 40, the looser bound of sampling without replacement)."""
    delta, rounds = 1 / 8124, 300
    z = privacy.noise_multiplier_for(2.2, delta, rounds, ("poisson", 0.1))
    assert privacy.Accountant([poisson(z, 0.1)], delta).epsilon(rounds) == pytest.approx(2.2, rel=1e-5)
    replace = privacy.Accountant([privacy.Mechanism(z, 2.0, "replace", 406, 40)], delta).epsilon(rounds)
    assert replace == pytest.approx(12.8, abs=0.05)


def run(tmp_path, label, rounds=12, **method):
    table = config_table(run={"name": label, "n_workers": 4, "rounds": rounds}, compressor=None,
                         method={"tau": 0.2, "batch": 0.2, "relation": "add_remove_record", "sampling": "poisson",
                                 **method})
    if method["name"] != "dp_sgd":
        table["compressor"] = {"name": "identity"}
    table["output"] = {"path": str(tmp_path / "{name}.h5"), "exists": "overwrite"}
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    return load_trace(session.execute(prepared).path), prepared


@pytest.mark.parametrize("method, sensitivity", [("dp_sgd", 0.2), ("clip_sgd", 0.4), ("clip21_sgd", 0.4)])
def test_a_runs_epsilon_each_round_is_the_poisson_composition(tmp_path, method, sensitivity):
    """τ = 0.2: DP-SGD's clipped sum has Δ = τ, a clipped mean or error-feedback difference Δ = 2τ."""
    trace, prepared = run(tmp_path, method, name=method, sigma=0.6)
    z, rounds = 0.6 / sensitivity, trace.rounds.astype(int)
    expected = [composed(rdp_privacy_accountant.RdpAccountant, z, 0.2, int(t), 1e-5) if t else 0.0 for t in rounds]
    np.testing.assert_allclose(trace.metrics["epsilon"], expected, rtol=1e-12)
    if method == "dp_sgd":  # the noise on the sum is divided by the expected lot q·N_i
        np.testing.assert_allclose(trace.workers["noise_scale"][0], 0.6 / (0.2 * prepared.problem.local_sizes), rtol=1e-15)


def test_target_epsilon_with_poisson_sampling_and_the_pld(tmp_path):
    trace, prepared = run(tmp_path, "pld", rounds=4, name="dp_sgd", target_epsilon=1.0, accountant="pld")
    z = prepared.bound_method.sigma / 0.2
    assert trace.metrics["epsilon"][-1] == pytest.approx(1.0, rel=1e-3)
    assert trace.metrics["epsilon"][-1] == pytest.approx(
        composed(pld_privacy_accountant.PLDAccountant, z, 0.2, 4, 1e-5), rel=1e-3)


def test_momentum_is_not_amplified_by_poisson_sampling(tmp_path):
    """Client momentum carries every record into every later message: a full-batch round of Δ = 2τ."""
    trace, _ = run(tmp_path, "m", name="clip21_sgd2m", sigma=0.6, beta1=0.5)
    assert trace.metrics["epsilon"][-1] == privacy.Accountant([privacy.Mechanism(0.6, 0.4)], 1e-5).epsilon(12)


class Round:
    """A round's context as the samplers read it: per-worker generators keyed (seed, stream, worker, t)."""

    def __init__(self, workers, t=3):
        self.workers, self.t = np.asarray(workers), t

    def randomness(self, stream):
        return WorkerRandomness(7, stream, self.workers, self.t)


def test_poisson_draws_are_keyed_by_worker_not_rank():
    sizes = np.array([500, 800, 650, 700])
    everyone = sample_poisson(Round([0, 1, 2, 3]), sizes, 0.1)
    half = sample_poisson(Round([2, 3]), sizes[2:], 0.1)  # the same workers on another rank
    for mine, theirs in zip(everyone[2:], half):
        np.testing.assert_array_equal(mine, theirs)
    counts = np.array([len(rows) for rows in everyone])
    assert np.all(np.abs(counts - 0.1 * sizes) < 5 * np.sqrt(0.1 * 0.9 * sizes))
    assert all(np.all(np.diff(rows) > 0) for rows in everyone)
    assert not np.array_equal(everyone[0], sample_poisson(Round([0, 1, 2, 3], t=4), sizes, 0.1)[0])


@pytest.mark.parametrize("method", ["dp_sgd", "clip_sgd"])
def test_an_empty_lot_sends_no_gradient(tmp_path, method):
    """q = 0.01 of 50 records: a lot is empty with probability 0.6. An empty lot's gradient is 0 (its mean
    norm NaN): where every worker's lot is empty and there is no noise, x does not move."""
    trace, _ = run(tmp_path, method, rounds=30, name=method, batch=0.01, relation="replace")
    norms = trace.workers["norm_before_clip"][:-1]
    empty = np.isnan(norms) if method == "dp_sgd" else norms == 0  # Clip-SGD clips the zero gradient
    assert empty.any() and not empty.all()
    assert np.all(trace.workers["clip_active"][:-1][empty] == 0)
    still = np.flatnonzero(empty.all(axis=1))
    assert len(still) > 0 and all(trace.loss[t + 1] == trace.loss[t] for t in still)
    assert np.all(np.isfinite(trace.loss)) and trace.loss[-1] < trace.loss[0]


def test_the_default_sampling_keeps_the_config_hash():
    base = config_table(method={"name": "clip_sgd", "sigma": 0.1}, compressor={"name": "identity"})
    explicit = config_table(method={"name": "clip_sgd", "sigma": 0.1, "sampling": "fixed"}, compressor={"name": "identity"})
    other = config_table(method={"name": "clip_sgd", "sigma": 0.1, "sampling": "poisson"}, compressor={"name": "identity"})
    assert cfg.validate(base).hash == cfg.validate(explicit).hash != cfg.validate(other).hash


# the keys issue 30 added to the clipping methods, at the defaults every earlier trace ran with, and a value off them
NEW_KEYS = {"sampling": ("fixed", "poisson"), "participation": (1.0, 0.5), "participation_sampling": ("fixed", "poisson")}


@pytest.mark.parametrize("name", ["clip_gd", "clip_sgd", "dp_sgd"])
def test_every_key_added_at_its_default_keeps_the_config_hash(name):
    keys = {key: values for key, values in NEW_KEYS.items() if key != "sampling" or name != "clip_gd"}
    table = lambda **method: config_table(method={"name": name, "sigma": 0.1, **method}, compressor={"name": "identity"})
    base = cfg.validate(table()).hash
    assert cfg.validate(table(**{key: default for key, (default, _) in keys.items()})).hash == base
    for key, (_, other) in keys.items():
        assert cfg.validate(table(**{key: other})).hash != base, key


@pytest.mark.parametrize("mechanism, message", [
    (privacy.Mechanism(1.0, 1.0, "add_remove_record", 400, 40), "method.sampling = 'fixed': is accounted under "
     "relation 'replace' only"),
    (privacy.Mechanism(1.0, 1.0, "replace", poisson=0.1), "method.sampling = 'poisson': is accounted under "
     "relation 'add_remove_record' only"),
])
def test_sampling_the_accountant_cannot_amplify_is_refused(mechanism, message):
    with pytest.raises(InputError, match=f"^{message}"):
        privacy.Accountant([mechanism], 1e-5)


def test_worker_level_and_full_batch_rounds_are_not_sampled():
    assert privacy.Mechanism(1.0, 1.0, "add_remove", poisson=0.1).record_sampling is None
    assert privacy.Mechanism(1.0, 1.0, "add_remove_record", poisson=1.0).record_sampling is None
    assert privacy.Mechanism(1.0, 1.0, "add_remove_record", 40, 40).record_sampling is None
    assert privacy.sensitivity(0.5, "add_remove_record") == 1.0


def test_the_privacy_command_takes_the_relation_and_sampling():
    from mpiclip.cli import tools

    assert tools.RELATIONS == privacy.RELATIONS
    args = ["privacy", "--tau", "1", "--rounds", "300", "--delta", str(1 / 8124), "--sigma", "3.14",
            "--records", "1000", "--batch", "100", "--relation", "add_remove_record", "--sampling", "poisson"]
    per_example = mpiclip([*args, "--per-example"])
    assert per_example.returncode == 0, per_example.stderr
    assert float(per_example.stdout.split("ε = ")[1].split()[0]) == pytest.approx(
        privacy.Accountant([poisson(3.14, 0.1)], 1 / 8124).epsilon(300), rel=1e-5)
    clipped_mean = mpiclip(args)  # Δ = 2τ: z = 1.57
    assert float(clipped_mean.stdout.split("ε = ")[1].split()[0]) == pytest.approx(
        privacy.Accountant([poisson(1.57, 0.1)], 1 / 8124).epsilon(300), rel=1e-5)
    for bad, message in [(args[:-2], "--sampling = 'fixed': is accounted under relation 'replace' only"),
                         (args[:-4] + ["--sampling", "poisson"], "--sampling = 'poisson': is accounted under"),
                         (args[:9] + ["--relation", "add_remove_record", "--sampling", "poisson"],
                          "--sampling = 'poisson': needs --records"),
                         (args[:-4] + ["--per-example"], "--per-example = True: changes the sensitivity under")]:
        out = mpiclip(bad)
        assert out.returncode == 2 and out.stderr.startswith(f"mpiclip: error: {message}"), out.stderr


def test_every_relation_has_a_unit_in_words_and_a_place_on_the_frontier_page():
    assert set(plotting.PRIVACY_UNITS) == set(frontier.UNITS) == set(privacy.RELATIONS)
    assert sorted(["add_remove", "other", "add_remove_record", "replace"], key=frontier.unit_order) == [
        "replace", "add_remove_record", "add_remove", "other"]
