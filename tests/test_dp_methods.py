"""Clip21-SGD2M, DP-Clip-SGD with momentum and DP-SGD with per-example clipping: their reductions to the
older methods to the last bit, the recursions against independent serial computations, the per-example
clipping against one gradient per row, their privacy accounting, and bad input."""

import numpy as np
import pytest
from helpers import config_table

from mpiclip import config as cfg
from mpiclip import privacy, session
from mpiclip.comm import SerialComm
from mpiclip.errors import InputError
from mpiclip.problems.base import Problem
from mpiclip.trace import load_trace

pytest.importorskip("dp_accounting")


def run(tmp_path, name, rounds=30, **sections):
    sections.setdefault("run", {"name": name, "n_workers": 4, "rounds": rounds})
    table = config_table(**sections)
    table["output"] = {"path": str(tmp_path / "{name}.h5"), "exists": "overwrite"}
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    return load_trace(session.execute(prepared).path), prepared


def assert_same_run(a, b):
    np.testing.assert_array_equal(a.grad_norm_sq, b.grad_norm_sq)
    np.testing.assert_array_equal(a.loss, b.loss)
    for name in set(a.metrics) & set(b.metrics):
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
    for name in ("clip_active", "norm_before_clip", "noise_scale"):
        np.testing.assert_array_equal(a.workers[name], b.workers[name])


@pytest.mark.parametrize("dp", [{}, {"sigma": 0.05}, {"target_epsilon": 6.0}])
def test_clip21_sgd2m_at_beta_one_is_clip21_sgd_to_the_last_bit(tmp_path, dp):
    method = {"tau": 0.3, "batch": 0.3, **dp}
    sgd2m, _ = run(tmp_path, "2m", method={"name": "clip21_sgd2m", "beta1": 1.0, "beta2": 1.0, **method}, compressor=None)
    clip21, _ = run(tmp_path, "21", method={"name": "clip21_sgd", **method}, compressor={"name": "identity"})
    assert_same_run(sgd2m, clip21)
    if dp:
        assert np.isfinite(sgd2m.metrics["epsilon"][-1]) and np.all(sgd2m.workers["noise_scale"][:-1] > 0)


def test_clip21_sgd2m_with_full_gradients_is_clip21_gd(tmp_path):
    method = {"tau": 0.2, "sigma": 0.03}
    sgd2m, _ = run(tmp_path, "2m", method={"name": "clip21_sgd2m", "beta1": 1.0, "beta2": 1.0, "batch": 1.0, **method},
                   compressor=None)
    gd, _ = run(tmp_path, "gd", method={"name": "clip21_gd", **method}, compressor={"name": "identity"})
    assert_same_run(sgd2m, gd)


def test_clip_sgdm_at_beta_one_is_clip_sgd(tmp_path):
    method = {"tau": 0.3, "batch": 0.3, "sigma": 0.05}
    sgdm, _ = run(tmp_path, "m", method={"name": "clip_sgdm", "beta": 1.0, **method}, compressor={"name": "identity"})
    sgd, _ = run(tmp_path, "s", method={"name": "clip_sgd", **method}, compressor={"name": "identity"})
    assert_same_run(sgdm, sgd)


def clip(u, tau):
    norm = np.linalg.norm(u)
    return u if norm <= tau else u * (tau / norm)


@pytest.mark.parametrize("feedback", ["noisy", "clean"])
def test_clip21_sgd2m_recursion_against_a_serial_reference(tmp_path, feedback):
    """Clip's counterexample (f_0 = ½‖x − c‖², f_1 = (κ/2)‖x + c‖²) from x^0 = 0: the module docstring's
    recursion written out with numpy, noise included (drawn as the method does), gives the same ‖∇f‖²."""
    from mpiclip.rng import NOISE, generator

    beta1, beta2, tau, sigma, rounds = 0.4, 0.3, 0.5, 0.02, 60
    trace, prepared = run(tmp_path, "ref", data=None, problem={"name": "clip_counterexample", "d": 3},
                          run={"name": "ref", "n_workers": 2, "rounds": rounds, "x0": "zeros"}, compressor=None,
                          method={"name": "clip21_sgd2m", "tau": tau, "sigma": sigma, "beta1": beta1, "beta2": beta2,
                                  "batch": 1.0, "feedback": feedback}, stepsize={"factor": 0.5})
    gamma, c, kappa = trace.attrs["gamma"], np.array([1.0, 0, 0]), 3.0
    grads = lambda x: [x - c, kappa * (x + c)]
    x, v, g_i, g = np.zeros(3), [np.zeros(3)] * 2, [np.zeros(3)] * 2, np.zeros(3)
    expected = []
    for t in range(rounds):
        expected.append(float(np.sum(((grads(x)[0] + grads(x)[1]) / 2) ** 2)))
        sent = []
        for i, grad in enumerate(grads(x)):
            v[i] = (1 - beta1) * v[i] + beta1 * grad
            clipped = clip(v[i] - g_i[i], tau)
            noisy = clipped + sigma * generator(trace.attrs["seed"], NOISE, i, t).standard_normal(3)
            g_i[i] = g_i[i] + beta2 * (noisy if feedback == "noisy" else clipped)
            sent.append(noisy)
        g = g + beta2 * (sent[0] + sent[1]) / 2
        x = x - gamma * g
    np.testing.assert_allclose(trace.grad_norm_sq[:rounds], expected, rtol=1e-10, atol=1e-15)
    if feedback == "clean":  # the server's g is not the mean of the workers' buffers: it carries the noise
        assert not np.allclose(g, (g_i[0] + g_i[1]) / 2, atol=1e-6)


def test_sgd2m_privacy_is_amplified_only_without_private_state(tmp_path):
    """Client momentum or a clean buffer make every record reach every later message: no amplification."""
    base = {"name": "clip21_sgd2m", "tau": 0.3, "sigma": 1.0, "batch": 0.3}
    eps = {}
    for label, extra in [("amplified", {"beta1": 1.0}), ("momentum", {"beta1": 0.5}),
                         ("clean", {"beta1": 1.0, "feedback": "clean"})]:
        eps[label] = run(tmp_path, label, method={**base, **extra}, compressor=None)[0].metrics["epsilon"][-1]
    full = privacy.Accountant([privacy.Mechanism(1.0, 0.6)], 1e-5).epsilon(30)
    assert eps["momentum"] == pytest.approx(full) and eps["clean"] == pytest.approx(full)
    assert eps["amplified"] < 0.7 * full


def test_logreg_per_example_clipping_against_one_gradient_per_row(tmp_path):
    """The two-product fast path equals the general one-row-at-a-time clipping (nonconvex regulariser on)."""
    _, prepared = run(tmp_path, "p", rounds=1, method={"name": "dp_sgd", "tau": 0.05, "batch": 0.5}, compressor=None)
    problem = prepared.problem
    rng = np.random.default_rng(0)
    x = rng.normal(size=problem.d)
    batches = [np.sort(rng.choice(int(n), max(1, int(n) // 2), replace=False)) for n in problem.local_sizes]
    for tau in (0.05, 0.5, 1e9):
        fast, norms = problem.clipped_example_sums(x, batches, tau)
        slow, slow_norms = Problem.clipped_example_sums(problem, x, batches, tau)
        np.testing.assert_allclose(norms, slow_norms, rtol=1e-10)
        np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-14)
        assert (norms > tau).any() == (tau < 1e9)
    # unclipped, the sum over a worker's rows is b_i times its minibatch gradient
    np.testing.assert_allclose(fast / np.array([len(b) for b in batches])[:, None],
                               problem.minibatch_grads(x, batches), rtol=1e-10, atol=1e-14)


def test_dp_sgd_without_clipping_or_noise_is_minibatch_sgd(tmp_path):
    dp, _ = run(tmp_path, "dp", method={"name": "dp_sgd", "tau": 1e9, "batch": 0.3}, compressor=None,
                stepsize={"factor": 1.0})
    sgd, _ = run(tmp_path, "sgd", method={"name": "clip_sgd", "tau": 1e9, "batch": 0.3}, compressor={"name": "identity"},
                 stepsize={"factor": 1.0})
    np.testing.assert_allclose(dp.grad_norm_sq, sgd.grad_norm_sq, rtol=1e-9)
    assert np.all(dp.workers["clip_active"][:-1] == 0)


def test_dp_sgd_noise_and_accounting(tmp_path):
    """σ is the noise on the sum: the message carries σ/b_i; a round is the subsampled Gaussian of Δ = 2τ."""
    trace, prepared = run(tmp_path, "dp", method={"name": "dp_sgd", "tau": 0.2, "target_epsilon": 4.0, "batch": 0.3},
                          compressor=None)
    sigma = prepared.bound_method.sigma
    assert trace.metrics["epsilon"][-1] == pytest.approx(4.0, rel=1e-5) and trace.metrics["epsilon"][-1] <= 4.0
    batches = np.maximum(1, (0.3 * prepared.problem.local_sizes).astype(int))
    np.testing.assert_allclose(trace.workers["noise_scale"][0], sigma / batches, rtol=1e-15)
    mechanisms = [privacy.Mechanism(sigma, 0.4, "replace", int(n), int(b))
                  for n, b in zip(prepared.problem.local_sizes, batches)]
    assert privacy.Accountant(mechanisms, 1e-5).epsilon(30) == trace.metrics["epsilon"][-1]


@pytest.mark.parametrize("sections, message", [
    ({"method": {"name": "clip21_sgd2m", "beta1": 0.0}}, r"^method.beta1 = 0.0: must be in \(0, 1\]"),
    ({"method": {"name": "clip21_sgd2m", "beta2": 1.5}}, r"^method.beta2 = 1.5: must be in \(0, 1\]"),
    ({"method": {"name": "clip21_sgd2m", "feedback": "both"}}, r"^method.feedback = 'both': must be one of noisy, clean"),
    ({"method": {"name": "clip21_sgd2m", "batch": 0.5}, "data": None, "problem": {"name": "quadratic"}},
     r"^method.batch = 0.5: samples minibatches, and this problem has no samples"),
    ({"method": {"name": "clip21_sgd2m", "sigma": 0.1}, "compressor": {"name": "topk", "k": 2}},
     r"^compressor.name = 'topk': DP noise is added to uncompressed messages only"),
    ({"method": {"name": "clip_sgdm", "beta": 0.0}, "compressor": {"name": "identity"}}, r"^method.beta = 0.0: must be in"),
    ({"method": {"name": "dp_sgd"}, "compressor": {"name": "topk", "k": 2}},
     r"^compressor.name = 'topk': method 'dp_sgd' sends uncompressed messages"),
    ({"method": {"name": "dp_sgd", "target_epsilon": 2.0, "accountant": "pld"}},
     r"^method.accountant = 'pld': dp-accounting's PLD accountant handles Poisson sampling only"),
])
def test_bad_dp_method_input(tmp_path, sections, message):
    sections.setdefault("compressor", None)
    with pytest.raises(InputError, match=message):
        run(tmp_path, "bad", **sections)
    assert not list(tmp_path.glob("*.h5"))
