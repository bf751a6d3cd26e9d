"""Classifiers with exact gradients in numpy: multinomial logistic regression and a small MLP.

The building blocks of the federated problems (GradAlign, docs/algorithms.md §8): every model's parameters are
one flat float64 vector x, so methods, compressors, checkpoints and traces treat them like any other x.

* Layout: layer by layer, the weights W (fan_in, fan_out) in row-major order, then the biases b (fan_out,).
  Multinomial logistic regression is the MLP without hidden layers.
* Loss of a batch (A, y): the mean cross-entropy of softmax(logits) against the class indices y, plus
  (λ/2)‖x‖² over all parameters, biases included: torch's ``SGD(weight_decay=λ)`` adds λx to the
  gradient of every parameter, which is the gradient of this term.
* Initialisation as torch's ``nn.Linear``: W and b uniform in ±1/sqrt(fan_in).

Rows of A may be a dense array or a scipy CSR matrix (first layer only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVATIONS = ("tanh", "relu")


@dataclass(frozen=True)
class Network:
    """Layer sizes (d, h_1, ..., h_m, K) and the hidden activation; no hidden layer is softmax regression."""

    sizes: tuple[int, ...]
    activation: str = "tanh"

    def __post_init__(self):
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError(f"layer sizes {self.sizes} need an input and an output size, each >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")

    @property
    def classes(self) -> int:
        return self.sizes[-1]

    @property
    def n_params(self) -> int:
        return sum((i + 1) * o for i, o in zip(self.sizes[:-1], self.sizes[1:]))

    def unpack(self, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(W_l, b_l)] as views of x."""
        out, at = [], 0
        for i, o in zip(self.sizes[:-1], self.sizes[1:]):
            W = x[at : at + i * o].reshape(i, o)
            at += i * o
            out.append((W, x[at : at + o]))
            at += o
        return out

    def init(self, rng: np.random.Generator) -> np.ndarray:
        x = np.empty(self.n_params)
        for W, b in self.unpack(x):
            bound = 1.0 / np.sqrt(W.shape[0])
            W[:] = rng.uniform(-bound, bound, W.shape)
            b[:] = rng.uniform(-bound, bound, b.shape)
        return x

    def logits(self, x: np.ndarray, A) -> np.ndarray:
        return self._forward(x, A)[0]

    def loss_grad(self, x: np.ndarray, A, y: np.ndarray, lam: float = 0.0) -> tuple[float, np.ndarray]:
        """(mean cross-entropy + (λ/2)‖x‖², its gradient) on the rows (A, y); y holds class indices."""
        logits, inputs = self._forward(x, A)
        loss, delta = cross_entropy(logits, y)
        grad = np.empty_like(x)
        layers = self.unpack(x)
        grads = self.unpack(grad)
        for layer in range(len(layers) - 1, -1, -1):
            W = layers[layer][0]
            gW, gb = grads[layer]
            a = inputs[layer]
            gW[:] = a.T @ delta
            gb[:] = delta.sum(axis=0)
            if layer:
                delta = (delta @ W.T) * self._derivative(inputs[layer])
        if lam:
            loss += 0.5 * lam * float(x @ x)
            grad += lam * x
        return loss, grad

    def evaluate(self, x: np.ndarray, A, y: np.ndarray) -> tuple[float, int]:
        """(mean cross-entropy without weight decay, number of rows classified correctly) on (A, y)."""
        if not len(y):
            return 0.0, 0
        logits = self.logits(x, A)
        return cross_entropy(logits, y)[0], int(np.sum(np.argmax(logits, axis=1) == y))

    def accuracy(self, x: np.ndarray, A, y: np.ndarray) -> float:
        return float(np.mean(np.argmax(self.logits(x, A), axis=1) == y)) if len(y) else float("nan")

    def _forward(self, x: np.ndarray, A) -> tuple[np.ndarray, list]:
        """(logits, the input of every layer)."""
        inputs, h = [A], A
        layers = self.unpack(x)
        for layer, (W, b) in enumerate(layers):
            z = h @ W + b
            if layer == len(layers) - 1:
                return np.asarray(z), inputs
            h = np.tanh(z) if self.activation == "tanh" else np.maximum(z, 0.0)
            inputs.append(h)
        raise AssertionError("unreachable")

    def _derivative(self, h: np.ndarray) -> np.ndarray:
        """The activation's derivative from its output h (tanh' = 1 − h², relu' = [h > 0])."""
        return 1.0 - h * h if self.activation == "tanh" else (h > 0).astype(h.dtype)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean over rows of −log softmax(logits)[y], its gradient with respect to the logits)."""
    rows = len(y)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_total = np.log(total)
    loss = float(np.mean(log_total[:, 0] - shifted[np.arange(rows), y])) if rows else 0.0
    delta = exp / total
    delta[np.arange(rows), y] -= 1.0
    return loss, delta / max(rows, 1)
