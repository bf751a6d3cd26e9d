"""How a sample's features are arranged, for models that need more than a flat vector.

Every data source hands rows of ``n_features`` numbers to the problems. A source of images or texts also
says how to read such a row back: an image of C × H × W pixels stored channel by channel, row by row (the
order of ``torch.Tensor.reshape``), or a sequence of L token ids. Networks check their input against it
(a CNN on LibSVM rows is an error before anything runs); the numpy problems ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("image", "tokens")


@dataclass(frozen=True)
class Layout:
    """``kind`` 'image' (``shape`` = (C, H, W), pixel values in [0, 1]) or 'tokens' (``shape`` = (L,), ids in
    0..vocab−1 stored as numbers). ``mean`` and ``std`` are an image set's per-channel statistics over its
    training images, the constants of the usual ``Normalize`` transform."""

    kind: str
    shape: tuple
    vocab: int = 0
    mean: tuple = ()
    std: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"layout kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "image" and len(self.shape) != 3:
            raise ValueError(f"an image layout needs (C, H, W), not {self.shape}")
        if self.kind == "tokens" and (len(self.shape) != 1 or self.vocab < 1):
            raise ValueError(f"a token layout needs (L,) and a vocabulary, not {self.shape}, {self.vocab}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def describe(self) -> str:
        if self.kind == "image":
            return "images of {}×{}×{}".format(*self.shape)
        return f"sequences of {self.shape[0]} tokens from a vocabulary of {self.vocab}"


def image_layout(images: np.ndarray, shape: tuple) -> Layout:
    """The layout of images (rows of C·H·W values in [0, 1]) with their per-channel mean and standard deviation,
    accumulated in float64 (the customary constants, e.g. CIFAR-10's (0.4914, 0.4822, 0.4465), are these)."""
    c = shape[0]
    total, square, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(images), 4096):  # a few MB at a time, not a float64 copy of the set
        block = np.asarray(images[start : start + 4096], dtype=np.float64).reshape(-1, c, shape[1] * shape[2])
        total += block.sum(axis=(0, 2))
        square += (block * block).sum(axis=(0, 2))
        count += block.shape[0] * block.shape[2]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(square / max(count, 1) - mean * mean, 0.0))
    std[std == 0] = 1.0  # a constant channel is left as it is
    return Layout("image", tuple(int(s) for s in shape), mean=tuple(map(float, mean)), std=tuple(map(float, std)))
