"""Figures: the house style, checked on the drawn figure (tight bounding boxes) and in the files."""

import dataclasses
import os
import shutil
import subprocess
import sys

import h5py
import matplotlib
import matplotlib.ticker
import numpy as np
import pytest
from helpers import REPO, config_table

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


# -- issue 28 item 11: privacy-utility figures where curves overlap, their axes and titles; distinct runs ------------
BUDGETS = (1.0, 2.0, 4.0, 8.0, 16.0)


def dp_trace(base, method, eps, accuracy, delta=1e-5):
    """A DP run's final ε and accuracy on a real trace (what draw_privacy_utility reads of one)."""
    return dataclasses.replace(base, attrs={**base.attrs, "method": method, "name": f"{method}-{eps:g}"},
                               config={**base.config, "method": {"name": method, "relation": "replace", "delta": delta}},
                               metrics={"epsilon": np.array([eps]), "accuracy": np.array([accuracy]),
                                        "test_accuracy": np.array([accuracy])})


@pytest.mark.parametrize("y, label", [("accuracy", "final training accuracy"), ("test_accuracy", "final test accuracy")])
def test_a_privacy_utility_figure_shows_every_curve_states_delta_and_labels_every_budget(traces, y, label):
    """Clip-SGD and Clip-SGDM at the same values (one hid the other): each method its own line style, and its
    points set apart in ε by DODGE; the ε axis says δ and labels every budget run (ticks only there); the
    accuracy axis says training or test."""
    same = [dp_trace(traces[0], m, e, 0.5 + e / 100) for m in ("clip_sgd", "clip_sgdm") for e in BUDGETS]
    other = [dp_trace(traces[0], "dp_sgd", e, 0.4) for e in BUDGETS]
    fig = plotting.draw_privacy_utility(same + other, y=y, title="t")
    (ax,) = fig.axes
    curves = [c.lines[0] for c in ax.containers]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["Clip-SGD", "Clip-SGDM", "DP-SGD"]
    assert len({str(c.get_linestyle()) for c in curves}) == 3
    xs = [np.asarray(c.get_xdata()) for c in curves]
    assert all(np.allclose(x / np.array(BUDGETS), plotting.DODGE ** (i - 1)) for i, x in enumerate(xs))
    np.testing.assert_array_equal(curves[0].get_ydata(), curves[1].get_ydata())  # the overlap is there, and shown apart
    assert [t.get_text() for t in plotting._drawn_tick_labels(ax.xaxis)] == ["1", "2", "4", "8", "16"]
    assert ax.xaxis.get_minor_locator().tick_values(1, 16) == []  # no tick without a label
    assert ax.get_xlabel() == "ε (δ = 1e-5)" and ax.get_ylabel() == label
    assert any("set apart" in t.get_text() for t in ax.texts) and plotting.layout_problems(fig) == []
    plotting.pyplot().close(fig)
    mixed = plotting.draw_privacy_utility([dp_trace(traces[0], "dp_sgd", 1.0, 0.4, 1e-6), *other[1:]], y=y)
    assert mixed.axes[0].get_xlabel() == "ε (δ differs between runs)"
    plotting.pyplot().close(mixed)


def test_titles_name_the_data_set_and_privacy_unit_in_words():
    base = cfg.validate(config_table(data={"source": "libsvm", "path": "mushrooms.txt"}))
    assert plotting.dataset_name(base) == "mushrooms"
    assert plotting.dataset_name(cfg.validate(config_table())) == "synthetic"
    assert plotting.PRIVACY_UNITS == {"replace": "record-level DP", "add_remove_record": "record-level DP (add/remove)",
                                      "add_remove": "worker-level DP"}


def test_every_run_of_a_figure_has_its_own_colour_marker_and_line_style(traces):
    """Three runs of one method (the plot_traces case): the first keeps the method's look, the others its colour
    with another marker and line style."""
    again = [dataclasses.replace(traces[1], attrs={**traces[1].attrs, "name": f"ef14-{i}"}) for i in range(3)]
    fig = plotting.draw([*again, traces[2]])
    looks = [(ln.get_color(), ln.get_marker(), str(ln.get_linestyle())) for ln in fig.axes[0].get_lines()]
    assert len(set(looks)) == 4 and {c for c, _, _ in looks[:3]} == {plotting.method_style("ef14")["color"]}
    assert looks[0][:2] == tuple(plotting.method_style("ef14").values()) and looks[0][2] == "-"
    plotting.pyplot().close(fig)


def test_plot_traces_warns_of_a_legend_that_leaves_a_column_figure(traces, tmp_path):
    """The check `mpiclip reproduce` makes (layout_problems), now in analysis/plot_traces.py too."""
    long = traces[1].path.replace("ef14.h5", "a-run-whose-name-is-much-too-long-for-one-column-of-a-paper.h5")
    shutil.copy(traces[1].path, long)
    with h5py.File(long, "a") as f:
        f.attrs["name"] = os.path.basename(long)[:-3]
    script = os.path.join(REPO, "analysis", "plot_traces.py")
    args = [sys.executable, script, traces[1].path, long, "--x", "rounds", "-o"]
    narrow = subprocess.run([*args, str(tmp_path / "c.png"), "--size", "column"], capture_output=True, text=True,
                            timeout=120)
    assert narrow.returncode == 0 and (tmp_path / "c.png").exists()
    said = narrow.stderr.splitlines()
    assert said and all(line.startswith(f"plot_traces: warning: figure {tmp_path / 'c.png'}: ") for line in said)
    assert any("'EF, Top-2 [a-run-whose-name" in line and line.endswith("leaves the canvas") for line in said), said
    wide = subprocess.run([*args, str(tmp_path / "p.png")], capture_output=True, text=True, timeout=120)
    assert wide.returncode == 0 and wide.stderr == ""
