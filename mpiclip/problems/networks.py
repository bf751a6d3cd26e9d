"""Neural networks as problems: the papers' models trained through the torch backend (extra ``torch``).

Each network is a registered problem like the numpy classifiers: f_i is the mean cross-entropy over worker
i's rows plus (λ/2)‖x‖², x the flat vector of the network's parameters (:mod:`mpiclip.nn.backend` says
how, and :mod:`mpiclip.nn.models` what each model is). So every method, compressor, runner, checkpoint
and trace works on them unchanged. This module does not import torch: the backend is imported when a
network is configured, so that runs without one start as fast as before and a missing torch is one line.

A network has no smoothness constant (``stepsize.rule = "constant"``) and starts from its own
initialisation unless ``run.x0`` says otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mpiclip.errors import InputError
from mpiclip.models import ACTIVATIONS
from mpiclip.models import Network as NumpyNetwork
from mpiclip.params import at_least, finite_nonnegative, param
from mpiclip.problems.base import PROBLEMS, Problem

NORMS = ("batch", "group", "none")


@dataclass(frozen=True)
class NetworkParams:
    lam: float = param(0.0, "weight decay λ on every parameter: + (λ/2)‖x‖² (torch SGD's weight_decay)",
                       check=finite_nonnegative)
    classes: int = param(0, "output size K; 0 takes the number of classes of the data (which it must equal)",
                         check=at_least(0))
    dtype: str = param("float32", "precision of the network's parameters and arithmetic (float32 as the papers; "
                       "float64 for checks); x itself stays float64", choices=("float32", "float64"))
    device: str = param("cpu", "where the network runs: 'cuda' puts each rank on the GPU of its node-local rank",
                        choices=("cpu", "cuda"))
    threads: int = param(1, "torch threads per rank (another count may change the last bits of the results)",
                         check=at_least(1))
    chunk: int = param(256, "rows per forward and backward pass (memory); BatchNorm normalises each such "
                       "micro-batch by its own statistics", check=at_least(1))
    example_chunk: int = param(32, "examples per vectorised pass of per-example gradients (DP-SGD; memory: "
                               "example_chunk × d numbers)", check=at_least(1))


@dataclass(frozen=True)
class ImageParams(NetworkParams):
    normalize: bool = param(True, "standardise each channel by the data set's mean and standard deviation")
    augment: str = param("none", "augmentation of drawn minibatches: 'flip' (horizontal, p = 1/2) or 'crop_flip' "
                         "(random crop of the image padded by `pad` black pixels, then flip)",
                         choices=("none", "flip", "crop_flip"))
    pad: int = param(4, "padding of the random crop, in pixels", check=at_least(0))


@dataclass(frozen=True)
class CNNParams(ImageParams):
    channels: tuple[int, ...] = param((32, 64), "output channels of the two convolutions")
    kernel: int = param(5, "side of the convolution kernels", check=at_least(1))
    padding: int = param(0, "zero padding of the convolutions (2 keeps 8×8 digits large enough)", check=at_least(0))

    def check(self) -> None:
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise InputError("problem.channels", list(self.channels), "must be two channel counts >= 1")


@dataclass(frozen=True)
class LeNetParams(ImageParams):
    padding: int = param(0, "zero padding of the 5×5 convolutions", check=at_least(0))


@dataclass(frozen=True)
class NormParams(ImageParams):
    norm: str = param("batch", "normalisation layers: BatchNorm (running statistics per worker), GroupNorm, or none",
                      choices=NORMS)
    groups: int = param(2, "groups of GroupNorm (norm = 'group')", check=at_least(1))


@dataclass(frozen=True)
class VGGParams(NormParams):
    norm: str = param("none", "normalisation layers after each convolution (none in the Bells & Whistles VGG-11)",
                      choices=NORMS)
    dropout: float = param(0.5, "dropout probability of the classifier (on drawn minibatches)",
                           check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)")


@dataclass(frozen=True)
class MLPNetParams(NetworkParams):
    hidden: tuple[int, ...] = param((32,), "hidden layer sizes")
    activation: str = param("tanh", "hidden activation", choices=ACTIVATIONS)

    def check(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise InputError("problem.hidden", list(self.hidden), "must be one or more layer sizes >= 1")


@dataclass(frozen=True)
class LSTMParams(NetworkParams):
    embedding: int = param(8, "size of the token embedding", check=at_least(1))
    hidden: int = param(100, "units of each LSTM layer", check=at_least(1))
    layers: int = param(2, "stacked LSTM layers", check=at_least(1))


def backend(problem: str):
    """The torch backend module, or one line saying how to install torch."""
    try:
        from mpiclip.nn import backend as module
    except ImportError as e:
        raise InputError("problem.name", problem, f"is a network and needs torch ({e}): pip install 'mpiclip[torch]'") from None
    return module


class NetworkProblem(Problem):
    """Base of the network problems; ``model`` names the model in :mod:`mpiclip.nn.models`."""

    model: ClassVar[str] = "?"
    labels = "classes"
    smooth = False
    default_x0 = "model"
    score_names = ("train_accuracy",)

    @classmethod
    def check(cls, params, n_workers):
        nn = backend(cls.name)
        if params.device == "cuda" and not nn.torch.cuda.is_available():
            raise InputError("problem.device", "cuda", f"torch sees no GPU here (torch {nn.torch.__version__}, built for "
                             f"CUDA {nn.torch.version.cuda or 'no'}); use device = 'cpu'")

    @classmethod
    def _sizes(cls, params, plan) -> tuple:
        """The sizes of the model's parameter tensors for this data (the model is built, or says why not)."""
        return _parameter_sizes(cls.name, cls.model, params, _spec(params, plan))

    @classmethod
    def check_data(cls, params, plan):
        classes = len(plan.label_values)
        if params.classes and params.classes != classes:
            raise InputError("problem.classes", params.classes, f"does not match the {classes} classes of the data")
        cls._sizes(params, plan)

    @classmethod
    def dimension(cls, params, plan):
        return sum(cls._sizes(params, plan))

    @classmethod
    def blocks(cls, params, plan):
        return np.array(cls._sizes(params, plan), dtype=np.int64)

    @classmethod
    def model_init(cls, params, plan, rng):
        from mpiclip.nn.backend import FlatModel
        from mpiclip.nn.models import build

        return FlatModel(build(cls.name, cls.model, params, _spec(params, plan), int(rng.integers(2**63)))).flat()

    @classmethod
    def example_gradients(cls, params):
        if getattr(params, "norm", "none") == "batch":
            return (f"{cls.name} with problem.norm = 'batch' has no per-example gradients (BatchNorm mixes the examples "
                    "of a batch); use norm = 'group'")
        return None

    @classmethod
    def carries_state(cls, params):
        return getattr(params, "norm", "none") == "batch"

    @classmethod
    def build(cls, params, shard, worker_ids, n_workers):
        return backend(cls.name).TorchProblem(cls.name, cls.model, params, shard, n_workers)


def _spec(params, plan):
    from mpiclip.nn.backend import input_spec

    return input_spec(plan.summary.layout, plan.n_features, params.classes or len(plan.label_values))


@functools.lru_cache(maxsize=8)
def _parameter_sizes(problem: str, model: str, params, spec) -> tuple:
    """The model's parameter sizes, from a model built once per process for each setting (and let go: a rank
    keeps the one model of its problem)."""
    from mpiclip.nn.backend import FlatModel
    from mpiclip.nn.models import build

    return tuple(FlatModel(build(problem, model, params, spec)).sizes)


class DenseNetworkProblem(NetworkProblem):
    """Softmax regression and MLPs in the numpy problems' layout, initialised as they are: the same x is the
    same function in both (a cross-check of the backend)."""

    model = "dense"

    @classmethod
    def model_init(cls, params, plan, rng):
        sizes = (plan.n_features, *getattr(params, "hidden", ()), params.classes or len(plan.label_values))
        return NumpyNetwork(sizes, getattr(params, "activation", "tanh")).init(rng)


def _register(name: str, params: type, doc: str, base: type = NetworkProblem) -> None:
    attrs = {"params": params, "__doc__": doc, "__module__": __name__}
    if base is NetworkProblem:
        attrs["model"] = name
    PROBLEMS.register(name)(type(name, (base,), attrs))


_register("torch_softmax", NetworkParams, "Softmax regression in torch: the numpy `softmax` problem's function and "
          "layout (a cross-check).", DenseNetworkProblem)
_register("torch_mlp", MLPNetParams, "An MLP in torch, in the numpy `mlp` problem's layout (any number of hidden "
          "layers).", DenseNetworkProblem)
_register("cnn_mnist", CNNParams, "The GradAlign code's CNN for (E)MNIST: two 5×5 convolutions, one linear layer.")
_register("lenet5", LeNetParams, "LeNet-5 as the GradAlign code's CIFAR CNN (conv 6, 16; linear 120, 84).")
_register("resnet18", NormParams, "The CIFAR ResNet-18 (3×3 stem, no max-pool) of the GradAlign and EF21 B&W code.")
_register("resnet20", NormParams, "He et al.'s CIFAR ResNet-20 (0.27 M parameters): the laptop-size ResNet.")
_register("vgg11", VGGParams, "The EF21 Bells & Whistles code's VGG-11 for 32×32 images (dropout in the classifier).")
_register("char_lstm", LSTMParams, "The GradAlign code's character LSTM (embedding 8, 2 × 100 units, last step).")
