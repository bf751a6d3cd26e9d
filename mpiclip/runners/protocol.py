"""What every method shares, whichever runner drives it (docs/design.md §2 rule 3).

A method is a small immutable object holding its compressor, its step size and its hyper-parameters,
declared once as a parameter record (:mod:`mpiclip.params`). Its steps are the protocol of the runner
that drives it, declared next to that runner's loop: :class:`~mpiclip.runners.synchronous.SynchronousMethod`
(rounds: ``worker_step`` / ``server_step``), :class:`~mpiclip.runners.asynchronous.AsynchronousMethod`
(``send`` / ``receive`` / ``policy``) and :class:`~mpiclip.runners.federated.FederatedMethod`
(``client_update`` / ``server_step``). Steps take and return immutable state records and never touch
MPI, files or globals.

It lives with the runners, not in :mod:`mpiclip.methods`, because the methods build on the runners'
protocols: a runner never imports a method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from mpiclip.compressors import Compressor
from mpiclip.registry import NoParams


@dataclass(frozen=True)
class RunInfo:
    """What a method may need to know about the run before it starts (see ``Method.bind``)."""

    n_workers: int
    rounds: int
    d: int
    sample_counts: Optional[np.ndarray] = None  # (n,) for problems made of samples
    concurrency: int = 0  # jobs in flight τ_C of an asynchronous run (0: not one)


@dataclass(frozen=True)
class Method:
    """Base of all methods: the compressor and step size, then the method's own hyper-parameters.

    A method declares its [method] keys once, as a parameter record (a frozen dataclass of
    :func:`~mpiclip.params.param` fields) that it inherits from and names in ``params``; e.g.
    ``class EF21(EF21Params, Method)`` is constructed as ``EF21(compressor, gamma, init="full")``.
    """

    compressor: Compressor
    gamma: float

    name: ClassVar[str] = "?"  # set by registration
    display_name: ClassVar[str] = ""  # its name in the papers and in figures ("EF21+"); "" for the registered name
    style: ClassVar[tuple[int, int]] = (-1, -1)  # (colour, marker) in figures (mpiclip.plotting); -1: by its name
    params: ClassVar[type] = NoParams
    runner: ClassVar[str] = ""  # the runner that drives it, set by the protocol it implements
    worker_metrics: ClassVar[tuple[str, ...]] = ()  # per-worker diagnostics (trace /workers/<name>)
    round_metrics: ClassVar[tuple[str, ...]] = ()  # per-round scalars (trace /metrics/<name>)
    default_rule: ClassVar[str] = "ef21"
    default_compressor: ClassVar[str] = "topk"  # when the config has no [compressor]
    uses_compressor: ClassVar[bool] = True
    needs_samples: ClassVar[bool] = False  # uses minibatches, so needs a problem made of samples
    example_gradients: ClassVar[bool] = False  # asks for per-example gradients (``Oracle.clipped_example_sums``)
    accepts_clipping: ClassVar[bool] = False  # may use a compressor that clips (the EF21 family: Clip21-style)

    @classmethod
    def create(cls, params: Any, compressor: Compressor, gamma: float) -> "Method":
        """The method with its validated [method] parameters."""
        return cls(compressor, gamma, **{f.name: getattr(params, f.name) for f in dataclasses.fields(params)})

    def validate(self, d: int, n_workers: int) -> None:
        """Raise InputError for settings that cannot work with this dimension or number of workers."""

    def bind(self, info: RunInfo) -> "Method":
        """This method with settings that depend on the run (e.g. every worker's number of samples) resolved."""
        return self
