"""Classifier models: exact gradients against central differences, and closed forms."""

import numpy as np
import pytest
import scipy.sparse as sp

from mpiclip.models import Network, cross_entropy


def data(rows=30, d=7, classes=3, seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rows, d)) * (rng.random((rows, d)) < 0.6)
    y = rng.integers(0, classes, rows)
    return (sp.csr_matrix(A) if sparse else A), y


def central_differences(f, x, h=1e-6):
    g = np.empty_like(x)
    for j in range(len(x)):
        e = np.zeros_like(x)
        e[j] = h
        g[j] = (f(x + e) - f(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("sizes,activation", [((7, 3), "tanh"), ((7, 5, 3), "tanh"), ((7, 6, 4, 3), "relu"),
                                              ((7, 8, 3), "relu")])
@pytest.mark.parametrize("sparse", [False, True])
def test_gradients_match_central_differences(sizes, activation, sparse):
    net = Network(sizes, activation)
    A, y = data(classes=sizes[-1], sparse=sparse)
    x = net.init(np.random.default_rng(1)) * 3.0  # larger weights: curvature in every layer
    loss, grad = net.loss_grad(x, A, y, lam=0.1)
    numeric = central_differences(lambda z: net.loss_grad(z, A, y, lam=0.1)[0], x)
    assert np.abs(grad - numeric).max() < 1e-7 * max(1.0, np.abs(numeric).max())
    assert loss == pytest.approx(net.loss_grad(x, A, y)[0] + 0.05 * float(x @ x), rel=1e-14)


def test_two_class_softmax_is_binary_logistic_regression():
    net = Network((5, 2))
    A, y = data(rows=40, d=5, classes=2, seed=2)
    rng = np.random.default_rng(3)
    w, c = rng.standard_normal(5), 0.3
    x = np.zeros(net.n_params)
    (W, b), = net.unpack(x)
    W[:, 1], b[1] = w, c  # logits (0, aᵀw + c)
    z = A @ w + c
    s = 2.0 * y - 1.0
    assert net.loss_grad(x, A, y)[0] == pytest.approx(np.mean(np.log1p(np.exp(-s * z))), rel=1e-13)
    assert net.accuracy(x, A, y) == np.mean((z > 0) == (y == 1))


def test_cross_entropy_of_equal_logits_is_log_k_and_its_gradient_sums_to_zero():
    logits = np.full((6, 5), 2.5)
    y = np.array([0, 1, 2, 3, 4, 0])
    loss, delta = cross_entropy(logits, y)
    assert loss == pytest.approx(np.log(5), rel=1e-15)
    np.testing.assert_allclose(delta.sum(axis=1), 0.0, atol=1e-16)  # rounding of 5 probabilities of 1/5, over 6 rows
    big = np.array([[1000.0, 0.0], [0.0, 1000.0]])  # no overflow: shifted by the row maximum
    assert cross_entropy(big, np.array([0, 1]))[0] == 0.0


def test_layout_views_and_torch_like_initialisation():
    net = Network((64, 32, 10))
    assert net.n_params == 64 * 32 + 32 + 32 * 10 + 10
    x = net.init(np.random.default_rng(0))
    (W1, b1), (W2, b2) = net.unpack(x)
    assert W1.shape == (64, 32) and b2.shape == (10,) and np.shares_memory(W1, x)
    assert np.abs(W1).max() <= 1 / 8 and np.abs(b1).max() <= 1 / 8 and np.abs(W2).max() <= 1 / np.sqrt(32)
    assert np.abs(W1).max() > 0.9 / 8  # uniform over the whole range, not a narrower one
    for bad in [((5,), "tanh"), ((5, 0, 3), "tanh"), ((5, 3), "sigmoid")]:
        with pytest.raises(ValueError):
            Network(*bad)
