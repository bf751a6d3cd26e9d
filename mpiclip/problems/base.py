"""The problem interface: per-worker losses and gradients of a rank's workers, and smoothness constants.

A problem holds every local worker at once and returns all their gradients from one pass. It never
sees the communicator: the constants that need every worker (L on the whole data set, the L_i of all
workers, f*) are computed through the :class:`~mpiclip.wire.RowReduce` the session hands to
:meth:`Problem.smoothness`.

Conventions (docs/algorithms.md §3, §9): f = (1/n) Σ_i f_i is the mean over *workers*; L_i = λ_max of
f_i's curvature bound on worker i's rows; L uses the whole data set (not the L_i); L̃ = sqrt(mean L_i²).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Optional

import numpy as np

from mpiclip.clipping import clip_vector
from mpiclip.registry import NoParams, Registry
from mpiclip.rng import drawn
from mpiclip.wire import RowReduce


@dataclass(frozen=True)
class Smoothness:
    """A problem's constants: smoothness, and where the problem knows them μ and the optimal value f*."""

    L: float
    L_workers: np.ndarray  # (n,) L_i of every worker
    mu: Optional[float] = None  # strong convexity / PL constant where the problem defines one
    f_star: Optional[float] = None  # min f where it has a closed form (least squares, quadratics)

    @property
    def L_tilde(self) -> float:
        return float(np.sqrt(np.mean(self.L_workers**2)))


class Picked(NamedTuple):
    """Rows drawn across local workers (a minibatch of the whole objective): worker ``workers[i]`` (increasing) has
    the rows ``rows[offsets[i]:offsets[i+1]]`` (local row numbers, increasing, repeats kept), drawn by the generator
    keyed ``key``; the draw of worker w's rows is keyed ``key + (w,)``."""

    workers: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    key: tuple

    def each(self):
        """(local worker, its rows as a keyed draw), worker by worker."""
        for i, w in enumerate(self.workers.tolist()):
            yield w, drawn(self.rows[self.offsets[i] : self.offsets[i + 1]], *self.key, w)


class Problem:
    """Interface: per-worker losses and gradients of the local workers.

    Registered problems declare ``params`` (their [problem] keys) and ``labels``: 'pm1' or 'raw' for
    problems made of a data set's samples, None for problems that make their own data.
    """

    name: ClassVar[str] = "?"  # set by registration
    params: ClassVar[type] = NoParams
    labels: ClassVar[Optional[str]] = None
    score_names: ClassVar[tuple[str, ...]] = ()  # per-worker scores of the last evaluation with losses (trace /metrics)
    smooth: ClassVar[bool] = True  # has a smoothness constant L (else step sizes must be given)
    default_x0: ClassVar[Optional[str]] = None  # run.x0 when the config does not set it (networks: 'model')
    weight_decay: float = 0.0  # λ of a torch-style weight decay λx inside the gradient (classifiers)

    d: int
    worker_ids: np.ndarray
    local_sizes: np.ndarray  # (n_local,) samples per local worker

    @classmethod
    def build(cls, params: Any, shard: Any, worker_ids: np.ndarray, n_workers: int) -> "Problem":
        """The problem of this rank's workers; ``shard`` holds their rows (None without a data set)."""
        raise NotImplementedError

    @staticmethod
    def check(params: Any, n_workers: int) -> None:
        """Raise InputError for settings that cannot work with this many workers (before any collective)."""

    @classmethod
    def check_data(cls, params: Any, plan: Any) -> None:
        """Raise InputError for settings that do not fit the data set (``plan``: :class:`mpiclip.data.Plan`)."""

    @classmethod
    def sample_counts(cls, params: Any, n_workers: int) -> Optional[np.ndarray]:
        """(n,) rows per worker of a problem that makes its own samples (no data set), so that minibatch methods
        can sample them; None: a generated problem without samples (problems of a data set count the plan's rows)."""
        return None

    @classmethod
    def dimension(cls, params: Any, plan: Any) -> int:
        """The dimension of x for a problem made of the samples of ``plan`` (one weight per feature here)."""
        return plan.n_features

    @classmethod
    def model_init(cls, params: Any, plan: Any, rng: np.random.Generator) -> Optional[np.ndarray]:
        """x^0 from the model's own initialisation (``run.x0 = "model"``), or None if the problem has none."""
        return None

    @classmethod
    def blocks(cls, params: Any, plan: Any) -> Optional[np.ndarray]:
        """Sizes of the consecutive parts of x that are one tensor of a model (a layer's weights, its biases),
        for compressors that act part by part; None: x is one part."""
        return None

    @classmethod
    def example_gradients(cls, params: Any) -> Optional[str]:
        """Why per-example gradients (``clipped_example_sums``) are not defined for these settings, or None."""
        return None

    @classmethod
    def carries_state(cls, params: Any) -> bool:
        """Does a worker carry state besides x (``worker_state``)?"""
        return False

    def worker_state(self) -> Optional[np.ndarray]:
        """(n_local, m): the state each local worker carries besides x (a network's BatchNorm running statistics),
        which the run checkpoints with the method's state; None for problems without any."""
        return None

    def restore_state(self, state: Optional[np.ndarray]) -> None:
        """Set the local workers' state: ``worker_state()`` rows of a checkpoint, or None for the initial state
        (at the start of every run: a sweep's runs share one problem object)."""

    def place(self, local_rank: int) -> None:
        """Move the problem to the rank's device (the GPU of its node-local rank, for a network on CUDA)."""

    @property
    def n_local(self) -> int:
        return len(self.worker_ids)

    def workers(self, lo: int, hi: int) -> Optional["Problem"]:
        """The problem of local workers lo..hi−1 alone, sharing this one's data, whose losses, gradients and scores
        have the bits of those workers' rows here (a synchronous round then computes its gradients a chunk of workers
        at a time); None if the problem cannot be split, and its gradients come from one pass over all local workers."""
        return None

    def loss_grads(self, x: np.ndarray, with_loss: bool) -> tuple[Optional[np.ndarray], np.ndarray]:
        """(losses (n_local,) or None, gradients (n_local, d)) of the local workers at x."""
        raise NotImplementedError

    def minibatch_grads(self, x: np.ndarray, batches: list) -> np.ndarray:
        """(n_local, d): worker i's mean gradient over its rows ``batches[i]`` (local row numbers)."""
        raise NotImplementedError

    def worker_grad(self, x: np.ndarray, local: int, rows: Optional[np.ndarray] = None, decay: bool = True) -> np.ndarray:
        """(d,) the gradient of local worker ``local`` alone at x, over its rows ``rows`` (None: all), with the
        bits of its row in ``loss_grads`` / ``minibatch_grads`` (asynchronous jobs compute one worker at a time).
        ``decay=False`` leaves out the ``weight_decay``·x term (a clipped gradient gets it after clipping, as torch)."""
        if rows is None:
            return self.loss_grads(x, False)[1][local]
        batches = [rows if i == local else np.arange(min(1, int(n))) for i, n in enumerate(self.local_sizes)]
        return self.minibatch_grads(x, batches)[local]

    def pooled_grad(self, x: np.ndarray, picked: Picked) -> np.ndarray:
        """(d,) Σ_i N_i · worker_grad(x, w_i, rows_i) over the workers of ``picked`` in order, added to a zero vector
        (N_i their row counts): the sum of a minibatch drawn across workers. One gradient per worker here; linear
        models override it with one pass over all the rows, with the same bits."""
        total = np.zeros(len(x))
        for w, rows in picked.each():
            total += len(rows) * self.worker_grad(x, w, rows)
        return total

    def clipped_example_sums(self, x: np.ndarray, batches: list, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """(sums (n_local, d), norms): worker i's Σ_{j ∈ batches[i]} clip_τ(∇ℓ_j(x)), the per-example gradients
        of its loss f_i = (1/N_i) Σ_j ℓ_j (DP-SGD), and the concatenated per-example gradient norms ‖∇ℓ_j(x)‖.
        This general version takes one gradient per row; logistic regression overrides it with two products."""
        sums, norms = np.zeros((self.n_local, self.d)), []
        for i, rows in enumerate(batches):
            for j in rows:
                clipped, norm, _ = clip_vector(self.worker_grad(x, i, np.array([j])), tau)
                sums[i] += clipped
                norms.append(norm)
        return sums, np.array(norms)

    def smoothness(self, reduce: RowReduce) -> Smoothness:
        """Collective through ``reduce``; identical on every rank and for any number of ranks."""
        raise NotImplementedError

    def scores(self) -> np.ndarray:
        """(n_local, len(score_names)) from the last ``loss_grads(x, with_loss=True)``."""
        return np.zeros((len(self.worker_ids), 0))


PROBLEMS: Registry[type[Problem]] = Registry("problem")
