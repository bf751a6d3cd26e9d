"""The torch backend: a network's per-worker losses and gradients at the run's flat vector x.

x (float64, as every vector of the run layer) holds the network's parameters in ``named_parameters()``
order, each flattened row-major. A call makes one tensor of x in the network's precision (float32 by
default, as the papers train; float64 for checks against finite differences), splits it into views of
the parameters, and runs ``torch.func.functional_call``: one forward and one backward per micro-batch of
``chunk`` rows, the gradient coming back as one flat vector, converted to float64 for the methods. So the
methods, compressors, runners, checkpoints and traces see numpy vectors only, and the paper encoding's 32
bits per value is the network's own precision.

* f_i is the mean cross-entropy over worker i's rows plus (λ/2)‖x‖², added in float64 (torch SGD's weight
  decay). Every worker's pass is its own, in its own order, so a worker's gradient is the same whichever
  rank holds it; torch runs deterministic algorithms on ``threads`` threads per rank (one by default:
  another count may change the last bits of a sum).
* What is stochastic or stateful about training acts on drawn minibatches only (rows that carry their
  draw's key, :class:`mpiclip.rng.Draw`): augmentation (random crop of the zero-padded image, horizontal
  flip) and dropout, drawn from that key, and BatchNorm's running statistics. Full passes (f_i, ∇f_i and
  every metric of the trace) see the images as they are, without dropout, and change nothing, so a trace
  does not depend on how often it records, and a run resumed at a recorded round is the uninterrupted run.
* BatchNorm normalises each micro-batch by its own statistics (train mode); a drawn minibatch updates the
  running statistics of the worker whose rows it is (torch's momentum 0.1): per-worker state, checkpointed
  with the method's. Test metrics use a worker's running statistics on its block of the test rows (eval
  mode); a method that takes only full gradients never moves them (use GroupNorm there).
* Per-example gradients (DP-SGD's clipped sums) come from ``vmap(grad(·))`` over ``example_chunk`` examples at
  a time: no loop over examples. BatchNorm mixes a batch's examples and has none (GroupNorm has).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from mpiclip.nn.models import InputSpec, build
from mpiclip.problems.base import Problem, Smoothness

DTYPES = {"float32": torch.float32, "float64": torch.float64}
AUGMENT, DROPOUT = 0xA11, 0xD20  # purposes appended to a draw's key


def configure(threads: int) -> None:
    """Deterministic kernels, and this many threads in this process."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode, read when CUDA starts
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def input_spec(layout, n_features: int, classes: int) -> InputSpec:
    if layout is None:
        return InputSpec("vector", (n_features,), classes)
    return InputSpec(layout.kind, tuple(layout.shape), classes, layout.vocab)


class FlatModel:
    """A module, and where its parameters and buffers lie in flat vectors."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for p in module.parameters()]
        self.sizes = [p.numel() for p in module.parameters()]
        self.buffer_names = [n for n, _ in module.named_buffers()]
        self.buffer_shapes = [b.shape for b in module.buffers()]
        self.buffer_sizes = [b.numel() for b in module.buffers()]
        self.d = sum(self.sizes)
        self.dropouts = [m for m in module.modules() if isinstance(m, nn.Dropout)]

    def flat(self) -> np.ndarray:
        return np.concatenate([p.detach().cpu().double().numpy().ravel() for p in self.module.parameters()])

    def views(self, flat: torch.Tensor) -> dict:
        """The parameters as views of ``flat`` (``split``: its backward is one concatenation, not one per view)."""
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(flat, self.sizes), self.shapes)}

    def initial_buffers(self, dtype, device) -> dict:
        return {n: b.detach().to(device=device, dtype=dtype if b.is_floating_point() else b.dtype).clone()
                for n, b in self.module.named_buffers()}


class TorchProblem(Problem):
    """The workers of a rank, their rows as tensors, one network evaluated at any x (see the module docstring)."""

    labels = "classes"
    smooth = False
    score_names = ("train_accuracy",)

    def __init__(self, problem: str, model: str, params, shard, n_workers: int):
        configure(params.threads)
        self.p, self.worker_ids, self.n_workers = params, shard.worker_ids, n_workers
        self.local_sizes, self.offsets = shard.sizes, shard.offsets
        self.dtype, self.device = DTYPES[params.dtype], torch.device("cpu")
        self.spec = input_spec(shard.layout, shard.n_features, params.classes or shard.classes)
        self.net = FlatModel(build(problem, model, params, self.spec))
        self.net.module.to(self.dtype)
        self.d, self.weight_decay = self.net.d, params.lam
        self.layout = shard.layout
        self.normalize = getattr(params, "normalize", False) and self.spec.kind == "image"
        self.augment = getattr(params, "augment", "none")
        self.X, self.y = self._tensors(shard)
        self.test = None
        if shard.test is not None:
            self.test = (*self._tensors(shard.test), shard.test.offsets)
            self.score_names = self.score_names + ("test_loss", "test_accuracy")
            self.test_scale = n_workers / shard.test_total
        self._scores = np.full((self.n_local, len(self.score_names)), np.nan)
        self.restore_state(None)

    # ------------------------------------------------------------------ data
    def _tensors(self, shard) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs laid out for the model, normalised if asked; labels) of a shard's rows."""
        X = shard.X.toarray() if sp.issparse(shard.X) else np.asarray(shard.X)
        if self.spec.kind == "tokens":
            return torch.from_numpy(X.astype(np.int64)), torch.from_numpy(shard.y.astype(np.int64))
        X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(self.dtype).reshape(-1, *self.spec.shape)
        if self.normalize:
            mean, std = self._statistics()
            X = (X - mean) / std
        return X, torch.from_numpy(shard.y.astype(np.int64))

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The data set's per-channel mean and standard deviation, shaped to broadcast over (B, C, H, W)."""
        as_tensor = lambda v: torch.tensor(v, dtype=self.dtype).view(1, -1, 1, 1)
        return as_tensor(self.layout.mean), as_tensor(self.layout.std)

    def place(self, local_rank: int) -> None:
        if self.p.device != "cuda":
            return
        self.device = torch.device("cuda", local_rank % torch.cuda.device_count())
        self.net.module.to(self.device)
        self.X, self.y = self.X.to(self.device), self.y.to(self.device)
        if self.test is not None:
            self.test = (self.test[0].to(self.device), self.test[1].to(self.device), self.test[2])
        self.restore_state(self.worker_state())

    def _rows(self, w: int, rows=None) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = int(self.offsets[w]), int(self.offsets[w + 1])
        if rows is None:
            return self.X[lo:hi], self.y[lo:hi]
        index = torch.as_tensor(lo + np.asarray(rows, dtype=np.int64), device=self.device)
        return self.X[index], self.y[index]

    def _augmented(self, X: torch.Tensor, key: tuple) -> torch.Tensor:
        """Random crop of the image padded by ``pad`` black pixels, then a horizontal flip with probability 1/2
        (torchvision's RandomCrop(padding) + RandomHorizontalFlip), drawn per example from the draw's key."""
        rng = np.random.default_rng([*key, AUGMENT])
        b, c, h, w = X.shape
        flip = torch.as_tensor(rng.random(b) < 0.5, device=X.device)
        if self.augment == "crop_flip":
            pad = self.p.pad
            mean, std = self._statistics() if self.normalize else (torch.zeros(1, c, 1, 1), torch.ones(1, c, 1, 1))
            padded = (-mean / std).to(X).expand(b, c, h + 2 * pad, w + 2 * pad).clone()  # black, normalised
            padded[:, :, pad : pad + h, pad : pad + w] = X
            dy, dx = (torch.as_tensor(rng.integers(0, 2 * pad + 1, b), device=X.device) for _ in range(2))
            rows = (dy[:, None] + torch.arange(h, device=X.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=X.device))[:, None, None, :]
            examples = torch.arange(b, device=X.device)[:, None, None, None]
            X = padded[examples, torch.arange(c, device=X.device)[None, :, None, None], rows, cols]
        return torch.where(flip[:, None, None, None], X.flip(-1), X)

    # ------------------------------------------------------------------ one worker's pass
    def _flat(self, x: np.ndarray) -> torch.Tensor:
        """x in the network's precision, on its device: the one leaf every parameter is a view of."""
        return torch.tensor(x, dtype=self.dtype, device=self.device, requires_grad=True)

    def _pass(self, flat: torch.Tensor, w: int, rows=None, out: Optional[np.ndarray] = None) -> tuple:
        """(gradient of the mean cross-entropy over worker w's rows (or ``rows``) as float64 numpy, written into
        ``out`` if given; that mean; the number classified right), in micro-batches of ``chunk`` rows."""
        X, y, key = self._batch(w, rows)
        n = len(y)
        params = self.net.views(flat)
        buffers = self.state[w] if key else {name: b.clone() for name, b in self.state[w].items()}  # full passes leave them
        total = torch.zeros(self.d, dtype=self.dtype, device=self.device)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, self.p.chunk):
            logits = functional_call(self.net.module, {**params, **buffers}, (X[start : start + self.p.chunk],))
            target = y[start : start + self.p.chunk]
            loss = cross_entropy_sum(logits, target)
            total += torch.autograd.grad(loss / n, flat)[0]
            loss_sum += float(loss.detach())
            correct += int((logits.detach().argmax(1) == target).sum())
        out = np.empty(self.d) if out is None else out
        torch.from_numpy(out).copy_(total)  # to float64 on the host, into the caller's row
        return out, loss_sum / max(n, 1), correct

    def _batch(self, w: int, rows) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """(inputs, labels, the draw's key) of worker w's rows, augmented if drawn; dropout on for a drawn minibatch,
        its masks from the draw's key, and off for full passes."""
        X, y = self._rows(w, rows)
        key = getattr(rows, "key", ())
        if len(y) and key and self.augment != "none":
            X = self._augmented(X, key)
        for m in self.net.dropouts:
            m.training = bool(key)
        if key and self.net.dropouts:
            torch.manual_seed(int(np.random.default_rng([*key, DROPOUT]).integers(2**63)))
        return X, y, key

    def _decayed(self, g: np.ndarray, x: np.ndarray, decay: bool = True) -> np.ndarray:
        if decay and self.weight_decay:
            g += self.weight_decay * x
        return g

    # ------------------------------------------------------------------ the Problem interface
    def loss_grads(self, x, with_loss):
        configure(self.p.threads)
        flat = self._flat(x)
        losses, grads = np.empty(self.n_local), np.empty((self.n_local, self.d))
        decay = 0.5 * self.weight_decay * float(x @ x)
        for w in range(self.n_local):
            _, loss, correct = self._pass(flat, w, out=grads[w])
            self._decayed(grads[w], x)
            losses[w] = loss + decay
            if with_loss:
                self._scores[w, 0] = correct / self.local_sizes[w] if self.local_sizes[w] else np.nan
        if with_loss and self.test is not None:
            self._test_scores(flat)
        return (losses if with_loss else None), grads

    def minibatch_grads(self, x, batches):
        configure(self.p.threads)
        flat = self._flat(x)
        grads = np.empty((self.n_local, self.d))
        for w, rows in enumerate(batches):
            self._decayed(self._pass(flat, w, rows, out=grads[w])[0], x)
        return grads

    def worker_grad(self, x, local, rows=None, decay=True):
        configure(self.p.threads)
        return self._decayed(self._pass(self._flat(x), local, rows)[0], x, decay)

    def clipped_example_sums(self, x, batches, tau):
        configure(self.p.threads)
        flat = torch.tensor(x, dtype=self.dtype, device=self.device)
        params = self.net.views(flat)
        decay = self.weight_decay * flat if self.weight_decay else None
        per_example = vmap(grad(self._example_loss), in_dims=(None, None, 0, 0),
                           randomness="different" if self.net.dropouts else "error")
        sums, norms = np.zeros((self.n_local, self.d)), []
        for w, rows in enumerate(batches):
            X, y, _ = self._batch(w, rows)
            total = torch.zeros(self.d, dtype=self.dtype, device=self.device)
            for start in range(0, len(y), self.p.example_chunk):
                end = start + self.p.example_chunk
                g = per_example(params, self.state[w], X[start:end], y[start:end])
                G = torch.cat([g[n].flatten(1) for n in self.net.names], dim=1)
                if decay is not None:
                    G += decay
                norm = torch.linalg.vector_norm(G, dim=1)
                total += torch.clamp(tau / norm, max=1.0) @ G  # clip_τ(g) = g·min(1, τ/‖g‖); ‖g‖ = 0 gives inf → 1
                norms.append(norm.to(torch.float64).cpu().numpy())
            sums[w] = total.to(torch.float64).cpu().numpy()
        return sums, (np.concatenate(norms) if norms else np.zeros(0))

    def _example_loss(self, params: dict, buffers: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return cross_entropy_sum(functional_call(self.net.module, {**params, **buffers}, (xb[None],)), yb[None])

    def _test_scores(self, flat: torch.Tensor) -> None:
        """Each local worker's test block through the network in eval mode with its running statistics: n/N_test ×
        the block's sums, so that the mean over workers is the test mean (as the numpy classifiers)."""
        X, y, offsets = self.test
        params = self.net.views(flat.detach())
        self.net.module.eval()
        try:
            with torch.no_grad():
                for w in range(self.n_local):
                    loss, correct = 0.0, 0
                    for start in range(int(offsets[w]), int(offsets[w + 1]), self.p.chunk):
                        end = min(start + self.p.chunk, int(offsets[w + 1]))
                        logits = functional_call(self.net.module, {**params, **self.state[w]}, (X[start:end],))
                        loss += float(cross_entropy_sum(logits, y[start:end]))
                        correct += int((logits.argmax(1) == y[start:end]).sum())
                    self._scores[w, 1:] = self.test_scale * loss, self.test_scale * correct
        finally:
            self.net.module.train()

    def scores(self):
        return self._scores

    def smoothness(self, reduce):
        return Smoothness(float("nan"), reduce.gather(np.full((self.n_local, 1), np.nan))[:, 0])

    # ------------------------------------------------------------------ per-worker state
    def worker_state(self):
        if not self.net.buffer_names:
            return None
        return np.stack([np.concatenate([self.state[w][n].detach().to(torch.float64).cpu().numpy().ravel()
                                         for n in self.net.buffer_names]) for w in range(self.n_local)])

    def restore_state(self, state):
        initial = self.net.initial_buffers(self.dtype, self.device)
        self.state = [{n: b.clone() for n, b in initial.items()} for _ in range(self.n_local)]
        if state is None or not self.net.buffer_names:
            return
        for w in range(self.n_local):
            parts = np.split(np.asarray(state[w]), np.cumsum(self.net.buffer_sizes)[:-1])
            for n, part, shape in zip(self.net.buffer_names, parts, self.net.buffer_shapes):
                buffer = self.state[w][n]
                buffer.copy_(torch.as_tensor(part.reshape(shape), device=self.device).to(buffer.dtype))


def cross_entropy_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_rows −log softmax(logits)[y], written with a one-hot mask: elementwise ops and reductions only, which
    have deterministic kernels on every device (``nll_loss`` and ``gather`` need atomics on CUDA)."""
    onehot = (torch.arange(logits.shape[1], device=y.device) == y[:, None]).to(logits.dtype)  # vmap takes no one_hot
    return (torch.logsumexp(logits, dim=1) - (logits * onehot).sum(dim=1)).sum()
