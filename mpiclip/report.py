"""Plain-text summaries of traces: one trace in detail, or a comparison table of several."""

from __future__ import annotations

import math

import numpy as np

from mpiclip import writer_lock
from mpiclip.results import bits_to
from mpiclip.trace import Trace


def _fmt(value: float, spec: str = ".3g") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _last(a: np.ndarray) -> float:
    return float(a[-1]) if len(a) else math.nan


def _span(rounds: np.ndarray) -> str:
    return f"{int(rounds[0])}..{int(rounds[-1])}" if len(rounds) else "-..-"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def comparison(traces: list[Trace], encoding: str = "paper", levels: tuple = ()) -> str:
    """One row per trace; with ``levels``, the bits per worker to reach each ‖∇f‖² level (docs/design.md §4)."""
    header = ["run", "method", "compressor", "status", "rounds", f"bits/worker ({encoding})", "f(x)", "‖∇f(x)‖²",
              "wall s"] + [f"bits to {level:g}" for level in levels]
    rows = []
    for tr in traces:
        bits = tr.bits_per_worker(encoding)
        rows.append([tr.label, tr.attrs.get("method", "?"), _compressor(tr), tr.status.split(":")[0],
                     str(int(_last(tr.rounds))) if len(tr.rounds) else "-", _fmt(_last(bits), ".4g"),
                     _fmt(_last(tr.loss), ".6g"), _fmt(_last(tr.grad_norm_sq)), _fmt(tr.attrs.get("wall_seconds"), ".2f")]
                    + [_fmt(bits_to(tr, level, encoding), ".4g") for level in levels])
    return table(rows, header)


def _compressor(tr: Trace) -> str:
    params = tr.config.get("compressor", {})
    extra = ",".join(f"{k}={v}" for k, v in params.items() if k != "name")
    return params.get("name", "?") + (f"({extra})" if extra else "")


def describe(tr: Trace) -> str:
    a = tr.attrs
    status = tr.status
    if status == "running" or status.startswith("failed: writer lost"):
        age = _fmt(_last(tr.time), ".1f")
        writer = writer_lock.describe(writer_lock.read_holder(writer_lock.lock_path(tr.path)))
        last = f"round {int(_last(tr.rounds))}, {age} s after the start" if len(tr.rounds) else "none"
        status = f"{status}{': written by ' + writer if status == 'running' else ''}; last row flushed: {last}"
    lines = [
        f"trace      {tr.path}",
        f"run        {tr.label}   status: {status}",
    ]
    if a.get("stop_reason") and a.get("stop_reason") != tr.status:
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
        lines.append(f"{name:10s} final {_fmt(_last(values), '.6g')}")
    events, clients = tr.tables["events"], tr.tables["clients"]
    if events:
        workers = np.bincount(events["worker"][events["update"] >= 0], minlength=int(a.get("n_workers", 0)))
        lines.append(f"arrivals   {len(events['update'])} ({_fmt(a.get('discarded_fraction'), '.3g')} discarded); delays: "
                     f"τ_max {a.get('tau_max', '-')}, mean {_fmt(a.get('delay_mean'), '.4g')}, 99th percentile "
                     f"{a.get('delay_p99', '-')}; τ_C {a.get('concurrency', '-')}; applied per worker "
                     f"{workers.min()}..{workers.max()}")
    if len(clients):
        sampled = np.bincount(clients.ravel(), minlength=int(a.get("n_workers", 0)))
        fed = tr.config.get("federated", {})
        lines.append(f"clients    {clients.shape[1]} of {a.get('n_workers')} per round over {len(clients)} rounds "
                     f"(each sampled {sampled.min()}..{sampled.max()} times); server {fed.get('server_optimizer', '-')} "
                     f"η_s = {_fmt(fed.get('server_lr'), 'g')}; {fed.get('weighting', '-')} averaging")
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
