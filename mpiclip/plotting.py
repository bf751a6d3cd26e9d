"""Figures from traces (matplotlib, imported only when a figure is drawn; never mpi4py)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mpiclip.trace import Trace

X_AXES = ("bits", "rounds", "time")
Y_AXES = ("grad_norm_sq", "loss", "gap")
Y_LABEL = {"grad_norm_sq": r"$\|\nabla f(x^t)\|^2$", "loss": r"$f(x^t)$", "gap": r"$f(x^t) - f^\star$"}


def y_values(tr: Trace, y: str) -> np.ndarray:
    if y == "gap":
        f_star = float(tr.attrs.get("f_star", np.nan))
        if not np.isfinite(f_star):
            raise ValueError(f"{tr.path} has no f_star (only least squares and quadratics know their optimum)")
        return tr.loss - f_star
    return getattr(tr, y)


def x_values(tr: Trace, x: str, encoding: str, include_initial: bool) -> np.ndarray:
    if x == "bits":
        return tr.bits_per_worker(encoding, include_initial)
    if x == "rounds":
        return tr.rounds.astype(float)
    return tr.time


def plot(traces: Sequence[Trace], out: str, x: str = "bits", y: str = "grad_norm_sq", encoding: str = "paper",
         include_initial: bool = False, title: str | None = None, logx: bool = False,
         xmax: float | str | None = "auto") -> str:
    """Draw y against x for every trace into ``out`` (format from its suffix: .png, .pdf, .svg).

    ``xmax = "auto"`` ends the x axis where the shortest trace ends, so that every curve spans it (the
    papers compare methods at a common bit budget); a number sets it; None shows everything.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    ends = [x_values(tr, x, encoding, include_initial)[-1] for tr in traces if len(tr.rounds)]
    if xmax == "auto":
        xmax = min(ends) if ends and min(ends) > 0 else None
    for tr in traces:
        xs, ys = x_values(tr, x, encoding, include_initial), y_values(tr, y)
        keep = np.isfinite(ys) & (ys > 0) if y in ("grad_norm_sq", "gap") else np.isfinite(ys)
        label = tr.label + ("" if tr.status == "completed" else f" ({tr.status.split(':')[0]})")
        ax.plot(xs[keep], ys[keep], label=label, lw=1.5)
    if y in ("grad_norm_sq", "gap"):
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    elif xmax is not None:
        ax.set_xlim(0, float(xmax))
    ax.set_xlabel({"bits": f"bits per worker ({encoding}{', with initial round' if include_initial else ''})",
                   "rounds": "round t", "time": "wall time (s)"}[x])
    ax.set_ylabel(Y_LABEL[y])
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
