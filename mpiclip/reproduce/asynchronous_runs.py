"""What the straggler page (mpiclip.reproduce.asynchronous) reads from each run of its sweeps: the sweep's metric,
its final value and the median over the last 10% of the time budget (inf for a run that diverged), the settings
(γ, τ, the slowdown s), the degradation ratio to s = 1, and the best run per group by either."""

from __future__ import annotations

import math

import numpy as np

from mpiclip import results

COLUMNS = ("rounds", "loss", "grad_norm_sq", "sim_time", "metrics", "bits/up/paper",
           "events/update", "events/worker", "events/delay", "events/sim_time")  # what the tables and figures read


def runs_of(sweep) -> list:
    """The sweep's completed or failed runs, in sweep order (running, interrupted, missing and unreadable traces
    are left out)."""
    return results.runs(sweep, COLUMNS, statuses=("completed", "failed"))


def y(r) -> np.ndarray:
    """The sweep's metric per row: ‖∇f‖², or f − f* (``gap``)."""
    return r.trace.loss - float(r.trace.attrs.get("f_star", np.nan)) if r.select.metric == "gap" else r.trace.grad_norm_sq


def completed(r) -> bool:
    return r.completed and len(y(r)) > 0


def final(r) -> float:
    """The last value; inf ('div' in the tables) for a run that failed or ended on a value that is not finite."""
    return float(y(r)[-1]) if completed(r) and np.isfinite(y(r)[-1]) else math.inf


def diverged(r) -> bool:
    """Failed, or ended on a value that is not finite or above 10x its first."""
    return not completed(r) or not np.isfinite(y(r)[-1]) or float(y(r)[-1]) > 10 * float(y(r)[0])


def tail(r) -> float:
    """A steadier figure of merit than the last row: the median over the last 10% of the time budget (inf for a
    run that diverged)."""
    if diverged(r):
        return math.inf
    values, times = y(r), r.trace.metrics.get("sim_time", np.zeros(0))
    budget = float(r.section("async").max_time) or (float(times[-1]) if len(times) else 0.0)
    last = values[times >= 0.9 * budget] if len(times) == len(values) else values[-1:]
    value = float(np.median(last)) if len(last) else float(values[-1])
    return value if np.isfinite(value) else math.inf


def tau_of(r) -> float:
    return float(r.param("tau", 0.0) or 0.0)  # 0: not clipped


def slowdown(r) -> float:
    return float(r.section("async").slow_factor)  # s: how many times slower the straggler is


def attr(r, key: str):
    return r.trace.attrs.get(key, np.nan)  # a summary of the run (tau_max, delay_mean, ...); NaN if it has none


def setting_text(r) -> str:
    """'γ' or 'γ / τ' (Clipped ASGD)."""
    return f"{r.gamma:g}" + (f" / {tau_of(r):g}" if r.method == "clipped_asgd" else "")


def best_of(runs: list, key, by=final) -> dict:
    """key(run) -> the run with the smallest ``by`` (final, or tail), ties to the earlier run (as `sweep best`); a
    group whose runs all diverged keeps its first run, shown as 'div' (results.select's fallback)."""
    return results.select(runs, key, by, fallback=True)


def ratio(r, base, by) -> float:
    """by(r) / by(base): how much worse than at s = 1 (NaN without a finite, positive base)."""
    a, b = by(r), by(base) if base is not None else np.nan
    return a / b if np.isfinite(b) and b > 0 else np.nan
