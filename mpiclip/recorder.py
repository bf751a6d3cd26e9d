"""Buffers trace rows on every rank and hands them to rank 0's writer in chunks.

Scalars (f, ‖∇f‖², time, the runner's, method's and problem's per-round metrics) are known on every rank; per-worker columns (bits
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
from mpiclip.runners.base import Ledger, Table
from mpiclip.trace import TraceWriteError, TraceWriter

E = len(ENCODINGS)
TABLE_ROWS = 4096  # rows of a runner's table buffered before they are written


class TableBuffer:
    """A runner's table rows not yet written (the same on every rank, or on the server only): no collective needed."""

    def __init__(self, table: Table, width: int):
        self.table = table
        cols = width if table.per_round else len(table.columns) + (E if table.bits else 0)
        self.rows = np.zeros((TABLE_ROWS, cols), dtype=np.int64 if table.per_round else np.float64)
        self.n = 0
        self.written = 0  # rows that reached the trace (or would have, on ranks without the writer)

    def columns(self) -> dict:
        """The buffered rows as the trace's columns ('' for a 2-D table)."""
        rows = self.rows[: self.n]
        if self.table.per_round:
            return {"": rows}
        out = {name: rows[:, j].astype(dtype) for j, (name, dtype) in enumerate(self.table.columns)}
        if self.table.bits:
            out.update({f"bits/{e}": rows[:, len(self.table.columns) + j] for j, e in enumerate(ENCODINGS)})
        return out


class Recorder:
    def __init__(self, comm: Comm, n_local: int, worker_metrics: tuple[str, ...], writer: Optional[TraceWriter],
                 flush_rows: int, round_metrics: tuple[str, ...] = (), tables: tuple = ()):
        """``worker_metrics``: per-worker values per row (/workers/<name>); ``round_metrics``: per-row scalars
        besides f and ‖∇f‖² (/metrics/<name>); ``tables``: (:class:`~mpiclip.runners.base.Table`, width) of the
        runner's tables."""
        self.comm, self.writer = comm, writer
        self.worker_metrics, self.round_metrics = worker_metrics, round_metrics
        self.tables = {table.name: TableBuffer(table, width) for table, width in tables}
        self.capacity = flush_rows
        self.scalars = {k: np.full(flush_rows, np.nan) for k in ("time", "loss", "grad_norm_sq")}
        self.scalars["rounds"] = np.zeros(flush_rows, dtype=np.int64)
        for name in round_metrics:
            self.scalars[f"metrics/{name}"] = np.full(flush_rows, np.nan)
        # (column, name) of the round metrics: a row writes them without forming their keys
        self._metric_columns = tuple((self.scalars[f"metrics/{name}"], name) for name in round_metrics)
        self.bits_down = np.zeros((flush_rows, E))
        # per-worker columns: bits per encoding, then the method's metrics (NaN until set). Left unfilled until a row is
        # added: at 1,000 workers the buffer is 30 MB, which filling up front took 0.1 s of every run and every flush
        self.block = np.empty((flush_rows, n_local, E + len(worker_metrics)))
        self.rows = 0  # buffered, not yet written

    def add_row(self, ledger: Ledger, t: int, elapsed: float, loss: float, grad_norm_sq: float, values: dict) -> None:
        r = self.rows
        s = self.scalars
        s["rounds"][r], s["time"][r], s["loss"][r], s["grad_norm_sq"][r] = t, elapsed, loss, grad_norm_sq
        for column, name in self._metric_columns:
            column[r] = values.get(name, np.nan)
        self.block[r, :, :E] = ledger.pending_up
        self.block[r, :, E:] = np.nan
        self.bits_down[r] = ledger.pending_down
        ledger.pending_up.fill(0.0)
        ledger.pending_down.fill(0.0)
        self.rows += 1

    def set_metrics(self, metrics: dict) -> None:
        """Per-worker diagnostics of the round whose row was added last."""
        r = self.rows - 1
        for j, name in enumerate(self.worker_metrics):
            if name in metrics:
                self.block[r, :, E + j] = metrics[name]

    def add(self, table: str, values, bits: Optional[np.ndarray] = None) -> None:
        """One row of a runner's table: its column values (or a 2-D table's row), and the bits of a table with bits."""
        buffer = self.tables[table]
        row = buffer.rows[buffer.n]
        row[: len(values)] = values
        if bits is not None:
            row[len(values) :] = bits
        buffer.n += 1
        if buffer.n == len(buffer.rows):
            self._write_table(buffer)

    def add_rows(self, table: str, rows: np.ndarray, bits: Optional[np.ndarray] = None) -> None:
        """Rows of a runner's table at once, as ``add`` would add them one by one: (k, columns) values, and bits of a
        table with bits, (k, E) or one (E,) row for all. The buffer is written whenever it fills, as with ``add``."""
        buffer, done = self.tables[table], 0
        width = rows.shape[1]
        while done < len(rows):
            take = min(len(rows) - done, len(buffer.rows) - buffer.n)
            block = buffer.rows[buffer.n : buffer.n + take]
            block[:, :width] = rows[done : done + take]
            if bits is not None:
                block[:, width:] = bits if bits.ndim == 1 else bits[done : done + take]
            buffer.n += take
            done += take
            if buffer.n == len(buffer.rows):
                self._write_table(buffer)

    def written(self, table: str) -> int:
        """Rows of the table handed to the trace so far (checkpoints count them)."""
        return self.tables[table].written

    def resume_table(self, table: str, rows: int) -> None:
        """A resumed run continues a table that already has ``rows`` rows."""
        self.tables[table].written = rows

    def buffered(self, table: str) -> int:
        """Rows of the table not handed to the trace yet."""
        return self.tables[table].n

    def write_tables(self) -> None:
        """Hand the buffered rows of the runner's tables to the trace now. No collective: for tables that one rank
        fills (real asynchrony's server, whose arrivals reach the trace while the workers compute)."""
        for buffer in self.tables.values():
            self._write_table(buffer)

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
            for buffer in self.tables.values():
                self._write_table(buffer)
        except TraceWriteError as e:
            error = e
        self.rows = 0
        self.comm.agree(error)

    def _write_table(self, buffer: TableBuffer) -> None:
        if not buffer.n:
            return
        if self.writer is not None:
            self.writer.append_table(buffer.table.name, buffer.columns())
        buffer.written += buffer.n
        buffer.n = 0
