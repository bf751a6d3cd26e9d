"""Methods as pure functions: reductions to GD, purity, EF21+ choice, step-size formulas."""

import copy

import numpy as np
import pytest

from mpiclip import stepsize
from mpiclip.comm import SerialComm
from mpiclip.compressors import Identity, KParams, TopK
from mpiclip.methods import METHODS, RoundContext
from mpiclip.methods.ef21 import EF14, EF21, GD, CompressedGD, EF21Plus
from mpiclip.problems import Quadratic, QuadraticParams
from mpiclip.runner import exchange

PROBLEM = Quadratic(QuadraticParams(d=10, L=1.0, spread=0.5, mu=0.05, zeta=2.0, seed=1), np.arange(5), 5)


def trajectory(method, rounds=60, x0=None):
    """Drive a method by hand with the serial communicator; returns the iterates."""
    comm = SerialComm()
    comm.bind(5)
    x = np.ones(10) if x0 is None else x0
    ws, ss = method.initial_state(x, 5)
    xs = [x]
    for t in range(rounds):
        _, grads = PROBLEM.loss_grads(x, False)
        ctx = RoundContext(t, 0, np.arange(5), 5, True)
        ws, msg, _ = method.worker_step(ws, grads, ctx)
        ss, x = method.server_step(ss, x, exchange(comm, msg, 5, True, method.per_worker), ctx)
        xs.append(x)
    return np.array(xs)


def test_gd_matches_the_closed_form_iteration():
    gamma = 0.5
    xs = trajectory(GD(Identity(), gamma))
    Q, b = PROBLEM.Q.mean(axis=0), PROBLEM.b.mean(axis=0)
    x = np.ones(10)
    for t in range(len(xs)):
        np.testing.assert_allclose(xs[t], x, rtol=1e-12, atol=1e-14)
        x = x - gamma * (Q @ x - b)


@pytest.mark.parametrize("init", ["full", "compressed"])
def test_ef21_with_identity_is_gd(init):
    np.testing.assert_allclose(trajectory(EF21(Identity(), 0.5, init)), trajectory(GD(Identity(), 0.5)),
                               rtol=1e-12, atol=1e-13)


def test_ef21_plus_with_identity_is_gd_and_cgd_with_identity_is_gd():
    gd = trajectory(GD(Identity(), 0.5))
    np.testing.assert_allclose(trajectory(EF21Plus(Identity(), 0.5, "full")), gd, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(trajectory(CompressedGD(Identity(), 0.5)), gd, rtol=1e-12, atol=1e-13)


def test_ef14_with_identity_is_gd():
    np.testing.assert_allclose(trajectory(EF14(Identity(), 0.5)), trajectory(GD(Identity(), 0.5)),
                               rtol=1e-12, atol=1e-13)


def test_ef21_topk_converges_where_it_should():
    xs = trajectory(EF21(TopK(KParams(2)), 0.3, "full"), rounds=3000)
    _, grads = PROBLEM.loss_grads(xs[-1], False)
    assert np.linalg.norm(grads.mean(axis=0)) < 1e-8


def test_ef21_state_is_the_running_sum_of_messages():
    """g_i^t = g_i^{t-1} + c_i^t and the server's g is the mean of the g_i (ALGORITHMS §2.1)."""
    method = EF21(TopK(KParams(3)), 0.2, "compressed")
    x = np.ones(10)
    ws, ss = method.initial_state(x, 5)
    comm = SerialComm()
    comm.bind(5)
    for t in range(5):
        _, grads = PROBLEM.loss_grads(x, False)
        ctx = RoundContext(t, 0, np.arange(5), 5, True)
        new_ws, msg, metrics = method.worker_step(ws, grads, ctx)
        np.testing.assert_array_equal(new_ws.g, ws.g + msg.dense(grads.shape))
        np.testing.assert_allclose(metrics["ef_error"], np.sum((new_ws.g - grads) ** 2, axis=1), rtol=1e-10)
        ss, x_next = method.server_step(ss, x, exchange(comm, msg, 5, True, False), ctx)
        np.testing.assert_allclose(ss.g, new_ws.g.mean(axis=0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(x_next, x - 0.2 * ss.g)
        ws, x = new_ws, x_next


def test_ef21_plus_keeps_the_closer_candidate():
    method = EF21Plus(TopK(KParams(1)), 0.1, "full")
    g_old = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    grads = np.array([[3.0, 1.0, 0.0], [0.0, 4.0, 0.1]])
    ws = type(method.initial_state(np.zeros(3), 2)[0])(g_old)
    ctx = RoundContext(1, 0, np.arange(2), 2, True)
    new, msg, metrics = method.worker_step(ws, grads, ctx)
    # worker 0: b = m = (3, 0, 0), a tie, which goes to m. Worker 1: ∇ − g = (−5, 4, 0.1), C keeps −5, so
    # m = (0, 0, 0) with ‖m − ∇‖² = 16.01 while b = (0, 4, 0) has ‖b − ∇‖² = 0.01.
    assert list(metrics["chose_b"]) == [0.0, 1.0]
    np.testing.assert_array_equal(new.g, [[3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    assert list(msg.flags) == [0, 1]
    comm = SerialComm()
    comm.bind(2)
    server = type(method.server_step(None, np.zeros(3), exchange(comm, msg, 2, True, True), ctx)[0])(g_old, g_old.mean(0))
    server, x = method.server_step(server, np.zeros(3), exchange(comm, msg, 2, True, True), ctx)
    np.testing.assert_array_equal(server.G, new.g)
    np.testing.assert_allclose(x, -0.1 * new.g.mean(axis=0))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_steps_do_not_mutate_their_inputs(name):
    cls = METHODS.get(name, "")
    compressor = Identity() if not cls.uses_compressor else TopK(KParams(2))
    method = cls.create(cls.params(), compressor, 0.1)
    comm = SerialComm()
    comm.bind(5)
    x = np.ones(10)
    ws, ss = method.initial_state(x, 5)
    for t in range(3):
        _, grads = PROBLEM.loss_grads(x, False)
        before = copy.deepcopy((ws, ss, x, grads))
        ctx = RoundContext(t, 0, np.arange(5), 5, True)
        ws2, msg, _ = method.worker_step(ws, grads, ctx)
        agg = exchange(comm, msg, 5, True, method.per_worker)
        ss2, x2 = method.server_step(ss, x, agg, ctx)
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
    # the official code's route to θ and β (ALGORITHMS §2.4)
    alpha = 1 / 112
    t = -1 + np.sqrt(1 / (1 - alpha))
    theta, beta = 1 - (1 - alpha) * (1 + t), (1 - alpha) * (1 + 1 / t)
    assert stepsize.ef21_gamma(L, Lt, alpha) == pytest.approx(1 / (L + Lt * np.sqrt(beta / theta)), rel=1e-10)
    # mushrooms, k = 1 (ALGORITHMS §8.5)
    assert stepsize.ef21_gamma(2.786214233904, 3.493225975143, 1 / 112) == pytest.approx(1.28201006e-3, rel=1e-8)


def test_ef21_plus_gamma_is_the_pl_rule():
    L, Lt, mu, alpha = 2.786214233904, 3.493225975143, 0.1, 1 / 112
    theta = 1 - np.sqrt(1 - alpha)
    beta = (1 - alpha) / theta
    expected = min(1 / (L + Lt * np.sqrt(2 * beta / theta)), theta / (2 * mu))
    assert stepsize.ef21_plus_gamma(L, Lt, alpha, mu) == pytest.approx(expected, rel=1e-12)
    ratio = stepsize.ef21_plus_gamma(L, Lt, alpha, mu) / stepsize.ef21_gamma(L, Lt, alpha)
    assert 0.69 < ratio < 0.72  # "about 0.71x the EF21 rule for k = 1" (ALGORITHMS §8.5)


def test_resolve_rules():
    params = stepsize.StepsizeParams
    assert stepsize.resolve(params(rule="inverse_L", factor=4.0), "ef21", 2.0, 3.0, 0.1, None, "topk") == ("inverse_L", 2.0)
    assert stepsize.resolve(params(rule="constant", value=0.3, factor=2.0), "ef21", 2.0, 3.0, 0.1, None, "topk")[1] == 0.6
    assert stepsize.resolve(params(), "inverse_L", 2.0, 3.0, None, None, "x")[0] == "inverse_L"
    from mpiclip.errors import InputError

    with pytest.raises(InputError, match=r"^stepsize.rule = 'ef21': needs a contractive compressor"):
        stepsize.resolve(params(rule="ef21"), "ef21", 2.0, 3.0, None, None, "randk_unbiased")
    with pytest.raises(InputError, match=r"^stepsize.rule = 'ef21_plus': needs μ"):
        stepsize.resolve(params(rule="ef21_plus"), "ef21", 2.0, 3.0, 0.5, None, "topk")
