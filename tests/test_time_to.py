"""Time beside bits: the simulated time to a target (mpiclip.results.to_target), in frames, `mpiclip info`, figures,
`sweep best` and analysis/plot_traces.py; a trace without a clock (/sim_time) says so rather than failing.

A synchronous trace is given a clock here by writing /sim_time into it with h5py, as a run with a system model
writes it: whatever holds /sim_time is read the same way."""

import json
import math
import os
import re
import sys

import h5py
import numpy as np
import pytest
from helpers import METHOD_CASES, REPO, config_table

from mpiclip import config as cfg
from mpiclip import frames, plotting, report, session
from mpiclip.cli import main
from mpiclip.comm.serial import SerialComm
from mpiclip.results import NO_SIM_TIME, bits_to, first_reaching, rounds_to, sim_time, sim_time_unit, time_to, to_target
from mpiclip.sweep import SelectParams, load_sweep, score
from mpiclip.trace import load_trace

sys.path.insert(0, os.path.join(REPO, "analysis"))
import plot_traces  # noqa: E402


def run(folder, name, rounds=24, **sections):
    table = config_table(run={"name": name, "n_workers": 4, "rounds": rounds, "eval_every": 2}, **sections)
    table["output"] = {"path": str(folder / "{name}.h5")}
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    session.execute(prepared)
    return str(folder / f"{name}.h5")


def give_clock(path: str, times, config: dict = None) -> None:
    """Write /sim_time (one value per recorded row) into a finished trace, and optionally sections into its config."""
    with h5py.File(path, "a") as f:
        f.create_dataset("sim_time", data=np.asarray(times, dtype=float)).attrs["units"] = "s"
        if config:
            f.attrs["config"] = json.dumps({**json.loads(f.attrs["config"]), **config})


def by_hand(values, axis, target):
    """The first crossing, the slow way: walk the rows until one is at or below target."""
    for value, x in zip(values, axis):
        if value <= target:
            return float(x)
    return math.nan


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("time")
    sync = run(folder, "sync")
    clocked = run(folder, "clocked")
    rows = len(load_trace(clocked).rounds)
    give_clock(clocked, 0.25 * np.arange(rows) ** 1.5, {"system": {}})  # a run with a system model: seconds
    asgd = run(folder, "asgd", **METHOD_CASES["asgd"])
    return {"sync": sync, "clocked": clocked, "asgd": asgd, "folder": folder}


def test_first_reaching_is_the_axis_at_the_first_crossing():
    values, axis = np.array([4.0, 3.0, 5.0, 1.0, np.nan, 0.5]), np.array([0.0, 1.5, 2.5, 7.0, 8.0, 9.0])
    assert first_reaching(values, axis, 3.0) == 1.5  # reached at row 1, though row 2 is above again
    assert first_reaching(values, axis, 2.0) == 7.0 and first_reaching(values, axis, 0.5) == 9.0
    assert math.isnan(first_reaching(values, axis, 0.1))  # never; a NaN value never reaches
    assert first_reaching(values, axis, 4.5, larger_is_better=True) == 2.5  # an accuracy reaching at least 4.5
    assert math.isnan(first_reaching(np.zeros(0), np.zeros(0), 1.0))


def test_time_to_target_is_the_clock_at_the_first_crossing_of_the_trace(traces):
    tr = load_trace(traces["clocked"])
    g, clock = tr.grad_norm_sq, sim_time(tr)
    assert clock is not None and len(clock) == len(tr.rounds) > 5
    for level in (g[0], g[len(g) // 2], g.min(), g.min() / 2):
        assert same(by_hand(g, clock, level), time_to(tr, level))
        assert same(by_hand(g, tr.bits_per_worker("paper"), level), bits_to(tr, level))
        assert same(by_hand(g, tr.rounds, level), rounds_to(tr, level))
    middle = g[len(g) // 2]
    row = int(np.argmax(g <= middle))
    assert time_to(tr, middle) == 0.25 * row ** 1.5 and rounds_to(tr, middle) == tr.rounds[row]
    assert math.isnan(time_to(tr, g.min() / 2))
    assert sim_time_unit(tr) == "s" and sim_time_unit(load_trace(traces["asgd"])) == "model time units"


def test_a_trace_without_a_clock_says_no_simulated_time(traces, tmp_path):
    tr = load_trace(traces["sync"])
    assert sim_time(tr) is None and math.isnan(time_to(tr, 1.0)) and not math.isnan(bits_to(tr, tr.grad_norm_sq[0]))
    with pytest.raises(ValueError, match="no simulated time"):
        plotting.draw([tr], x="sim_time")
    header = report.comparison([tr], levels=(1e-3,)).splitlines()[0]
    assert header.endswith("bits to 0.001") and "time to" not in header and "sim time" not in header
    # a sweep scored by time to target: the run without a clock never reaches it, and falls back to its final value
    assert score(tr, SelectParams(criterion="time_to", target=1e3)) == (1, tr.grad_norm_sq[-1])
    assert score(tr, SelectParams(criterion="bits_to", target=1e3))[0] == 0


def test_the_run_table_reads_a_few_columns_and_prints_what_the_whole_trace_gives(traces, tmp_path):
    """`mpiclip run`'s closing table reads only report.comparison_read()'s columns (start-up): the same table as from
    the whole trace, for traces with and without a clock, in two encodings; a federated trace's clock lives at the root."""
    fed = run(tmp_path, "fed", rounds=6, system={"latency": 0.01}, **METHOD_CASES["fedavg"])
    paths = [traces["sync"], traces["clocked"], traces["asgd"], fed]
    for encoding in ("paper", "coo32"):
        few = [load_trace(p, **report.comparison_read(encoding)) for p in paths]
        assert report.comparison(few, encoding) == report.comparison([load_trace(p) for p in paths], encoding)
        assert len(few[0].loss) and not len(few[0].time)  # what the table does not show was not read
    assert all("sim time" in report.comparison([load_trace(p, **report.comparison_read())]) for p in (traces["asgd"], fed))


def test_frames_and_info_give_time_to_target_beside_bits_to_target(traces, capsys):
    table = frames.runs(traces["folder"], levels=[1e-2]).set_index("name")
    for name in ("sync", "clocked", "asgd"):
        tr = load_trace(traces[name])
        assert same(table.loc[name, "bits_to_0.01"], bits_to(tr, 1e-2))
        assert same(table.loc[name, "rounds_to_0.01"], rounds_to(tr, 1e-2))
    assert math.isnan(table.loc["sync", "time_to_0.01"]) and math.isnan(table.loc["sync", "final.sim_time"])
    clocked = load_trace(traces["clocked"])
    level = float(clocked.grad_norm_sq[3])
    assert frames.runs(traces["clocked"], levels=[level])[f"time_to_{level:g}"][0] == time_to(clocked, level) > 0
    assert table.loc["asgd", "final.sim_time"] == sim_time(load_trace(traces["asgd"]))[-1]

    assert main(["info", traces["sync"], traces["clocked"], "--to", f"{level!r}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, sync_row, clocked_row = (re.split(r"\s{2,}", line.strip()) for line in (lines[0], lines[2], lines[3]))
    assert header[-3:] == [f"bits to {level:g}", "sim time", f"time to {level:g}"]
    assert sync_row[-2:] == [report.NO_CLOCK] * 2 and sync_row[-3] == f"{bits_to(load_trace(traces['sync']), level):.4g}"
    assert clocked_row[-2:] == [f"{sim_time(clocked)[-1]:.4g}", f"{time_to(clocked, level):.4g}"]
    assert lines[4].startswith("sim time, time to: simulated time in s; 'no sim time': a trace without")
    assert main(["info", traces["asgd"]]) == 0
    assert f"sim_time   final {sim_time(load_trace(traces['asgd']))[-1]:.6g} model time units" in capsys.readouterr().out


def test_the_figure_against_simulated_time_plots_the_trace_clock_with_its_unit(traces):
    clocked, asgd = load_trace(traces["clocked"]), load_trace(traces["asgd"])
    for tr, unit in ((clocked, "s"), (asgd, "model time units")):
        for y in ("loss", "grad_norm_sq"):
            fig = plotting.draw([tr], x="sim_time", y=y, xmax=None)
            (line,) = fig.axes[0].lines
            np.testing.assert_array_equal(line.get_xdata(), sim_time(tr)[np.isfinite(plotting.y_values(tr, y))])
            assert fig.axes[0].get_xlabel() == f"simulated time ({unit})"
            plotting.pyplot().close(fig)
    with pytest.raises(ValueError, match=r"different units \(model time units and s\)"):
        plotting.draw([clocked, asgd], x="sim_time")
    assert to_target(asgd, asgd.grad_norm_sq[2], "sim_time") == sim_time(asgd)[int(np.argmax(asgd.grad_norm_sq <=
                                                                                             asgd.grad_norm_sq[2]))]


def test_plot_traces_draws_against_simulated_time_and_refuses_a_trace_without_a_clock(traces, tmp_path, capsys):
    out = str(tmp_path / "t.png")
    assert plot_traces.main([traces["clocked"], "-o", out, "--x", "sim_time", "--y", "loss"]) == 0
    assert os.path.getsize(out) > 5000
    capsys.readouterr()
    assert plot_traces.main([traces["sync"], "-o", str(tmp_path / "u.png"), "--x", "sim_time"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"plot_traces: error: {traces['sync']} has {NO_SIM_TIME}: only asynchronous runs and runs with "
                   "a system model keep a clock"] and not os.path.exists(tmp_path / "u.png")


SWEEP = """
[sweep]
name = "clock"
base = "synthetic-logreg"
output = "{out}/{{name}}"
[set]
"run.rounds" = 30
"run.n_workers" = 4
"run.eval_every" = 3
"data.n_samples" = 200
[[grid]]
"stepsize.factor" = [0.25, 4]
[select]
group = ["method.name"]
criterion = "time_to"
target = {target}
"""


def test_sweep_best_scores_by_time_to_target_and_plots_against_it(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.format(out=tmp_path, target=1e30))
    sweep = load_sweep(str(path))
    for point in sweep.runs:  # run in this process: the sweep's traces as `sweep run` writes them
        (prepared,) = session.prepare_all([point.config], SerialComm(), "test", log=lambda *a: None)
        session.execute(prepared)
    slow, fast = (point.config.trace_path for point in sweep.runs)
    assert main(["sweep", "best", str(path), "--x", "sim_time", "--plot", str(tmp_path / "b.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not os.path.exists(tmp_path / "b.png")
    (line,) = captured.err.splitlines()  # the group's best run (by its final value: it has no clock) is named
    assert line.startswith(f"mpiclip: error: --plot = '{tmp_path / 'b.png'}': {fast} has {NO_SIM_TIME}: only ")
    assert main(["sweep", "best", str(path)]) == 0  # no clock: each run falls back to its final value, and says so
    assert f"(final; {NO_SIM_TIME})" in capsys.readouterr().out
    # the slow step size reaches any level at simulated time 1; the fast one only at 2: time, not bits, picks it
    give_clock(slow, np.ones(len(load_trace(slow).rounds)), {"system": {}})
    give_clock(fast, 2.0 + np.arange(len(load_trace(fast).rounds)), {"system": {}})
    assert score(load_trace(slow), sweep.select) == (0, 1.0) and score(load_trace(fast), sweep.select) == (0, 2.0)
    assert main(["sweep", "best", str(path), "--x", "sim_time", "--plot", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "stepsize.factor=0.25" in out and "1 s to 1e+30" in out and os.path.getsize(tmp_path / "b.png") > 5000
