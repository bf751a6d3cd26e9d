"""Buffers trace rows on every rank and hands them to rank 0's writer in chunks.

Scalars (f, ‖∇f‖², time, the method's extra metrics) are known on every rank; per-worker columns (bits
under each encoding and the method's diagnostics) live on the rank that holds the worker and are
gathered to rank 0 with one Gatherv per flush, so the per-round cost is a few array writes. The bits
themselves are counted in the run state's :class:`~mpiclip.runners.base.Ledger`; a row takes the bits
sent since the previous row.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mpiclip.comm import Comm
from mpiclip.compressors import ENCODINGS
from mpiclip.runners.base import Ledger
from mpiclip.trace import EVENT_COLUMNS, TraceWriteError, TraceWriter

E = len(ENCODINGS)
EVENT_ROWS = 4096  # arrivals buffered before they are written


class Recorder:
    def __init__(self, comm: Comm, n_local: int, metrics: tuple[str, ...], writer: Optional[TraceWriter],
                 flush_rows: int, extra: tuple[str, ...] = (), events: bool = False, clients: Optional[int] = None):
        self.comm, self.writer, self.metrics, self.extra = comm, writer, metrics, extra
        self.clients = np.zeros((EVENT_ROWS if clients else 0, clients or 0), dtype=np.int64)  # rounds' sampled clients
        self.n_clients = 0
        self.events = np.zeros((EVENT_ROWS if events else 0, len(EVENT_COLUMNS) + E))  # arrivals not yet written
        self.n_events = 0
        self.events_written = 0
        self.capacity = flush_rows
        self.scalars = {k: np.full(flush_rows, np.nan) for k in ("time", "loss", "grad_norm_sq")}
        self.scalars["rounds"] = np.zeros(flush_rows, dtype=np.int64)
        for name in extra:
            self.scalars[f"metrics/{name}"] = np.full(flush_rows, np.nan)
        self.bits_down = np.zeros((flush_rows, E))
        # per-worker columns: bits per encoding, then the method's metrics
        self.block = np.full((flush_rows, n_local, E + len(metrics)), np.nan)
        self.rows = 0  # buffered, not yet written

    def add_row(self, ledger: Ledger, t: int, elapsed: float, loss: float, grad_norm_sq: float, extra: dict) -> None:
        r = self.rows
        s = self.scalars
        s["rounds"][r], s["time"][r], s["loss"][r], s["grad_norm_sq"][r] = t, elapsed, loss, grad_norm_sq
        for name in self.extra:
            s[f"metrics/{name}"][r] = extra.get(name, np.nan)
        self.block[r, :, :E] = ledger.pending_up
        self.bits_down[r] = ledger.pending_down
        ledger.pending_up[:] = 0.0
        ledger.pending_down[:] = 0.0
        self.rows += 1

    def set_metrics(self, metrics: dict) -> None:
        """Per-worker diagnostics of the round whose row was added last."""
        r = self.rows - 1
        for j, name in enumerate(self.metrics):
            if name in metrics:
                self.block[r, :, E + j] = metrics[name]

    def add_event(self, update: int, worker: int, start: int, delay: int, sim_time: float, norm: float,
                  clipped: bool, job: int, bits: np.ndarray) -> None:
        """One arrival at the server (asynchronous runs; the same on every rank, or on the server only)."""
        row = self.events[self.n_events]
        row[: len(EVENT_COLUMNS)] = (update, worker, start, delay, sim_time, norm, clipped, job)
        row[len(EVENT_COLUMNS) :] = bits
        self.n_events += 1
        if self.n_events == len(self.events):  # every rank holds the same events: no collective needed
            self._write_events()

    def add_clients(self, ids: np.ndarray) -> None:
        """The clients sampled in the next round (federated runs; the same on every rank)."""
        self.clients[self.n_clients] = ids
        self.n_clients += 1
        if self.n_clients == len(self.clients):
            self._write_clients()

    @property
    def full(self) -> bool:
        return self.rows == self.capacity

    def flush(self, ledger: Ledger) -> None:
        """Collective: every rank calls it at the same row count. A write error of rank 0 (a full disk, a
        file-size limit) is raised on every rank, so that the run ends with an honest status and no rank
        waits for the others."""
        k = self.rows
        block = self.comm.gather_to_root(self.block[:k])
        initial = None
        if ledger.initial_unwritten:
            initial = self.comm.gather_to_root(ledger.initial_up[None])
            ledger.initial_unwritten = False
        error = None
        try:
            if self.writer is not None:
                if initial is not None:
                    self.writer.set_initial_bits(initial[0], ledger.initial_down)
                scalars = {name: values[:k] for name, values in self.scalars.items()}
                self.writer.append(scalars, block[:, :, :E], self.bits_down[:k], block[:, :, E:])
            self._write_events()
            self._write_clients()
        except TraceWriteError as e:
            error = e
        self.block[:] = np.nan
        self.rows = 0
        self.comm.agree(error)

    def _write_clients(self) -> None:
        if self.n_clients and self.writer is not None:
            self.writer.append_table("clients", {"": self.clients[: self.n_clients]})
        self.n_clients = 0

    def _write_events(self) -> None:
        if not self.n_events:
            return
        if self.writer is not None:
            table = self.events[: self.n_events]
            columns = {name: table[:, j].astype(dtype) for j, (name, dtype) in enumerate(EVENT_COLUMNS.items())}
            columns.update({f"bits/{e}": table[:, len(EVENT_COLUMNS) + j] for j, e in enumerate(ENCODINGS)})
            self.writer.append_table("events", columns)
        self.events_written += self.n_events
        self.n_events = 0
