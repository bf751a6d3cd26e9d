"""Clipping: the operator, Clip21-Avg's exact bound, the counterexample where Clip-GD stalls, DP noise
and its accounting in a run, bad input (the accountant itself: test_privacy.py)."""

import math
import os

import numpy as np
import pytest
from helpers import config_table

from mpiclip import config as cfg
from mpiclip import privacy, session
from mpiclip.clipping import clip_rows
from mpiclip.comm import SerialComm
from mpiclip.compressors import Identity, KParams, TopK, sparse_message
from mpiclip.compressors.clipping import Clip, ClipParams
from mpiclip.errors import InputError
from mpiclip.methods.clip21 import Clip21Avg, Clip21GD
from mpiclip.problems.counterexample import clip21_sgd_stall, clip_sgd_stall
from mpiclip.runners.synchronous import RoundContext, exchange
from mpiclip.trace import load_trace


def test_clip_operator():
    v = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped, norms = clip_rows(v, 1.0)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])
    np.testing.assert_allclose(norms, [5.0, 0.5, 0.0])
    clip = Clip(ClipParams(1.0))
    msg = clip(v, None)
    assert msg.bits[0, 0] == 64 and not msg.sparse  # 32·d
    # on a sparse message it clips the kept values as one vector, positions unchanged
    sparse = sparse_message(np.array([[3.0, 0.0, 4.0]]), np.array([0, 0]), np.array([0, 2]), 2)
    on = clip.on(sparse, None)
    np.testing.assert_allclose(on.dense((1, 3)), [[0.6, 0.0, 0.8]])
    assert on.bits[0, 0] == 64 and on.bits[0, 1] == 128


class Fixed:
    """An oracle with fixed gradients a_i (Clip21-Avg's vectors)."""

    def __init__(self, a):
        self.a = a

    def full(self):
        return self.a


def drive(method, a, rounds):
    comm = SerialComm()
    comm.bind(len(a))
    x = np.zeros(a.shape[1])
    ws, ss = method.initial_state(x, len(a))
    for t in range(rounds):
        ctx = RoundContext(t, 0, np.arange(len(a)), len(a), True, x)
        ws, msg, _ = method.worker_step(ws, Fixed(a), ctx)
        ss, x, _ = method.server_step(ss, x, exchange(comm, msg, len(a), True, False, np.arange(len(a))), ctx)
    return ss, ws


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_clip21_avg_is_exact_after_the_bound_and_not_before(tau):
    a = np.random.default_rng(0).standard_normal((5, 7)) * np.array([1, 4, 0.5, 2, 3])[:, None]
    norms = np.linalg.norm(a, axis=1)
    bound = math.ceil(norms.max() / tau)
    method = Clip21Avg(Identity(), 0.0, tau=tau)
    server, workers = drive(method, a, bound)
    np.testing.assert_allclose(workers.v, a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(server.v, a.mean(axis=0), rtol=1e-12, atol=1e-12)
    # one round fewer: the longest vector still lacks ‖a‖ − (bound − 1)τ > 0, in its own direction
    _, early = drive(method, a, bound - 1)
    gap = np.linalg.norm(a - early.v, axis=1)
    np.testing.assert_allclose(gap, np.maximum(0.0, norms - (bound - 1) * tau), rtol=1e-10, atol=1e-12)
    assert gap.max() > 0


def run_table(tmp_path, **sections):
    table = config_table(**sections)
    table["output"] = {"path": str(tmp_path / "{name}.h5"), "exists": "overwrite"}
    (config,) = [cfg.validate(table)]
    (prepared,) = session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
    return session.execute(prepared), prepared


def counterexample(tmp_path, method, rounds=400, factor=1.0):
    return run_table(tmp_path, run={"name": method["name"], "n_workers": 2, "rounds": rounds, "x0": "zeros"},
                     data=None, problem={"name": "clip_counterexample", "d": 3, "s": 1.0, "kappa": 3.0},
                     method=method, compressor={"name": "identity"}, stepsize={"factor": factor})


def test_clip_gd_stalls_where_clip21_and_gd_converge(tmp_path):
    grad0 = (3.0 - 1.0) / 2  # ‖∇f(0)‖ = (κ − 1)s/2
    stalled, _ = counterexample(tmp_path, {"name": "clip_gd", "tau": 0.5})
    assert stalled.grad_norm_sq == pytest.approx(grad0**2, rel=1e-12)  # x never moves from 0
    fixed, _ = counterexample(tmp_path, {"name": "clip21_gd", "tau": 0.5})
    gd, _ = counterexample(tmp_path, {"name": "gd"})
    assert fixed.grad_norm_sq < 1e-20 and gd.grad_norm_sq < 1e-20
    tr = load_trace(fixed.path)
    assert tr.workers["clip_active"][0].tolist() == [1.0, 1.0]  # both clipped at the start
    assert tr.workers["clip_active"][-2].tolist() == [0.0, 0.0]  # and inactive at the end: plain GD
    gap = tr.loss[-1] - tr.attrs["f_star"]
    assert abs(gap) < 1e-14


def test_clip_gd_floor_grows_as_tau_shrinks(tmp_path):
    """Along e_1, ∇f_0 = x − 1 and ∇f_1 = 3(x + 1). For τ <= 1 Clip-GD is stuck at 0 (‖∇f‖² = 1); for τ = 1.2
    it stops where x − 1 + 1.2 = 0, at x = −0.2 (‖∇f‖² = (2x + 1)² = 0.36); from τ = 1.5 on, nothing is
    clipped at x* = −0.5 and it converges."""
    finals = {tau: counterexample(tmp_path, {"name": "clip_gd", "tau": tau}, rounds=2000)[0].grad_norm_sq
              for tau in (0.5, 1.2, 2.0)}
    assert finals[0.5] == pytest.approx(1.0)
    assert finals[1.2] == pytest.approx(0.36, rel=1e-6)
    assert finals[2.0] < 1e-20


def test_dp_noise_is_reproducible_and_accounted(tmp_path):
    result, prepared = run_table(tmp_path, run={"name": "dp", "n_workers": 4, "rounds": 40},
                                 method={"name": "clip21_gd", "tau": 0.5, "sigma": 0.2}, compressor={"name": "identity"},
                                 stepsize={"factor": 1.0})
    again, _ = run_table(tmp_path, run={"name": "dp2", "n_workers": 4, "rounds": 40},
                         method={"name": "clip21_gd", "tau": 0.5, "sigma": 0.2}, compressor={"name": "identity"},
                         stepsize={"factor": 1.0})
    a, b = load_trace(result.path), load_trace(again.path)
    np.testing.assert_array_equal(a.grad_norm_sq, b.grad_norm_sq)
    eps = a.metrics["epsilon"]
    assert eps[0] == 0 and np.all(np.diff(eps) > 0)
    expected = privacy.Accountant([privacy.Mechanism(0.2, 1.0)], 1e-5).epsilon(40)
    assert eps[-1] == pytest.approx(expected)
    assert np.all(a.workers["noise_scale"][:-1] == 0.2)


def test_target_epsilon_sets_sigma(tmp_path):
    result, prepared = run_table(tmp_path, run={"name": "target", "n_workers": 4, "rounds": 30},
                                 method={"name": "clip_gd", "tau": 1.0, "target_epsilon": 4.0, "delta": 1e-6},
                                 compressor={"name": "identity"})
    tr = load_trace(result.path)
    assert tr.metrics["epsilon"][-1] == pytest.approx(4.0, rel=1e-6)
    sigma = prepared.method.sigma
    mech = privacy.Mechanism(sigma, 2.0)
    assert privacy.Accountant([mech], 1e-6).epsilon(30) == pytest.approx(4.0, rel=1e-6)


def test_minibatch_accounting_is_amplified(tmp_path):
    full, _ = run_table(tmp_path, run={"name": "full", "n_workers": 4, "rounds": 20},
                        method={"name": "clip21_gd", "tau": 1.0, "sigma": 3.0}, compressor={"name": "identity"})
    sgd, _ = run_table(tmp_path, run={"name": "sgd", "n_workers": 4, "rounds": 20},
                       method={"name": "clip21_sgd", "tau": 1.0, "sigma": 3.0, "batch": 0.1}, compressor={"name": "identity"})
    assert load_trace(sgd.path).metrics["epsilon"][-1] < 0.5 * load_trace(full.path).metrics["epsilon"][-1]


def test_clipping_then_compression_orders(tmp_path):
    for order in ("clip_first", "compress_first"):
        result, _ = run_table(tmp_path, run={"name": order, "n_workers": 4, "rounds": 30},
                              method={"name": "clip21_gd", "tau": 0.05, "order": order},
                              compressor={"name": "topk", "k": 3}, stepsize={"factor": 1.0})
        tr = load_trace(result.path)
        assert tr.bits_up["paper"][1:].max() == 32 * 3 and tr.bits_up["coo32"][1:].max() == 64 * 3
    method = Clip21GD(TopK(KParams(2)), 0.1, tau=0.5, order="compress_first")
    ws, _ = method.initial_state(np.zeros(6), 1)
    u = np.array([[3.0, 0.0, -4.0, 0.1, 0.0, 0.0]])
    _, msg, _ = method.worker_step(ws, Fixed(u), RoundContext(0, 0, np.arange(1), 1, True, np.zeros(6)))
    np.testing.assert_allclose(msg.dense(u.shape), [[0.3, 0, -0.4, 0, 0, 0]])
    method = Clip21GD(TopK(KParams(2)), 0.1, tau=0.5, order="clip_first")  # clips all of u (norm 5.001) first
    _, msg, _ = method.worker_step(ws, Fixed(u), RoundContext(0, 0, np.arange(1), 1, True, np.zeros(6)))
    scale = 0.5 / np.linalg.norm(u)
    np.testing.assert_allclose(msg.dense(u.shape), [[3 * scale, 0, -4 * scale, 0, 0, 0]], rtol=1e-15)


@pytest.mark.parametrize("compressor", [TopK(KParams(1)), TopK(KParams(3)), Identity()])
@pytest.mark.parametrize("order", ["clip_first", "compress_first"])
def test_clip_diagnostics_are_those_of_the_vector_really_clipped(compressor, order):
    """clip_active and norm_before_clip, recomputed from the messages: under compress_first the clipped
    vector is C(u), so a worker whose u is long but whose Top-k is short is not clipped."""
    rng = np.random.default_rng(4)
    u = rng.standard_normal((40, 9)) * rng.choice([0.02, 0.2, 2.0], size=(40, 1))
    tau = 0.3
    method = Clip21GD(compressor, 0.1, tau=tau, order=order)
    ctx = RoundContext(0, 0, np.arange(40), 40, True, np.zeros(9))
    msg, norms = method._message(u, ctx)
    clipped = u
    if order == "compress_first" and isinstance(compressor, TopK):  # Top-k by hand
        clipped = np.stack([np.where(np.abs(r) >= np.sort(np.abs(r))[-compressor.k], r, 0.0) for r in u])
    expected = np.linalg.norm(clipped, axis=1)
    np.testing.assert_allclose(norms, expected, rtol=1e-14)
    active = method._metrics(norms, np.zeros(40), 40)["clip_active"].astype(bool)
    if order == "compress_first" or isinstance(compressor, Identity):  # the message is clip_τ(v) itself
        sent = np.linalg.norm(msg.dense(u.shape), axis=1)
        np.testing.assert_allclose(sent[active], tau, rtol=1e-12)  # clipped: norm τ
        np.testing.assert_allclose(sent[~active], expected[~active], rtol=1e-12)  # not clipped: v unchanged
    if order == "compress_first" and isinstance(compressor, TopK) and compressor.k == 1:
        assert (np.linalg.norm(u, axis=1) > tau).sum() > active.sum() > 0  # the old diagnostic over-reported


@pytest.mark.parametrize("sections, message", [
    ({"method": {"name": "clip21_gd", "tau": 0.0}}, r"^method.tau = 0.0: must be > 0"),
    ({"method": {"name": "clip21_gd", "tau": -1.0}}, r"^method.tau = -1.0: must be > 0"),
    ({"method": {"name": "clip_gd", "sigma": -0.1}}, r"^method.sigma = -0.1: must be >= 0"),
    ({"method": {"name": "clip_gd", "delta": 1.0}}, r"^method.delta = 1.0: must be in \(0, 1\)"),
    ({"method": {"name": "clip_gd", "delta": 0.0}}, r"^method.delta = 0.0: must be in \(0, 1\)"),
    ({"method": {"name": "clip_gd", "sigma": 1.0, "target_epsilon": 2.0}}, r"^method.target_epsilon = 2.0: and method.sigma"),
    ({"method": {"name": "clip_gd", "target_epsilon": 1e-9}}, r"^method.target_epsilon = 1e-09: is unreachable"),
    ({"method": {"name": "ef14"}, "compressor": {"name": "clip", "tau": 1.0}},
     r"^compressor.name = 'clip': clips, and method 'ef14' does not support clipping"),
    ({"method": {"name": "diana"}, "compressor": {"name": "compose", "inner": {"name": "clip", "tau": 1.0},
                                                 "outer": {"name": "natural"}, "scale": False}},
     r"^compressor.name = 'compose': clips, and method 'diana' does not support clipping"),
    ({"method": {"name": "clip21_gd"}, "compressor": {"name": "clip", "tau": 1.0}},
     r"^compressor.name = 'clip': clip21_gd clips by itself"),
    ({"method": {"name": "clip21_gd", "sigma": 0.1}, "compressor": {"name": "topk", "k": 2}},
     r"^compressor.name = 'topk': DP noise is added to uncompressed messages only"),
    ({"method": {"name": "clip21_sgd", "target_epsilon": 4.0, "accountant": "pld"}, "compressor": {"name": "identity"}},
     r"^method.accountant = 'pld': dp-accounting's PLD accountant handles Poisson sampling only"),
    ({"method": {"name": "clip_gd", "sigma": 1.0, "accountant": "moments"}},
     r"^method.accountant = 'moments': must be one of"),
])
def test_bad_clipping_input(tmp_path, sections, message):
    sections.setdefault("compressor", {"name": "identity"})
    with pytest.raises(InputError, match=message):
        run_table(tmp_path, **sections)
    assert not list(tmp_path.glob("*.h5"))


def test_ef21_with_the_clip_compressor_is_clip21_with_compressed_init(tmp_path):
    ef21, _ = run_table(tmp_path, run={"name": "a", "n_workers": 4, "rounds": 25},
                        method={"name": "ef21", "init": "compressed"}, compressor={"name": "clip", "tau": 0.2},
                        stepsize={"rule": "inverse_L"})
    clip21, _ = run_table(tmp_path, run={"name": "b", "n_workers": 4, "rounds": 25},
                          method={"name": "clip21_gd", "tau": 0.2}, compressor={"name": "identity"},
                          stepsize={"rule": "inverse_L"})
    np.testing.assert_array_equal(load_trace(ef21.path).grad_norm_sq, load_trace(clip21.path).grad_norm_sq)


def test_privacy_command():
    from helpers import mpiclip

    sigma = mpiclip(["privacy", "--tau", "1", "--rounds", "100", "--epsilon", "3"])
    assert sigma.returncode == 0, sigma.stderr
    value = float(sigma.stdout.split("σ = ")[1].split()[0])
    eps = mpiclip(["privacy", "--tau", "1", "--rounds", "100", "--sigma", str(value)])
    assert float(eps.stdout.split("ε = ")[1].split()[0]) == pytest.approx(3.0, rel=1e-4)
    amplified = mpiclip(["privacy", "--tau", "1", "--rounds", "100", "--sigma", str(value), "--records", "1000",
                         "--batch", "10"])
    assert float(amplified.stdout.split("ε = ")[1].split()[0]) < 1.0
    worker_level = mpiclip(["privacy", "--tau", "1", "--rounds", "100", "--sigma", str(value), "--records", "1000",
                            "--batch", "10", "--relation", "add_remove"])  # sampling records does not hide a worker
    assert float(worker_level.stdout.split("ε = ")[1].split()[0]) < 3.0 - 0.5
    tight = mpiclip(["privacy", "--tau", "1", "--rounds", "100", "--sigma", str(value), "--accountant", "pld"])
    assert 2.5 < float(tight.stdout.split("ε = ")[1].split()[0]) < 3.0  # the PLD of the same rounds spends less
    for args, message in [(["--tau", "0", "--rounds", "1", "--sigma", "1"], "--tau = 0.0: must be > 0"),
                          (["--tau", "1", "--rounds", "1", "--sigma", "1", "--delta", "1"], "--delta = 1.0: must be in (0, 1)"),
                          (["--tau", "1", "--rounds", "1", "--sigma", "-1"], "--sigma = -1.0: must be >= 0"),
                          (["--tau", "1", "--rounds", "10", "--epsilon", "1e-12"], "--epsilon = 1e-12: is unreachable"),
                          (["--tau", "1", "--rounds", "10", "--epsilon", "2", "--accountant", "pld", "--records", "100",
                            "--batch", "10"], "--accountant = 'pld': dp-accounting's PLD accountant handles Poisson sampling only"),
]:
        bad = mpiclip(["privacy", *args])
        assert bad.returncode == 2 and bad.stderr.startswith(f"mpiclip: error: {message}"), bad.stderr


def test_clipping_figures_without_mpi(tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    paths = []
    for method in ("clip_gd", "clip21_gd"):
        for eps in (4.0, 16.0):
            result, _ = run_table(tmp_path, run={"name": f"{method}-{eps:g}", "n_workers": 4, "rounds": 20},
                                  method={"name": method, "tau": 0.05, "target_epsilon": eps},
                                  compressor={"name": "identity"}, stepsize={"factor": 1.0})
            paths.append(result.path)
    code = ("import sys; sys.path.insert(0, %r); import clip_activity, privacy_utility; "
            "assert clip_activity.main([%r, '-o', %r]) == 0; "
            "assert privacy_utility.main(%r + ['-o', %r, '--y', 'accuracy']) == 0; "
            "assert 'mpi4py' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code % (os.path.join(REPO, "analysis"), paths[0], str(tmp_path / "a.png"),
                                                         paths, str(tmp_path / "p.png"))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr
    assert (tmp_path / "a.png").stat().st_size > 5000 and (tmp_path / "p.png").stat().st_size > 5000
    worker_level, _ = run_table(tmp_path, run={"name": "worker-level", "n_workers": 4, "rounds": 20},
                                method={"name": "clip_gd", "tau": 0.05, "target_epsilon": 4.0, "relation": "add_remove"},
                                compressor={"name": "identity"})
    mixed = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "privacy_utility.py"), *paths[:2],
                            worker_level.path, "-o", str(tmp_path / "m.png")], capture_output=True, text=True, timeout=120)
    assert mixed.returncode == 2 and not (tmp_path / "m.png").exists()
    assert mixed.stderr.startswith("privacy_utility: error: the traces mix privacy units (method.relation add_remove and "
                                   "replace)"), mixed.stderr


def test_one_clipping_rule_everywhere():
    """mpiclip.clipping is the only clipping: rows and single vectors agree with min(1, τ/‖x‖)·x computed here,
    a vector inside the ball (and 0) comes back to the last bit, and a NaN norm neither hides nor spreads."""
    from mpiclip.clipping import clip_scale, clip_vector

    rng = np.random.default_rng(3)
    v = rng.normal(size=(5, 7)) * np.array([0.01, 0.1, 1.0, 2.0, 40.0])[:, None]
    v[0] = 0.0
    clipped, norms = clip_rows(v, 1.0)
    np.testing.assert_allclose(norms, np.linalg.norm(v, axis=1), rtol=1e-14)
    for row, out in zip(v, clipped):
        n = np.linalg.norm(row)
        np.testing.assert_allclose(out, row * min(1.0, 1.0 / n) if n else row, rtol=1e-14)
        one, norm, scaled = clip_vector(row, 1.0)
        np.testing.assert_allclose(one, out, rtol=1e-14)  # its norm is a dot product, the rows' an einsum
        assert scaled == (norm > 1.0)
    assert np.array_equal(clipped[:2], v[:2])  # inside the ball: the same bits
    assert np.linalg.norm(clipped[4]) == pytest.approx(1.0, rel=1e-14)
    nan = np.array([1.0, np.nan, 3.0])
    assert np.array_equal(clip_rows(nan[None], 0.5)[0][0], nan, equal_nan=True)
    assert clip_scale(np.array([0.0, np.nan, 4.0]), 2.0).tolist()[::2] == [1.0, 0.5]
    # no other module writes the rule again
    import pathlib
    import re
    package = pathlib.Path(__file__).resolve().parents[1] / "mpiclip"
    pattern = re.compile(r"tau\s*/\s*norm|minimum\(1(\.0)?,\s*tau")
    writers = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if pattern.search(p.read_text())}
    assert writers <= {"clipping.py", "nn/backend.py"}, writers  # the torch backend clips on the device


def noise_counterexample(tmp_path, method, rounds, factor):
    return run_table(tmp_path, run={"name": method["name"], "n_workers": 2, "rounds": rounds, "x0": "zeros"},
                     data=None, problem={"name": "clip_noise_counterexample", "d": 2, "spike": 3.0, "rows": 4},
                     method={"batch": 0.25, **method}, compressor={"name": "identity"}, stepsize={"factor": factor})


def test_stochastic_counterexample_closed_forms():
    """a = 3, N = 4 (b = 1): Clip-SGD's x̂ = (3 − τ)/3; Clip21-SGD's x̃ = 1 − m(τ) with M = 4/τ lattice steps."""
    assert clip_sgd_stall(3.0, 4, 1.0) == pytest.approx(2 / 3)
    assert clip_sgd_stall(3.0, 4, 3.5) == 0.0  # nothing clipped at x* = 0: no bias
    # τ = 2: M = 2, r = 1/3: m = 2·(1/3 + 2/9)/(1 + 1/3 + 1/9) = 10/13
    assert clip21_sgd_stall(3.0, 4, 2.0) == pytest.approx(1 - 10 / 13)
    assert clip21_sgd_stall(3.0, 4, 0.3) is None  # 4/0.3 lattice steps: no closed form here


def test_clip_sgd_and_clip21_sgd_stall_on_skewed_noise_where_clip21_sgd2m_converges(tmp_path):
    """Along e_1 the iterate of Clip-SGD settles around x̂, Clip21-SGD's around x̃ (its γ → 0 limit: γ = 0.02 is
    within 0.03 of it), Clip21-SGD2M's around x* = 0; ‖∇f(x)‖ = ‖x‖ (∇f(x) = x)."""
    tau, rounds = 1.0, 3000
    late = slice(rounds // 2, None)
    runs = {name: load_trace(noise_counterexample(tmp_path, {"name": name, "tau": tau, **extra}, rounds, 0.02)[0].path)
            for name, extra in (("clip_sgd", {}), ("clip21_sgd", {}), ("clip21_sgd2m", {"beta1": 0.01, "beta2": 0.1}))}
    mean_norm = {name: float(np.mean(np.sqrt(tr.grad_norm_sq[late]))) for name, tr in runs.items()}
    assert mean_norm["clip_sgd"] == pytest.approx(clip_sgd_stall(3.0, 4, tau), abs=0.015)  # 2/3
    assert mean_norm["clip21_sgd"] == pytest.approx(clip21_sgd_stall(3.0, 4, tau), abs=0.03)  # 0.521
    assert np.mean(runs["clip21_sgd2m"].grad_norm_sq[late]) < 0.05 < clip21_sgd_stall(3.0, 4, tau) ** 2
    assert runs["clip_sgd"].attrs["f_star"] == pytest.approx(1.5)  # ½ · a²/(N − 1)
