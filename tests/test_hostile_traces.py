"""Issue 28 item 7: every reader holds a trace to the trace contract (mpiclip/trace_contract.py). One hostile trace of
each kind, made from a real small trace by h5py edits, is one clear error naming the file and the first bad dataset
or attribute (`mpiclip info FILE`: one line, exit 2); `info DIR`, frames.runs, results.runs, `sweep list` and
`sweep best` list it as unreadable with its reason and list every good trace beside it. A 50 MB attribute is cut
in what `info` prints; a live writer's columns a row apart read as their common rows."""

import os
import signal
import subprocess
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest
from helpers import REPO

from mpiclip import frames, results
from mpiclip.cli import main
from mpiclip.comm.serial import SerialComm
from mpiclip.sweep import best_runs, load_sweep
from mpiclip.sweep_run import run_sweep
from mpiclip.trace import TraceError, load_trace, trace_status

ROWS, WORKERS = 6, 2  # of every run of the sweep: rounds 0, 2, ..., 10 recorded


def replaced(name, data):
    def edit(f):
        del f[name]
        f[name] = data
    return edit


def replaced_by_group(name):
    def edit(f):
        del f[name]
        f.create_group(name)
    return edit


def deleted(name):
    return lambda f: f.__delitem__(name)


def attribute(name, value):
    return lambda f: f.attrs.__setitem__(name, value)


def text_loss(f):
    del f["loss"]
    f.create_dataset("loss", data=["0.5"] * ROWS, dtype=h5py.string_dtype())


def ragged_bits(f):
    del f["bits/down/paper"]
    values = np.empty(ROWS, dtype=object)
    values[:] = [np.ones(2)] * ROWS
    f.create_dataset("bits/down/paper", data=values, dtype=h5py.vlen_dtype("f8"))


# kind -> (the edit, what the one-line reason says)
HOSTILE = {
    "bytes": (replaced("time", np.array([b"1.5"] * ROWS)), "/time: byte strings (|S3), where a trace holds real numbers"),
    "complex": (replaced("grad_norm_sq", np.ones(ROWS, complex)), "/grad_norm_sq: complex numbers (complex128), where"),
    "vlen-text": (text_loss, "/loss: variable-length values (text, sequences or references), where a trace holds real"),
    "vlen-floats": (ragged_bits, "/bits/down/paper: variable-length values"),
    "records": (replaced("rounds", np.zeros(ROWS, dtype=[("t", "i8"), ("x", "f8")])), "/rounds: records or opaque bytes"),
    "float-rounds": (replaced("rounds", np.arange(ROWS) * 2.0), "/rounds: real numbers (float64), where a trace holds integers"),
    "2-d": (replaced("loss", np.zeros((ROWS, 2))), "/loss: 2-d of shape (6, 2), where a trace holds one value per row (1-d)"),
    "1-d-bits": (replaced("bits/up/coo32", np.zeros(ROWS)), "/bits/up/coo32: 1-d of shape (6,), where a trace holds a row"),
    "short": (lambda f: f["loss"].resize((ROWS - 1,)), "/loss: 5 rows, where /rounds has 6"),
    "long-metric": (replaced("metrics/accuracy", np.zeros(ROWS + 3)), "/metrics/accuracy: 9 rows, where /rounds has 6"),
    "workers": (replaced("bits/up/paper", np.zeros((ROWS, WORKERS + 1))),
                "/bits/up/paper: 3 workers, where attribute n_workers says 2"),
    "missing": (deleted("grad_norm_sq"), "/grad_norm_sq: missing"),
    "group": (replaced_by_group("time"), "/time: a group, where a trace holds a dataset"),
    "dataset": (replaced("bits/up", np.zeros(3)), "/bits/up: a dataset, where a trace holds a group"),
    "empty-dataspace": (replaced("loss", h5py.Empty("f8")), "/loss: an empty dataspace"),
    "no-status": (lambda f: f.attrs.__delitem__("status"), "attribute status: missing"),
    "status-number": (attribute("status", 3), "attribute status = 3: not text"),
    "gamma-text": (attribute("gamma", "fast"), "attribute gamma = 'fast': not a real number"),
    "workers-text": (attribute("n_workers", "two"), "attribute n_workers = 'two': not an integer"),
    "config-not-json": (attribute("config", "{method = 'ef21'}"), "attribute config = \"{method = 'ef21'}\": not JSON ("),
    "config-list": (attribute("config", "[1, 2]"), "attribute config = '[1, 2]': not a JSON object"),
    "empty-hdf5": (None, "an empty HDF5 file (no attributes, no datasets): not a trace"),
}
GOOD = ("good", "big-attribute")
BIG = 50_000_000  # characters of the big attribute


def spoil(path, kind) -> None:
    edit, _ = HOSTILE[kind]
    if edit is None:
        h5py.File(path, "w").close()
        return
    with h5py.File(path, "a", libver=("v110", "v110")) as f:
        edit(f)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep of one small run per kind (grouped by its seed, so each run is its own group), its traces spoiled."""
    root = tmp_path_factory.mktemp("hostile")
    kinds = list(GOOD) + list(HOSTILE)
    (root / "s.toml").write_text(textwrap.dedent(f"""
        [sweep]
        name = "hostile"
        base = "synthetic-logreg"
        output = "{root}/{{name}}"
        [set]
        "run.rounds" = 10
        "run.eval_every" = 2
        "run.n_workers" = {WORKERS}
        "data.n_samples" = 40
        "data.n_features" = 5
        [[grid]]
        "run.seed" = {list(range(len(kinds)))}
        [select]
        group = ["run.seed"]
        """))
    sweep = load_sweep(str(root / "s.toml"))
    summary, _ = run_sweep(list(sweep.runs), SerialComm(), say=lambda *a: None)
    assert summary["completed"] == len(kinds)
    paths = {kind: run.config.trace_path for kind, run in zip(kinds, sweep.runs)}
    assert len(load_trace(paths["good"]).rounds) == ROWS
    for kind in HOSTILE:
        spoil(paths[kind], kind)
    with h5py.File(paths["big-attribute"], "a", libver=("v110", "v110")) as f:
        f.attrs["command"] = "x" * BIG
    return sweep, paths, kinds


def label(path) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_trace_is_one_error_naming_the_file_and_what_is_wrong(sweep, kind, capsys):
    _, paths, _ = sweep
    path = paths[kind]
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert caught.value.reason.startswith(HOSTILE[kind][1]) and str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)
    assert trace_status(path) == f"unreadable: {caught.value.reason}"  # sweeps see what readers see
    assert main(["info", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        f"mpiclip: error: trace = '{path}': not a readable HDF5 trace ({caught.value.reason})"]


def test_info_of_the_directory_lists_every_good_trace_and_marks_each_hostile_one(sweep, capsys):
    _, paths, kinds = sweep
    folder = os.path.dirname(paths["good"])
    assert main(["info", folder]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    rows = {line.split()[0]: line.split()[3] for line in lines[2:2 + len(kinds)]}
    assert rows == {label(paths[k]): "completed" if k in GOOD else "unreadable" for k in kinds} and not out.err
    for kind in HOSTILE:
        assert f"{paths[kind]}: unreadable: {HOSTILE[kind][1]}" in "\n".join(lines[2 + len(kinds):])
    assert len(out.out) < 20_000  # the 50 MB attribute is not in a comparison


def test_info_cuts_a_50_MB_attribute_and_says_its_size(sweep, capsys):
    _, paths, _ = sweep
    assert main(["info", paths["big-attribute"]]) == 0
    out = capsys.readouterr().out
    (command,) = [line for line in out.splitlines() if line.startswith("command")]
    assert command.endswith(f"… (cut: {BIG} characters in all)") and len(out) < 5000


def test_frames_runs_has_an_unreadable_row_per_hostile_trace_and_every_good_one(sweep):
    _, paths, kinds = sweep
    table = frames.runs(os.path.dirname(paths["good"])).set_index("path")
    assert len(table) == len(kinds)
    for kind in kinds:
        row = table.loc[paths[kind]]
        if kind in GOOD:
            assert row["status"] == "completed" and not row["failed"] and row["rows"] == ROWS
        else:
            assert row["status"] == "unreadable" and row["failed"]
            assert row["status_detail"].startswith(f"unreadable: {HOSTILE[kind][1]}")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        long = frames.rounds(os.path.dirname(paths["good"]))
    assert sorted(set(long["path"])) == sorted(paths[k] for k in GOOD) and len(long) == ROWS * len(GOOD)
    assert sorted(str(w.message).split()[3].rstrip(":") for w in said) == sorted(paths[k] for k in HOSTILE)


def test_results_runs_gives_each_hostile_trace_as_unreadable_and_every_good_one(sweep):
    s, paths, kinds = sweep
    every = results.runs(s, statuses=None)
    assert [r.index for r in every] == list(range(len(kinds)))
    for kind, run in zip(kinds, every):
        if kind in GOOD:
            assert run.completed and len(run.trace.rounds) == ROWS
        else:
            assert run.trace is None and run.status.startswith(f"unreadable: {HOSTILE[kind][1]}")
    assert [r.index for r in results.runs(s)] == [0, 1]  # completed ones only
    # a few columns: what is read is checked (/loss, its row index /rounds, the status), the rest is not opened
    read = ("/loss:", "/rounds:", "attribute status", "an empty HDF5 file")
    some = results.runs(s, ("loss",), (), statuses=("unreadable",))
    assert [r.index for r in some] == [i for i, k in enumerate(kinds) if k in HOSTILE and HOSTILE[k][1].startswith(read)]


def test_sweep_list_and_best_list_every_good_trace_and_mark_each_hostile_one(sweep, capsys):
    s, paths, kinds = sweep
    assert main(["sweep", "list", s.path]) == 0
    lines = capsys.readouterr().out.splitlines()
    for kind, line in zip(kinds, lines):
        word, reason = line.split()[1], line.split("  (", 1)[-1]
        assert word == ("completed" if kind in GOOD else "unreadable"), line
        assert kind in GOOD or reason.startswith(HOSTILE[kind][1]), line
    assert lines[-1].endswith(f": {len(GOOD)} completed, {len(HOSTILE)} unreadable")
    best = best_runs(s)
    assert [b.run.index for b in best if b.run] == [0, 1]
    assert [b.unreadable[0][1].startswith(HOSTILE[k][1]) for b, k in zip(best[2:], kinds[2:])] == [True] * len(HOSTILE)
    assert main(["sweep", "best", s.path]) == 0
    out = capsys.readouterr().out.splitlines()
    table, named = out[2:2 + len(kinds)], out[2 + len(kinds):]
    assert [row.split()[1] for row in table[:2]] == [r.label for r in s.runs[:2]]
    assert all("1 runs, 0 failed, 1 unreadable, none completed" in row for row in table[2:])
    assert [line.split(": unreadable: ")[0] for line in named] == [r.label for r in s.runs[2:]]


def test_a_killed_writers_columns_a_row_apart_read_as_their_common_rows(tmp_path):
    """A writer killed between growing one column and the next: the file still says a writer has it (SWMR), so
    the reader cuts every per-row column to the rows they all have rather than call the trace unreadable."""
    path = tmp_path / "t.h5"
    code = textwrap.dedent(f"""
        import os, signal, numpy as np
        from mpiclip.compressors import ENCODINGS
        from mpiclip.trace import TraceWriter
        w = TraceWriter.create({str(path)!r}, {{"n_workers": 2, "config": "{{}}"}}, 2, (), {{}})
        k, e = 4, len(ENCODINGS)
        w.append({{"rounds": np.arange(k), "time": np.zeros(k), "loss": np.ones(k), "grad_norm_sq": np.ones(k)}},
                 np.ones((k, 2, e)), np.zeros((k, e)), np.zeros((k, 2, 0)))
        w.f["loss"].resize((k + 1,))  # the next rows' first column, then the kill
        w.f["loss"][k] = 7.0
        w.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    tr = load_trace(str(path))
    assert tr.status.startswith("failed: writer lost") and len(tr.loss) == len(tr.rounds) == 4
    assert tr.bits_up["paper"].shape == (4, 2) and list(tr.loss) == [1.0] * 4
    assert trace_status(str(path)).startswith("failed: writer lost")


def test_info_of_an_asynchronous_trace_with_worker_ids_out_of_range_still_prints(sweep, tmp_path, capsys):
    """Values are not the contract's (it reads metadata only); the summary counts only the ids it can place."""
    from helpers import METHOD_CASES, config_table

    from mpiclip import config as cfg
    from mpiclip import session

    table = config_table(run={"name": "asgd", "n_workers": 4, "rounds": 8}, **METHOD_CASES["asgd"])
    table["output"] = {"path": str(tmp_path / "{name}.h5")}
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    path = session.execute(prepared).path
    with h5py.File(path, "a") as f:
        f["events/worker"][0] = -5
        f["events/worker"][1] = 99
    assert main(["info", path]) == 0
    assert "applied per worker" in capsys.readouterr().out
