"""Runners, one loop each (docs/design.md §9); importing this package registers them. Each method names the
runner that drives it (``Method.runner``)."""

from mpiclip.runners import asynchronous, asynchronous_real, federated, synchronous  # noqa: F401  (registers)
from mpiclip.runners.base import RUNNERS, Control, Ledger, Runner, RunState, Setup

__all__ = ["RUNNERS", "Control", "Ledger", "Runner", "RunState", "Setup"]
