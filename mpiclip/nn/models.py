"""The networks of the four papers' deep-learning experiments, written here (nothing is fetched).

Every model maps a batch laid out as the data set says (images (B, C, H, W), token ids (B, L), or feature
vectors (B, d)) to logits (B, K). Its parameters, in ``named_parameters()`` order and each flattened row-major,
are the run's vector x (:mod:`mpiclip.nn.backend`).

* ``dense``: softmax regression and the MLP in the layout of the numpy ``softmax`` and ``mlp`` problems
  (per layer W (fan_in, fan_out) then b), so that one x is the same network in both; their initialisation is
  the numpy one (uniform in ±1/sqrt(fan_in), which is also torch's ``nn.Linear``).
* ``cnn_mnist``: the GradAlign code's CNN_MNIST (epfml/GradientAlignment, utils/model/NN_models.py):
  conv 5×5 → 32, ReLU, max-pool 2; conv 5×5 → 64, ReLU, max-pool 2; linear → K (1,024 inputs on 28×28).
  ``padding`` (0 there) lets it take smaller images such as the 8×8 digits.
* ``lenet5``: the same code's CNN_CIFAR10: conv 5×5 → 6, ReLU, pool; conv 5×5 → 16, ReLU, pool; linear
  400 → 120 → 84 → K with ReLU.
* ``resnet18``: the CIFAR ResNet-18 of the GradAlign and EF21 Bells & Whistles code (kuangliu's layout): a
  3×3 stem without max-pool, BasicBlocks [2, 2, 2, 2] of 64..512 channels, 1×1 projection shortcuts, global
  average pooling (``avg_pool2d(out, 4)`` there: the same on 32×32 inputs) and a linear head.
* ``resnet20``: He et al. 2016's CIFAR ResNet-20 (3 stages × 3 BasicBlocks of 16, 32, 64 channels, shortcuts
  that subsample and pad channels with zeros: option A), initialised with Kaiming normal as the common
  reference implementation (akamaster/pytorch_resnet_cifar10); not in the papers' code: the laptop model.
* ``vgg11``: the Bells & Whistles code's VGG-11 (configuration A, no BatchNorm, classifier Dropout,
  512 → 512, ReLU, Dropout, 512 → 512, ReLU, → K; conv weights N(0, 2/(k²·out)), biases 0).
* ``char_lstm``: the GradAlign code's CharRNN: embedding 8, a 2-layer LSTM of 100 units, a linear head on the
  last time step. The LSTM is written out here (torch's gate order i, f, g, o and its initialisation, uniform in
  ±1/sqrt(hidden)) so that per-example gradients (``torch.func.vmap``) and float64 work through it.

``norm`` chooses BatchNorm (running statistics: per-worker state, see the backend), GroupNorm (``groups``
groups; no state, and per-example gradients stay defined) or none, for the ResNets and VGG-11. Other
initialisations are torch's defaults, as in the papers' code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mpiclip.errors import InputError


@dataclass(frozen=True)
class InputSpec:
    """What a model is built for: the data's layout ('vector', 'image' or 'tokens'), its shape, vocabulary
    and the number of classes."""

    kind: str
    shape: tuple
    classes: int
    vocab: int = 0

    @property
    def features(self) -> int:
        return int(np.prod(self.shape))


MODELS: dict[str, Callable] = {}


def model(name: str, kinds: tuple):
    def add(builder):
        builder.kinds = kinds
        MODELS[name] = builder
        return builder

    return add


# ------------------------------------------------------------------------------------------ dense layers
class Dense(nn.Module):
    """x ↦ x W + b with W stored (fan_in, fan_out): the numpy classifiers' layout."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_in, fan_out))
        self.bias = nn.Parameter(torch.empty(fan_out))
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return x @ self.weight + self.bias


class DenseNet(nn.Module):
    def __init__(self, sizes: tuple, activation: str):
        super().__init__()
        self.layers = nn.ModuleList(Dense(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.activation = torch.tanh if activation == "tanh" else F.relu

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


@model("dense", ("vector", "image"))
def dense(p, spec: InputSpec) -> nn.Module:
    return DenseNet((spec.features, *getattr(p, "hidden", ()), spec.classes), getattr(p, "activation", "tanh"))


# ------------------------------------------------------------------------------------------ small CNNs
def _pooled(size: int, kernel: int, padding: int) -> int:
    """Side of a conv (stride 1) then 2×2 max-pool output."""
    return (size + 2 * padding - kernel + 1) // 2


class CNNMnist(nn.Module):
    def __init__(self, spec: InputSpec, channels: tuple, kernel: int, padding: int):
        super().__init__()
        c, h, w = spec.shape
        self.conv1 = nn.Conv2d(c, channels[0], kernel, padding=padding)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel, padding=padding)
        for _ in range(2):
            h, w = _pooled(h, kernel, padding), _pooled(w, kernel, padding)
        _fits(spec, "cnn_mnist", min(h, w), padding)
        self.fc = nn.Linear(channels[1] * h * w, spec.classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


@model("cnn_mnist", ("image",))
def cnn_mnist(p, spec):
    return CNNMnist(spec, p.channels, p.kernel, p.padding)


class LeNet5(nn.Module):
    def __init__(self, spec: InputSpec, padding: int):
        super().__init__()
        c, h, w = spec.shape
        self.conv1 = nn.Conv2d(c, 6, 5, padding=padding)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=padding)
        for _ in range(2):
            h, w = _pooled(h, 5, padding), _pooled(w, 5, padding)
        _fits(spec, "lenet5", min(h, w), padding)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * h * w, 120), nn.Linear(120, 84), nn.Linear(84, spec.classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


@model("lenet5", ("image",))
def lenet5(p, spec):
    return LeNet5(spec, p.padding)


def _fits(spec: InputSpec, name: str, side: int, padding: int) -> None:
    if side < 1:
        raise InputError("problem.padding", padding, f"is too small for {name} on images of "
                         + "{}×{}×{}: its feature maps shrink to nothing (try padding = 2)".format(*spec.shape))


# ------------------------------------------------------------------------------------------ ResNets, VGG
def norm_layer(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(groups, channels), channels)
    return nn.Identity()


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: Callable, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm(c_out)
        self.shortcut: nn.Module = nn.Identity()
        self.pad = 0
        if stride != 1 or c_in != c_out:
            if shortcut == "projection":
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out))
            else:  # option A: subsample, then zero channels on both sides
                self.shortcut = _Subsample(stride)
                self.pad = c_out - c_in

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = self.shortcut(x)
        if self.pad:
            skip = F.pad(skip, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + skip)


class _Subsample(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride]


class ResNet(nn.Module):
    def __init__(self, spec: InputSpec, widths: tuple, blocks: tuple, norm: str, groups: int, shortcut: str):
        super().__init__()
        make = lambda c: norm_layer(norm, c, groups)
        self.conv1 = nn.Conv2d(spec.shape[0], widths[0], 3, 1, 1, bias=False)
        self.bn1 = make(widths[0])
        layers, c_in = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for b in range(count):
                layers.append(BasicBlock(c_in, width, 2 if stage and not b else 1, make, shortcut))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(c_in, spec.classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@model("resnet18", ("image",))
def resnet18(p, spec):
    return ResNet(spec, (64, 128, 256, 512), (2, 2, 2, 2), p.norm, p.groups, "projection")


@model("resnet20", ("image",))
def resnet20(p, spec):
    net = ResNet(spec, (16, 32, 64), (3, 3, 3), p.norm, p.groups, "zeros")
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return net


class VGG(nn.Module):
    CONFIG_A = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, spec: InputSpec, norm: str, groups: int, dropout: float):
        super().__init__()
        layers, c, side = [], spec.shape[0], min(spec.shape[1:])
        for v in self.CONFIG_A:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                side //= 2
                continue
            conv = nn.Conv2d(c, v, 3, padding=1)
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (9 * v)))
            nn.init.zeros_(conv.bias)
            layers += [conv, norm_layer(norm, v, groups), nn.ReLU()]
            c = v
        if side < 1:
            raise InputError("problem.name", "vgg11", "needs images of at least 32×32 (five 2×2 poolings), not "
                             "{}×{}×{}".format(*spec.shape))
        self.features = nn.Sequential(*layers)
        flat = 512 * (spec.shape[1] // 32) * (spec.shape[2] // 32)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(flat, 512), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, spec.classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@model("vgg11", ("image",))
def vgg11(p, spec):
    return VGG(spec, p.norm, p.groups, p.dropout)


# ------------------------------------------------------------------------------------------ character LSTM
class LSTMLayer(nn.Module):
    """One LSTM layer as torch's (gates i, f, g, o; two biases), unrolled over time."""

    def __init__(self, inputs: int, hidden: int):
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden, inputs))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden))
        bound = 1.0 / math.sqrt(hidden)
        for w in self.parameters():
            nn.init.uniform_(w, -bound, bound)
        self.hidden = hidden

    def forward(self, x):  # (B, L, inputs) -> (B, L, hidden)
        projected = x @ self.weight_ih.T + (self.bias_ih + self.bias_hh)  # every step's input part at once
        h = x.new_zeros(x.shape[0], self.hidden)
        c = x.new_zeros(x.shape[0], self.hidden)
        outputs = []
        for step in range(x.shape[1]):
            i, f, g, o = (projected[:, step] + h @ self.weight_hh.T).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class CharLSTM(nn.Module):
    def __init__(self, spec: InputSpec, embedding: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(spec.vocab, embedding)
        self.lstm = nn.ModuleList(LSTMLayer(embedding if k == 0 else hidden, hidden) for k in range(layers))
        self.decoder = nn.Linear(hidden, spec.classes)

    def forward(self, tokens):
        x = self.embedding(tokens.long())
        for layer in self.lstm:
            x = layer(x)
        return self.decoder(x[:, -1])


@model("char_lstm", ("tokens",))
def char_lstm(p, spec):
    return CharLSTM(spec, p.embedding, p.hidden, p.layers)


def build(problem: str, name: str, params, spec: InputSpec, seed: int = 0) -> nn.Module:
    """Model ``name`` of problem ``problem`` for inputs ``spec``, its parameters drawn from torch's generator
    seeded with ``seed`` (float32, as torch makes them)."""
    builder = MODELS[name]
    if spec.kind not in builder.kinds:
        nouns = {"vector": "vectors", "image": "images", "tokens": "token sequences"}
        given = "rows of features (of {} features)".format(spec.features) if spec.kind == "vector" else nouns[spec.kind]
        raise InputError("problem.name", problem, f"needs {' or '.join(nouns[k] for k in builder.kinds)}, and the data "
                         f"set gives {given}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(params, spec)
