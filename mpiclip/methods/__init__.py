"""Methods, one module per paper family; importing this package registers them all."""

from mpiclip.methods import (  # noqa: F401  (registers)
    asgd,
    ce_fedavg,
    clip21,
    clip21_sgd2m,
    diana,
    dpsgd,
    ef21,
    ef21_extensions,
    ef_sgd,
    fedbuff,
    gradalign,
)
from mpiclip.methods.base import METHODS, Method

__all__ = ["METHODS", "Method"]
