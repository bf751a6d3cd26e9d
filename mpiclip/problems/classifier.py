"""Classifiers on a data set's classes: multinomial logistic regression (``softmax``) and a small MLP (``mlp``).

f_i(x) is the mean cross-entropy over worker i's rows plus (λ/2)‖x‖² on every parameter (torch SGD's
weight decay); x is the flat parameter vector of :class:`mpiclip.models.Network`, so its dimension is
(d + 1)·K for softmax regression and Σ (fan_in + 1)·fan_out for the MLP. Labels are the data set's
distinct labels numbered 0..K−1 (``data.labels = "classes"``).

Smoothness: for softmax regression the Hessian of the cross-entropy of one sample is
(diag(p) − ppᵀ) ⊗ ããᵀ with ã = (a, 1), and λ_max(diag(p) − ppᵀ) ≤ 1/2 (a variance of a unit vector's
entries), so L_i = λ_max(Ã_iᵀÃ_i/N_i)/2 + λ and L the same on the whole data set. An MLP has no global
constant: its L is nan and it needs ``stepsize.rule = "constant"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mpiclip.errors import InputError
from mpiclip.models import ACTIVATIONS, Network
from mpiclip.params import at_least, finite_nonnegative, param
from mpiclip.problems.base import PROBLEMS, Problem, Smoothness
from mpiclip.problems.linear import LinearDesign


@dataclass(frozen=True)
class SoftmaxParams:
    lam: float = param(1e-3, "weight decay λ on every parameter: + (λ/2)‖x‖² (torch SGD's weight_decay)",
                       check=finite_nonnegative)
    classes: int = param(0, "output size K; 0 takes the number of classes in the data (which it must equal)",
                         check=at_least(0))


@dataclass(frozen=True)
class MLPParams(SoftmaxParams):
    hidden: tuple[int, ...] = param((32,), "hidden layer sizes (one or two layers)")
    activation: str = param("tanh", "hidden activation", choices=ACTIVATIONS)


class Classifier(Problem):
    """Shared machinery: per-worker cross-entropy of a :class:`Network` on the worker's rows."""

    labels = "classes"
    score_names = ("train_accuracy",)  # per worker; the trace's train accuracy is their mean, as f is of the f_i

    @classmethod
    def network(cls, params, n_features: int, classes: int) -> Network:
        raise NotImplementedError

    @classmethod
    def dimension(cls, params, plan) -> int:
        return cls.network(params, plan.n_features, len(plan.label_values)).n_params

    @classmethod
    def model_init(cls, params, plan, rng):
        return cls.network(params, plan.n_features, len(plan.label_values)).init(rng)

    @classmethod
    def check_data(cls, params, plan) -> None:
        classes = len(plan.label_values)
        if params.classes and params.classes != classes:
            raise InputError("problem.classes", params.classes, f"does not match the {classes} classes of the data")

    @classmethod
    def build(cls, params, shard, worker_ids, n_workers):
        return cls(params, shard, n_workers)

    def __init__(self, params, shard, n_workers: int):
        self.worker_ids, self.n_workers, self.local_sizes = shard.worker_ids, n_workers, shard.sizes
        self.net = self.network(params, shard.n_features, params.classes or shard.classes)
        self.d, self.lam = self.net.n_params, params.lam
        self.X, self.y, self.offsets = shard.X, shard.y.astype(np.int64), shard.offsets
        self.test, self.weight_decay = shard.test, self.lam
        if self.test is not None:  # worker w's score is n/N_test × its block's sums, so the mean over workers is the test mean
            self.score_names = self.score_names + ("test_loss", "test_accuracy")
            self.test_scale = n_workers / shard.test_total
        self._scores = np.full((self.n_local, len(self.score_names)), np.nan)

    def _rows(self, w: int, rows=None):
        """Worker w's rows (a view when all of them), or its rows ``rows`` (local numbers)."""
        lo, hi = int(self.offsets[w]), int(self.offsets[w + 1])
        if rows is None:
            return self.X[lo:hi], self.y[lo:hi]
        index = lo + np.asarray(rows, dtype=np.int64)
        return self.X[index], self.y[index]

    def loss_grads(self, x, with_loss):
        losses, grads = np.empty(self.n_local), np.empty((self.n_local, self.d))
        for w in range(self.n_local):
            A, y = self._rows(w)
            losses[w], grads[w] = self.net.loss_grad(x, A, y, self.lam)
            if with_loss:
                self._scores[w, 0] = self.net.accuracy(x, A, y)
        if with_loss and self.test is not None:
            for w in range(self.n_local):
                lo, hi = self.test.offsets[w], self.test.offsets[w + 1]
                loss, correct = self.net.evaluate(x, self.test.X[lo:hi], self.test.y[lo:hi].astype(np.int64))
                self._scores[w, 1:] = self.test_scale * (hi - lo) * loss, self.test_scale * correct
        return (losses if with_loss else None), grads

    def minibatch_grads(self, x, batches):
        return np.stack([self.net.loss_grad(x, *self._rows(w, b), self.lam)[1] for w, b in enumerate(batches)])

    def worker_grad(self, x, local, rows=None, decay=True):
        return self.net.loss_grad(x, *self._rows(local, rows), self.lam if decay else 0.0)[1]

    def scores(self):
        return self._scores

    def smoothness(self, reduce):
        if not self.smooth:
            return Smoothness(float("nan"), reduce.gather(np.full((self.n_local, 1), np.nan))[:, 0])
        ones = np.ones((self.X.shape[0], 1))
        augmented = sp.hstack([self.X, ones], format="csr") if sp.issparse(self.X) else np.hstack([self.X, ones])
        design = LinearDesign(augmented, np.ones(len(ones)), self.offsets)
        local = np.array([[0.5 * design.worker_lambda_max(w) + self.lam] for w in range(self.n_local)])
        n_total = int(reduce.gather(self.local_sizes[:, None].astype(np.float64)).sum())
        return Smoothness(0.5 * design.data_lambda_max(reduce, n_total) + self.lam, reduce.gather(local)[:, 0],
                          self.lam or None)


@PROBLEMS.register("softmax")
class Softmax(Classifier):
    """Multinomial logistic regression: softmax(Wᵀa + b) with cross-entropy and weight decay."""

    params = SoftmaxParams

    @classmethod
    def network(cls, params, n_features, classes):
        return Network((n_features, params.classes or classes))


@PROBLEMS.register("mlp")
class MLP(Classifier):
    """A small MLP (one or two hidden layers, tanh or ReLU) with cross-entropy and weight decay."""

    params = MLPParams
    smooth = False

    @staticmethod
    def check(params, n_workers):
        if not 1 <= len(params.hidden) <= 2 or min(params.hidden) < 1:
            raise InputError("problem.hidden", list(params.hidden), "must be one or two layer sizes >= 1")

    @classmethod
    def network(cls, params, n_features, classes):
        return Network((n_features, *params.hidden, params.classes or classes), params.activation)
