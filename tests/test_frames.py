"""mpiclip.frames: traces as DataFrames, checked against the traces themselves."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import METHOD_CASES, config_table

from mpiclip import config as cfg
from mpiclip import frames, session
from mpiclip.comm.serial import SerialComm
from mpiclip.trace import load_trace


def run(folder, name, rounds=20, **sections):
    table = config_table(run={"name": name, "n_workers": 4, "rounds": rounds, "eval_every": 2}, **sections)
    table["output"] = {"path": str(folder / "{name}.h5")}
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    return session.execute(prepared)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("traces")
    for k in (1, 2, 3):
        run(folder, f"k{k}", compressor={"name": "topk", "k": k})
    run(folder, "diverged", rounds=5000, stepsize={"rule": "constant", "value": 1e8}, problem={"name": "least_squares"},
        method={"name": "gd"}, compressor={"name": "identity"},
        data={"source": "synthetic", "n_samples": 200, "n_features": 12, "labels": "raw"})
    run(folder, "asgd", **METHOD_CASES["asgd"])
    (folder / "damaged.h5").write_bytes(b"not an HDF5 file")
    (folder / "k1.ckpt.h5").write_bytes(b"a checkpoint is not a trace")
    return folder


def test_runs_has_one_row_per_trace_with_its_final_values_and_config(folder):
    table = frames.runs(folder, levels=[1e-2, 1e-30])
    assert list(table["name"]) == ["asgd", "damaged", "diverged", "k1", "k2", "k3"]
    assert table["failed"].dtype == bool and table["rounds"].dtype == "Int64" and table["loss"].dtype == np.float64
    by_name = table.set_index("name")
    assert list(by_name.loc[["asgd", "k1", "k2", "k3"], "failed"]) == [False] * 4
    assert by_name.loc["damaged", "status"] == "unreadable" and by_name.loc["damaged", "failed"]
    assert by_name.loc["diverged", "status"] == "failed" and by_name.loc["diverged", "status_detail"].startswith(
        "failed: diverged")
    for name in ("k1", "k2", "k3", "asgd"):
        tr = load_trace(str(folder / f"{name}.h5"))
        row = by_name.loc[name]
        assert row["loss"] == tr.loss[-1] and row["grad_norm_sq"] == tr.grad_norm_sq[-1]
        assert row["grad_norm_sq_min"] == tr.grad_norm_sq.min() and row["rounds"] == tr.rounds[-1]
        assert row["bits_per_worker"] == tr.bits_per_worker("paper")[-1]
        assert row["method.name"] == json.loads(tr.attrs["config"])["method"]["name"]
        reached = np.flatnonzero(tr.grad_norm_sq <= 1e-2)
        expected = tr.bits_per_worker("paper")[reached[0]] if len(reached) else np.nan
        assert row["bits_to_0.01"] == expected or (np.isnan(expected) and np.isnan(row["bits_to_0.01"]))
    assert table["bits_to_1e-30"].isna().all()
    assert list(by_name.loc[["k1", "k2", "k3"], "compressor.k"]) == [1, 2, 3]
    coo = frames.runs(folder / "k2.h5", encoding="coo32")
    assert coo["bits_per_worker"][0] == load_trace(str(folder / "k2.h5")).bits_per_worker("coo32")[-1]


def test_rounds_is_the_long_form_of_every_recorded_row(folder):
    paths = [folder / f"k{k}.h5" for k in (1, 2)]
    long = frames.rounds(paths)
    traces = [load_trace(str(p)) for p in paths]
    assert len(long) == sum(len(t.rounds) for t in traces)
    for tr in traces:
        part = long[long["run"] == tr.label]
        np.testing.assert_array_equal(part["round"], tr.rounds)
        np.testing.assert_array_equal(part["grad_norm_sq"], tr.grad_norm_sq)
        np.testing.assert_array_equal(part["bits_per_worker"], tr.bits_per_worker())
    assert long["round"].dtype == np.int64


def test_events_of_asynchronous_runs_only(folder):
    ev = frames.events(folder / "asgd.h5")
    tr = load_trace(str(folder / "asgd.h5"))
    assert len(ev) == len(next(iter(tr.tables["events"].values()))) > 0 and set(tr.tables["events"]) <= set(ev.columns)
    assert frames.events([folder / "k1.h5"]).empty


def test_best_picks_the_best_completed_run_per_group(folder):
    table = frames.runs(folder)
    winner = frames.best(table, by=["method.name"])
    ef21 = table[(table["method.name"] == "ef21") & ~table["failed"]]
    assert list(winner["method.name"]) == sorted(table.loc[~table["failed"], "method.name"].unique())
    row = winner[winner["method.name"] == "ef21"].iloc[0]
    assert row["grad_norm_sq"] == ef21["grad_norm_sq"].min() and row["name"] in {"k1", "k2", "k3"}
    assert isinstance(winner, pd.DataFrame) and not winner["failed"].any()
