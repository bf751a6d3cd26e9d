"""mpiclip.results and the columnar load_trace: a few columns read equal the same columns of the whole trace; a
missing, damaged or running trace reads as before; the runs of a sweep and their config; the selection rule
(ties to the earlier run, a score that is not finite never wins, groups, the fallback), which `sweep best` and
frames.best follow."""

import math
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from helpers import DAMAGE, METHOD_CASES, config_table, damage

from mpiclip import config as cfg
from mpiclip import frames, results, session
from mpiclip.comm.serial import SerialComm
from mpiclip.sweep import best_runs, load_sweep, score
from mpiclip.sweep_run import run_sweep
from mpiclip.trace import load_trace

SWEEP = """
[sweep]
name = "rule"
base = "synthetic-logreg"
output = "{out}/{{name}}"
[set]
"run.rounds" = 30
"run.n_workers" = 4
"data.n_samples" = 200
[[grid]]                       # the same run twice (flush_rows does not change a trajectory): a tie
"method.name" = ["ef21"]
"output.flush_rows" = [64, 32]
[[grid]]                       # a step size that blows up, then a small one
"method.name" = ["ef14"]
"problem.name" = ["least_squares"]
"data.labels" = ["raw"]
"stepsize.rule" = ["constant"]
"stepsize.value" = [1e9, 1e-3]
[[grid]]
"method.name" = ["gd"]
"compressor.name" = ["identity"]
"stepsize.factor" = [0.5, 1.0]
[select]
group = ["method.name"]
criterion = "final"
"""


def run(folder, name, **sections):
    table = config_table(run={"name": name, "n_workers": 4, "rounds": 12, "eval_every": 2}, **sections)
    table["output"] = {"path": str(folder / "{name}.h5")}
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    return session.execute(prepared).path


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """A synchronous, an asynchronous and a federated trace: every group and table of the format has data."""
    folder = tmp_path_factory.mktemp("traces")
    return {name: run(folder, name, **METHOD_CASES[name]) for name in ("clip21_gd", "asgd", "fedga")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "s.toml").write_text(SWEEP.format(out=root / "res"))
    sweep = load_sweep(str(root / "s.toml"))
    summary, stopped = run_sweep(list(sweep.runs), SerialComm(), say=lambda *a: None)
    assert stopped is None and summary == {"completed": 5, "skipped": 0, "failed": 1}
    return sweep


def datasets(path) -> list:
    names = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def arrays(tr) -> dict:
    """Every array of a Trace, by a name of its own."""
    out = {name: getattr(tr, name) for name in ("rounds", "time", "loss", "grad_norm_sq")}
    for field in ("bits_up", "bits_down", "bits_initial", "bits_initial_down", "workers", "metrics"):
        out.update({f"{field}/{k}": np.asarray(v) for k, v in getattr(tr, field).items()})
    for table, value in tr.tables.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        out.update({f"tables/{table}/{k}": v for k, v in items if np.size(v)})
    return {k: v for k, v in out.items() if np.size(v)}


# -- the reader ----------------------------------------------------------------------------------------------------
def test_each_dataset_alone_is_that_array_of_the_whole_trace_and_nothing_else(traces):
    for path in traces.values():
        whole = arrays(load_trace(path))
        seen = set()
        for name in datasets(path):
            part = arrays(load_trace(path, columns=[name]))
            assert len(part) <= 1, (name, list(part))  # one dataset is at most one array of the Trace
            for key, value in part.items():
                np.testing.assert_array_equal(value, whole[key], err_msg=name)
                seen.add(key)
        assert seen == set(whole)  # every array of the whole trace is some dataset's


def test_groups_and_lists_of_columns_equal_the_whole_trace(traces):
    path = traces["asgd"]
    whole = load_trace(path)
    few = load_trace(path, columns=("loss", "/bits/up/paper", "sim_time", "events", "workers"))
    np.testing.assert_array_equal(few.loss, whole.loss)
    assert len(few.rounds) == len(few.grad_norm_sq) == len(few.time) == 0 and few.bits_down == {}
    assert set(few.bits_up) == {"paper"} and np.array_equal(few.bits_per_worker("paper"), whole.bits_per_worker("paper"))
    assert set(few.metrics) == {"sim_time"} and set(few.tables["events"]) == set(whole.tables["events"]) > {"bits/paper"}
    assert set(few.workers) == set(whole.workers) and few.tables["clients"].shape == (0, 0)
    assert set(few.attrs) == set(whole.attrs) and few.config == whole.config  # every attribute unless told
    for k in whole.attrs:
        np.testing.assert_equal(few.attrs[k], whole.attrs[k])
    fed = load_trace(traces["fedga"], columns=["clients", "test_accuracy"], attrs=("name", "nosuch"))
    np.testing.assert_array_equal(fed.tables["clients"], load_trace(traces["fedga"]).tables["clients"])
    assert set(fed.attrs) == {"status", "name"} and fed.config == {} and fed.status == "completed"
    nothing = load_trace(path, columns=(), attrs=())
    assert arrays(nothing) == {} and nothing.attrs == {"status": "completed"} and nothing.tables["events"] == {}


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_or_missing_trace_is_an_oserror_with_columns_too(traces, tmp_path, how):
    path = tmp_path / "t.h5"
    shutil.copy(traces["clip21_gd"], path)
    damage(path, how)
    for columns in (None, ("loss",), ()):
        with pytest.raises(OSError):
            load_trace(str(path), columns, attrs=None if columns is None else ())
    with pytest.raises(OSError):
        load_trace(str(tmp_path / "missing.h5"), ("loss",), ())


def test_a_running_trace_without_its_writer_reads_as_writer_lost_with_columns_too(traces, tmp_path):
    path = tmp_path / "t.h5"
    shutil.copy(traces["clip21_gd"], path)
    with h5py.File(path, "a") as f:
        f.attrs["status"] = "running"
    for tr in (load_trace(str(path)), load_trace(str(path), ("loss",), ())):
        assert tr.status.startswith("failed: writer lost"), tr.status
        assert len(tr.loss) == len(load_trace(traces["clip21_gd"]).loss)


# -- runs of a sweep -----------------------------------------------------------------------------------------------
def test_the_runs_of_a_sweep_in_sweep_order_with_their_config(sweep):
    done = results.runs(sweep, ("grad_norm_sq",), attrs=())
    assert [r.index for r in done] == [0, 1, 3, 4, 5]  # run 2 (γ = 1e9) failed
    assert [r.label for r in done] == [p.label for p in sweep.runs if p.index != 2]
    ef14 = done[2]
    assert ef14.method == "ef14" and ef14.gamma == 1e-3 and ef14.values["stepsize.value"] == 1e-3
    assert list(ef14.values) == ["method.name", "problem.name", "data.labels", "stepsize.rule", "stepsize.value"]
    assert ef14.value("stepsize.rule") == "constant" and ef14.value("data.nosuch") == "-" and ef14.seed == 0
    assert done[0].param("init") == "full" and math.isnan(ef14.param("init")) and ef14.param("init", "none") == "none"
    assert ef14.section("async") is None and ef14.section("run") is None  # a runner's section, not any table
    assert ef14.config is sweep.runs[3].config and ef14.select is sweep.select and ef14.completed
    assert len(ef14.trace.grad_norm_sq) and len(ef14.trace.loss) == 0
    every = results.runs(sweep, statuses=None)
    assert [r.index for r in every] == list(range(6)) and every[2].status.startswith("failed: diverged")


def test_missing_and_running_traces_are_left_out_a_damaged_one_is_unreadable_and_sweep_best_goes_on(sweep, tmp_path):
    copy = tmp_path / "res"
    shutil.copytree(sweep.runs[0].config.trace_path.rsplit("/", 2)[0], copy)
    moved = load_sweep_copy(sweep, copy)
    damage(moved.runs[0].config.trace_path, "header")
    (copy / "rule" / f"{moved.runs[4].label}.h5").unlink()
    running = moved.runs[5].config.trace_path
    with h5py.File(running, "a") as f:
        f.attrs["status"] = "running"
    for left in copy.glob("rule/*.lock"):  # no writer holds it: a killed run
        left.unlink()
    assert [r.index for r in results.runs(moved)] == [1, 3]
    assert [(r.index, r.status.split(":")[0]) for r in results.runs(moved, statuses=None)] == [
        (0, "unreadable"), (1, "completed"), (2, "failed"), (3, "completed"), (5, "failed")]  # a writer lost is a failure
    best = {b.group: b for b in best_runs(moved)}  # the damaged trace cannot win, and is named; not an exception
    assert best["ef21"].run.index == 1 and best["gd"].run is None and best["gd"].failed == 1 and best["gd"].tried == 2
    assert [label for label, _ in best["ef21"].unreadable] == [moved.runs[0].label] and not best["gd"].unreadable


def load_sweep_copy(sweep, folder):
    text = open(sweep.path).read().replace(str(sweep.output).rsplit("/", 1)[0], str(folder))
    path = folder / "s.toml"
    path.write_text(text)
    return load_sweep(str(path))


# -- the selection rule --------------------------------------------------------------------------------------------
def test_ties_go_to_the_earlier_item_and_groups_keep_their_first_order():
    items = [("b", 3.0, "b1"), ("a", 2.0, "a1"), ("b", 1.0, "b2"), ("a", 2.0, "a2"), ("b", 1.0, "b3")]
    best = results.select(items, lambda i: i[0], lambda i: i[1])
    assert {k: v[2] for k, v in best.items()} == {"b": "b2", "a": "a1"} and list(best) == ["b", "a"]
    reverse = results.select(items[::-1], lambda i: i[0], lambda i: i[1])  # the order given decides ties
    assert {k: v[2] for k, v in reverse.items()} == {"b": "b3", "a": "a2"}
    larger = results.select(items, lambda i: i[0], lambda i: -i[1])  # larger is better: negate
    assert {k: v[2] for k, v in larger.items()} == {"b": "b1", "a": "a1"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, (1, math.nan), (2, math.inf)])
def test_a_score_that_is_not_finite_never_wins(bad):
    good = (1, 5.0) if isinstance(bad, tuple) else 5.0
    items = [("x", bad), ("x", good), ("y", bad), ("y", bad)]
    best = results.select(items, lambda i: i[0], lambda i: i[1])
    assert best == {"x": ("x", good)}  # -inf does not win either, and "y" has no entry
    fallback = results.select(items, lambda i: i[0], lambda i: i[1], fallback=True)
    assert fallback["x"] == ("x", good) and fallback["y"] is items[2]  # the first of "y"
    assert results.finite((0, 3.0)) and not results.finite(bad)


def test_sweep_best_is_the_rule(sweep):
    best = {b.group: b for b in best_runs(sweep)}
    assert list(best) == ["ef21", "ef14", "gd"]
    first, second = (score(r.trace, sweep.select) for r in results.runs(sweep)[:2])
    assert first == second and best["ef21"].run.index == 0  # a tie: the earlier run
    assert best["ef14"].run.index == 3 and best["ef14"].failed == 1 and best["ef14"].tried == 2
    gd = [r for r in results.runs(sweep) if r.method == "gd"]
    assert best["gd"].run.index == min(gd, key=lambda r: (score(r.trace, sweep.select), r.index)).index


def test_frames_best_follows_the_rule():
    frame = pd.DataFrame({"method.name": ["a", "a", "a", "b", "b", np.nan, np.nan, "c"],
                          "name": ["a1", "a2", "a3", "b1", "b2", "n1", "n2", "c1"],
                          "grad_norm_sq": [2.0, 1.0, 1.0, -math.inf, 3.0, 4.0, 0.5, math.nan],
                          "failed": [False, False, False, False, False, False, True, False]})
    best = frames.best(frame, by=["method.name"])
    assert list(best["name"]) == ["a2", "b2", "n1"]  # a tie to the earlier row; inf never wins; NaN keys one group
    frame.loc[3, "grad_norm_sq"] = math.inf
    top = frames.best(frame, by=["method.name"], larger_is_better=True)
    assert list(top["name"]) == ["a1", "b2", "n1"]
