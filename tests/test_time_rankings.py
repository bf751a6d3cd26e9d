"""analysis/time_rankings.py, which makes docs/time's tables: on small real runs with a system model, its CSV files
hold each method's bits and simulated time to the target as mpiclip.results computes them, ranked; without the
sweeps' traces it says so in one line and writes nothing."""

import csv
import math
import os
import subprocess
import sys

from helpers import REPO, config_table

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm.serial import SerialComm
from mpiclip.results import to_target
from mpiclip.trace import load_trace

SCRIPT = os.path.join(REPO, "analysis", "time_rankings.py")
SYSTEM = {"latency": 0.05, "bandwidth_up": 1.25e6, "compute_time": "lognormal", "mean_time": 0.01}


def execute(table: dict) -> None:
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    session.execute(prepared)


def ef21(folder, method: str) -> None:
    execute(config_table(run={"name": method, "n_workers": 4, "rounds": 40, "eval_every": 2}, system=SYSTEM,
                         method={"name": method}, output={"path": str(folder / "{name}.h5")}))


def federated(folder, method: str) -> None:
    table = config_table(run={"name": method, "n_workers": 4, "rounds": 6, "eval_every": 1}, system=SYSTEM,
                         data={"source": "synthetic", "n_samples": 200, "n_features": 12, "density": 0.3,
                               "test_fraction": 0.25},
                         problem={"name": "softmax"}, method={"name": method}, compressor={"name": "identity"},
                         federated={"clients_per_round": 2}, stepsize={"rule": "constant", "value": 0.5},
                         output={"path": str(folder / "{name}.h5")})
    execute(table)


def script(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=120)


def in_process(*args) -> int:
    """The script's main here (its imports are this process's already: a subprocess costs seconds more)."""
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import time_rankings
    finally:
        sys.path.pop(0)
    return time_rankings.main(list(args))


def test_the_tables_rank_each_method_by_bits_and_by_simulated_time_to_the_target(tmp_path):
    res, out = tmp_path / "results", tmp_path / "out"
    for system in ("datacenter", "mobile"):
        for method in ("ef21", "ef14"):
            ef21(res / f"time-ef21-mushrooms-{system}", method)
        for method in ("fedavg", "scaffold"):
            federated(res / f"time-fed-digits-{system}", method)
    assert in_process("--results", str(res), "--out", str(out), "--target", "ef21-mushrooms=1e-4", "--target",
                      "fed-digits=0.75") == 0
    assert sorted(os.listdir(out)) == sorted([f"{s}{suffix}" for s in ("ef21-mushrooms", "fed-digits") for suffix in
                                              (".csv", "-datacenter.png", "-datacenter.pdf", "-mobile.png",
                                               "-mobile.pdf")])
    with open(out / "ef21-mushrooms.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["system"], r["method"]) for r in rows] == [(s, m) for s in ("datacenter", "mobile")
                                                         for m in ("EF, Top-2", "EF21, Top-2")]
    for r in rows:  # EF21 reaches ‖∇f‖² ≤ 1e-4 in 40 rounds, EF does not
        trace = load_trace(str(res / f"time-ef21-mushrooms-{r['system']}" / f"{'ef14' if 'EF,' in r['method'] else 'ef21'}.h5"))
        expected = to_target(trace, 1e-4, "sim_time")
        assert (float(r["time_to"]) == expected and r["rank_time"] == "1") if "EF21" in r["method"] else (
            math.isnan(expected) and r["time_to"] == "nan" and r["rank_time"] == r["rank_bits"] == "-")
        assert float(r["bits_to"]) == to_target(trace, 1e-4, "bits") or "EF21" not in r["method"]
        assert float(r["s_per_round"]) > 0.05  # 50 ms links: every round pays at least one latency
    with open(out / "fed-digits.csv") as f:
        fed = list(csv.DictReader(f))
    for r in fed:  # both reach a test accuracy of 0.75; SCAFFOLD's rounds send two vectors
        trace = load_trace(str(res / f"time-fed-digits-{r['system']}" / f"{r['method'].lower()}.h5"))
        accuracy = trace.metrics["test_accuracy"]
        assert float(r["time_to"]) == to_target(trace, 0.75, "sim_time", values=accuracy, larger_is_better=True)
        assert float(r["bits_to"]) == to_target(trace, 0.75, "bits", values=accuracy, larger_is_better=True)
    for system in ("datacenter", "mobile"):  # ranks 1, 2 by time and by bits, each in its own order
        mine = [r for r in fed if r["system"] == system]
        for key in ("time", "bits"):
            order = sorted(mine, key=lambda r: float(r[f"{key}_to"]))
            assert [r[f"rank_{key}"] for r in order] == ["1", "2"]


def test_without_the_sweeps_traces_it_says_so_in_one_line_and_writes_nothing(tmp_path):
    ef21(tmp_path / "results" / "time-ef21-mushrooms-datacenter", "ef21")  # one of the four sweeps only
    proc = script("--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and lines == [
        f"time_rankings.py: error: {tmp_path / 'results' / 'time-ef21-mushrooms-mobile'}: no traces: run `mpiclip "
        "sweep run time-ef21-mushrooms-mobile` first"], proc.stderr
    assert not (tmp_path / "out").exists()
    proc = script("--target", "ef21=1e-5", cwd=tmp_path)  # a setting that is not one
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "time_rankings.py: error: --target = 'ef21=1e-5': give SETTING=LEVEL with SETTING one of ef21-mushrooms, "
        "fed-digits"), proc.stderr
