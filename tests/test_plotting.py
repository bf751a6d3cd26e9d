"""Figures: the house style, checked on the drawn figure (tight bounding boxes) and in the files."""

import dataclasses

import matplotlib
import matplotlib.ticker
import numpy as np
import pytest
from helpers import config_table

from mpiclip import config as cfg
from mpiclip import plotting, session
from mpiclip.comm.serial import SerialComm
from mpiclip.trace import load_trace

matplotlib.use("Agg")


def run(folder, name, **sections):
    table = config_table(run={"name": name, "n_workers": 4, "rounds": 400}, **sections)
    table["output"] = {"path": str(folder / "{name}.h5")}
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    return load_trace(session.execute(prepared).path)


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    ef21 = run(folder, "a-rather-long-run-name-ef21", compressor={"name": "topk", "k": 1})
    ef14 = run(folder, "ef14", method={"name": "ef14"}, compressor={"name": "topk", "k": 2})
    gd = run(folder, "gd", method={"name": "gd"}, compressor={"name": "identity"})
    plus = run(folder, "plus", method={"name": "ef21_plus"}, compressor={"name": "randk", "k": 3})
    zeros = ef21.grad_norm_sq.copy()
    zeros[-5:] = 0.0  # a run that reached exactly zero: a log axis cannot show it
    return [dataclasses.replace(ef21, grad_norm_sq=zeros), ef14, gd, plus]


def boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return renderer, fig.bbox


def tick_labels(axis):
    """The tick labels matplotlib draws: those of ticks inside the view (it keeps others, undrawn)."""
    low, high = sorted(axis.get_view_interval())
    return [t.label1 for t in axis.get_major_ticks() if low <= t.get_loc() <= high and t.label1.get_text()]


def drawn_texts(fig):
    (ax,) = fig.axes
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts, *fig.legends[0].get_texts()]
    texts += tick_labels(ax.xaxis) + tick_labels(ax.yaxis) + [ax.xaxis.get_offset_text(), ax.yaxis.get_offset_text()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def overlapping(extents):
    return [(a, b) for i, a in enumerate(extents) for b in extents[i + 1 :] if a.overlaps(b)]


LONG_TITLE = "EF21, EF, GD and EF21+ on a label-skewed synthetic problem with 4 workers, every round recorded"


@pytest.mark.parametrize("size", ["column", "page"])
@pytest.mark.parametrize("x, logx", [("bits", False), ("rounds", False), ("rounds", True)])
def test_no_text_overlaps_or_leaves_the_canvas_and_the_legend_is_beside_the_data(traces, size, x, logx):
    fig = plotting.draw(traces, x=x, title=LONG_TITLE, size=size, logx=logx)
    renderer, canvas = boxes(fig)
    (ax,) = fig.axes
    for axis in (ax.xaxis, ax.yaxis):
        ticks = [t.get_window_extent(renderer) for t in tick_labels(axis)]
        assert len(ticks) >= 3 and overlapping(ticks) == [], axis
    texts = drawn_texts(fig)
    for t in texts:
        box = t.get_window_extent(renderer)
        assert canvas.x0 - 1 <= box.x0 and box.x1 <= canvas.x1 + 1 and canvas.y0 - 1 <= box.y0 and box.y1 <= canvas.y1 + 1, \
            t.get_text()
    (legend,) = fig.legends
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert [t.get_text() for t in legend.get_texts()] == ["EF21, Top-1", "EF, Top-2", "GD", "EF21+, Rand-3"]
    note = [t.get_text() for t in texts if "not shown" in t.get_text()]
    assert note == ["5 values ≤ 0 not shown (log axis)"]
    assert fig.get_size_inches().tolist() == list(plotting.SIZES[size])
    plotting.pyplot().close(fig)


def test_a_method_keeps_its_colour_and_marker_from_figure_to_figure(traces):
    first = plotting.draw(traces)
    second = plotting.draw(traces[::-1][:2])
    style = lambda fig: {ln.get_label(): (ln.get_color(), ln.get_marker()) for ln in fig.axes[0].get_lines()}
    a, b = style(first), style(second)
    assert all(a[label] == b[label] for label in b) and len(set(a.values())) == len(a)
    for fig in (first, second):
        plotting.pyplot().close(fig)


def test_pdf_embeds_truetype_fonts_only(traces, tmp_path):
    pdf = plotting.plot(traces, str(tmp_path / "f.pdf"), title=LONG_TITLE)
    data = open(pdf, "rb").read()
    assert b"/Type3" not in data and b"/FontFile2" in data
    png = plotting.plot(traces, str(tmp_path / "f.png"), size="column")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_two_runs_of_one_method_are_told_apart_by_their_names(traces):
    fig = plotting.draw([traces[1], dataclasses.replace(traces[1], attrs={**traces[1].attrs, "name": "ef14-again"})])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["EF, Top-2 [ef14]", "EF, Top-2 [ef14-again]"]
    plotting.pyplot().close(fig)
    assert np.isfinite(traces[0].grad_norm_sq).all()


@pytest.mark.parametrize("methods", [("gd", "ef14", "ef21", "ef21_plus"), ("gd", "clip_gd", "clip21_gd", "clip_sgd", "clip21_sgd"),
                                     ("clip21_gd", "clip21_sgd2m", "clip_sgd", "clip_sgdm", "dp_sgd"),
                                     ("asgd", "clipped_asgd", "delay_adaptive_asgd", "minibatch_sgd", "rennala_sgd",
                                      "ringmaster_asgd"),
                                     ("fedavg", "fedga", "gradalign", "scaffold", "scaffold_stored", "fedprox", "lbsgd")])
def test_the_methods_a_figure_compares_have_distinct_colours_and_markers(methods):
    styles = [plotting.method_style(m) for m in methods]
    assert len({s["color"] for s in styles}) == len(methods) and len({s["marker"] for s in styles}) == len(methods)
    assert "#F0E442" not in {s["color"] for s in styles}  # Okabe-Ito's yellow is too faint for lines


def test_layout_problems_finds_overlapping_minor_tick_labels_and_text_off_the_canvas():
    """The check every `mpiclip reproduce` figure passes: here a log axis whose minor labels collide (the
    DP figure had "3×10⁰4×10⁰") and a title wider than the figure."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=plotting.SIZES["column"], layout="constrained")
    ax.plot([2, 64], [1, 2])
    ax.set_xscale("log")
    assert any("overlap" in p for p in plotting.layout_problems(fig))
    ax.set_xticks([2, 8, 32, 64], ["2", "8", "32", "64"])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    assert plotting.layout_problems(fig) == []
    ax.set_title("a title far too long to fit into one column of a two-column paper without being wrapped")
    assert plotting.layout_problems(fig) == ["'a title far too long to fit into one col' leaves the canvas"]
    plt.close(fig)


def test_each_method_declares_its_paper_name_and_style_and_a_family_tells_its_methods_apart():
    """A method's name in figures and tables and its colour and marker live on its class (not in plotting),
    each class its own (a subclass does not silently take its parent's), and the methods of one module, which
    its figures compare, differ in style."""
    from collections import defaultdict

    from mpiclip.methods import METHODS

    styles = defaultdict(list)
    for name, cls in METHODS.items():
        assert "display_name" in vars(cls) and "style" in vars(cls), name
        assert plotting.paper_name(name) == cls.display_name
        style = plotting.method_style(name)
        assert style["color"] == plotting.COLORS[cls.style[0]] and style["marker"] == plotting.MARKERS[cls.style[1]]
        styles[cls.__module__].append(tuple(style.values()))
    names = [cls.display_name for _, cls in METHODS.items()]
    assert len(set(names)) == len(names)
    for module, pairs in styles.items():
        assert len(set(pairs)) == len(pairs), module
    assert plotting.paper_name("not_registered") == "not_registered" and "not_registered" not in plotting.PAPER_NAMES
