"""What rank 0 reports while runs go: lines for people and, for batch jobs, JSON lines.

A progress line says where the run is, how long it has taken, its rate and what remains::

      round 1200/2000  12.3 s  97.6 rounds/s  ETA 8.2 s  f = 0.648771  ‖∇f‖² = 1.265e-05

``mpiclip run --log-json FILE`` also appends one JSON object per line to FILE (``start``, ``progress``,
``end`` and ``skipped`` events, each with the run's name and a UTC time stamp), flushed line by line so
that ``tail -f`` and log shippers see them at once; non-finite numbers are written as null.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from typing import Callable, Optional

from mpiclip.errors import InputError
from mpiclip.paths import takes_files


def duration(seconds: float) -> str:
    """8.2 s, 3 min 05 s, 2 h 04 min."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


class Log:
    """Rank 0's reporting: ``say`` prints lines (a no-op when quiet), ``jsonl`` is the JSON-lines file or None,
    ``every`` the seconds between two progress reports of a run."""

    def __init__(self, say: Callable[[str], None] = print, jsonl: Optional[str] = None, every: float = 2.0):
        self.say, self.every, self.jsonl = say, every, jsonl
        self._file = None
        if jsonl is not None:  # checked now, created at the first event: bad input and dry runs write nothing
            parent = os.path.dirname(os.path.abspath(jsonl))
            if os.path.isdir(jsonl) or not os.path.isdir(parent) or not takes_files(parent) or (
                    os.path.exists(jsonl) and not os.access(jsonl, os.W_OK)):
                raise InputError("--log-json", jsonl, "cannot be written (its directory must exist and take files)")

    def __call__(self, text: str) -> None:
        self.say(text)

    def event(self, kind: str, run: str, **fields) -> None:
        if self.jsonl is None:
            return
        if self._file is None:
            self._file = open(self.jsonl, "a", encoding="utf-8")
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        record = {"event": kind, "run": run, "at": stamp, **{k: _finite(v) for k, v in fields.items()}}
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def as_log(log) -> Log:
    """A Log from a Log or from a plain function of one line (tests and tools pass ``print`` or a lambda)."""
    return log if isinstance(log, Log) else Log(log)


class Progress:
    """One run's progress reports: at most one every ``log.every`` seconds, with the rate measured over the
    rows this process recorded (a resumed run's rate is its own)."""

    def __init__(self, log: Log, run: str, unit: str, total: int):
        self.log, self.run, self.unit, self.total = log, run, unit, total
        self.first: Optional[tuple[int, float]] = None
        self.last = -math.inf

    def report(self, t: int, elapsed: float, loss: float, grad_norm_sq: float, status: str, note: str = "") -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = (t, now)
        if now - self.last < self.log.every:
            return
        self.last = now
        t0, start = self.first
        rate = (t - t0) / (now - start) if t > t0 and now > start else math.nan
        eta = (self.total - t) / rate if rate > 0 else math.nan
        speed = f"{rate:.4g} {self.unit}s/s" if math.isfinite(rate) else f"– {self.unit}s/s"
        self.log(f"      {self.unit} {t}/{self.total}  {duration(elapsed)}  {speed}  ETA {duration(eta)}  "
                 f"f = {loss:.6g}  ‖∇f‖² = {grad_norm_sq:.4g}{note}")
        self.log.event("progress", self.run, unit=self.unit, t=t, total=self.total, elapsed=elapsed, rate=rate,
                       eta=eta, loss=loss, grad_norm_sq=grad_norm_sq, status=status)
