"""The figures of the GradAlign page (mpiclip.reproduce.federated): per setting, test accuracy against
communication rounds and uplink bits and gradient variance against server rounds; per sweep, the β sensitivity."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mpiclip import plotting
from mpiclip.plotting import paper_name
from mpiclip.reproduce.federated_runs import (
    ALIGNING,
    MODELS,
    Setting,
    accuracy,
    beta,
    bits,
    comm,
    param_text,
    pick,
    rounds,
    variance,
)

WIDTH = plotting.SIZES["page"][0]  # every figure has the width of a page


def _band(runs: list, x_of, y_of):
    """x of the first seed, and mean, min, max of y over the seeds (on the rows they share)."""
    k = min(len(r.trace.rounds) for r in runs)
    x = x_of(runs[0])[:k]
    ys = np.array([y_of(r)[:k] for r in runs])
    return x, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def _title(text: str, fontsize: float = 9) -> str:
    return plotting.wrapped(text, WIDTH, fontsize)


def _legend(fig, axes, ncols: int) -> None:
    """One legend below the axes, each label once (the curves of every panel are the same methods)."""
    seen = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(ncols, len(seen)), frameon=False)



def setting_figure(s: Setting):
    """Test accuracy against communication rounds and against uplink bits per client, gradient variance against
    server rounds: each method's best configuration, the mean over the seeds with a band from min to max."""
    plt = plotting.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 3.7), layout="constrained")
    panels = ((comm, lambda r: 100 * accuracy(r), "communication rounds\n(the GradAlign code's count)",
               "test accuracy (%)", False),
              (bits, lambda r: 100 * accuracy(r), "uplink bits per client\n(mean over the n clients)",
               "test accuracy (%)", False),
              (rounds, variance, "server rounds", "gradient variance", True))
    accs = []
    for ax, (x_of, y_of, xlabel, ylabel, log) in zip(axes, panels):
        dropped = 0
        for m in s.methods():
            rs = s.seeds[m]
            x, mean, lo, hi = _band(rs, x_of, y_of)
            keep = np.isfinite(mean) & ((mean > 0) if log else True)
            dropped += int(np.sum(np.isfinite(mean) & ~keep))
            style = plotting.method_style(m)
            ax.plot(x[keep], mean[keep], lw=1.2, ms=3.5, markevery=0.1, label=f"{paper_name(m)} ({param_text(s.best[m])})",
                    **style)
            if len(rs) > 1:
                band = keep & np.isfinite(lo) & ((lo > 0) if log else True)
                ax.fill_between(x[band], lo[band], hi[band], color=style["color"], alpha=0.15, lw=0)
            if not log:
                accs.append(mean)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.get_major_locator().set_params(nbins=4)
        if log:
            ax.set_yscale("log")
            plotting.log_note(ax, dropped)
    late = np.concatenate([a[len(a) // 4:] for a in accs]) if accs else np.array([0.0])
    late = late[np.isfinite(late)] if np.isfinite(late).any() else np.array([0.0])
    lo, hi = max(0.0, float(np.percentile(late, 2)) - 5.0), min(100.0, float(np.max(late)) + 2.0)
    for ax in axes[:2]:
        ax.set_ylim(lo, max(hi, lo + 1.0))
    k = max(len(v) for v in s.seeds.values())
    fig.suptitle(_title(f"{s.title}: each method's best configuration (final test accuracy at {s.budget} communication "
                        f"rounds); mean over {k} seed{'s' if k > 1 else ''}" + (", band from min to max" if k > 1 else "")),
                 fontsize=9)
    _legend(fig, axes, 3)
    return fig


def beta_figure(settings: list, title: str):
    """Per setting: the final test accuracy and gradient variance of FedGA/GradAlign at each β (best γ), with
    FedAvg, large-batch SGD and SCAFFOLD (their best configuration, seed 0) as horizontal lines. Two rows
    (accuracy, variance) of one column per setting; one setting: the two panels side by side."""
    plt = plotting.pyplot()
    one = len(settings) == 1
    fig, axes = plt.subplots(1 if one else 2, 2 if one else len(settings), squeeze=False, layout="constrained",
                             figsize=(WIDTH, 3.3 if one else 5.2))
    pairs = [(axes[0, 0], axes[0, 1])] if one else [(axes[0, j], axes[1, j]) for j in range(len(settings))]
    for j, (s, (top, bottom)) in enumerate(zip(settings, pairs)):
        dropped = 0
        for m in ALIGNING:
            groups = defaultdict(list)
            for r in s.runs:
                if r.method == m and r.seed == 0:
                    groups[beta(r)].append(r)
            if not groups:
                continue
            bs = sorted(groups)
            best = [pick(groups[b]) for b in bs]
            style = plotting.method_style(m)
            top.plot(bs, [100 * accuracy(r)[-1] for r in best], lw=1.2, ms=4, label=paper_name(m), **style)
            var = np.array([variance(r)[-1] for r in best], dtype=float)
            keep = np.isfinite(var) & (var > 0)
            dropped += int(np.sum(np.isfinite(var) & ~keep))
            bottom.plot(np.array(bs)[keep], var[keep], lw=1.2, ms=4, label=paper_name(m), **style)
        for m in ("fedavg", "lbsgd", "scaffold"):
            r = s.best.get(m)
            if r is None:
                continue
            color = plotting.method_style(m)["color"]
            top.axhline(100 * accuracy(r)[-1], ls="--", color=color, lw=1.0, label=f"{paper_name(m)} (best γ)")
            if np.isfinite(variance(r)[-1]) and variance(r)[-1] > 0:
                bottom.axhline(variance(r)[-1], ls="--", color=color, lw=1.0, label=f"{paper_name(m)} (best γ)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xlabel("β")
            ax.grid(True, which="both", alpha=0.3)
        bottom.set_yscale("log")
        plotting.log_note(bottom, dropped)
        panel = f"{MODELS.get(s.model, s.model)}, P = {s.P}"
        top.set_title(panel)
        if one:
            bottom.set_title(panel)
        if j == 0 or one:
            top.set_ylabel("final test accuracy (%)")
            bottom.set_ylabel("final gradient variance")
        accs = [100 * accuracy(r)[-1] for r in s.best.values() if np.isfinite(accuracy(r)[-1])]
        if accs:
            top.set_ylim(max(0.0, min(accs) - 15), min(100.0, max(accs) + 3))
    fig.suptitle(_title(f"{title}: β sensitivity at {settings[0].budget} communication rounds (seed 0; FedGA and "
                        "GradAlign at the best γ of each β, the other methods' best configuration as dashed lines)"),
                 fontsize=9)
    _legend(fig, [a for pair in pairs for a in pair], 5)
    return fig
