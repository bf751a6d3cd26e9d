"""Whole runs in one process: the trace contract, the bits convention, stopping rules."""

import json
import math
import time

import h5py
import numpy as np
import pytest
from helpers import config_table

from mpiclip import config as cfg
from mpiclip import limits, session
from mpiclip.comm import SerialComm
from mpiclip.compressors import ENCODINGS
from mpiclip.errors import InputError
from mpiclip.trace import load_trace


def run(tmp_path, overrides=(), **sections):
    table = config_table(**sections)
    table.setdefault("output", {})["path"] = str(tmp_path / "{name}.h5")
    (config,) = [cfg.validate(cfg.apply_overrides(table, [cfg.parse_override(o) for o in overrides]))]
    (prepared,) = session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
    result = session.execute(prepared)
    return result, load_trace(result.path)


def test_trace_holds_the_contract(tmp_path):
    result, tr = run(tmp_path)
    assert result.status == "completed: round budget 30 reached" and tr.status == "completed"
    a = tr.attrs
    for key in ("mpiclip_version", "schema_version", "config", "command", "started", "finished", "n_workers",
                "n_ranks", "mpi_library", "hostnames", "seed", "dataset_checksum", "stop_reason", "gamma", "L", "L_tilde"):
        assert key in a, key
    assert json.loads(a["config"])["compressor"] == {"name": "topk", "k": 2}
    assert a["n_workers"] == 4 and a["n_ranks"] == 1 and a["command"] == "test"
    assert list(tr.rounds) == list(range(31))
    assert tr.loss.shape == tr.grad_norm_sq.shape == tr.time.shape == (31,)
    assert np.all(np.diff(tr.time) >= 0)
    for e in ENCODINGS:
        assert tr.bits_up[e].shape == (31, 4) and tr.bits_down[e].shape == (31,) and tr.bits_initial[e].shape == (4,)
    assert tr.workers["ef_error"].shape == (31, 4) and np.isnan(tr.workers["ef_error"][-1]).all()
    with h5py.File(result.path) as f:
        assert f["x_final"].shape == (12,) and f["x0"].shape == (12,)
        assert list(f["partition/sample_counts"][()]) == [50, 50, 50, 50]
        assert f["partition/label_counts"][()].sum() == 200
    assert tr.grad_norm_sq[-1] == pytest.approx(result.grad_norm_sq)


def test_metrics_are_the_exact_full_gradient(tmp_path):
    """grad_norm_sq is ‖(1/n) Σ ∇f_i(x^t)‖² at the recorded x, not the norm of the estimate."""
    from mpiclip.data import plan
    from mpiclip.problems import LogisticRegression, LogRegParams

    result, tr = run(tmp_path, ["run.rounds=3"])
    (config,) = [cfg.validate(config_table())]
    p = plan(config.data, 4, "pm1")
    prob = LogisticRegression(LogRegParams(), p.load(np.arange(4)), 4)
    with h5py.File(result.path) as f:
        losses, grads = prob.loss_grads(f["x_final"][()], True)
    g = grads.mean(axis=0)
    assert tr.grad_norm_sq[-1] == pytest.approx(g @ g, rel=1e-12)
    assert tr.loss[-1] == pytest.approx(losses.mean(), rel=1e-12)


@pytest.mark.parametrize("method, init, per_round, initial", [
    ("ef21", "full", 32 * 2, 32 * 12),
    ("ef21", "compressed", 32 * 2, 0),
    ("ef14", None, 32 * 2, 0),
    ("gd", None, 32 * 12, 0),
])
def test_bits_convention(tmp_path, method, init, per_round, initial):
    """Row t holds the bits sent in round t−1; the initial round is kept apart (trace.py docstring)."""
    sections = {"method": {"name": method, **({"init": init} if init else {})}}
    if method == "gd":
        sections["compressor"] = None
    result, tr = run(tmp_path, **sections)
    bits = tr.bits_per_worker("paper")
    first_counted = 2 if initial else 1
    assert bits[0] == 0
    for t in range(first_counted, 31):
        assert bits[t] == per_round * (t - first_counted + 1)
    assert tr.bits_initial["paper"].tolist() == [initial] * 4
    assert result.bits_per_worker["paper"] == bits[-1]
    assert tr.bits_per_worker("paper", include_initial=True)[-1] == bits[-1] + initial


def test_eval_every_accumulates_unrecorded_rounds(tmp_path):
    _, every = run(tmp_path, ["run.name=a", "run.rounds=23"])
    _, sparse = run(tmp_path, ["run.name=b", "run.rounds=23", "run.eval_every=5"])
    assert list(sparse.rounds) == [0, 5, 10, 15, 20, 23]
    np.testing.assert_array_equal(sparse.grad_norm_sq, every.grad_norm_sq[sparse.rounds])
    np.testing.assert_array_equal(sparse.bits_per_worker("coo32"), every.bits_per_worker("coo32")[sparse.rounds])


def test_tolerance_stops_the_run(tmp_path):
    result, tr = run(tmp_path, ["run.rounds=5000", "run.tol=1e-6", "stepsize.factor=16"])
    assert result.status.startswith("completed: tolerance reached at round")
    assert tr.grad_norm_sq[-1] < 1e-6 <= tr.grad_norm_sq[-2]
    assert tr.attrs["stop_reason"] == result.status and tr.status == "completed"


def test_divergence_ends_the_run_with_a_failed_status(tmp_path):
    result, tr = run(tmp_path, ["run.rounds=2000", "stepsize.rule='constant'", "stepsize.value=1e6"],
                     method={"name": "gd"}, compressor=None, problem={"name": "least_squares"},
                     data={"source": "synthetic", "n_samples": 200, "n_features": 12, "labels": "raw"})
    assert result.status.startswith("failed: diverged at round")
    assert tr.status == result.status
    assert len(tr.rounds) >= 1 and math.isfinite(tr.grad_norm_sq[0])


def test_quadratic_reaches_its_closed_form_minimiser(tmp_path):
    from mpiclip.problems import Quadratic, QuadraticParams

    result, tr = run(tmp_path, ["run.rounds=4000", "run.n_workers=5"], data=None,
                     problem={"name": "quadratic", "d": 8, "mu": 0.1, "seed": 2}, compressor={"name": "topk", "k": 3})
    prob = Quadratic(QuadraticParams(d=8, mu=0.1, seed=2), np.arange(5), 5)
    x_star = np.linalg.solve(prob.Q.mean(0), prob.b.mean(0))
    with h5py.File(result.path) as f:
        np.testing.assert_allclose(f["x_final"][()], x_star, rtol=1e-8, atol=1e-10)


def test_existing_trace_policies(tmp_path):
    run(tmp_path)
    with pytest.raises(InputError, match=r"^output.path = .*t.h5': exists \(set output.exists"):
        run(tmp_path)
    result, _ = run(tmp_path, ["output.exists=skip"])
    assert result.skipped
    result, tr = run(tmp_path, ["output.exists=overwrite", "run.rounds=3"])
    assert len(tr.rounds) == 4


def test_more_workers_than_samples_and_k_above_d(tmp_path):
    with pytest.raises(InputError, match=r"^run.n_workers = 300: exceeds the 200 samples"):
        run(tmp_path, ["run.n_workers=300"])
    with pytest.raises(InputError, match=r"^compressor.k = 13: must be <= d = 12"):
        run(tmp_path, ["compressor.k=13"])


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match=r"^output.path = .*: cannot be created"):
        run(tmp_path, [f"output.path='{blocker}/sub/x.h5'"])
    with pytest.raises(InputError, match=r"^output.path = .*: is a directory"):
        run(tmp_path, [f"output.path='{tmp_path}'"])


@pytest.mark.parametrize("chunked", [False, True], ids=["stacked", "chunked"])
def test_phase_split_counts_the_metric_reduction_as_communication(tmp_path, monkeypatch, chunked):
    """The recorded rows' reduction is communication in the phase split (the round loop's bound counts it), not
    evaluation, also when a chunked round makes its gradients inside the reduction; the phases stay disjoint: they
    add up to at most the loop's wall time."""
    slow = 0.002
    name = "sum_row_blocks" if chunked else "sum_rows"
    original = getattr(SerialComm, name)

    def delayed(self, *args, **kwargs):  # a reduction that takes a known time, as a slow network would
        time.sleep(slow)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SerialComm, name, delayed)
    if chunked:
        monkeypatch.setattr(limits, "CHUNK_BYTES", 2 * 8 * 12)  # the 4 workers of d = 12 step two by two
    result, tr = run(tmp_path)  # 31 recorded rows, one reduction each; the messages are sparse (no sum_rows)
    assert result.timing["communication"] >= 31 * slow
    assert result.timing["evaluation"] < 31 * slow
    assert sum(v for k, v in result.timing.items() if k != "checkpoint") <= result.wall
