"""Methods as pure functions: reductions to GD and EF21, purity, EF21+ choice, step-size formulas."""

import copy

import numpy as np
import pytest

from mpiclip import stepsize
from mpiclip.comm import SerialComm
from mpiclip.compressors import Identity, KParams, RandKUnbiased, TopK
from mpiclip.data import DataParams, DataSpec, SyntheticParams, plan
from mpiclip.data.partition import NoParams
from mpiclip.errors import InputError
from mpiclip.methods import METHODS
from mpiclip.methods.diana import Diana
from mpiclip.methods.ef21 import EF14, EF21, GD, CompressedGD, EF21Plus
from mpiclip.methods.ef21_extensions import EF21BC, EF21HB, EF21PP, EF21SGD, EF21Page, EF21Prox, prox_step
from mpiclip.methods.ef_sgd import EF14SGD, EF21SGDHB
from mpiclip.problems import LogisticRegression, LogRegParams, Quadratic, QuadraticParams
from mpiclip.runners.synchronous import LocalOracle, RoundContext, exchange

QUADRATIC = Quadratic(QuadraticParams(d=10, L=1.0, spread=0.5, mu=0.05, zeta=2.0, seed=1), np.arange(5), 5)
_SPEC = DataSpec(DataParams(), SyntheticParams(n_samples=300, n_features=10, density=0.5, seed=2), NoParams())
LOGREG = LogisticRegression(LogRegParams(), plan(_SPEC, 5, "pm1").load(np.arange(5)), 5)


def trajectory(method, problem=QUADRATIC, rounds=60, x0=None):
    """Drive a method by hand with the serial communicator; returns the iterates."""
    comm = SerialComm()
    comm.bind(5)
    x = np.ones(problem.d) if x0 is None else x0
    ws, ss = method.initial_state(x, 5)
    xs = [x]
    for t in range(rounds):
        ctx = RoundContext(t, 0, np.arange(5), 5, True, x)
        ws, msg, _ = method.worker_step(ws, LocalOracle(problem, x, False), ctx)
        ss, x, _ = method.server_step(ss, x, exchange(comm, msg, 5, True, method.per_worker, np.arange(5)), ctx)
        xs.append(x)
    return np.array(xs)


def test_gd_matches_the_closed_form_iteration():
    gamma = 0.5
    xs = trajectory(GD(Identity(), gamma))
    Q, b = QUADRATIC.Q.mean(axis=0), QUADRATIC.b.mean(axis=0)
    x = np.ones(10)
    for t in range(len(xs)):
        np.testing.assert_allclose(xs[t], x, rtol=1e-12, atol=1e-14)
        x = x - gamma * (Q @ x - b)


@pytest.mark.parametrize("init", ["full", "compressed"])
def test_ef21_with_identity_is_gd(init):
    np.testing.assert_allclose(trajectory(EF21(Identity(), 0.5, init)), trajectory(GD(Identity(), 0.5)),
                               rtol=1e-12, atol=1e-13)


def test_ef21_plus_cgd_and_ef14_with_identity_are_gd():
    gd = trajectory(GD(Identity(), 0.5))
    for method in (EF21Plus(Identity(), 0.5, "full"), CompressedGD(Identity(), 0.5), EF14(Identity(), 0.5)):
        np.testing.assert_allclose(trajectory(method), gd, rtol=1e-12, atol=1e-13)


TOPK = TopK(KParams(2))
EF21_FULL = EF21(TOPK, 0.3, "full")


@pytest.mark.parametrize("method", [
    EF21SGD(TOPK, 0.3, "full", batch=1.0),
    EF21Page(TOPK, 0.3, "full", batch=0.3, p=1.0),
    EF21Page(TOPK, 0.3, "full", batch=1.0, p=0.5),
    EF21PP(TOPK, 0.3, "full", participation=1.0),
    EF21BC(TOPK, 0.3, "full", Identity()),
    EF21HB(TOPK, 0.3, "full", eta=0.0),
    EF21Prox(TOPK, 0.3, "full", prox="none"),
    EF21Prox(TOPK, 0.3, "full", prox="l1", l1=0.0),
], ids=["sgd-full-batch", "page-p1", "page-full-batch", "pp-all", "bc-identity", "hb-eta0", "prox-none", "prox-l1-0"])
def test_each_extension_reduces_to_ef21_bit_for_bit(method):
    assert np.array_equal(trajectory(method, LOGREG, rounds=40), trajectory(EF21_FULL, LOGREG, rounds=40))


def test_the_stochastic_ef_and_heavy_ball_are_ef_and_ef21_hb_with_whole_batches():
    assert np.array_equal(trajectory(EF14SGD(TOPK, 0.3, batch=1.0), LOGREG, rounds=40),
                          trajectory(EF14(TOPK, 0.3), LOGREG, rounds=40))
    assert np.array_equal(trajectory(EF21SGDHB(TOPK, 0.3, "full", eta=0.7, batch=1.0), LOGREG, rounds=40),
                          trajectory(EF21HB(TOPK, 0.3, "full", eta=0.7), LOGREG, rounds=40))
    assert np.array_equal(trajectory(EF21SGDHB(TOPK, 0.3, "full", eta=0.0, batch=0.3), LOGREG, rounds=40),
                          trajectory(EF21SGD(TOPK, 0.3, "full", batch=0.3), LOGREG, rounds=40))


def test_ef_sgd_follows_its_rule_on_the_drawn_minibatches():
    """w_i = C(e_i + γ∇̃f_i), e_i += γ∇̃f_i − w_i, x −= mean w_i, recomputed with the same draws."""
    from mpiclip.methods.ef21_extensions import sample_minibatches

    method, comm, x = EF14SGD(TOPK, 0.3, batch=0.2), SerialComm(), np.ones(LOGREG.d)
    comm.bind(5)
    ws, ss = method.initial_state(x, 5)
    e = np.zeros((5, LOGREG.d))
    for t in range(6):
        ctx = RoundContext(t, 0, np.arange(5), 5, True, x)
        u = e + 0.3 * LOGREG.minibatch_grads(x, sample_minibatches(ctx, LOGREG.local_sizes, 0.2))
        w = TOPK(u, None).dense(u.shape)
        e, expected = u - w, x - w.mean(axis=0)
        ws, msg, metrics = method.worker_step(ws, LocalOracle(LOGREG, x, False), ctx)
        ss, x, _ = method.server_step(ss, x, exchange(comm, msg, 5, True, False, np.arange(5)), ctx)
        np.testing.assert_allclose(x, expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(ws.e, e)
        assert list(metrics["samples"]) == [int(0.2 * n) for n in LOGREG.local_sizes]


def test_diana_with_unit_shift_is_ef21_with_compressed_init():
    assert np.array_equal(trajectory(Diana(TOPK, 0.3, a=1.0), LOGREG), trajectory(EF21(TOPK, 0.3, "compressed"), LOGREG))


def test_extensions_differ_when_not_trivial():
    base = trajectory(EF21_FULL, LOGREG, rounds=20)
    for method in (EF21SGD(TOPK, 0.3, "full", batch=0.2), EF21PP(TOPK, 0.3, "full", participation=0.4),
                   EF21BC(TOPK, 0.3, "full", TopK(KParams(3))), EF21HB(TOPK, 0.3, "full", eta=0.5),
                   EF21Prox(TOPK, 0.3, "full", prox="l1", l1=0.05), EF21Page(TOPK, 0.3, "full", batch=0.2, p=0.3)):
        assert not np.allclose(trajectory(method, LOGREG, rounds=20), base), method.name


def test_ef21_topk_converges_where_it_should():
    xs = trajectory(EF21(TopK(KParams(2)), 0.3, "full"), rounds=3000)
    _, grads = QUADRATIC.loss_grads(xs[-1], False)
    assert np.linalg.norm(grads.mean(axis=0)) < 1e-8


def test_diana_converges_with_an_unbiased_compressor():
    omega = 10 / 3 - 1
    method = Diana(RandKUnbiased(KParams(3)), stepsize.diana_gamma(2.0, omega, 5))
    xs = trajectory(method, rounds=4000)
    _, grads = QUADRATIC.loss_grads(xs[-1], False)
    assert np.linalg.norm(grads.mean(axis=0)) < 1e-6
    with pytest.raises(InputError, match=r"^compressor.name = 'topk': DIANA needs an unbiased compressor"):
        Diana(TOPK, 0.1).validate(10, 5)


def test_ef21_state_is_the_running_sum_of_messages():
    """g_i^t = g_i^{t-1} + c_i^t and the server's g is the mean of the g_i (docs/algorithms.md §3)."""
    method = EF21(TopK(KParams(3)), 0.2, "compressed")
    x = np.ones(10)
    ws, ss = method.initial_state(x, 5)
    comm = SerialComm()
    comm.bind(5)
    for t in range(5):
        grads = QUADRATIC.loss_grads(x, False)[1]
        ctx = RoundContext(t, 0, np.arange(5), 5, True, x)
        new_ws, msg, metrics = method.worker_step(ws, LocalOracle(QUADRATIC, x, False), ctx)
        np.testing.assert_array_equal(new_ws.g, ws.g + msg.dense(grads.shape))
        np.testing.assert_allclose(metrics["ef_error"], np.sum((new_ws.g - grads) ** 2, axis=1), rtol=1e-10)
        ss, x_next, down = method.server_step(ss, x, exchange(comm, msg, 5, True, False, np.arange(5)), ctx)
        assert down is None
        np.testing.assert_allclose(ss.g, new_ws.g.mean(axis=0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(x_next, x - 0.2 * ss.g)
        ws, x = new_ws, x_next


def test_ef21_plus_keeps_the_closer_candidate():
    method = EF21Plus(TopK(KParams(1)), 0.1, "full")
    g_old = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    grads = np.array([[3.0, 1.0, 0.0], [0.0, 4.0, 0.1]])

    class Fixed:
        def full(self):
            return grads

    ws = type(method.initial_state(np.zeros(3), 2)[0])(g_old)
    ctx = RoundContext(1, 0, np.arange(2), 2, True, np.zeros(3))
    new, msg, metrics = method.worker_step(ws, Fixed(), ctx)
    # worker 0: b = m = (3, 0, 0), a tie, which goes to m. Worker 1: ∇ − g = (−5, 4, 0.1), C keeps −5, so
    # m = (0, 0, 0) with ‖m − ∇‖² = 16.01 while b = (0, 4, 0) has ‖b − ∇‖² = 0.01.
    assert list(metrics["chose_b"]) == [0.0, 1.0]
    np.testing.assert_array_equal(new.g, [[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    assert list(msg.flags) == [0, 1]
    comm = SerialComm()
    comm.bind(2)
    server = type(method.server_step(None, np.zeros(3), exchange(comm, msg, 2, True, True, np.arange(2)), ctx)[0])(g_old, g_old.mean(0))
    server, x, _ = method.server_step(server, np.zeros(3), exchange(comm, msg, 2, True, True, np.arange(2)), ctx)
    np.testing.assert_array_equal(server.G, new.g)
    np.testing.assert_allclose(x, -0.1 * new.g.mean(axis=0))


def test_pp_absent_workers_send_nothing_and_keep_their_state():
    method = EF21PP(TOPK, 0.3, "compressed", participation=0.4)
    x = np.ones(10)
    ws, _ = method.initial_state(x, 5)
    ctx = RoundContext(3, 0, np.arange(5), 5, True, x)
    new, msg, metrics = method.worker_step(ws, LocalOracle(LOGREG, x, False), ctx)
    took_part = metrics["participated"].astype(bool)
    assert took_part.sum() == 2
    assert np.all(msg.counts[~took_part] == 0) and np.all(msg.bits[~took_part] == 0)
    assert np.all(msg.counts[took_part] == 2) and np.all(msg.bits[took_part, 0] == 64)
    np.testing.assert_array_equal(new.g[~took_part], ws.g[~took_part])
    # every rank draws the same participants: the draw depends on (seed, round) only
    again = method.worker_step(ws, LocalOracle(LOGREG, x, False), ctx)[2]["participated"]
    np.testing.assert_array_equal(again, metrics["participated"])


def test_bc_downlink_is_compressed_and_tracked():
    method = EF21BC(TOPK, 0.3, "full", TopK(KParams(3)))
    x = np.ones(10)
    ws, ss = method.initial_state(x, 5)
    comm = SerialComm()
    comm.bind(5)
    downs = []
    for t in range(3):
        ctx = RoundContext(t, 0, np.arange(5), 5, True, x)
        ws, msg, _ = method.worker_step(ws, LocalOracle(LOGREG, x, False), ctx)
        new_ss, x_next, down = method.server_step(ss, x, exchange(comm, msg, 5, True, False, np.arange(5)), ctx)
        np.testing.assert_allclose(new_ss.w, ws.g.mean(axis=0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(x_next, x - 0.3 * new_ss.g)
        downs.append(down)
        ss, x = new_ss, x_next
    assert downs[0].initial and downs[0].bits[0, 0] == 32 * 10
    assert not downs[1].initial and downs[1].bits[0, 0] == 32 * 3 and downs[1].sparse


def test_hb_momentum_recursion():
    method = EF21HB(TOPK, 0.1, "full", eta=0.5)
    xs = trajectory(method, LOGREG, rounds=5)
    ef21 = EF21(TOPK, 0.1, "full")
    x, v = np.ones(10), np.zeros(10)
    ws, ss = ef21.initial_state(x, 5)
    comm = SerialComm()
    comm.bind(5)
    for t in range(5):
        ctx = RoundContext(t, 0, np.arange(5), 5, True, x)
        ws, msg, _ = ef21.worker_step(ws, LocalOracle(LOGREG, x, False), ctx)
        ss, _, _ = ef21.server_step(ss, x, exchange(comm, msg, 5, True, False, np.arange(5)), ctx)
        v = 0.5 * v + ss.g
        x = x - 0.1 * v
        np.testing.assert_allclose(xs[t + 1], x, rtol=1e-12)


def test_prox_operators():
    z = np.array([-2.0, -0.05, 0.0, 0.05, 3.0])
    np.testing.assert_allclose(prox_step(z, 0.5, "l1", 0.2, 0, 0), [-1.9, 0.0, 0.0, 0.0, 2.9])
    np.testing.assert_allclose(prox_step(z, 0.5, "box", 0.0, -1.0, 1.0), [-1.0, -0.05, 0.0, 0.05, 1.0])
    xs = trajectory(EF21Prox(TOPK, 0.3, "full", prox="box", lower=-0.2, upper=0.2), LOGREG, rounds=30)
    assert np.all(np.abs(xs[1:]) <= 0.2)
    method = EF21Prox(TOPK, 0.3, "full", prox="l1", l1=0.5)
    extra = method.evaluate(None, np.array([1.0, -2.0]), np.array([0.1, 0.1]), 0)
    assert extra["regularizer"] == 1.5
    assert extra["grad_mapping_sq"] == pytest.approx(0.6**2 + 0.4**2)


def test_page_resolves_the_official_probability():
    from mpiclip.methods.base import RunInfo

    method = EF21Page(TOPK, 0.3, "full", batch=0.25, p=0.0).bind(RunInfo(3, 10, 5, np.array([100, 100, 200])))
    taus = np.array([25, 25, 50])
    assert method.p == pytest.approx(np.mean(taus / (taus + np.array([100, 100, 200]))))


@pytest.mark.parametrize("name", sorted(n for n, c in METHODS.items() if c.runner == "synchronous"))
def test_steps_do_not_mutate_their_inputs(name):
    cls = METHODS.get(name, "")
    compressor = Identity() if not cls.uses_compressor else (RandKUnbiased(KParams(3)) if name == "diana" else TopK(KParams(2)))
    from mpiclip.methods.base import RunInfo

    method = cls.create(cls.params(), compressor, 0.1).bind(RunInfo(5, 10, 10, LOGREG.local_sizes))
    comm = SerialComm()
    comm.bind(5)
    x = np.ones(10)
    ws, ss = method.initial_state(x, 5)
    for t in range(4):
        oracle = LocalOracle(LOGREG, x, False)
        grads = oracle.full()
        before = copy.deepcopy((ws, ss, x, grads))
        ctx = RoundContext(t, 0, np.arange(5), 5, True, x)
        ws2, msg, _ = method.worker_step(ws, oracle, ctx)
        agg = exchange(comm, msg, 5, True, method.per_worker, np.arange(5))
        ss2, x2, _ = method.server_step(ss, x, agg, ctx)
        for a, b in zip(_arrays((ws, ss, x, grads)), _arrays(before)):
            np.testing.assert_array_equal(a, b)
        ws, ss, x = ws2, ss2, x2


def _arrays(obj):
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for o in obj for a in _arrays(o)]
    return []


# ------------------------------------------------------------------------------------ step sizes
def test_ef21_gamma_formula_and_limits():
    L, Lt = 2.0, 3.0
    for alpha in (1e-3, 0.1, 0.5, 0.9):
        theta = 1 - np.sqrt(1 - alpha)
        beta = (1 - alpha) / (1 - np.sqrt(1 - alpha))
        assert stepsize.ef21_gamma(L, Lt, alpha) == pytest.approx(1 / (L + Lt * np.sqrt(beta / theta)), rel=1e-12)
    assert stepsize.ef21_gamma(L, Lt, 1.0) == 1 / L
    # the official code's route to θ and β (docs/algorithms.md §3)
    alpha = 1 / 112
    t = -1 + np.sqrt(1 / (1 - alpha))
    theta, beta = 1 - (1 - alpha) * (1 + t), (1 - alpha) * (1 + 1 / t)
    assert stepsize.ef21_gamma(L, Lt, alpha) == pytest.approx(1 / (L + Lt * np.sqrt(beta / theta)), rel=1e-10)
    # mushrooms, k = 1 (docs/algorithms.md §3)
    assert stepsize.ef21_gamma(2.786214233904, 3.493225975143, 1 / 112) == pytest.approx(1.28201006e-3, rel=1e-8)


def test_ef21_pl_gamma_is_the_pl_rule():
    L, Lt, mu, alpha = 2.786214233904, 3.493225975143, 0.1, 1 / 112
    theta = 1 - np.sqrt(1 - alpha)
    beta = (1 - alpha) / theta
    expected = min(1 / (L + Lt * np.sqrt(2 * beta / theta)), theta / (2 * mu))
    assert stepsize.ef21_pl_gamma(L, Lt, alpha, mu) == pytest.approx(expected, rel=1e-12)
    ratio = stepsize.ef21_pl_gamma(L, Lt, alpha, mu) / stepsize.ef21_gamma(L, Lt, alpha)
    assert 0.69 < ratio < 0.72  # "about 0.71x the EF21 rule for k = 1" (docs/algorithms.md §9 item 4)


def test_resolve_rules():
    params = stepsize.StepsizeParams
    c = stepsize.Constants(L=2.0, L_tilde=3.0, mu=None, alpha=0.1, omega=None, n_workers=4)
    assert stepsize.resolve(params(rule="inverse_L", factor=4.0), "ef21", c) == ("inverse_L", 2.0)
    assert stepsize.resolve(params(rule="constant", value=0.3, factor=2.0), "ef21", c)[1] == 0.6
    assert stepsize.resolve(params(), "inverse_L", c)[0] == "inverse_L"
    unbiased = stepsize.Constants(L=2.0, L_tilde=3.0, omega=3.0, n_workers=6)
    assert stepsize.resolve(params(rule="diana"), "ef21", unbiased)[1] == pytest.approx(1 / (2.0 * 2.0))
    with pytest.raises(InputError, match=r"^stepsize.rule = 'ef21': needs a contractive compressor"):
        stepsize.check(params(rule="ef21"), "ef21", None, 3.0, "randk_unbiased")
    with pytest.raises(InputError, match=r"^stepsize.rule = 'diana': needs an unbiased compressor"):
        stepsize.check(params(rule="diana"), "ef21", 0.5, None, "topk")
    with pytest.raises(InputError, match=r"^stepsize.rule = 'ef21_pl': needs μ"):
        stepsize.resolve(params(rule="ef21_pl"), "ef21", c)


def test_methods_that_cannot_use_shared_positions_say_so():
    from mpiclip.compressors import RandKShared
    from mpiclip.compressors.sparsifiers import SharedParams

    shared = RandKShared(SharedParams(k=2))
    with pytest.raises(InputError, match=r"^compressor.name = 'randk_shared': EF21\+ sends one of two"):
        EF21Plus(shared, 0.1).validate(10, 5)
    with pytest.raises(InputError, match=r"^compressor.name = 'randk_shared': regenerates positions"):
        EF21PP(shared, 0.1, participation=0.5).validate(10, 5)
    with pytest.raises(InputError, match=r"^method.participation = 0.1: selects no worker out of 5"):
        EF21PP(TOPK, 0.1, participation=0.1).validate(10, 5)
