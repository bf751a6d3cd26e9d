"""Figures from traces (matplotlib, imported only when a figure is drawn; never mpi4py)."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Mapping
from typing import Sequence

import numpy as np

from mpiclip import results
from mpiclip.methods import METHODS
from mpiclip.paths import existing_parent, takes_files
from mpiclip.trace import Trace

X_AXES = ("bits", "rounds", "time", "sim_time", "gradients", "comm_rounds", "epochs")
Y_AXES = ("grad_norm_sq", "loss", "gap", "test_loss", "test_accuracy", "train_accuracy", "grad_variance",
          "grad_mapping_sq")
Y_LABEL = {"grad_norm_sq": r"$\|\nabla f(x^t)\|^2$", "loss": r"$f(x^t)$", "gap": r"$f(x^t) - f^\star$",
           "test_loss": "test loss", "test_accuracy": "test accuracy", "train_accuracy": "train accuracy",
           "grad_variance": r"$\frac{1}{n}\sum_i \|\nabla f_i(x^t) - \nabla f(x^t)\|^2$",
           "grad_mapping_sq": r"$\|G_\gamma(x^t)\|^2$ (gradient mapping)"}
LOG_Y = ("grad_norm_sq", "gap", "grad_variance", "grad_mapping_sq")


FIGURE_FORMATS = (".png", ".pdf", ".svg")

# One look for every figure: each method has its paper's name, and a colour and marker that stay the same
# from figure to figure (the order below decides them; a method not listed takes the next free pair).
class _PaperNames(Mapping):
    """method -> the name the papers give it (``Method.display_name``), read from the registry, so that a method
    registered later (from outside the package too) has its name in every figure and table."""

    def __getitem__(self, method: str) -> str:
        if method in METHODS and METHODS.get(method, "method").display_name:
            return METHODS.get(method, "method").display_name
        raise KeyError(method)

    def __iter__(self):
        return (name for name, cls in METHODS.items() if cls.display_name)

    def __len__(self) -> int:
        return sum(1 for _ in self)


PAPER_NAMES = _PaperNames()
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")  # Okabe-Ito but its yellow,
# which is too faint for lines on white
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))  # solid first: a figure's first curve
DODGE = 1.035  # factor between neighbouring methods' points on a privacy-utility figure's log ε axis
PRIVACY_UNITS = {"replace": "record-level DP", "add_remove_record": "record-level DP (add/remove)",
                 "add_remove": "worker-level DP"}  # method.relation in words, in the order pages show them
FINAL_LABEL = {"grad_norm_sq": r"final $\|\nabla f(x)\|^2$", "loss": "final f(x)", "accuracy": "final training accuracy",
               "train_accuracy": "final training accuracy", "test_accuracy": "final test accuracy",
               "test_loss": "final test loss"}  # a classifier's `accuracy` score is on its workers' training rows
SIZES = {"column": (3.4, 2.6), "page": (7.0, 3.4)}  # inches: one column and the full width of a two-column paper


def paper_name(method: str) -> str:
    """The name the papers give ``method`` ('EF21+' for ef21_plus); the id itself for others."""
    return PAPER_NAMES.get(method, method)


def wrapped(text: str, width: float, fontsize: float = 9) -> str:
    """``text`` broken into lines that fit ``width`` inches at ``fontsize`` points (a character is ~0.55 em)."""
    return textwrap.fill(text, width=int(width * 72 / (0.55 * fontsize)))


def log_note(ax, dropped: int) -> None:
    """Say in the corner of ``ax`` how many values a log axis could not show (zeros, negatives)."""
    if dropped:
        ax.text(0.99, 0.01, f"{dropped} values ≤ 0 not shown (log axis)", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=6, color="0.35")


def method_style(method: str) -> dict:
    """The colour and marker of ``method`` in every figure (``Method.style``, chosen so that the methods one figure
    compares differ; a method without one takes a pair by its name)."""
    colour, marker = METHODS.get(method, "method").style if method in METHODS else (-1, -1)
    if colour < 0:
        colour = marker = sum(map(ord, method))
    return {"color": COLORS[colour % len(COLORS)], "marker": MARKERS[marker % len(MARKERS)]}


def distinct(styles: Sequence[dict]) -> list[dict]:
    """``styles`` with every repeat of a colour and marker made distinct: the k-th repeat keeps the colour (its
    method's) and takes the k-th next marker and line style, so that two runs of one method never look alike."""
    seen: dict = {}
    out = []
    for style in styles:
        key = (style.get("color"), style.get("marker"))
        k = seen[key] = seen.get(key, -1) + 1
        if k:
            marker = MARKERS[(MARKERS.index(style["marker"]) + k) % len(MARKERS)] if style.get("marker") in MARKERS \
                else MARKERS[k % len(MARKERS)]
            style = {**style, "marker": marker, "linestyle": LINESTYLES[k % len(LINESTYLES)]}
        out.append(style)
    return out


def dataset_name(config) -> str:
    """A run's data set in a word for titles: its file's name ('mushrooms' of mushrooms.txt), else its source."""
    data = config.as_table().get("data", {})
    path = str(data.get("path") or "")
    return os.path.basename(path).split(".")[0] if path else str(data.get("source", "data"))


def compressor_name(tr: Trace) -> str:
    """'Top-1', 'Rand-4', 'natural', ... as the papers write them ('' for no compression)."""
    conf = json.loads(tr.attrs.get("config", "{}")).get("compressor", {})
    name, k = conf.get("name", str(tr.attrs.get("compressor", ""))), conf.get("k")
    share = f"Top-{100 * conf.get('ratio', 0):g} %" + (" per layer" if conf.get("per_layer") else "")
    known = {"topk": f"Top-{k}", "randk": f"Rand-{k}", "randk_unbiased": f"Rand-{k} (unbiased)",
             "randk_shared": f"Rand-{k} (shared)", "topk_ratio": share, "identity": ""}
    return known.get(name, name)


def curve_label(tr: Trace) -> str:
    """The method's paper name and the compressor's ('EF21, Top-1'), and the status if not completed."""
    method = str(tr.attrs.get("method", ""))
    parts = [PAPER_NAMES.get(method, method or tr.label), compressor_name(tr)]
    label = ", ".join(p for p in parts if p)
    return label + ("" if tr.status == "completed" else f" ({tr.status.split(':')[0]})")


def check_figure_path(path: str, field: str = "--plot") -> None:
    """Raise InputError unless a figure can be written at ``path`` (before any run starts)."""
    from mpiclip.errors import InputError
    from mpiclip.paths import check_printable

    check_printable(field, path)
    if os.path.splitext(path)[1].lower() not in FIGURE_FORMATS:
        raise InputError(field, path, f"needs one of the suffixes {', '.join(FIGURE_FORMATS)}")
    parent = existing_parent(path)  # directories that do not exist yet are made when the figure is saved
    if not takes_files(parent):
        raise InputError(field, path, f"cannot be written ({parent} is not a writable directory)")
    if os.path.isdir(path) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(field, path, "exists and is not a writable file")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(field, path, "needs matplotlib: pip install 'mpiclip[plot]'") from None


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (imported only when a figure is drawn), with TrueType
    fonts embedded in PDF and PostScript (journals refuse Type 3 fonts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "font.size": 8, "axes.titlesize": 9,
                         "legend.fontsize": 7, "axes.labelsize": 8})
    return plt


def save(fig, out: str | Sequence[str], dpi: int = 130) -> str:
    """Write ``fig`` to ``out``, or to each of several paths (format from the suffix, directories made if
    needed), and release it; returns the (first) path. The files carry no date, so the same figure gives
    the same bytes."""
    outs = [out] if isinstance(out, str) else list(out)
    for path in outs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        undated = {".pdf": {"CreationDate": None}, ".svg": {"Date": None}}.get(os.path.splitext(path)[1].lower())
        fig.savefig(path, dpi=dpi, metadata=undated)
    pyplot().close(fig)
    return outs[0]


def y_values(tr: Trace, y: str) -> np.ndarray:
    if y == "gap":
        f_star = float(tr.attrs.get("f_star", np.nan))
        if not np.isfinite(f_star):
            raise ValueError(f"{tr.path} has no f_star (only least squares and quadratics know their optimum)")
        return tr.loss - f_star
    if y in ("grad_norm_sq", "loss"):
        return getattr(tr, y)
    if y not in tr.metrics:
        raise KeyError(f"{tr.path} has no {y} (test metrics need a classifier and data.test_fraction > 0)")
    return tr.metrics[y]


def x_values(tr: Trace, x: str, encoding: str, include_initial: bool) -> np.ndarray:
    if x == "bits":
        return tr.bits_per_worker(encoding, include_initial)
    if x == "rounds":
        return tr.rounds.astype(float)
    if x == "epochs":
        return epochs(tr)
    if x == "comm_rounds":
        if "comm_rounds" not in tr.metrics:
            raise ValueError(f"{tr.path} is not a federated run (no /comm_rounds)")
        return tr.metrics["comm_rounds"]
    if x in ("sim_time", "gradients"):
        clock = results.sim_time(tr)
        if clock is None:
            raise ValueError(f"{tr.path} has {results.NO_SIM_TIME}: only asynchronous runs and runs with a system "
                             "model keep a clock")
        if x == "sim_time":
            return clock
        if not tr.tables["events"]:
            raise ValueError(f"{tr.path} is not an asynchronous run (no /events)")
        return gradients_computed(tr).astype(float)
    return tr.time


def x_label(traces: Sequence[Trace], x: str, encoding: str = "paper", include_initial: bool = False) -> str:
    """The x axis's words with its unit; for simulated time the traces' unit (:func:`mpiclip.results.sim_time_unit`),
    and a ValueError where they differ (seconds and model time units are not one axis)."""
    if x == "sim_time":
        units = sorted({results.sim_time_unit(tr) for tr in traces if results.sim_time(tr) is not None})
        if len(units) > 1:
            raise ValueError(f"the traces' simulated times are in different units ({' and '.join(units)}); plot them apart")
        return f"simulated time ({units[0] if units else 'model time units'})"
    return {"bits": f"bits per worker ({encoding}{', with initial round' if include_initial else ''})",
            "rounds": "round (server update) t", "time": "wall time (s)", "gradients": "gradients computed",
            "comm_rounds": "communication rounds", "epochs": "epochs (data passes of the workers' gradients)"}[x]


def epochs(tr: Trace) -> np.ndarray:
    """(T,) data passes of the sample gradients the workers computed before each recorded x^t (the papers' epochs:
    /workers/samples summed, over N, the samples of round 0's full pass), from a run that recorded every round
    with samples counted (EF21-SGD, EF21-PAGE, the SGD baselines) and began with a full gradient (init = "full")."""
    if "samples" not in tr.workers:
        raise ValueError(f"{tr.path} counts no samples (/workers/samples): its method computes no minibatch gradients")
    if len(tr.rounds) and (tr.rounds[0] != 0 or np.any(np.diff(tr.rounds) != 1)):
        raise ValueError(f"{tr.path} did not record every round (run.eval_every > 1): its epochs cannot be counted")
    if tr.config.get("method", {}).get("init", "full") != "full":
        raise ValueError(f"{tr.path} began without a full pass (method.init = 'compressed'): N is not known")
    per_round = tr.workers["samples"].sum(axis=1)
    return np.concatenate(([0.0], np.cumsum(per_round[:-1]))) / per_round[0]


def gradients_computed(tr: Trace) -> np.ndarray:
    """(T,) gradients that had reached the server when each row's iterate existed (applied or not)."""
    return np.searchsorted(tr.tables["events"]["sim_time"], tr.metrics["sim_time"], side="right")


def plot(traces: Sequence[Trace], out: str, x: str = "bits", y: str = "grad_norm_sq", encoding: str = "paper",
         include_initial: bool = False, title: str | None = None, logx: bool = False,
         xmax: float | str | None = "auto", size: str = "page") -> str:
    """Draw y against x for every trace into ``out`` (format from its suffix: .png, .pdf, .svg); see ``draw``."""
    return save(draw(traces, x, y, encoding, include_initial, title, logx, xmax, size), out)


def draw(traces: Sequence[Trace], x: str = "bits", y: str = "grad_norm_sq", encoding: str = "paper",
         include_initial: bool = False, title: str | None = None, logx: bool = False,
         xmax: float | str | None = "auto", size: str = "page", labels: Sequence[str] | None = None,
         styles: Sequence[dict] | None = None, hlines: Sequence[tuple[float, str]] = ()):
    """The figure of y against x, one curve per trace, in the house style: the papers' names in a legend
    beside the axes, a fixed colour and marker per method, a title wrapped to the width, and a note when
    a log axis leaves out values that are not positive. ``size``: 'column' or 'page' (see SIZES).

    ``xmax = "auto"`` ends the x axis where the shortest trace ends, so that every curve spans it (the
    papers compare methods at a common bit budget); a number sets it; None shows everything. ``labels``
    name the curves (default: the method's and the compressor's names), ``styles`` give each its colour and
    marker (default: the method's). ``hlines``: (y, label) levels drawn dashed across the axes (a predicted value).
    """
    ends = [x_values(tr, x, encoding, include_initial)[-1] for tr in traces if len(tr.rounds)]
    xlabel = x_label(traces, x, encoding, include_initial)  # both before a figure is made: they may refuse the traces
    plt = pyplot()
    width, height = SIZES[size]
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    if xmax == "auto":
        xmax = min(ends) if ends and min(ends) > 0 else None
    labels = list(labels) if labels is not None else [curve_label(tr) for tr in traces]
    dropped = 0
    styles = list(styles) if styles is not None else distinct([method_style(str(tr.attrs.get("method", ""))) for tr in traces])
    for tr, label, style in zip(traces, labels, styles):
        xs, ys = x_values(tr, x, encoding, include_initial), y_values(tr, y)
        keep = np.isfinite(ys) & (ys > 0) if y in LOG_Y else np.isfinite(ys)
        dropped += int(np.sum(np.isfinite(ys) & ~keep))
        if logx:  # a point at x = 0 would be joined to the next from far outside the axes
            keep &= xs > 0
        if labels.count(label) > 1:  # the same method twice: the run's name tells them apart
            label = f"{label} [{tr.label}]"
        ax.plot(xs[keep], ys[keep], label=label, lw=1.2, ms=3.5, markevery=0.1, **style)  # marks evenly along the curve
    for i, (level, label) in enumerate(hlines):
        ax.axhline(level, color="0.3", lw=0.9, linestyle=LINESTYLES[(i + 1) % len(LINESTYLES)], label=label)
    if y in LOG_Y:
        ax.set_yscale("log")
        log_note(ax, dropped)
    if logx:
        ax.set_xscale("log")
    elif xmax is not None:
        ax.set_xlim(0, float(xmax))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(Y_LABEL[y])
    if title:
        ax.set_title(textwrap.fill(title, width=int(width * 11)))
    ax.grid(True, which="both", alpha=0.3)
    if not logx:  # a log axis has its own locator, without nbins
        ax.xaxis.get_major_locator().set_params(nbins=5 if size == "column" else 8)
    legend(fig, len(traces) + len(hlines), size)
    return fig


def legend(fig, entries: int, size: str = "page") -> None:
    """The legend outside the axes: beside them on a page, below them in a column (which keeps its width), in as
    many columns (up to 3) as its longest label leaves room for; a label too long for the width stays too long,
    which :func:`layout_problems` reports."""
    if size == "column":
        longest = max((len(label) for ax in fig.axes for label in ax.get_legend_handles_labels()[1]), default=0)
        room = int(SIZES["column"][0] * 72 // (0.55 * 7 * longest + 24))  # 7 pt text at ~0.55 em, a marker and gaps
        fig.legend(loc="outside lower center", ncols=max(1, min(3, entries, room)), frameon=False)
    else:
        fig.legend(loc="outside right upper", frameon=False)


def save_checked(fig, out: str, warn) -> str:
    """``save``, after telling ``warn`` each of ``layout_problems(fig)`` (the check `mpiclip reproduce` makes)."""
    for problem in layout_problems(fig):
        warn(f"figure {out}: {problem}")
    return save(fig, out)


def delays(traces: Sequence[Trace], out: str, title: str | None = None) -> str:
    """Histogram of the delays of every arrival, one per trace, with τ_C (concurrency) and τ_max marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SIZES["page"], layout="constrained")
    for i, tr in enumerate(traces):
        if not tr.tables["events"]:
            raise ValueError(f"{tr.path} is not an asynchronous run (no /events)")
        d = tr.tables["events"]["delay"]
        color = f"C{i}"
        bins = np.unique(np.round(np.geomspace(1, max(d.max(), 1) + 1, 60))) - 1
        ax.hist(d, bins=np.append(bins, bins[-1] + 1), histtype="step", color=color, label=tr.label)
        ax.axvline(d.max(), color=color, ls=":", lw=1)
        ax.axvline(float(tr.attrs.get("concurrency", np.nan)), color=color, ls="--", lw=1)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_yscale("log")
    ax.set_xlabel("delay (updates)  — dashed: τ_C, dotted: τ_max")
    ax.set_ylabel("arrivals")
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside right upper", frameon=False)
    if title:
        ax.set_title(title)
    return save(fig, out)


def contributions(tr: Trace, out: str, title: str | None = None) -> str:
    """Applied and discarded gradients of every worker of an asynchronous run."""
    plt = pyplot()
    events = tr.tables["events"]
    n = int(tr.attrs.get("n_workers", events["worker"].max() + 1))
    applied = events["update"] >= 0
    counts = [np.bincount(events["worker"][mask], minlength=n) for mask in (applied, ~applied)]
    fig, ax = plt.subplots(figsize=SIZES["page"], layout="constrained")
    ax.bar(np.arange(n), counts[0], label="applied")
    ax.bar(np.arange(n), counts[1], bottom=counts[0], label="discarded")
    ax.set_xlabel("worker")
    ax.set_ylabel("gradients")
    fig.legend(loc="outside right upper", frameon=False)
    ax.set_title(title or f"{tr.label}: gradients per worker")
    return save(fig, out)


def activity(tr: Trace, out: str, metric: str = "clip_active", title: str | None = None) -> str:
    """Heat map of a per-worker metric (default: whether clipping was active), worker × recorded round."""
    return save(draw_activity(tr, metric, title), out)


def draw_activity(tr: Trace, metric: str = "clip_active", title: str | None = None):
    """The figure of ``activity``."""
    plt = pyplot()
    if metric not in tr.workers:
        raise ValueError(f"{tr.path} has no /workers/{metric} (it has: {', '.join(tr.workers) or 'none'})")
    values = tr.workers[metric].T  # (n, T)
    fig, ax = plt.subplots(figsize=(SIZES["page"][0], max(2.4, 0.25 * values.shape[0] + 1.6)), layout="constrained")
    rounds = tr.rounds
    limits = {"vmin": 0.0, "vmax": 1.0} if metric == "clip_active" else {}
    image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis", **limits,
                      extent=(rounds[0] - 0.5, rounds[-1] + 0.5, values.shape[0] - 0.5, -0.5))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("round t")
    ax.set_ylabel("worker")
    bar = fig.colorbar(image, ax=ax, label=metric)
    if metric == "clip_active":
        bar.set_ticks([0.0, 1.0], labels=["no", "yes"])
    ax.set_title(textwrap.fill(title or f"{tr.label}: {metric}", width=77))
    return fig


def privacy_utility(traces: Sequence[Trace], out: str, y: str = "grad_norm_sq", title: str | None = None) -> str:
    """Final y against the final ε, one line per method, mean over runs with the same (method, ε) and
    their spread as error bars (e.g. several seeds)."""
    return save(draw_privacy_utility(traces, y, title), out)


def draw_privacy_utility(traces: Sequence[Trace], y: str = "grad_norm_sq", title: str | None = None, size: str = "page",
                         lent: Sequence[Trace] = ()):
    """The figure of ``privacy_utility``. Every method has its own line style besides its colour and marker, and its
    points are set apart from its neighbours' by a factor DODGE in ε (said in a note), so that a curve never hides
    another; the ε axis states δ and labels every budget run. ``lent``: runs of another relation that the caller
    vouches are the same runs under the traces' one (a mechanism whose ε is the same under both)."""
    import matplotlib.ticker

    units = {tr.config.get("method", {}).get("relation", "replace") for tr in traces}
    if len(units) > 1:  # ε of one record and ε of a whole worker are not one axis
        raise ValueError(f"the traces mix privacy units (method.relation {' and '.join(sorted(units))}); plot them apart")
    traces = [*traces, *lent]
    plt = pyplot()
    points: dict = {}
    for tr in traces:
        if "epsilon" not in tr.metrics or not len(tr.metrics["epsilon"]):
            raise ValueError(f"{tr.path} records no epsilon (not a DP run)")
        eps = float(f"{tr.metrics['epsilon'][-1]:.4g}")  # a calibrated budget is met from below, to ~1e-7
        value = float(tr.metrics[y][-1]) if y in tr.metrics else float(getattr(tr, y)[-1])
        points.setdefault(str(tr.attrs.get("method")), {}).setdefault(round(eps, 6), []).append(value)
    fig, ax = plt.subplots(figsize=SIZES[size], layout="constrained")
    for i, (method, by_eps) in enumerate(sorted(points.items())):
        eps = np.array(sorted(by_eps))
        values = [np.array(by_eps[e]) for e in eps]
        mean = np.array([v.mean() for v in values])
        spread = np.array([[v.mean() - v.min() for v in values], [v.max() - v.mean() for v in values]])
        ax.errorbar(eps * DODGE ** (i - (len(points) - 1) / 2), mean, yerr=spread, capsize=3,
                    label=PAPER_NAMES.get(method, method), linestyle=LINESTYLES[i % len(LINESTYLES)], **method_style(method))
    ax.set_xscale("log")
    budgets = sorted({e for by_eps in points.values() for e in by_eps})
    ax.set_xticks(budgets, [f"{e:g}" for e in budgets])  # the budgets run, in plain numbers, each labelled
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    positive = all(v > 0 for by_eps in points.values() for vs in by_eps.values() for v in vs)
    if y == "grad_norm_sq" or (y == "loss" and positive):  # f spans decades when noise drives some runs far off
        ax.set_yscale("log")
    ax.set_xlabel(f"ε ({delta_text(traces)})")
    ax.set_ylabel(FINAL_LABEL.get(y, f"final {y}"))
    ax.grid(True, which="both", alpha=0.3)
    if len(points) > 1:
        ax.text(0.99, 0.01, f"methods set apart by ×{DODGE:g} in ε so that none hides another", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=6, color="0.35")
    legend(fig, len(points), size)
    if title:
        ax.set_title(textwrap.fill(title, width=int(SIZES[size][0] * 11)))
    return fig


def delta_text(traces: Sequence[Trace]) -> str:
    """'δ = 1.2e-4' of the runs' method.delta (as the accountant was given it), or what varies."""
    deltas = {tr.config.get("method", {}).get("delta") for tr in traces}
    if len(deltas) != 1 or None in deltas:
        return "δ differs between runs" if len(deltas) > 1 else "δ unknown"
    return f"δ = {np.format_float_scientific(float(deltas.pop()), precision=1, trim='-', exp_digits=1)}"


def _drawn_tick_labels(axis) -> list:
    """The tick labels matplotlib draws: those of ticks inside the view (it keeps others, undrawn)."""
    low, high = sorted(axis.get_view_interval())
    return [label for t in axis.get_major_ticks() + axis.get_minor_ticks() if low <= t.get_loc() <= high
            for label in (t.label1, t.label2) if label.get_visible() and label.get_text()]


def layout_problems(fig) -> list[str]:
    """What is wrong with the drawn ``fig``, from matplotlib's tight bounding boxes: tick labels of one axis
    that overlap, text that leaves the canvas, a legend over the data of an axes. Empty for a good figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    problems, texts = [], [*fig.texts, getattr(fig, "_suptitle", None)]
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = _drawn_tick_labels(axis)
            boxes = [t.get_window_extent(renderer) for t in labels]
            problems += [f"tick labels {labels[i].get_text()!r} and {labels[j].get_text()!r} overlap"
                         for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
            texts += labels + [axis.label, axis.get_offset_text()]
        texts += [ax.title, *ax.texts] + ([t for t in ax.get_legend().get_texts()] if ax.get_legend() else [])
    for legend in fig.legends:
        texts += legend.get_texts()
        box = legend.get_window_extent(renderer)
        problems += [f"the legend covers the axes {ax.get_title()!r}" for ax in fig.axes
                     if ax.get_navigate() and box.overlaps(ax.get_window_extent(renderer))]
    for t in texts:
        if t is None or not t.get_visible() or not t.get_text().strip():
            continue
        b = t.get_window_extent(renderer)
        if b.x0 < canvas.x0 - 1 or b.x1 > canvas.x1 + 1 or b.y0 < canvas.y0 - 1 or b.y1 > canvas.y1 + 1:
            problems.append(f"{t.get_text()[:40]!r} leaves the canvas")
    return problems
