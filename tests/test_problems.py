"""Oracles against independent computations: finite differences, closed forms, dense eigenvalues."""

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import libsvm_file

from mpiclip.data import DataParams, DataSpec, LibsvmParams, Shard, SyntheticParams, plan
from mpiclip.data.partition import NoParams
from mpiclip.problems import (
    LeastSquares,
    LeastSquaresParams,
    LogisticRegression,
    LogRegParams,
    Quadratic,
    QuadraticParams,
    linear,
)
from mpiclip.stepsize import ef21_gamma
from mpiclip.wire import ALL_LOCAL


def make_shard(storage="csr", n_workers=3, n=90, d=8, seed=0, values="gaussian"):
    spec = DataSpec(DataParams(storage=storage), SyntheticParams(n_samples=n, n_features=d, density=0.4,
                                                                values=values, seed=seed), NoParams())
    p = plan(spec, n_workers, "pm1")
    return p.load(np.arange(n_workers)), p


def dense_parts(shard: Shard):
    X = shard.X.toarray() if hasattr(shard.X, "toarray") else shard.X
    return [(X[a:b], shard.y[a:b]) for a, b in zip(shard.offsets[:-1], shard.offsets[1:])]


def logreg_reference(x, A, y, lam, kind):
    """The official formulas (logreg_functions_fast.py), one worker, dense."""
    loss = np.mean(np.logaddexp(0, -y * (A @ x)))
    grad = -np.mean(A * y[:, None] / (1 + np.exp(y * (A @ x)))[:, None], axis=0)
    if kind == "nonconvex":
        loss, grad = loss + lam * np.sum(x**2 / (1 + x**2)), grad + lam * 2 * x / (1 + x**2) ** 2
    elif kind == "l2":
        loss, grad = loss + 0.5 * lam * x @ x, grad + lam * x
    return loss, grad


def central_differences(f, x, h=1e-6):
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])


@pytest.mark.parametrize("storage", ["csr", "dense"])
@pytest.mark.parametrize("kind", ["nonconvex", "l2", "none"])
def test_logreg_matches_official_formulas_and_finite_differences(storage, kind):
    shard, _ = make_shard(storage)
    prob = LogisticRegression(LogRegParams(lam=0.1, regularizer=kind), shard, 3)
    x = np.random.default_rng(1).standard_normal(8)
    losses, grads = prob.loss_grads(x, with_loss=True)
    for w, (A, y) in enumerate(dense_parts(shard)):
        loss, grad = logreg_reference(x, A, y, 0.1, kind)
        assert losses[w] == pytest.approx(loss, rel=1e-13)
        np.testing.assert_allclose(grads[w], grad, rtol=1e-12, atol=1e-15)
        fd = central_differences(lambda v: prob.loss_grads(v, True)[0][w], x)
        np.testing.assert_allclose(grads[w], fd, rtol=1e-6, atol=1e-8)
    assert prob.loss_grads(x, with_loss=False)[0] is None


def test_logreg_loss_is_accurate_at_extreme_margins():
    shard, _ = make_shard()
    prob = LogisticRegression(LogRegParams(lam=0.0, regularizer="none"), shard, 3)
    for scale in (1.0, 50.0, 1e3, 1e5):
        x = scale * np.random.default_rng(2).standard_normal(8)
        losses, grads = prob.loss_grads(x, with_loss=True)
        assert np.all(np.isfinite(losses)) and np.all(np.isfinite(grads))
        for w, (A, y) in enumerate(dense_parts(shard)):
            exact = np.mean(np.logaddexp(0, -y * (A @ x)))
            assert losses[w] == pytest.approx(exact, rel=1e-12, abs=1e-13 * scale)


def test_least_squares_gradient_and_loss():
    shard, _ = make_shard(values="gaussian")
    prob = LeastSquares(LeastSquaresParams(), shard, 3)
    x = np.random.default_rng(3).standard_normal(8)
    losses, grads = prob.loss_grads(x, True)
    for w, (A, b) in enumerate(dense_parts(shard)):
        r = A @ x - b
        assert losses[w] == pytest.approx(0.5 * np.mean(r**2), rel=1e-13)
        np.testing.assert_allclose(grads[w], A.T @ r / len(b), rtol=1e-12)
        np.testing.assert_allclose(grads[w], central_differences(lambda v: prob.loss_grads(v, True)[0][w], x),
                                   rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("storage", ["csr", "dense"])
def test_a_workers_gradient_does_not_depend_on_its_rank_mates(storage):
    shard, p = make_shard(storage, n_workers=4, n=200)
    together = LogisticRegression(LogRegParams(), shard, 4)
    x = np.random.default_rng(4).standard_normal(8)
    losses, grads = together.loss_grads(x, True)
    for w in range(4):
        alone = LogisticRegression(LogRegParams(), p.load(np.array([w])), 4)
        l1, g1 = alone.loss_grads(x, True)
        assert np.array_equal(g1[0], grads[w]) and l1[0] == losses[w]



@pytest.mark.parametrize("storage,d", [("csr", 8), ("dense", 8), ("csr", 9000), ("dense", 9000)])
@pytest.mark.parametrize("problem", ["logreg", "least_squares"])
def test_a_pooled_minibatch_has_the_bits_of_one_gradient_per_worker(problem, storage, d):
    """Linear models' pooled_grad (one pass over the rows drawn across workers, asynchronous homogeneous data) is the
    base class's loop of one worker_grad per worker to the last bit: each worker's rows in sample order, the workers
    added in order (d = 9000 is past numpy's 8192-element buffer, where an axis-0 sum could be blocked)."""
    from mpiclip.problems.base import Picked, Problem
    from mpiclip.rng import Draw

    shard, _ = make_shard(storage, n_workers=6, n=120 if d < 1000 else 24, d=d)  # wide data: few rows (fast)
    model = LogisticRegression(LogRegParams(), shard, 6) if problem == "logreg" else \
        LeastSquares(LeastSquaresParams(), shard, 6)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(d) * 0.3
    for b in (1, 5, 40, 300):  # repeats, several rows of one worker, every worker
        workers = np.sort(rng.integers(0, 6, b))
        rows = (rng.random(b) * shard.sizes[workers]).astype(np.int64)
        order = np.lexsort((rows, workers))
        workers, rows = workers[order], rows[order]
        first = np.flatnonzero(np.concatenate([[True], workers[1:] != workers[:-1]]))
        picked = Picked(workers[first], np.append(first, b), rows, (0, 1, 2, 3))
        assert all(isinstance(r, Draw) and r.key == (0, 1, 2, 3, w) for w, r in picked.each())
        pooled, looped = model.pooled_grad(x, picked), Problem.pooled_grad(model, x, picked)
        assert pooled.tobytes() == looped.tobytes()


@pytest.mark.parametrize("trial", range(40))
def test_scaled_rows_have_the_bits_of_scipys_diagonal_product(trial):
    """LinearDesign scales a canonical CSR's entries in place of scipy's diag(s)·X (start-up): the same indices and
    bits; stored zeros, unsorted entries, float32 data and zero scales take scipy's product."""
    from mpiclip.problems.linear import _scaled_rows

    rng = np.random.default_rng(trial)
    X = sp.random(40, 15, density=0.3, format="csr", random_state=trial)
    if trial % 3 == 0:
        X.data[::4] = 0.0
    if trial % 4 == 1:  # the same entries, each row's in reverse order: not canonical
        order = np.concatenate([np.arange(a, b)[::-1] for a, b in zip(X.indptr[:-1], X.indptr[1:])])
        X = sp.csr_matrix((X.data[order], X.indices[order], X.indptr), shape=X.shape)
        assert not X.has_canonical_format
    if trial % 5 == 2:
        X = X.astype(np.float32)
    scale = rng.standard_normal(40) * (rng.random(40) > 0.1 if trial % 2 else 1.0)
    ours = _scaled_rows(X, scale)
    theirs = sp.csr_matrix(sp.diags(scale) @ X, dtype=np.float64)
    theirs.sort_indices()
    assert ours.dtype == np.float64 and ours.has_sorted_indices
    assert np.array_equal(ours.indptr, theirs.indptr) and np.array_equal(ours.indices, theirs.indices)
    assert np.array_equal(ours.data.view(np.int64), theirs.data.view(np.int64))


def test_smoothness_against_dense_eigenvalues():
    shard, _ = make_shard(n_workers=3)
    prob = LogisticRegression(LogRegParams(lam=0.1), shard, 3)
    s = prob.smoothness(ALL_LOCAL)
    parts = dense_parts(shard)
    expected_i = [np.linalg.eigvalsh(A.T @ A / (4 * len(A)))[-1] + 0.2 for A, _ in parts]
    A_all = np.vstack([A for A, _ in parts])
    np.testing.assert_allclose(s.L_workers, expected_i, rtol=1e-12)
    assert s.L == pytest.approx(np.linalg.eigvalsh(A_all.T @ A_all / (4 * len(A_all)))[-1] + 0.2, rel=1e-12)
    assert s.L_tilde == pytest.approx(np.sqrt(np.mean(np.square(expected_i))), rel=1e-12)
    assert s.mu == 0.1


def test_lanczos_path_agrees_with_dense_gram(monkeypatch):
    shard, _ = make_shard(n_workers=3, d=8)
    dense = LogisticRegression(LogRegParams(), shard, 3).smoothness(ALL_LOCAL)
    monkeypatch.setattr(linear, "GRAM_MAX_D", 4)
    lanczos = LogisticRegression(LogRegParams(), shard, 3).smoothness(ALL_LOCAL)
    assert lanczos.L == pytest.approx(dense.L, rel=1e-9)
    np.testing.assert_allclose(lanczos.L_workers, dense.L_workers, rtol=1e-9)


def test_a_worker_using_few_columns_of_a_wide_problem_gets_its_exact_constant(monkeypatch):
    """Above GRAM_MAX_D, when the rows touch at most GRAM_MAX_D columns, λ_max comes from the dense Gram of
    those columns (exact, and no d-long Lanczos vectors): for each worker, and for the data when all the
    workers together touch at most GRAM_MAX_D."""
    X = np.zeros((6, 40))
    rng = np.random.default_rng(1)
    X[:3, [2, 5, 11]] = rng.standard_normal((3, 3))  # worker 0: 3 columns
    X[3:, [0, 30, 31, 39]] = rng.standard_normal((3, 4))  # worker 1: 4 columns
    shard = Shard(np.arange(2), np.array([0, 3, 6]), sp.csr_matrix(X), np.array([1.0, -1, 1, -1, 1, -1]))
    monkeypatch.setattr(linear, "GRAM_MAX_D", 4)
    calls = []
    original = linear._lanczos_top
    monkeypatch.setattr(linear, "_lanczos_top", lambda op: calls.append(op.shape) or original(op))
    s = LogisticRegression(LogRegParams(lam=0.1), shard, 2).smoothness(ALL_LOCAL)
    expected = [np.linalg.eigvalsh(A.T @ A / (4 * len(A)))[-1] + 0.2 for A in (X[:3], X[3:])]
    np.testing.assert_allclose(s.L_workers, expected, rtol=1e-12)
    assert s.L == pytest.approx(np.linalg.eigvalsh(X.T @ X / 24)[-1] + 0.2, rel=1e-9)
    assert calls == [(7, 7)]  # the data's: 7 columns in all, more than GRAM_MAX_D, so Lanczos on those 7
    monkeypatch.setattr(linear, "GRAM_MAX_D", 8)
    calls.clear()
    s = LogisticRegression(LogRegParams(lam=0.1), shard, 2).smoothness(ALL_LOCAL)
    assert s.L == pytest.approx(np.linalg.eigvalsh(X.T @ X / 24)[-1] + 0.2, rel=1e-12)
    assert calls == []


def test_wide_sparse_workers_get_their_constants_from_the_smaller_side(monkeypatch):
    """Above GRAM_MAX_D: a worker with few rows gets λ_max from its dense row Gram A_iA_iᵀ (same nonzero
    spectrum); one with many rows and many columns, Lanczos on the columns it uses; the data, Lanczos on
    the columns any row uses. No iteration runs in d dimensions, and every constant is the dense one."""
    rng = np.random.default_rng(3)
    X = np.zeros((15, 100))
    X[:6, :10] = rng.standard_normal((6, 10))  # worker 0: 6 rows, 10 columns
    X[6:12, 50:60] = rng.standard_normal((6, 10))  # worker 1: 6 rows, 10 columns
    X[12:, 90:] = rng.standard_normal((3, 10))  # worker 2: 3 rows, 10 columns
    shard = Shard(np.arange(3), np.array([0, 6, 12, 15]), sp.csr_matrix(X), np.array([1.0, -1] * 7 + [1.0]))
    monkeypatch.setattr(linear, "GRAM_MAX_D", 4)
    calls = []
    original = linear._lanczos_top
    monkeypatch.setattr(linear, "_lanczos_top", lambda op: calls.append(op.shape) or original(op))
    s = LogisticRegression(LogRegParams(lam=0.1), shard, 3).smoothness(ALL_LOCAL)
    expected = [np.linalg.eigvalsh(A.T @ A / (4 * len(A)))[-1] + 0.2 for A in (X[:6], X[6:12], X[12:])]
    np.testing.assert_allclose(s.L_workers, expected, rtol=1e-9)
    assert s.L == pytest.approx(np.linalg.eigvalsh(X.T @ X / 60)[-1] + 0.2, rel=1e-9)
    assert calls == [(10, 10), (10, 10), (30, 30)]  # workers 0 and 1, then the data; worker 2 by its row Gram


def test_quadratic_has_its_constructed_constants_and_minimiser():
    params = QuadraticParams(d=6, L=2.0, spread=0.5, mu=0.05, zeta=1.0, seed=3)
    prob = Quadratic(params, np.arange(4), 4)
    s = prob.smoothness(ALL_LOCAL)
    np.testing.assert_allclose(s.L_workers, [2.0, 5 / 3, 4 / 3, 1.0])
    for Q, L_i in zip(prob.Q, s.L_workers):
        eig = np.linalg.eigvalsh(Q)
        assert eig[-1] == pytest.approx(L_i, rel=1e-12) and eig[0] == pytest.approx(0.05, rel=1e-10)
    assert s.L == pytest.approx(np.linalg.eigvalsh(prob.Q.mean(axis=0))[-1], rel=1e-12)
    x_star = np.linalg.solve(prob.Q.mean(axis=0), prob.b.mean(axis=0))
    losses, grads = prob.loss_grads(x_star, True)
    np.testing.assert_allclose(grads.mean(axis=0), 0, atol=1e-12)
    x = np.random.default_rng(0).standard_normal(6)
    fd = central_differences(lambda v: prob.loss_grads(v, True)[0][1], x)
    np.testing.assert_allclose(prob.loss_grads(x, False)[1][1], fd, rtol=1e-6, atol=1e-8)
    alone = Quadratic(params, np.array([2]), 4)
    assert np.array_equal(alone.Q[0], prob.Q[2]) and np.array_equal(alone.b[0], prob.b[2])


# Constants of the EF21 setting on the real data sets (docs/algorithms.md §3 and §9).
PAPER = {
    "mushrooms": (2.786214233904, 3.493225975143, 1.28201006e-3),
    "a9a": (1.771919699223, 1.773067081327, 2.29734535e-3),
    "phishing": (0.362551, 0.366085, 2.01611604e-2),
    "w8a": (0.861199, 1.016118, 1.64201608e-3),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_constants_on_the_papers_datasets(name):
    path = libsvm_file(f"{name}.txt")
    if path is None:
        pytest.skip(f"{name}.txt not found in $MPICLIP_DATA_DIR (the LibSVM files are not part of the repository)")
    p = plan(DataSpec(DataParams(source="libsvm"), LibsvmParams(path=path), NoParams()), 20, "pm1")
    prob = LogisticRegression(LogRegParams(lam=0.1), p.load(np.arange(20)), 20)
    s = prob.smoothness(ALL_LOCAL)
    L, L_tilde, gamma = PAPER[name]
    assert s.L == pytest.approx(L, rel=1e-6) and s.L_tilde == pytest.approx(L_tilde, rel=1e-6)
    assert ef21_gamma(s.L, s.L_tilde, 1 / p.n_features) == pytest.approx(gamma, rel=1e-7)


def test_least_squares_optimum_and_pl_constant():
    shard, _ = make_shard(values="gaussian", n_workers=3)
    prob = LeastSquares(LeastSquaresParams(), shard, 3)
    s = prob.smoothness(ALL_LOCAL)
    parts = dense_parts(shard)
    # f = (1/n) Σ (1/(2N_i))‖A_i x − b_i‖²: a least-squares problem on rows scaled by sqrt(1/(n N_i))
    A = np.vstack([a / np.sqrt(3 * len(a)) for a, _ in parts])
    b = np.concatenate([y / np.sqrt(3 * len(y)) for _, y in parts])
    x_star = np.linalg.lstsq(A, b, rcond=None)[0]
    assert s.f_star == pytest.approx(0.5 * np.sum((A @ x_star - b) ** 2), rel=1e-10)
    H = A.T @ A
    assert s.mu == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-8)


def test_quadratic_optimum():
    params = QuadraticParams(d=5, mu=0.1, seed=4)
    prob = Quadratic(params, np.arange(3), 3)
    s = prob.smoothness(ALL_LOCAL)
    Q, b = prob.Q.mean(axis=0), prob.b.mean(axis=0)
    x_star = np.linalg.solve(Q, b)
    assert s.f_star == pytest.approx(0.5 * x_star @ Q @ x_star - b @ x_star, rel=1e-12)
    assert s.f_star == pytest.approx(prob.loss_grads(x_star, True)[0].mean(), rel=1e-10)


# ------------------------------------------------------------------------- classifiers (issue 11)
def classifier(name="softmax", n_workers=3, **params):
    from mpiclip import config as cfg
    from mpiclip import data as datamod
    from mpiclip.problems import PROBLEMS

    config = cfg.validate({"data": {"source": "leaf_synthetic", "users": 3, "n_features": 6, "classes": 3},
                           "problem": {"name": name, **params}, "run": {"n_workers": n_workers}})
    plan = datamod.plan(config.data, n_workers, "classes")
    ids = np.arange(n_workers)
    return PROBLEMS.get(name, "").build(config.problem.params, plan.load(ids), ids, n_workers), plan


def test_classifier_gradients_are_the_models_on_each_workers_rows():
    from mpiclip.models import Network

    for name, params in (("softmax", {}), ("mlp", {"hidden": [5, 4], "activation": "relu"})):
        problem, plan = classifier(name, **params)
        x = problem.net.init(np.random.default_rng(0))
        losses, grads = problem.loss_grads(x, True)
        assert problem.d == problem.net.n_params and isinstance(problem.net, Network)
        for w, rows in enumerate(plan.shards):
            A = plan.load(np.array([w])).X
            y = np.searchsorted(plan.label_values, plan.summary.labels[rows]).astype(int)
            loss, grad = problem.net.loss_grad(x, A, y, problem.lam)
            assert losses[w] == pytest.approx(loss, rel=1e-13)
            np.testing.assert_allclose(grads[w], grad, rtol=1e-12, atol=1e-15)
            np.testing.assert_array_equal(problem.worker_grad(x, w), grads[w])
        assert np.all((problem.scores() >= 0) & (problem.scores() <= 1))


def test_softmax_smoothness_bounds_the_hessian():
    problem, _ = classifier("softmax", lam=0.01)
    smooth = problem.smoothness(ALL_LOCAL)
    rng = np.random.default_rng(1)
    h = 1e-6
    for _ in range(3):
        x = rng.standard_normal(problem.d)
        for w in range(problem.n_local):
            H = np.stack([(problem.worker_grad(x + h * e, w) - problem.worker_grad(x - h * e, w)) / (2 * h)
                          for e in np.eye(problem.d)])
            top = np.linalg.eigvalsh(0.5 * (H + H.T))[-1]
            assert top <= smooth.L_workers[w] * (1 + 1e-6)
    assert smooth.mu == 0.01


def test_classifier_settings_that_do_not_fit_are_refused(tmp_path):
    from helpers import config_table

    from mpiclip import config as cfg
    from mpiclip import session
    from mpiclip.comm import SerialComm
    from mpiclip.errors import InputError

    def run(**sections):
        base = {"data": {"source": "leaf_synthetic", "users": 3, "n_features": 6, "classes": 3}}
        table = config_table(run={"name": "c", "n_workers": 3, "rounds": 5}, method={"name": "gd"},
                             compressor={"name": "identity"}, **{**base, **sections})
        table["output"] = {"path": str(tmp_path / "c.h5")}
        (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
        return session.execute(prepared)

    assert run(problem={"name": "softmax"}).status.startswith("completed")
    for sections, message in [({"problem": {"name": "softmax", "classes": 5}}, "problem.classes = 5: does not match the 3"),
                              ({"problem": {"name": "mlp", "hidden": [4, 4, 4]}}, r"problem.hidden = \[4, 4, 4\]: must be one or two"),
                              ({"problem": {"name": "mlp"}}, "stepsize.rule = 'auto': problem 'mlp' has no smoothness"),
                              ({"problem": {"name": "softmax"}, "data": {"source": "regression", "n_samples": 30}},
                               "a classifier needs at least 2 classes with integer labels")]:
        (tmp_path / "c.h5").unlink(missing_ok=True)
        with pytest.raises(InputError, match=message):
            run(**sections)
        assert not (tmp_path / "c.h5").exists()
