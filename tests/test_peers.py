"""benchmarks/peers/: every comparison script answers --help, the JSON rows they write are validated and replaced by
name, and the suite's ``peers`` group gathers the rows (or says why a peer gave none). No peer is installed here:
the scripts that stand in for the peers are small programs that write a row, as a real script does at its end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(REPO, "benchmarks", "peers")
sys.path.insert(0, PEERS)

import _peer  # noqa: E402


def run_script(path: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, path, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def a_row(name: str = "peer-x: a comparison", **changes) -> dict:
    row = {"name": name, "peer": "peer x", "peer_seconds": 2.0, "ours_seconds": 0.5, "ratio": 4.0,
           "peer_loop_seconds": 1.0, "ours_loop_seconds": 0.25, "loop_ratio": 4.0,
           "agreement": {"verdict": "agrees: ...", "ok": True}, "not_like_for_like": "everything",
           "versions": {"peer": {}, "ours": {}}, "repeat": 3, "load": [1.0, 1.2]}
    row.update(changes)
    return row


@pytest.mark.parametrize("peer", sorted(_peer.PEERS))
def test_every_peer_script_answers_help_with_what_is_not_like_for_like(peer):
    proc = run_script(os.path.join(PEERS, _peer.PEERS[peer].script), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Not like for like" in proc.stdout and "--venv-root" in proc.stdout and "--repeat" in proc.stdout
    assert "Reference (issue 31" in proc.stdout


def test_the_row_from_two_sides_has_medians_and_the_loop_ratio_only_where_both_give_one(tmp_path):
    peer = _peer.Side("peer", [], str(tmp_path), {}, whole=[3.0, 1.0, 2.0], loops=[1.5, 0.5, 1.0])
    ours = _peer.Side("ours", [], str(tmp_path), {}, whole=[0.5, 1.5, 1.0], loops=[0.2, 0.3, 0.25])
    row = _peer.row("r", peer, ours, {"verdict": "agrees"}, "nothing", {}, 3, [0.5])
    assert (row["peer_seconds"], row["ours_seconds"], row["ratio"]) == (2.0, 1.0, 2.0)
    assert row["loop_ratio"] == pytest.approx(4.0)
    blind = _peer.Side("peer", [], str(tmp_path), {}, whole=[2.0], loops=[None])
    row = _peer.row("r", blind, ours, {"verdict": "agrees"}, "nothing", {}, 1, [0.5])
    assert row["peer_loop_seconds"] is None and row["ours_loop_seconds"] is None and row["loop_ratio"] is None
    _peer.validate_row(row)


def test_a_side_runs_its_command_per_repeat_and_reads_its_loop(tmp_path):
    side = _peer.Side("echo", lambda i: [sys.executable, "-c", f"open('out', 'w').write('{i}')"], str(tmp_path),
                      dict(os.environ), loop_seconds=lambda i: float((tmp_path / "out").read_text()) + 1)
    _peer.alternate([side], 2, log=lambda s: None)
    assert side.loops == [1.0, 2.0] and len(side.whole) == 2 and min(side.whole) > 0
    failing = _peer.Side("fails", [sys.executable, "-c", "raise SystemExit(3)"], str(tmp_path), dict(os.environ))
    with pytest.raises(SystemExit, match=r"fails: failed \(3\)"):
        failing.run(0)


def test_write_row_replaces_a_row_of_the_same_name_and_keeps_the_others(tmp_path):
    path = str(tmp_path / "out" / "peers.json")
    _peer.write_row(path, a_row("a"))
    _peer.write_row(path, a_row("b"))
    _peer.write_row(path, a_row("a", ratio=9.0))
    rows = _peer.read_rows(path)
    assert [r["name"] for r in rows] == ["b", "a"] and rows[1]["ratio"] == 9.0
    assert os.listdir(tmp_path / "out") == ["peers.json"]


@pytest.mark.parametrize("changes, message", [
    ({"ratio": None}, "ratio = None: must be a number"),
    ({"ratio": 0.0}, "ratio = 0.0: must be > 0"),
    ({"peer_seconds": "2"}, "peer_seconds = '2': must be a number"),
    ({"loop_ratio": "fast"}, "loop_ratio = 'fast': must be a number or null"),
    ({"agreement": {"ok": True}}, "agreement has no verdict"),
    ({"repeat": True}, "repeat = True: must be int"),
])
def test_a_bad_row_is_refused_naming_the_key_and_nothing_is_written(tmp_path, changes, message):
    path = str(tmp_path / "peers.json")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _peer.write_row(path, a_row(**changes))
    assert not os.path.exists(path)


def test_a_row_without_a_key_is_refused(tmp_path):
    row = a_row()
    del row["not_like_for_like"]
    with pytest.raises(ValueError, match="not_like_for_like is missing"):
        _peer.validate_row(row)
    path = tmp_path / "peers.json"
    path.write_text(json.dumps({"rows": [row]}))
    with pytest.raises(ValueError, match="not_like_for_like is missing"):
        _peer.read_rows(str(path))
    path.write_text(json.dumps([a_row()]))
    with pytest.raises(ValueError, match="not a peers results file"):
        _peer.read_rows(str(path))


def test_the_docstring_section_is_one_line():
    doc = "Title.\n\nNot like for like: one\n  two three.\n\nReference (x): y.\n"
    assert _peer.section(doc, "Not like for like") == "one two three."


def test_gather_collects_each_scripts_rows_and_says_why_a_peer_gave_none(tmp_path, monkeypatch):
    """The suite's peers group: stand-in scripts (one writes two rows, one fails as a peer that cannot be installed)
    run as the real ones are, with the options the suite passes."""
    good = tmp_path / "good.py"
    good.write_text(
        "import argparse, sys\nsys.path.insert(0, %r)\nimport _peer\n" % PEERS +
        "ap = _peer.parser('x'); ap.add_argument('--data-dir'); ap.add_argument('--source')\n"
        "a = ap.parse_args()\nimport json\n"
        "row = json.loads(%r)\n" % json.dumps(a_row()) +
        "for ranks in (1, 2):\n"
        "    _peer.write_row(a.json, {**row, 'name': f'good {ranks} {a.repeat} {a.source} {a.data_dir}'})\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('pip: no matching distribution', file=sys.stderr)\nsys.exit(1)\n")
    monkeypatch.setattr(_peer, "PEERS", {"good": _peer.Peer(str(good), True, True, "2x"),
                                         "bad": _peer.Peer(str(bad), False, False, "3x")})
    monkeypatch.setenv("PYTHONPATH", REPO)
    out = _peer.gather(str(tmp_path), 2, str(tmp_path / "venvs"), "/data", {"good": "/clone"}, log=lambda s: None)
    assert [(name, r["name"] if r else None) for name, r, _ in out] == [
        ("good", "good 1 2 /clone /data"), ("good", "good 2 2 /clone /data"), ("bad", None)]
    assert out[2][2] == "not measured: bad.py failed (1): pip: no matching distribution"
    rows = [_peer.suite_row(*entry) for entry in out]
    assert rows[0]["value"] == 2.0 and rows[0]["ratio"] == 4.0 and rows[0]["target"] == ">= 1 (ours faster)"
    assert "issue: 2x" in rows[0]["note"] and rows[2]["value"] is None and rows[2]["note"].startswith("not measured")
    json.dumps(rows)


def test_the_suite_knows_the_peers_group():
    proc = run_script(os.path.join(REPO, "benchmarks", "suite.py"), "--only", "peers,nope")
    assert proc.returncode != 0 and "unknown group(s) nope" in proc.stderr and "peers" in proc.stderr
    help_text = run_script(os.path.join(REPO, "benchmarks", "suite.py"), "--help").stdout
    assert "``peers``" in help_text and "--venv-root" in help_text


@pytest.mark.parametrize("peer", [p for p in sorted(_peer.PEERS) if _peer.PEERS[p].reads_data])
def test_without_the_data_a_peer_script_says_so_in_one_line_before_making_its_venv(tmp_path, peer):
    empty = tmp_path / "data"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": REPO, "MPICLIP_DATA_DIR": str(empty)}
    script = _peer.PEERS[peer].script
    proc = subprocess.run([sys.executable, os.path.join(PEERS, script), "--venv-root", str(tmp_path / "venvs"),
                           "--json", str(tmp_path / "peers.json")], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=60)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{script}: error: --data = 'a9a.txt': data set not found: looked in {tmp_path} and "
                               f"$MPICLIP_DATA_DIR ({empty})") and "--data-dir or $MPICLIP_DATA_DIR" in lines[0]
    assert os.listdir(tmp_path) == ["data"]  # no venv, no results file


@pytest.mark.parametrize("peer, option, value, reason", [
    ("ef21", "--rounds", "0", "must be at least 1"),
    ("flower", "--repeat", "0", "must be at least 1"),
    ("asgd", "--lr", "nan", "must be a finite number above 0"),
    ("opacus", "--sample-rate", "1.5", "must be in (0, 1]"),
])
def test_a_bad_option_is_one_line_naming_it_before_anything_runs(tmp_path, peer, option, value, reason):
    script = _peer.PEERS[peer].script
    proc = run_script(os.path.join(PEERS, script), option, value, "--venv-root", str(tmp_path / "venvs"),
                      "--json", str(tmp_path / "peers.json"), cwd=str(tmp_path))
    shown = value if option in ("--rounds", "--repeat") else float(value)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"{script}: error: {option} = {shown}: {reason}"]
    assert os.listdir(tmp_path) == []


def test_a_venv_made_from_the_same_requirements_is_reused_and_a_missing_python_is_one_line(tmp_path):
    venv = _peer.Venv(str(tmp_path), "peer", [["numpy==1.0"]], sys.executable)
    os.makedirs(venv.path)
    with open(os.path.join(venv.path, _peer.MARKER), "w") as f:
        json.dump({"python": venv.python_version(), "requirements": [["numpy==1.0"]]}, f)
    assert venv.ensure(log=pytest.fail) == os.path.join(venv.path, "bin", "python")  # nothing made, nothing logged
    with pytest.raises(SystemExit, match=r"^--python /no/such/python: cannot be run \("):
        _peer.Venv(str(tmp_path), "other", [], "/no/such/python").ensure()


def test_the_peers_code_is_cloned_at_its_commit_and_a_source_that_cannot_be_cloned_is_one_line(tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(origin), *a], check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q")
    (origin / "code.py").write_text("first\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    first = git("rev-parse", "HEAD").stdout.strip()
    (origin / "code.py").write_text("second\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "second")
    tree = _peer.source_tree(str(origin), str(tmp_path / "cache"), "peer", first)
    assert open(os.path.join(tree, "code.py")).read() == "first\n"
    assert _peer.source_tree(str(origin), str(tmp_path / "cache"), "peer", first) == tree  # reused
    with open(os.path.join(tree, "code.py"), "w") as f:
        f.write("changed\n")
    with pytest.raises(SystemExit, match="the peer's code has local changes"):
        _peer.source_tree(str(origin), str(tmp_path / "cache"), "peer", first)
    with pytest.raises(SystemExit, match=r"^git clone /no/such/clone failed: name a local clone of it with --source PATH$"):
        _peer.source_tree("/no/such/clone", str(tmp_path / "cache"), "gone", first)
    assert not os.path.exists(tmp_path / "cache" / "src" / "gone")


@pytest.mark.parametrize("keep", [False, True])
def test_the_work_folder_goes_when_the_script_ends_even_failing_unless_kept(keep):
    code = f"import sys; sys.path.insert(0, {PEERS!r}); import _peer; print(_peer.work_folder('t', {keep})); sys.exit(3)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    folder = proc.stdout.strip()
    assert proc.returncode == 3 and folder and os.path.isdir(folder) == keep
    if keep:
        os.rmdir(folder)


def test_a_sample_rate_opacus_cannot_take_for_the_data_is_one_line_before_the_venv(tmp_path):
    """Opacus's sample rate is 1/ceil(N/batch): with N = 100 rows, q = 0.013 would become 1/50."""
    data = tmp_path / "tiny.txt"
    data.write_text("".join(f"{1 if i % 2 else -1} 1:{i / 100} 3:1\n" for i in range(100)))
    proc = run_script(os.path.join(PEERS, "peer_opacus.py"), "--data", str(data), "--sample-rate", "0.013",
                      "--venv-root", str(tmp_path / "venvs"), "--json", str(tmp_path / "peers.json"), cwd=str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "peer_opacus.py: error: --sample-rate = 0.013: Opacus's sample rate would be 1/50 with N = 100 (1/ceil(N/batch)); "
        "pick q with N·q just below a whole number"]
    assert sorted(os.listdir(tmp_path)) == ["tiny.txt"]
