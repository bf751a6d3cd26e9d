"""The command line as users run it: plain and under mpiexec, good and bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from helpers import REPO, config_table, mpiclip, random_classification, write_libsvm, write_toml

from mpiclip.trace import load_trace


@pytest.fixture
def small_config(tmp_path):
    table = config_table()
    table["output"] = {"path": str(tmp_path / "out" / "{name}.h5")}
    return write_toml(str(tmp_path / "c.toml"), table)


def error_lines(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


def test_help_lists_every_command_and_option():
    out = mpiclip(["--help"]).stdout
    for word in ("run", "info", "presets", "options", "mpiexec"):
        assert word in out
    run_help = mpiclip(["run", "--help"]).stdout
    for option in ("--set", "--plot", "--dry-run", "--quiet", "CONFIG"):
        assert option in run_help
    assert "--encoding" in mpiclip(["info", "--help"]).stdout


def test_a_command_builds_its_own_parser_and_every_command_is_in_the_table():
    """`mpiclip COMMAND` builds only that command's parser (start-up); the table that says which module adds
    each command is checked against the parser of every command, which help and a mistyped command get."""
    import argparse

    from mpiclip import cli

    def commands(parser):
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices

    every = commands(cli.build_parser())
    assert set(every) == set(cli.COMMANDS) and set(cli.COMMANDS.values()) == set(cli.MODULES)
    code = "import json, sys; from mpiclip import cli; cli.build_parser(['run']); print(json.dumps(sorted(sys.modules)))"
    imported = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    assert "mpiclip.cli.run" in imported and not {f"mpiclip.cli.{m}" for m in cli.MODULES if m != "run"} & set(imported)
    for name, module in cli.COMMANDS.items():
        mine = commands(cli.build_parser([name, "--help"]))
        assert name in mine and set(mine) == {n for n, m in cli.COMMANDS.items() if m is module}
    assert set(commands(cli.build_parser(["rnu"]))) == set(every) == set(commands(cli.build_parser(["--help"])))
    proc = mpiclip(["rnu"])
    assert proc.returncode == 2 and "invalid choice: 'rnu'" in proc.stderr and "reproduce" in proc.stderr


def test_presets_and_options():
    listing = mpiclip(["presets"]).stdout
    assert "quickstart" in listing and "ef21-libsvm" in listing
    assert mpiclip(["presets", "quickstart"]).stdout.startswith("# GD, EF and EF21")
    bad = mpiclip(["presets", "nope"])
    assert bad.returncode == 2 and error_lines(bad) == ["mpiclip: error: preset = 'nope': unknown (presets: cnn-digits, ef21-libsvm, fed-digits, fedbuff-digits, quickstart, synthetic-logreg)"]
    options = mpiclip(["options"]).stdout
    for text in ("[run]", "n_workers (integer, default 4)", "name = 'topk'", "split = 'dirichlet'", "[stepsize]",
                 "alpha (number, default 0.5)"):
        assert text in options, text
    assert mpiclip(["options", "compressor"]).stdout.startswith("[compressor]")


def test_the_program_entry_skips_the_exit_collection_and_keeps_main_s_exit_code(tmp_path, small_config):
    """`python -m mpiclip` and the `mpiclip` script freeze the heap after main (interpreter teardown then skips
    the cyclic collection of everything imported), with main's exit code, on success and on bad input alike;
    the run's trace is whole. In-process callers of main are untouched."""
    probe = ("import gc, sys\nimport mpiclip.cli as cli\nsys.argv = ['mpiclip', *sys.argv[1:]]\n"
             "assert gc.get_freeze_count() == 0\ncode = cli.main(['presets'])\n"
             "assert code == 0 and gc.get_freeze_count() == 0, 'main must not freeze'\n"
             "try:\n    code = cli.program()\nexcept SystemExit as e:\n    code = e.code\n"
             "print('frozen', gc.get_freeze_count() > 0, 'code', code)\n")
    script = tmp_path / "probe.py"
    script.write_text(probe)
    for args, code in ((["run", small_config, "--set", "run.rounds=3", "-q"], 0), (["run", "nope.toml"], 2)):
        proc = subprocess.run([sys.executable, str(script), *args], cwd=str(tmp_path), capture_output=True, text=True,
                              timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == f"frozen True code {code}"
    assert load_trace(str(tmp_path / "out" / "t.h5")).status == "completed"
    with open(os.path.join(REPO, "mpiclip", "__main__.py")) as main_py, open(os.path.join(REPO, "pyproject.toml")) as project:
        assert "sys.exit(program())" in main_py.read() and 'mpiclip = "mpiclip.cli:program"' in project.read()


def test_a_reader_that_goes_away_is_no_error():
    """`mpiclip options | head -1`: the closed pipe ends the command quietly, as SIGPIPE ends a shell tool."""
    proc = subprocess.Popen([sys.executable, "-m", "mpiclip", "options"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has written a byte: its first write meets a closed pipe
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert proc.stderr.read() == b""


@pytest.mark.parametrize("ranks", [None, 2])
def test_run_then_info(tmp_path, small_config, ranks):
    proc = mpiclip(["run", small_config, "--set", "run.rounds=20"], ranks=ranks, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "bits/worker (paper)" in proc.stdout and proc.stdout.count("completed") >= 2
    trace = tmp_path / "out" / "t.h5"
    tr = load_trace(str(trace))
    assert tr.status == "completed" and tr.attrs["n_ranks"] == (ranks or 1)
    assert "run" in tr.attrs["command"] and "run.rounds=20" in tr.attrs["command"]
    info = mpiclip(["info", str(trace)])
    assert info.returncode == 0 and "status: completed" in info.stdout and "coo32" in info.stdout


def test_dry_run_prints_constants_and_writes_nothing(tmp_path, small_config):
    proc = mpiclip(["run", small_config, "--dry-run"], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "L = " in proc.stdout and "γ = " in proc.stdout
    assert not (tmp_path / "out").exists()


def test_quickstart_preset_end_to_end_on_four_ranks(tmp_path):
    proc = mpiclip(["run", "quickstart", "--set", "run.rounds=300", "--plot", "results/q.png"], ranks=4,
                   cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    traces = {m: load_trace(str(tmp_path / "results" / f"quickstart-{m}.h5")) for m in ("GD", "EF", "EF21")}
    assert all(t.status == "completed" for t in traces.values())
    # the EF21 point of the figure: far below EF at the same number of bits
    assert traces["EF21"].grad_norm_sq[-1] < 1e-3 * traces["EF"].grad_norm_sq[-1]
    assert (tmp_path / "results" / "q.png").stat().st_size > 10_000
    table = proc.stdout[proc.stdout.index("run "):]
    assert all(f"quickstart-{m}" in table for m in ("GD", "EF", "EF21"))


def test_info_compares_several_traces(tmp_path, small_config):
    for name in ("a", "b"):
        assert mpiclip(["run", small_config, "--set", f"run.name={name}", "-q"], cwd=str(tmp_path)).returncode == 0
    paths = [str(tmp_path / "out" / f"{n}.h5") for n in ("a", "b")]
    out = mpiclip(["info", *paths, "--encoding", "coo32"]).stdout
    assert "bits/worker (coo32)" in out and out.count("ef21") == 2
    to = mpiclip(["info", paths[0], "--to", "1e-2", "1e-30"]).stdout
    assert "bits to 0.01" in to and "bits to 1e-30" in to
    assert to.splitlines()[-1].rstrip().endswith("-")  # never reached 1e-30
    bad = mpiclip(["info", *paths, "--encoding", "morse"])
    assert bad.returncode == 2 and "--encoding = 'morse'" in bad.stderr
    missing = mpiclip(["info", str(tmp_path / "none.h5")])
    assert missing.returncode == 2 and "no such file" in missing.stderr
    # a directory: its traces in name order, a damaged one as unreadable with its reason below; checkpoints left out
    (tmp_path / "out" / "c.h5").write_text("not hdf5")
    (tmp_path / "out" / "a.ckpt.h5").write_text("a checkpoint")
    folder = mpiclip(["info", str(tmp_path / "out")])
    lines = folder.stdout.splitlines()
    assert folder.returncode == 0 and [ln.split()[0] for ln in lines[2:5]] == ["a", "b", "c"] and not folder.stderr
    assert lines[4].split()[3] == "unreadable" and lines[5].startswith(f"{tmp_path / 'out' / 'c.h5'}: unreadable: ")
    (tmp_path / "empty").mkdir()
    empty = mpiclip(["info", str(tmp_path / "empty")])
    assert empty.returncode == 2 and error_lines(empty) == [
        f"mpiclip: error: trace = '{tmp_path / 'empty'}': a directory without traces (*.h5)"]


BAD_INPUTS = [
    (["--set", "method.name=ef22"], "method.name = 'ef22': unknown method (valid: asgd, ce_fedavg, cgd, clip21_avg, clip21_gd, clip21_sgd, clip21_sgd2m, "
                                    "clip_gd"),
    (["--set", "compressor.name=top"], "compressor.name = 'top': unknown compressor"),
    (["--set", "problem.name=svm"], "problem.name = 'svm': unknown problem"),
    (["--set", "compressor.k=0"], "compressor.k = 0: must be >= 1"),
    (["--set", "compressor.k=13"], "compressor.k = 13: must be <= d = 12"),
    (["--set", "stepsize.factor=-1"], "stepsize.factor = -1.0: must be > 0"),
    (["--set", "stepsize.rule=constant", "--set", "stepsize.value=0"], "stepsize.value = 0.0: must be > 0"),
    (["--set", "run.n_workers=201"], "run.n_workers = 201: exceeds the 200 samples"),
    (["--set", "run.roundz=3"], "run.roundz = 3: unknown key"),
    (["--set", "data.source=libsvm", "--set", "data.path=missing.txt"], "data.path = 'missing.txt': no such file"),
    (["--set", "output.path=plain-file/x.h5"], "output.path = 'plain-file/x.h5': cannot be created"),
    (["--log-json", "plain-file/log.jsonl"], "--log-json = 'plain-file/log.jsonl': cannot be written"),
    (["--log-every", "-1"], "--log-every = -1.0: must be a finite number of seconds >= 0"),
    (["--log-every", "nan"], "--log-every = nan: must be a finite number of seconds >= 0"),
]
# every case plainly and on 2 ranks; the data-dependent ones on 4 ranks too
BAD_CASES = [(r, a, m) for r in (None, 2) for a, m in BAD_INPUTS] + \
            [(4, a, m) for a, m in BAD_INPUTS if "samples" in m or "d = 12" in m or "missing.txt" in m]


@pytest.mark.parametrize("ranks, args, message", BAD_CASES,
                         ids=[f"{r or 1}-{m.split(':')[0]}" for r, _, m in BAD_CASES])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, small_config, ranks, args, message):
    (tmp_path / "plain-file").write_text("")
    proc = mpiclip(["run", small_config, *args], ranks=ranks, cwd=str(tmp_path), timeout=60)
    lines = error_lines(proc)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"mpiclip: error: {message}"), lines
    assert not (tmp_path / "out").exists()


def test_more_ranks_than_workers(tmp_path, small_config):
    proc = mpiclip(["run", small_config, "--set", "run.n_workers=2"], ranks=4, cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert error_lines(proc) == ["mpiclip: error: run.n_workers = 2: is less than the 4 MPI ranks; every rank "
                                 "needs at least one worker"]


def test_malformed_data_file_names_the_line(tmp_path, small_config):
    X, y = random_classification(n=30, d=5)
    path = write_libsvm(str(tmp_path / "d.txt"), X, y)
    lines = open(path).read().splitlines()
    lines[16] = lines[16] + " 7:abc"
    open(path, "w").write("\n".join(lines) + "\n")
    proc = mpiclip(["run", small_config, "--set", "data={source = \"libsvm\", path = \"d.txt\"}"], ranks=2,
                   cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert error_lines(proc) == ["mpiclip: error: data.path = 'd.txt': line 17: feature '7:abc': value is not a number"]


def test_invalid_toml_and_missing_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nrounds = \n")
    proc = mpiclip(["run", str(bad)], ranks=2, cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2 and len(error_lines(proc)) == 1 and "is not valid TOML" in proc.stderr
    proc = mpiclip(["run", "nothere.toml"], cwd=str(tmp_path))
    assert proc.returncode == 2 and error_lines(proc)[0].startswith("mpiclip: error: config = 'nothere.toml': no such file")


def test_diverged_run_exits_nonzero_with_failed_trace(tmp_path, small_config):
    proc = mpiclip(["run", small_config, "--set", "stepsize.rule=constant", "--set", "stepsize.value=1e8",
                    "--set", "problem.name=least_squares", "--set", "data.labels=raw", "--set", "method.name=gd",
                    "--set", "compressor.name=identity", "--set", "run.rounds=5000"], ranks=2, cwd=str(tmp_path))
    assert proc.returncode == 1
    assert "failed: diverged at round" in proc.stdout
    assert load_trace(str(tmp_path / "out" / "t.h5")).status.startswith("failed: diverged at round")


def long_run(tmp_path, ranks=None):
    table = config_table(run={"name": "long", "n_workers": 4, "rounds": 10_000_000}, data=None,
                         problem={"name": "quadratic", "d": 5})
    table["output"] = {"path": str(tmp_path / "long.h5"), "flush_rows": 50}
    path = write_toml(str(tmp_path / "long.toml"), table)
    cmd = [sys.executable, "-m", "mpiclip", "run", path]
    if ranks:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks), sys.executable, "-m",
               "mpi4py", "-m", "mpiclip", "run", path]
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    trace = tmp_path / "long.h5"
    deadline = time.time() + 60
    while time.time() < deadline:
        if trace.exists():
            try:
                if len(load_trace(str(trace)).rounds) >= 200:
                    break
            except OSError:
                pass
        time.sleep(0.2)
    return proc, trace


def test_killed_run_leaves_a_readable_honest_trace(tmp_path):
    proc, trace = long_run(tmp_path)
    proc.kill()  # SIGKILL: nothing gets to clean up
    proc.wait(timeout=30)
    tr = load_trace(str(trace))
    assert tr.status.startswith(f"failed: writer lost (process {proc.pid} on ") and len(tr.rounds) >= 200
    assert np.all(np.diff(tr.rounds) == 1) and np.isfinite(tr.grad_norm_sq).all()
    with h5py.File(trace, "r", swmr=True) as f:
        assert f.attrs["status"] == "running"  # the file itself could not be told; the lock shows the writer is gone
    info = mpiclip(["info", str(trace)])
    assert info.returncode == 0 and "status: failed: writer lost" in info.stdout, info.stdout


@pytest.mark.parametrize("ranks", [None, 2])
def test_sigterm_interrupts_cleanly(tmp_path, ranks):
    proc, trace = long_run(tmp_path, ranks)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (143, -15 if ranks else 143), (proc.returncode, err)
    tr = load_trace(str(trace))
    assert tr.status == "interrupted", tr.status
    assert "SIGTERM" in tr.attrs["stop_reason"]
    with h5py.File(trace) as f:
        assert f["x_final"].shape == (5,)


def test_analysis_script_plots_without_mpi(tmp_path, small_config):
    assert mpiclip(["run", small_config, "-q"], cwd=str(tmp_path)).returncode == 0
    trace = str(tmp_path / "out" / "t.h5")
    code = ("import sys; sys.path.insert(0, %r); import plot_traces; "
            "assert plot_traces.main([%r, '-o', %r, '--x', 'rounds', '--y', 'loss']) == 0; "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code % (os.path.join(REPO, "analysis"), trace, str(tmp_path / "f.pdf"))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr
    assert (tmp_path / "f.pdf").stat().st_size > 1000


def test_stepsize_command(tmp_path):
    out = mpiclip(["stepsize", "synthetic-logreg", "--k", "1", "2", "--set", "run.n_workers=4"])
    assert out.returncode == 0, out.stderr
    assert "L = " in out.stdout and "topk k=1" in out.stdout and "topk k=2" in out.stdout
    gammas = [float(line.split()[4]) for line in out.stdout.splitlines() if line.startswith("topk k=")]
    assert gammas[1] > gammas[0]  # a larger α allows a larger γ
    bad = mpiclip(["stepsize", "synthetic-logreg", "--k", "1", "--set", "compressor.name=natural"])
    assert bad.returncode == 2 and "--k = [1]: compressor 'natural' has no k" in bad.stderr
    diana = mpiclip(["stepsize", "synthetic-logreg", "--set", "compressor.name=natural"])
    assert diana.returncode == 0 and "0.125" in diana.stdout  # ω of natural compression


def test_pure_layers_and_analysis_never_reach_the_run_layer():
    """Methods, compressors, problems, data, wire and what analysis/ imports never load the communicator, the
    session, the recorder or checkpoints. (The config knows the runners' sections, so reading a config imports the
    runner modules: they never import the communicator, which the session hands them.)"""
    code = ("import sys; import mpiclip.methods, mpiclip.compressors, mpiclip.problems, mpiclip.data, mpiclip.wire, "
            "mpiclip.sweep, mpiclip.trace, mpiclip.plotting, mpiclip.report, mpiclip.results, mpiclip.frames, mpiclip.runners; "
            "bad = sorted(m for m in sys.modules if m.startswith(('mpiclip.comm', 'mpiclip.session', 'mpiclip.recorder', "
            "'mpiclip.checkpoint', 'mpi4py'))); print(bad)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.mark.parametrize("ranks", [None, 2])
def test_progress_lines_and_json_log(tmp_path, small_config, ranks):
    """Progress reports say round/total, elapsed, rate, ETA, f and ‖∇f‖²; --log-json writes one JSON object
    per line (from rank 0 only), also with -q, whose numbers are the trace's."""
    log = tmp_path / "log.jsonl"
    args = ["run", small_config, "--set", "run.rounds=40", "--set", "run.eval_every=4", "--log-every", "0"]
    loud = mpiclip(args, ranks=ranks, cwd=str(tmp_path))
    assert loud.returncode == 0, loud.stderr
    lines = [ln.split() for ln in loud.stdout.splitlines() if ln.strip().startswith("round ")]
    assert [ln[1] for ln in lines] == [f"{t}/40" for t in range(0, 41, 4)]
    assert all(ln[3] == "s" and ln[5] == "rounds/s" and ln[6] == "ETA" and "f" in ln and "‖∇f‖²" in ln for ln in lines)
    quiet = mpiclip([*args, "-q", "--log-json", str(log), "--set", "output.exists='overwrite'"], ranks=ranks,
                    cwd=str(tmp_path))
    assert quiet.returncode == 0, quiet.stderr
    assert not any(ln.strip().startswith("round ") for ln in quiet.stdout.splitlines())
    events = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["start"] + ["progress"] * 11 + ["end"]
    progress = events[1:-1]
    assert [e["t"] for e in progress] == list(range(0, 41, 4)) and {e["total"] for e in progress} == {40}
    assert progress[0]["rate"] is None and all(e["rate"] > 0 and e["eta"] >= 0 for e in progress[1:])
    assert progress[-1]["eta"] == 0 and all(e["run"] == "t" for e in events)
    tr = load_trace(str(tmp_path / "out" / "t.h5"))
    np.testing.assert_array_equal([e["loss"] for e in progress], tr.loss)
    np.testing.assert_array_equal([e["grad_norm_sq"] for e in progress], tr.grad_norm_sq)
    end = events[-1]
    assert end["status"] == "completed: round budget 40 reached" and tr.status == "completed"
    assert end["rounds"] == 40 and end["trace"] == str(tmp_path / "out" / "t.h5")
    assert end["loss"] == tr.loss[-1] and end["wall"] > 0


@pytest.mark.parametrize("ranks", [None, 2])
def test_multirun_writes_one_trace_per_point_and_a_task_runs_its_slice(tmp_path, small_config, ranks):
    grid = ["--multirun", "--set", "compressor.k=1,2", "--set", "stepsize.factor=1,4", "--set", "run.rounds=5"]
    proc = mpiclip(["run", small_config, *grid, "-q"], ranks=ranks, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"t-compressor.k={k},stepsize.factor={f}.h5" for k in (1, 2) for f in (1, 4)]
    for k in (1, 2):
        tr = load_trace(str(tmp_path / "out" / f"t-compressor.k={k},stepsize.factor=4.h5"))
        config = json.loads(tr.attrs["config"])
        assert tr.status == "completed" and config["compressor"]["k"] == k and config["stepsize"]["factor"] == 4
    sliced = tmp_path / "slice"
    task = mpiclip(["run", small_config, *grid, "--task", "1", "--runs-per-task", "2", "-q",
                    "--set", f"output.path='{sliced}/{{name}}.h5'"], ranks=ranks, cwd=str(tmp_path))
    assert task.returncode == 0, task.stderr
    assert sorted(p.name for p in sliced.iterdir()) == names[2:]
    bad = mpiclip(["run", small_config, *grid, "--task", "4"], ranks=ranks, cwd=str(tmp_path))
    assert bad.returncode == 2 and error_lines(bad) == ["mpiclip: error: --task = 4: is out of range: 4 runs, 1 per task"]


@pytest.mark.parametrize("ranks", [None, 2])
def test_a_data_set_named_by_file_is_found_in_the_data_directories(tmp_path, small_config, ranks):
    """Configs and sweep files may name a data set; the current directory, then --data-dir, then the
    directories of $MPICLIP_DATA_DIR are searched, and the trace records the file it read. (The user's own
    $MPICLIP_DATA_DIR is emptied, which is the same as unset: the messages say where the file was looked for.)"""
    unset = {"MPICLIP_DATA_DIR": ""}
    data = tmp_path / "data"
    data.mkdir()
    X, y = random_classification(n=40, d=5)
    write_libsvm(str(data / "d.txt"), X, y)
    work = tmp_path / "work"
    work.mkdir()
    named = ["--set", "data={source = \"libsvm\", path = \"d.txt\"}", "--set", "run.rounds=3", "-q"]
    missing = mpiclip(["run", small_config, *named], ranks=ranks, cwd=str(work), env=unset)
    assert missing.returncode == 2 and error_lines(missing) == [
        "mpiclip: error: data.path = 'd.txt': no such file (--data-dir DIR or $MPICLIP_DATA_DIR adds directories to look in)"]
    found = mpiclip(["run", small_config, *named, "--data-dir", str(data)], ranks=ranks, cwd=str(work), env=unset)
    assert found.returncode == 0, found.stderr
    tr = load_trace(str(tmp_path / "out" / "t.h5"))
    # the config keeps the name (its hash does not depend on where the data lives); the trace says what was read
    assert json.loads(tr.attrs["config"])["data"]["path"] == "d.txt" and tr.attrs["dataset"] == f"libsvm:{data / 'd.txt'}"
    env = {"MPICLIP_DATA_DIR": f"{tmp_path / 'nowhere'}:{data}"}
    by_env = mpiclip(["run", small_config, *named, "--set", "output.exists='overwrite'"], ranks=ranks, cwd=str(work), env=env)
    assert by_env.returncode == 0, by_env.stderr
    bad = mpiclip(["run", small_config, *named, "--data-dir", str(tmp_path / "nowhere"), "--log-json", "log.jsonl"],
                  ranks=ranks, cwd=str(work), env=unset)
    assert not (work / "log.jsonl").exists()  # bad input writes nothing, the JSON log included
    late = mpiclip(["run", small_config, *named, "--log-json", "log.jsonl"], ranks=ranks, cwd=str(work), env=unset)  # found late
    dry = mpiclip(["run", small_config, *named, "--data-dir", str(data), "--dry-run", "--log-json", "log.jsonl",
                   "--set", "output.exists='overwrite'"], ranks=ranks, cwd=str(work), env=unset)
    assert late.returncode == 2 and dry.returncode == 0 and not (work / "log.jsonl").exists()
    assert bad.returncode == 2 and error_lines(bad) == [f"mpiclip: error: --data-dir = '{tmp_path / 'nowhere'}': is not a directory"]


def test_show_config_prints_the_composed_config_as_toml_and_runs_nothing(tmp_path, small_config):
    """The run's validated config with every default, as a file `mpiclip run` reads back to the same config; a
    multirun's task shows its own point only."""
    from mpiclip import config as cfg

    proc = mpiclip(["run", small_config, "--set", "compressor.k=3", "--show-config"], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    header, toml = proc.stdout.split("\n", 1)
    (expected,) = cfg.load(small_config, ["compressor.k=3"])
    assert header == f"# [1/1] t: {expected.trace_path}" and toml.strip() == expected.to_toml().strip()
    (tmp_path / "shown.toml").write_text(proc.stdout)
    (again,) = cfg.load(str(tmp_path / "shown.toml"))
    assert again == expected and again.hash == expected.hash and "seed = 0" in toml  # defaults are written out
    task = mpiclip(["run", small_config, "--multirun", "--set", "compressor.k=range(1,4)", "--set",
                    "stepsize.factor=choice(1,4)", "--task", "3", "--show-config"], cwd=str(tmp_path))
    assert task.returncode == 0 and task.stdout.startswith("# [1/1] t-compressor.k=2,stepsize.factor=4: ")
    assert "\nk = 2\n" in task.stdout and "\nfactor = 4.0\n" in task.stdout
    assert not (tmp_path / "out").exists()
