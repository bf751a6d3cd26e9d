"""The federated family: the server optimizers against their formulas, every method against an independent
loop written here, the identities between methods, the metrics and bits of a round, and bad input."""

import math

import h5py
import numpy as np
import pytest
from helpers import config_table, differences, trace_arrays

from mpiclip import config as cfg
from mpiclip import data as datamod
from mpiclip import session
from mpiclip.comm import SerialComm
from mpiclip.errors import InputError
from mpiclip.federation import SERVER_OPTIMIZERS, FederatedParams, sample_clients
from mpiclip.models import Network
from mpiclip.problems import PROBLEMS

N, ROUNDS = 4, 6


def table(path, method: dict, federated: dict = None, **sections) -> dict:
    t = config_table(run={"name": "f", "n_workers": N, "rounds": ROUNDS, "x0": "zeros"}, method=method,
                     compressor={"name": "identity"}, stepsize={"rule": "constant", "value": 0.5}, **sections)
    t["federated"] = federated or {}
    t["output"] = {"path": str(path), "exists": "overwrite"}
    return t


def run(t: dict):
    (prepared,) = session.prepare_all([cfg.validate(t)], SerialComm(), "test", log=lambda *a: None)
    result = session.execute(prepared)
    assert result.status.startswith("completed"), result.status
    return trace_arrays(t["output"]["path"])


def all_clients(t: dict):
    """Every client's problem in one process (the reference loops' gradient oracle) and the plan."""
    config = cfg.validate(t)
    problem_cls = PROBLEMS.get(config.problem.name, "problem.name")
    plan = datamod.plan(config.data, N, problem_cls.labels)
    ids = np.arange(N)
    return problem_cls.build(config.problem.params, plan.load(ids), ids, N), plan


def grad(problem, i, y):
    return problem.worker_grad(y, i)


def g_hat(problem, x, chosen):
    sizes = problem.local_sizes
    return sum(sizes[i] * grad(problem, i, x) for i in chosen) / sizes[chosen].sum()


# --------------------------------------------------------------------------- server optimizers
@pytest.mark.parametrize("name", sorted(SERVER_OPTIMIZERS))
def test_server_optimizers_follow_their_formulas_coordinate_by_coordinate(name):
    settings = {"sgd": dict(server_momentum=0.7, nesterov=True), "fedavgm": dict(server_momentum=0.5)}.get(name, {})
    p = FederatedParams(server_optimizer=name, server_lr=0.3, **settings)
    opt = SERVER_OPTIMIZERS.get(name, "x")(p)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(3)
    state = opt.init(x)
    expected = x.copy()
    m, v = [0.0] * 3, [p.server_tau**2] * 3
    for _ in range(4):
        D = rng.standard_normal(3)
        state, x = opt.step(state, x, D)
        for j in range(3):
            if name in ("sgd", "fedavgm"):
                m[j] = p.server_momentum * m[j] + D[j]
                step = D[j] + p.server_momentum * m[j] if p.nesterov else m[j]
                expected[j] -= p.server_lr * step
                continue
            m[j] = p.server_beta1 * m[j] + (1 - p.server_beta1) * D[j]
            if name == "fedadagrad":
                v[j] += D[j] ** 2
            elif name == "fedadam":
                v[j] = p.server_beta2 * v[j] + (1 - p.server_beta2) * D[j] ** 2
            else:
                v[j] -= (1 - p.server_beta2) * D[j] ** 2 * math.copysign(1.0, v[j] - D[j] ** 2)
            expected[j] -= p.server_lr * m[j] / (math.sqrt(v[j]) + p.server_tau)
        np.testing.assert_allclose(x, expected, rtol=1e-14, atol=1e-15)


def test_plain_server_sgd_takes_the_average_model():
    opt = SERVER_OPTIMIZERS.get("sgd", "x")(FederatedParams())
    x, mean_model = np.array([1.0, 2.0]), np.array([0.25, -1.0])
    assert np.array_equal(opt.step(opt.init(x), x, x - mean_model)[1], mean_model)


def test_clients_are_drawn_uniformly_without_replacement_and_keyed_by_seed_and_round():
    draws = np.array([sample_clients(3, t, 10, 4) for t in range(3000)])
    assert all(len(set(row)) == 4 for row in draws)
    assert np.array_equal(draws[7], sample_clients(3, 7, 10, 4)) and not np.array_equal(draws[7], draws[8])
    frequency = np.bincount(draws.ravel(), minlength=10) / draws.size
    assert np.abs(frequency - 0.1).max() < 0.01  # 12,000 draws: the standard error is 0.0027
    assert np.array_equal(sample_clients(3, 5, 10, 10), np.arange(10))


def test_the_learning_rate_schedule_is_multistep():
    p = FederatedParams(lr_milestones=(3, 5), lr_decay=0.5)
    assert [p.lr_scale(t) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.25, 0.25]


# --------------------------------------------------------------------------- methods against reference loops
@pytest.mark.parametrize("problem", ["logreg", "least_squares"])
def test_gradalign_is_its_closed_form(tmp_path, problem):
    """K = 1, full batches, all clients, η_s = 1: x ← x − η (1/n) Σ ∇f_i(x − β(ĝ − g_i)); the binary
    logistic regression and least squares of the synchronous family run federated too."""
    beta, eta = 0.7, 0.5
    data = {"source": "regression", "n_samples": 120, "n_features": 6} if problem == "least_squares" else None
    t = table(tmp_path / "a.h5", {"name": "gradalign", "beta": beta}, problem={"name": problem},
              **({"data": data} if data else {}))
    out = run(t)
    problem, _ = all_clients(t)
    x = np.zeros(problem.d)
    for _ in range(ROUNDS):
        gh = g_hat(problem, x, np.arange(N))
        x = x - eta * np.mean([grad(problem, i, x - beta * (gh - grad(problem, i, x))) for i in range(N)], axis=0)
    np.testing.assert_allclose(out["x_final"], x, rtol=1e-12, atol=1e-14)


def reference_local(problem, x, i, steps, eta, correction=0.0, mu=0.0):
    y = x.copy()
    for _ in range(steps):
        y = y - eta * (grad(problem, i, y) + correction + mu * (y - x))
    return y


@pytest.mark.parametrize("method", ["fedavg", "fedprox", "scaffold", "fedga"])
def test_local_methods_with_sampled_clients_match_a_reference_loop(tmp_path, method):
    settings = {"fedavg": {}, "fedprox": {"mu": 0.3}, "scaffold": {}, "fedga": {"beta": 0.4}}[method]
    eta, K = 0.5, 3
    t = table(tmp_path / "a.h5", {"name": method, "local_steps": K, **settings}, {"clients_per_round": 2})
    out = run(t)
    problem, _ = all_clients(t)
    x = np.zeros(problem.d)
    for chosen in out["clients"]:
        gh = g_hat(problem, x, chosen)
        models = []
        for i in chosen:
            if method == "fedga":
                start = x - settings["beta"] * (gh - grad(problem, i, x))
                models.append(reference_local(problem, start, i, K, eta))
            else:
                correction = gh - grad(problem, i, x) if method == "scaffold" else 0.0
                models.append(reference_local(problem, x, i, K, eta, correction, settings.get("mu", 0.0)))
        x = np.mean(models, axis=0)
    np.testing.assert_allclose(out["x_final"], x, rtol=1e-11, atol=1e-13)


def test_scaffold_with_stored_control_variates_matches_karimireddy_option_2(tmp_path):
    eta, K = 0.5, 2
    t = table(tmp_path / "a.h5", {"name": "scaffold_stored", "local_steps": K}, {"clients_per_round": 2})
    out = run(t)
    problem, _ = all_clients(t)
    x = np.zeros(problem.d)
    c, c_i = np.zeros(problem.d), np.zeros((N, problem.d))
    for chosen in out["clients"]:
        dy, dc = [], []
        for i in chosen:
            y = reference_local(problem, x, i, K, eta, correction=c - c_i[i])
            new = c_i[i] - c + (x - y) / (K * eta)
            dy.append(y - x)
            dc.append(new - c_i[i])
            c_i[i] = new
        x = x + np.mean(dy, axis=0)
        c = c + np.sum(dc, axis=0) / N
    np.testing.assert_allclose(out["x_final"], x, rtol=1e-11, atol=1e-13)


def test_minibatches_clipping_and_weighting_match_a_reference_loop(tmp_path):
    """Seeded minibatches (rows drawn per client, round and step), clipping before weight decay, sample weights."""
    eta, K, B, tau = 0.5, 2, 9, 0.05
    t = table(tmp_path / "a.h5", {"name": "fedavg", "local_steps": K},
              {"clients_per_round": 3, "batch_size": B, "clip": tau, "weighting": "samples"},
              problem={"name": "softmax", "lam": 0.01}, data={"source": "leaf_synthetic", "users": N, "n_features": 5,
                                                             "classes": 3, "split": "natural"})
    out = run(t)
    problem, _ = all_clients(t)
    from mpiclip.rng import SAMPLING, generator

    x = np.zeros(problem.d)
    for r, chosen in enumerate(out["clients"]):
        total, weight = 0.0, 0
        for i in chosen:
            y, size = x.copy(), int(problem.local_sizes[i])
            for k in range(K):
                rows = generator(0, SAMPLING, int(i), r, k).choice(size, B, replace=False)
                g = problem.worker_grad(y, i, rows, decay=False)
                g = g * min(1.0, tau / np.linalg.norm(g)) + 0.01 * y
                y = y - eta * g
            total, weight = total + size * y, weight + size
        x = total / weight
    np.testing.assert_allclose(out["x_final"], x, rtol=1e-11, atol=1e-13)


# --------------------------------------------------------------------------- identities
IDENTITY_DATA = {"data": {"source": "synthetic", "n_samples": 203, "n_features": 12, "density": 0.3}}


def close(a: dict, b: dict, names=("x_final", "loss", "grad_norm_sq")):
    for name in names:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_gradalign_with_beta_0_is_large_batch_sgd(tmp_path):
    fed = {"clients_per_round": 3, "weighting": "samples"}
    a = run(table(tmp_path / "a.h5", {"name": "gradalign", "beta": 0.0}, fed, **IDENTITY_DATA))
    b = run(table(tmp_path / "b.h5", {"name": "lbsgd"}, fed, **IDENTITY_DATA))
    close(a, b)
    assert not np.array_equal(a["x_final"], np.zeros_like(a["x_final"]))


def test_fedavg_with_one_full_step_is_large_batch_sgd(tmp_path):
    fed = {"clients_per_round": 3, "weighting": "samples", "server_optimizer": "fedadam", "server_lr": 0.05}
    a = run(table(tmp_path / "a.h5", {"name": "fedavg", "local_steps": 1}, fed, **IDENTITY_DATA))
    b = run(table(tmp_path / "b.h5", {"name": "lbsgd"}, fed, **IDENTITY_DATA))
    close(a, b)


def test_fedprox_with_mu_0_is_fedavg_and_fedga_with_one_step_is_gradalign(tmp_path):
    fed = {"clients_per_round": 3, "batch_size": 11}
    same = ["x_final", "loss", "clients", "workers/update_norm", "bits/up/paper", "test_accuracy"]
    a = run(table(tmp_path / "a.h5", {"name": "fedprox", "mu": 0.0, "local_steps": 3}, fed))
    b = run(table(tmp_path / "b.h5", {"name": "fedavg", "local_steps": 3}, fed))
    assert differences({k: a[k] for k in same if k in a}, {k: b[k] for k in same if k in b}) == []
    c = run(table(tmp_path / "c.h5", {"name": "fedga", "beta": 0.2, "local_steps": 1}, fed))
    d = run(table(tmp_path / "d.h5", {"name": "gradalign", "beta": 0.2}, fed))
    assert differences({k: c[k] for k in same if k in c}, {k: d[k] for k in same if k in d}) == []


def test_model_and_update_uplinks_agree(tmp_path):
    a = run(table(tmp_path / "a.h5", {"name": "fedavg"}, {"uplink": "model"}))
    b = run(table(tmp_path / "b.h5", {"name": "fedavg"}, {"uplink": "update"}))
    close(a, b)


# --------------------------------------------------------------------------- metrics, bits, the trace
@pytest.fixture
def digits_run(tmp_path):
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn (extra 'test' installs it)")
    t = table(tmp_path / "d.h5", {"name": "fedga", "beta": 0.5, "local_steps": 2},
              {"clients_per_round": 3, "batch_size": 16}, problem={"name": "softmax"},
              data={"source": "digits", "split": "one_class", "test_fraction": 0.2})
    t["run"].update(n_workers=10, x0="model", eval_every=2)
    global N
    previous, N = N, 10
    try:
        yield t, run(t), all_clients(t)
    finally:
        N = previous


def test_recorded_metrics_are_the_independent_ones(digits_run):
    t, out, (problem, plan) = digits_run
    x0, n = out["x0"], 10
    grads = np.array([grad(problem, i, x0) for i in range(n)])
    mean = grads.mean(axis=0)
    assert math.isclose(out["grad_variance"][0], np.mean(np.sum((grads - mean) ** 2, axis=1)), rel_tol=1e-12)
    chosen = out["clients"][0]
    gh = g_hat(problem, x0, chosen)
    expected_gap = np.full(n, np.nan)
    expected_gap[chosen] = np.linalg.norm(gh - grads[chosen], axis=1)
    np.testing.assert_allclose(out["workers/grad_gap"][0], expected_gap, rtol=1e-12)
    np.testing.assert_allclose(out["workers/grad_gap_rel"][0], expected_gap / np.linalg.norm(gh), rtol=1e-12)
    # test metrics over the held-out rows, with the network alone
    assert np.array_equal(out["partition/test_indices"], plan.test_rows) and len(plan.test_rows) == round(0.2 * 1797)
    assert not set(plan.test_rows) & set(np.concatenate(plan.shards))
    from sklearn.datasets import load_digits

    digits = load_digits()
    A, y = digits.data[plan.test_rows] / 16.0, digits.target[plan.test_rows]
    net = Network((64, 10))
    logits = A @ net.unpack(x0)[0][0] + net.unpack(x0)[0][1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    loss = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y])
    assert math.isclose(out["test_loss"][0], loss, rel_tol=1e-12)
    assert math.isclose(out["test_accuracy"][0], np.mean(np.argmax(logits, axis=1) == y), rel_tol=1e-12)
    train = np.mean([net.accuracy(x0, *problem._rows(i)) for i in range(n)])
    assert math.isclose(out["train_accuracy"][0], train, rel_tol=1e-12)
    assert out["test_accuracy"][-1] > out["test_accuracy"][0] + 0.1  # it learns


def test_info_describes_the_sampling(digits_run):
    from mpiclip import report
    from mpiclip.trace import load_trace

    t, out, _ = digits_run
    text = report.describe(load_trace(t["output"]["path"]))
    counts = np.bincount(out["clients"].ravel(), minlength=10)
    assert (f"clients    3 of 10 per round over {ROUNDS} rounds (each sampled {counts.min()}..{counts.max()} times); "
            "server sgd η_s = 1; uniform averaging") in text
    assert f"test_accuracy final {out['test_accuracy'][-1]:.6g}" in text


def test_bits_and_communication_rounds_per_round(digits_run):
    t, out, (problem, _) = digits_run
    d, P = problem.d, 3
    # FedGA: the gradient round and the model round, each 32·d up per sampled client and 32·d down to each
    assert list(out["comm_rounds"]) == [2 * r for r in out["rounds"]]
    up = out["bits/up/paper"]  # row r holds the bits of rounds t_{r-1}..t_r - 1
    sent = np.zeros(10)
    for row in out["clients"][:2]:
        sent[row] += 2 * 32 * d
    np.testing.assert_array_equal(up[1], sent)
    assert np.all(out["bits/down/paper"][1:] == 2 * 2 * P * 32 * d)


@pytest.mark.parametrize("method, rounds_per_round, up_per_client", [
    ({"name": "fedavg"}, 1, 1), ({"name": "lbsgd"}, 1, 1), ({"name": "scaffold_stored"}, 1, 2), ({"name": "scaffold"}, 2, 2)])
def test_communication_is_counted_as_the_code_counts_it(tmp_path, method, rounds_per_round, up_per_client):
    out = run(table(tmp_path / "a.h5", method, {"clients_per_round": 2}))
    d = len(out["x0"])
    with h5py.File(tmp_path / "a.h5") as f:
        assert f.attrs["comm_rounds"] == ROUNDS * rounds_per_round
    assert out["bits/up/paper"].sum() == ROUNDS * 2 * up_per_client * 32 * d
    for row, rnd in zip(out["bits/up/paper"][1:], out["clients"]):
        assert set(np.flatnonzero(row)) == set(rnd)  # unsampled clients send nothing


def test_a_compressed_update_counts_the_compressor_bits(tmp_path):
    t = table(tmp_path / "a.h5", {"name": "fedavg"}, {"clients_per_round": 2})
    t["compressor"] = {"name": "topk", "k": 3}
    out = run(t)
    assert out["bits/up/paper"].sum() == ROUNDS * 2 * 3 * 32
    assert out["bits/up/coo32"].sum() == ROUNDS * 2 * 3 * 64


def test_all_clients_every_round_when_none_is_sampled(tmp_path):
    out = run(table(tmp_path / "a.h5", {"name": "fedavg"}))
    assert np.array_equal(out["clients"], np.tile(np.arange(N), (ROUNDS, 1)))


# --------------------------------------------------------------------------- bad input
BAD = [
    ({"federated": {"clients_per_round": 0}}, "federated.clients_per_round = 0: must be >= 1"),
    ({"federated": {"clients_per_round": -2}}, "federated.clients_per_round = -2: must be >= 1"),
    ({"federated": {"clients_per_round": 5}}, "federated.clients_per_round = 5: exceeds the 4 clients"),
    ({"federated": {"uplink": "model"}, "compressor": {"name": "topk", "k": 2}}, "federated.uplink = 'model': cannot be compressed"),
    ({"method": {"name": "lbsgd"}, "compressor": {"name": "topk", "k": 2}}, "compressor.name = 'topk': compresses the clients"),
    ({"federated": {"batch_size": 5}, "problem": {"name": "quadratic", "d": 5}, "data": None},
     "federated.batch_size = 5: needs a problem made of samples"),
    ({"federated": {"nesterov": True}}, "federated.nesterov = True: needs server_momentum > 0"),
    ({"federated": {"server_optimizer": "fedavgm"}}, "federated.server_momentum = 0.0: must be > 0 for fedavgm"),
    ({"federated": {"server_optimizer": "fedadam", "server_momentum": 0.9}}, "federated.server_momentum = 0.9: is for sgd"),
    ({"federated": {"lr_milestones": [5, 3]}}, "federated.lr_milestones = [5, 3]: must be increasing"),
    ({"federated": {"server_momentum": 1.0}}, "federated.server_momentum = 1.0: must be in [0, 1)"),
    ({"federated": {"weighting": "median"}}, "federated.weighting = 'median': must be one of uniform, samples"),
    ({"federated": {"server_lr": math.inf}}, "federated.server_lr = inf: must be a finite number > 0"),
    ({"method": {"name": "ef21"}, "compressor": {"name": "topk", "k": 2}}, "federated = {}: method 'ef21' runs on the synchronous"),
    ({"async": {"concurrency": 2}}, "async = {concurrency}: method 'fedavg' runs on the federated runner"),
    ({"run": {"x0": "model"}}, "run.x0 = 'model': problem 'logreg' has no model initialisation"),
    ({"data": {"source": "synthetic", "test_fraction": 1.0}}, "data.test_fraction = 1.0: must be in [0, 1)"),
    ({"data": {"source": "synthetic", "n_samples": 20, "test_fraction": 0.9}}, "data.test_fraction = 0.9: leaves 2 training samples for 4"),
    ({"data": {"source": "synthetic", "n_samples": 201, "split": "percentage_iid"}},
     "data.percentage = 0.0: leaves 201 label-sorted samples of 201, which do not divide into 4 equal chunks"),
    ({"data": {"source": "leaf_synthetic", "users": 4, "classes": 3, "split": "one_class"}, "problem": {"name": "softmax"}},
     "run.n_workers = 4: one_class needs a multiple of the 3 classes"),
    ({"data": {"source": "synthetic", "n_samples": 3}}, "run.n_workers = 4: exceeds the 3 samples"),
    ({"problem": {"name": "mlp"}, "data": {"source": "leaf_synthetic", "users": 4, "classes": 3}},
     "stepsize.rule = 'auto': problem 'mlp' has no smoothness constant"),
    ({"problem": {"name": "softmax", "classes": 4}, "data": {"source": "leaf_synthetic", "users": 4, "classes": 3}},
     "problem.classes = 4: does not match the 3 classes of the data"),
    ({"problem": {"name": "softmax"}, "data": {"source": "regression", "n_samples": 50, "n_features": 3}},
     "a classifier needs at least 2 classes with integer labels"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_one_line_naming_the_field_before_anything_is_written(tmp_path, change, message):
    t = table(tmp_path / "bad.h5", {"name": "fedavg"})
    t["stepsize"] = {}
    for section, values in change.items():
        if values is None:
            t.pop(section)
        else:
            t[section] = {**t[section], **values} if section == "run" else values
    with pytest.raises(InputError) as e:
        config = cfg.validate(t)
        session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "bad.h5").exists()


# --------------------------------------------------------------------------- data for federated runs
def test_the_test_set_is_held_out_per_natural_client_and_never_trained_on():
    spec = cfg.validate(table("/tmp/unused.h5", {"name": "fedavg"}, data={
        "source": "leaf_synthetic", "users": N, "split": "natural", "test_fraction": 0.25, "test_seed": 3},
        problem={"name": "softmax"})).data
    plan = datamod.plan(spec, N, "classes")
    groups = plan.summary.groups
    for user in range(N):
        rows = np.flatnonzero(groups == user)
        held = np.intersect1d(rows, plan.test_rows)
        assert len(held) == round(0.25 * len(rows))
        assert np.array_equal(np.union1d(held, plan.shards[user]), rows)  # the rest is the user's training shard
    again = datamod.plan(spec, N, "classes")
    assert np.array_equal(again.test_rows, plan.test_rows)
    blocks = plan.test_blocks  # evaluation blocks, one per worker, covering the test rows once
    assert np.array_equal(np.concatenate(blocks), plan.test_rows)


def test_auto_storage_follows_the_whole_data_set_not_a_ranks_share():
    """Digits is 51% nonzero overall; some one-class shards are denser than half, others sparser."""
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn (extra 'test' installs it)")
    spec = cfg.validate(table("/tmp/unused.h5", {"name": "fedavg"}, data={"source": "digits", "split": "one_class"},
                              problem={"name": "softmax"})).data
    plan = datamod.plan(spec, 10, "classes")
    everyone = plan.load(np.arange(10))
    everyone_counts = datamod._nonzeros(plan.load(np.arange(10), storage="csr"))
    total = lambda rows: everyone_counts.sum(axis=0)  # what the ordered sum over all ranks returns
    alone = {w: plan.load(np.array([w])).storage for w in range(10)}
    assert len(set(alone.values())) == 2  # decided by each worker's own rows, the layouts differ
    assert {plan.load(np.array([w]), total).storage for w in range(10)} == {everyone.storage}
