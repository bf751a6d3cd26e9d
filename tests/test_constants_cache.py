"""The smoothness constants cache: a second run on the same data reads the constants instead of computing them,
to the same bits; entries are keyed by everything the constants depend on, and a bad entry is never trusted."""

import json
import os

import h5py
import numpy as np
import pytest
from helpers import config_table

from mpiclip import config as cfg
from mpiclip import constants_cache, session
from mpiclip.comm import SerialComm
from mpiclip.problems.logreg import LogisticRegression


def run(tmp_path, name, overrides=()):
    table = config_table()
    table.setdefault("output", {})["path"] = str(tmp_path / f"{name}.h5")
    config = cfg.validate(cfg.apply_overrides(table, [cfg.parse_override(o) for o in overrides]))
    (prepared,) = session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
    return session.execute(prepared).path


def entries(cache):
    folder = os.path.join(cache, "constants")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def constants(path):
    with h5py.File(path) as f:
        return [f.attrs[k] for k in ("L", "L_tilde", "gamma")], f["loss"][()]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = str(tmp_path / "cache")
    monkeypatch.setenv("MPICLIP_CACHE", folder)
    return folder


def refuse(monkeypatch):
    def computed(self, reduce):
        raise AssertionError("the constants were computed, not read")

    monkeypatch.setattr(LogisticRegression, "smoothness", computed)


def test_a_second_run_reads_the_constants_and_writes_the_same_trace(tmp_path, cache, monkeypatch):
    first = constants(run(tmp_path, "first"))
    assert len(entries(cache)) == 1
    refuse(monkeypatch)
    second = constants(run(tmp_path, "second"))
    assert first[0] == second[0] and np.array_equal(first[1], second[1])


@pytest.mark.parametrize("change", ["data.split='iid'", "data.seed=3", "run.n_workers=5", "problem.lam=0.2"])
def test_what_the_constants_depend_on_names_another_entry(tmp_path, cache, change):
    run(tmp_path, "a")
    run(tmp_path, "b", [change])
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("bad", ["{", '{"L": 1.0}', '{"L": 1.0, "L_workers": [1.0], "mu": null, "f_star": null}',
                                 '{"L": NaN, "L_workers": [1.0, 1.0, 1.0, 1.0], "mu": null, "f_star": null}',
                                 '{"L": 1, "L_workers": [1.0, 1.0, 1.0, 1.0], "mu": null, "f_star": null}'],
                         ids=["not JSON", "fields missing", "wrong worker count", "not finite", "not a float"])
def test_a_bad_entry_is_ignored_and_written_again(tmp_path, cache, bad):
    good = constants(run(tmp_path, "good"))
    (name,) = entries(cache)
    path = os.path.join(cache, "constants", name)
    with open(path, "w") as f:
        f.write(bad)
    again = constants(run(tmp_path, "again"))
    assert good[0] == again[0]
    with open(path) as f:
        assert json.load(f)["L"] == good[0][0]


def test_off_writes_nothing_and_computes(tmp_path, monkeypatch):
    monkeypatch.setenv("MPICLIP_CACHE", "off")
    assert constants_cache.key("abc", None, LogisticRegression, None, 4) is None
    run(tmp_path, "off")
    assert not os.path.exists(tmp_path / "constants")


def test_an_unwritable_cache_only_costs_the_computation(tmp_path, monkeypatch):
    monkeypatch.setenv("MPICLIP_CACHE", "off")
    computed = constants(run(tmp_path, "computed"))
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the cache's folder would be")
    monkeypatch.setenv("MPICLIP_CACHE", str(blocker))
    for name in ("x", "y"):
        got = constants(run(tmp_path, name))
        assert got[0] == computed[0] and np.array_equal(got[1], computed[1])
    assert blocker.is_file() and not list(tmp_path.glob("**/*.part"))
