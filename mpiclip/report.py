"""Plain-text summaries of traces: one trace in detail, or a comparison table of several."""

from __future__ import annotations

import math
import os
from typing import Union

import numpy as np

from mpiclip import writer_lock
from mpiclip.results import bits_to, sim_time, sim_time_unit, time_to
from mpiclip.trace import Trace, TraceError

NO_CLOCK = "no sim time"  # a comparison's cell of simulated time for a trace without a clock
SHOWN_CHARACTERS = 300  # of one attribute's text: a trace's attribute may hold megabytes


def shown(value, limit: int = SHOWN_CHARACTERS) -> str:
    """An attribute's text for a summary: whole up to ``limit`` characters, else cut, with its size noted."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}… (cut: {len(text)} characters in all)"


def _fmt(value: float, spec: str = ".3g") -> str:
    """A number in ``spec``; '-' for None or NaN; anything else (a config's value is any JSON) as shown text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if isinstance(value, (int, float, np.number)) else shown(value, 40)


def _last(a: np.ndarray) -> float:
    return float(a[-1]) if len(a) else math.nan


def _span(rounds: np.ndarray) -> str:
    return f"{int(rounds[0])}..{int(rounds[-1])}" if len(rounds) else "-..-"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def comparison_read(encoding: str = "paper") -> dict:
    """What :func:`comparison` reads of a trace without levels, as ``load_trace``'s keywords: a few columns and
    attributes, several times faster than the whole trace (the table ``mpiclip run`` prints after its runs)."""
    return {"columns": ("rounds", "loss", "grad_norm_sq", f"bits/up/{encoding}", "sim_time"),
            "attrs": ("name", "method", "config", "wall_seconds")}


def comparison(traces: list[Union[Trace, TraceError]], encoding: str = "paper", levels: tuple = ()) -> str:
    """One row per trace; with ``levels``, the bits per worker to reach each ‖∇f‖² level (docs/design.md §4). Where a
    trace keeps a simulated clock (/sim_time), its final value and, with ``levels``, the simulated time to reach each
    level too (NO_CLOCK for a trace without one). A TraceError among ``traces`` is a row with status unreadable, its reason
    in a line below the table."""
    timed = any(not isinstance(tr, TraceError) and sim_time(tr) is not None for tr in traces)
    header = ["run", "method", "compressor", "status", "rounds", f"bits/worker ({encoding})", "f(x)", "‖∇f(x)‖²",
              "wall s"] + [f"bits to {level:g}" for level in levels]
    if timed:
        header += ["sim time"] + [f"time to {level:g}" for level in levels]
    rows, unreadable = [], []
    for tr in traces:
        if isinstance(tr, TraceError):
            rows.append([shown(os.path.splitext(os.path.basename(tr.path))[0], 40), "-", "-", "unreadable"]
                        + ["-"] * (len(header) - 4))
            unreadable.append(f"{tr.path}: unreadable: {tr.reason}")
            continue
        bits = tr.bits_per_worker(encoding)
        rows.append([shown(tr.label, 40), shown(tr.attrs.get("method", "?"), 40), shown(_compressor(tr), 40),
                     tr.status.split(":")[0], str(int(_last(tr.rounds))) if len(tr.rounds) else "-",
                     _fmt(_last(bits), ".4g"), _fmt(_last(tr.loss), ".6g"), _fmt(_last(tr.grad_norm_sq)),
                     _fmt(tr.attrs.get("wall_seconds"), ".2f")]
                    + [_fmt(bits_to(tr, level, encoding), ".4g") for level in levels]
                    + (_times(tr, levels) if timed else []))
    units = sorted({sim_time_unit(tr) for tr in traces if not isinstance(tr, TraceError) and sim_time(tr) is not None})
    note = [f"sim time, time to: simulated time in {' or '.join(units)}; {NO_CLOCK!r}: a trace without a simulated "
            "clock (/sim_time); '-': never reached"] if timed else []
    return "\n".join([table(rows, header)] + note + unreadable)


def _times(tr: Trace, levels: tuple) -> list[str]:
    """The comparison's cells of simulated time: at the end, then to each level (NO_CLOCK for a trace without one)."""
    clock = sim_time(tr)
    if clock is None:
        return [NO_CLOCK] * (1 + len(levels))
    return [_fmt(_last(clock), ".4g")] + [_fmt(time_to(tr, level), ".4g") for level in levels]


def _compressor(tr: Trace) -> str:
    params = tr.config.get("compressor", {})
    extra = ",".join(f"{k}={v}" for k, v in params.items() if k != "name")
    return shown(str(params.get("name", "?")) + (f"({extra})" if extra else ""), 80)


def _spread(ids: np.ndarray, n: int) -> str:
    """'least..most' of how often each of the n ids occurs (ids out of range left out)."""
    counts = np.bincount(ids[(ids >= 0) & (ids < n)], minlength=n) if n > 0 else np.zeros(0, dtype=int)
    return f"{counts.min()}..{counts.max()}" if len(counts) else "-"


def describe(tr: Trace) -> str:
    """One trace in detail; every attribute's text cut to SHOWN_CHARACTERS."""
    a = {key: value if isinstance(value, (int, float, np.number)) else shown(value) for key, value in tr.attrs.items()}
    status = shown(tr.status)
    if status == "running" or status.startswith("failed: writer lost"):
        age = _fmt(_last(tr.time), ".1f")
        writer = writer_lock.describe(writer_lock.read_holder(writer_lock.lock_path(tr.path)))
        last = f"round {int(_last(tr.rounds))}, {age} s after the start" if len(tr.rounds) else "none"
        status = f"{status}{': written by ' + writer if status == 'running' else ''}; last row flushed: {last}"
    lines = [
        f"trace      {tr.path}",
        f"run        {shown(tr.label)}   status: {status}",
    ]
    if a.get("stop_reason") and tr.attrs.get("stop_reason") != tr.status:
        lines.append(f"stopped    {a['stop_reason']}")
    lines += [
        f"method     {a.get('method')} with {_compressor(tr)} on {a.get('problem')} ({a.get('dataset')}), d = {a.get('d')}",
        f"workers    {a.get('n_workers')} on {a.get('n_ranks')} ranks ({a.get('mpi_library')}; hosts {a.get('hostnames')})",
        f"step size  γ = {_fmt(a.get('gamma'), '.6g')} ({a.get('stepsize_rule')} × {_fmt(a.get('stepsize_factor'), 'g')}); "
        f"L = {_fmt(a.get('L'), '.6g')}, L̃ = {_fmt(a.get('L_tilde'), '.6g')}",
        f"rows       {len(tr.rounds)} (rounds {_span(tr.rounds)})",
        f"final      f = {_fmt(_last(tr.loss), '.10g')}, ‖∇f‖² = {_fmt(_last(tr.grad_norm_sq), '.6g')}",
    ]
    for e in tr.bits_up:
        initial = tr.bits_initial.get(e)
        extra = f" (+ {_fmt(float(initial.mean()), '.6g')} in the initial round)" if initial is not None and initial.any() else ""
        lines.append(f"bits/worker {e:8s} {_fmt(_last(tr.bits_per_worker(e)), '.6g')}{extra}")
    if any(v.any() for v in tr.bits_down.values()) or any(tr.bits_initial_down.values()):
        down = ", ".join(f"{e} {_fmt(_last(tr.bits_down_cumulative(e)), '.6g')}" for e in tr.bits_down)
        lines.append(f"bits down  {down} (+ {_fmt(tr.bits_initial_down.get('paper', 0.0), '.6g')} paper bits initially)")
    for name, values in tr.metrics.items():
        unit = f" {sim_time_unit(tr)}" if name.startswith("sim_") else ""  # the simulated clock and its parts
        lines.append(f"{name:10s} final {_fmt(_last(values), '.6g')}{unit}")
    events, clients, n = tr.tables["events"], tr.tables["clients"], int(tr.attrs.get("n_workers", 0))
    if events:
        applied = _spread(events["worker"][events["update"] >= 0], n)
        lines.append(f"arrivals   {len(events['update'])} ({_fmt(a.get('discarded_fraction'), '.3g')} discarded); delays: "
                     f"τ_max {a.get('tau_max', '-')}, mean {_fmt(a.get('delay_mean'), '.4g')}, 99th percentile "
                     f"{a.get('delay_p99', '-')}; τ_C {a.get('concurrency', '-')}; applied per worker {applied}")
    if len(clients):
        fed = tr.config.get("federated", {})
        lines.append(f"clients    {clients.shape[1]} of {a.get('n_workers')} per round over {len(clients)} rounds "
                     f"(each sampled {_spread(clients.ravel(), n)} times); server {_fmt(fed.get('server_optimizer', '-'))} "
                     f"η_s = {_fmt(fed.get('server_lr'), 'g')}; {_fmt(fed.get('weighting', '-'))} averaging")
    wall = _fmt(a.get("wall_seconds"), ".3f")
    lines.append(f"started    {a.get('started')}   finished: {a.get('finished', '-')}   wall {wall} s")
    if a.get("timing"):
        lines.append(f"timing     {a['timing']}")
    lines.append(f"command    {a.get('command')}")
    lines += _provenance(tr.provenance)
    lines.append(f"data       {a.get('dataset_checksum')}")
    return "\n".join(lines)


def _provenance(p: dict) -> list[str]:
    """The launcher and the package versions a run recorded (traces of earlier versions: what they have)."""
    lines = []
    launcher = p.get("launcher")
    if isinstance(launcher, dict):
        evidence = ", ".join(map(str, launcher.get("detected_by") or [])) or "no launcher variables"
        ranks = launcher.get("ranks", "?")
        lines.append(f"launcher   {launcher.get('name')}, {ranks} rank{'' if ranks == 1 else 's'} ({evidence})")
    packages = p.get("packages")
    if isinstance(packages, dict) and packages:
        lines.append("packages   " + ", ".join(f"{name} {version}" for name, version in packages.items()))
    return lines
