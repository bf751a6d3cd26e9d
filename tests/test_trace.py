"""Trace schema 2: provenance, compression and units, dimension scales that xarray reads, the HDF5 1.10
format bound (h5dump 1.10 opens the file), the tables reserved for later runners, and schema 1 files."""

import json
import os
import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from helpers import REPO, config_table, mpiclip, write_toml

from mpiclip import __version__, session
from mpiclip import config as cfg
from mpiclip import trace as trace_module
from mpiclip.comm import SerialComm
from mpiclip.compressors import ENCODINGS
from mpiclip.runners.asynchronous import EVENTS
from mpiclip.runners.federated import CLIENTS
from mpiclip.trace import TraceWriter, load_trace

SCHEMA1 = os.path.join(REPO, "tests", "data", "schema1.h5")  # written by mpiclip 0.1.0 before schema 2


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """A finished schema-2 trace of a small run, and its config."""
    table = config_table(run={"name": "s2", "n_workers": 4, "rounds": 25, "eval_every": 2})
    table["output"] = {"path": str(tmp_path_factory.mktemp("trace") / "{name}.h5")}
    config = cfg.validate(table)
    (prepared,) = session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
    return session.execute(prepared).path, config


def datasets(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
        yield from out.items()


def test_provenance_and_identity(trace):
    path, config = trace
    tr = load_trace(path)
    a = tr.attrs
    assert tr.schema == 2 and a["schema_version"] == 2 and a["runner"] == "synchronous"
    assert re.fullmatch(r"[0-9a-f]{32}", a["run_id"])
    assert a["config_hash"] == config.hash and re.fullmatch(r"[0-9a-f]{64}", a["config_hash"])
    assert cfg.validate(cfg.tomllib.loads(a["config_toml"])) == config  # the TOML text is the whole config
    assert json.loads(a["config"]) == config.as_table()
    p = tr.provenance
    assert p["packages"]["mpiclip"] == __version__ and p["packages"]["numpy"] == np.__version__
    assert p["packages"]["hdf5"] == h5py.version.hdf5_version and p["mpi_library"] == "none (serial)"
    assert re.fullmatch(r"[0-9a-f]{40}", p["git"]["commit"]) and isinstance(p["git"]["dirty"], bool)  # this checkout
    assert p["hostnames"] and isinstance(p["argv"], list) and p["slurm"] == {}


def test_slurm_ids_are_recorded(tmp_path):
    table = config_table(run={"name": "slurm", "n_workers": 2, "rounds": 3})
    table["output"] = {"path": str(tmp_path / "{name}.h5")}
    env = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2"}
    proc = mpiclip(["run", write_toml(str(tmp_path / "c.toml"), table), "-q"], env=env)
    assert proc.returncode == 0, proc.stderr
    slurm = load_trace(str(tmp_path / "slurm.h5")).provenance["slurm"]
    assert {k: slurm[k] for k in env} == env


def test_every_dataset_has_units_and_every_array_is_chunked_and_compressed(trace):
    path, _ = trace
    seen = 0
    for name, ds in datasets(path):
        assert "units" in ds.attrs, name
        if ds.ndim:
            assert ds.chunks is not None and ds.compression == "gzip" and ds.shuffle, name
            seen += 1
    assert seen >= 28  # every per-row dataset, the partition, x0, x_final, ...


@pytest.mark.parametrize("kind, compressed", [("random", False), ("zeros", True), ("mostly-zeros", True)])
def test_a_large_array_is_compressed_only_if_gzip_shrinks_it(tmp_path, kind, compressed):
    """A random x⁰ of d > 2^20 values is stored plain (gzip would spend seconds for 10 %); arrays gzip shrinks
    are compressed; small arrays always are. The values read back are the values written."""
    n = (1 << 20) + 7
    data = {"random": np.random.default_rng(0).standard_normal(n), "zeros": np.zeros(n)}.get(kind)
    if data is None:
        data = np.zeros(n)
        data[::1000] = 1.5
    with h5py.File(tmp_path / "a.h5", "w") as f:
        big = trace_module._array_dataset(f, "big", data)
        small = trace_module._array_dataset(f, "small", data[:1000])
        assert (big.compression == "gzip") == compressed and small.compression == "gzip"
        assert big.chunks is not None
    with h5py.File(tmp_path / "a.h5", "r") as f:
        np.testing.assert_array_equal(f["big"][()], data)


def test_row_index_is_a_dimension_scale(trace):
    path, _ = trace
    with h5py.File(path) as f:
        assert f["rounds"].is_scale and f["worker"].is_scale
        for name in ("loss", "grad_norm_sq", "time", "metrics/accuracy", "bits/up/paper", "workers/ef_error"):
            assert f[name].dims[0][0] == f["rounds"], name
        assert f["bits/up/paper"].dims[1][0] == f["worker"]
        assert list(f["rounds"][()]) == list(range(0, 25, 2)) + [25]


def test_xarray_reads_the_rows(trace):
    import xarray as xr  # with h5netcdf, in the test extra

    path, _ = trace
    tr = load_trace(path)
    with xr.open_dataset(path, engine="h5netcdf", phony_dims="access") as ds:
        assert ds["loss"].dims == ("rounds",)
        np.testing.assert_array_equal(ds["rounds"].values, tr.rounds)
        np.testing.assert_array_equal(ds["grad_norm_sq"].values, tr.grad_norm_sq)
        assert ds["time"].attrs["units"] == "s"
    with xr.open_dataset(path, engine="h5netcdf", phony_dims="access", group="workers") as ds:
        assert ds["ef_error"].dims == ("rounds", "worker")
        np.testing.assert_array_equal(ds["ef_error"].values, tr.workers["ef_error"])
    with xr.open_dataset(path, engine="h5netcdf", phony_dims="access", group="bits/up") as ds:
        np.testing.assert_array_equal(ds["paper"].values, tr.bits_up["paper"])
    frame = xr.open_dataset(path, engine="h5netcdf", phony_dims="access")[["loss", "grad_norm_sq"]].to_dataframe()
    assert list(frame.index) == list(tr.rounds)


def test_the_hdf5_1_10_format_bound(trace):
    """h5dump 1.10 opens the file (when h5dump is on the machine; CI installs Debian's 1.10.8); otherwise the
    file's superblock and a reopening with the 1.10 upper bound stand in for it."""
    path, _ = trace
    h5dump = shutil.which("h5dump")
    if h5dump:
        version = subprocess.run([h5dump, "--version"], capture_output=True, text=True).stdout
        proc = subprocess.run([h5dump, "-H", path], capture_output=True, text=True)
        assert proc.returncode == 0, (version, proc.stderr)
        assert "DATASET \"loss\"" in proc.stdout
    with h5py.File(path, "r") as f:
        assert f.id.get_create_plist().get_version()[0] <= 3  # superblock versions of HDF5 1.10
    copy = path + ".copy.h5"
    shutil.copy(path, copy)
    with h5py.File(copy, "r+", libver=("earliest", "v110")) as f:  # refused if the file needs a newer format
        f.attrs["touched"] = True


def test_a_schema_1_trace_still_reads():
    tr = load_trace(SCHEMA1)
    assert tr.schema == 1 and tr.status == "completed" and tr.provenance == {}
    assert list(tr.rounds) == [0, 4, 8, 12] and tr.bits_up["paper"].shape == (4, 3)
    # Top-1, 32 bits a round; round 0 sent the full gradient (d = 6), kept apart as the initial round
    assert list(tr.bits_per_worker("paper")) == [0, 3 * 32, 7 * 32, 11 * 32]
    assert list(tr.bits_initial["paper"]) == [6 * 32] * 3
    assert tr.workers["ef_error"].shape == (4, 3) and tr.tables["events"] == {}
    assert "accuracy" in tr.metrics
    info = mpiclip(["info", SCHEMA1])
    assert info.returncode == 0 and "status: completed" in info.stdout


def test_reserved_tables_fill_in_and_read_back(tmp_path):
    """What the asynchronous and federated runners will write: /events/, /clients, the federated scalars."""
    path = str(tmp_path / "t.h5")
    writer = TraceWriter.create(path, {"name": "t", "run_id": "r1"}, 3, ("clipped",), {"x0": np.zeros(2)},
                                round_metrics=("test_accuracy", "spread"), tables=((EVENTS, 0), (CLIENTS, 2)))
    k = 5
    writer.append({"rounds": np.arange(k), "time": np.zeros(k), "loss": np.ones(k), "grad_norm_sq": np.ones(k),
                   "metrics/test_accuracy": np.linspace(0, 1, k), "metrics/spread": np.full(k, 2.0)},
                  np.ones((k, 3, len(ENCODINGS))), np.zeros((k, len(ENCODINGS))), np.zeros((k, 3, 1)))
    events = {c: np.arange(4).astype(dt) for c, dt in EVENTS.columns}
    events.update({f"bits/{e}": np.full(4, 32.0) for e in ENCODINGS})
    writer.append_table("events", events)
    writer.append_table("clients", {"": np.array([[0, 2], [1, 2], [0, 1]])})
    writer.finish("completed", {}, {})
    tr = load_trace(path)
    np.testing.assert_array_equal(tr.metrics["test_accuracy"], np.linspace(0, 1, k))
    np.testing.assert_array_equal(tr.metrics["spread"], 2.0)
    assert set(tr.tables["events"]) == {c for c, _ in EVENTS.columns} | {f"bits/{e}" for e in ENCODINGS}
    np.testing.assert_array_equal(tr.tables["events"]["delay"], np.arange(4))
    with h5py.File(path) as f:
        assert "test_accuracy" in f and "metrics/test_accuracy" not in f  # docs/design.md §5: at the root
        assert f["events/worker"].dims[0][0] == f["events/update"] and f["clients"].shape == (3, 2)
    # a resumed run cuts every table back to what its checkpoint counted
    again = TraceWriter.reopen(path, "r1", 3, 3, ("clipped",), {}, counts={"events/update": 2, "clients": 1})
    again.finish("completed", {}, {})
    tr = load_trace(path)
    assert len(tr.rounds) == 3 and len(tr.tables["events"]["sim_time"]) == 2 and len(tr.tables["events"]["bits/paper"]) == 2
    with h5py.File(path) as f:
        assert f["clients"].shape == (1, 2) and f["events/worker"].dims[0][0] == f["events/update"]
    with pytest.raises(ValueError, match="belongs to run 'r1', not 'r2'"):
        TraceWriter.reopen(path, "r2", 3, 3, ("clipped",), {})
