"""Methods, one module per paper family; importing this package registers them all."""

from mpiclip.methods import ef21  # noqa: F401  (registers)
from mpiclip.methods.base import METHODS, Aggregate, Method, RoundContext

__all__ = ["METHODS", "Aggregate", "Method", "RoundContext"]
