"""Methods, one module per paper family; importing this package registers them all."""

from mpiclip.methods import asgd, clip21, clip21_sgd2m, diana, dpsgd, ef21, ef21_extensions, gradalign  # noqa: F401  (registers)
from mpiclip.methods.base import METHODS, Aggregate, Method, Oracle, RoundContext

__all__ = ["METHODS", "Aggregate", "Method", "Oracle", "RoundContext"]
