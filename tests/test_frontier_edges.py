"""The DP frontier's search edges: which sides of a best setting are open, and the reasons an edge may be the
optimum, each checked against runs (mpiclip/reproduce/frontier.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import config_table, run_completed

from mpiclip.reproduce.frontier import SCALE_FREE_WHEN_CLIPPED, open_sides

pytest.importorskip("dp_accounting", reason="the frontier's runs are calibrated by dp-accounting (extra dp)")


def settings(tau, factor, beta=None):
    return (("tau", tau),) + ((("beta", beta),) if beta is not None else ()) + (("factor", factor),)


def test_an_edge_is_a_side_with_no_searched_setting_beyond_it_at_the_others_values():
    grid = {settings(t, f) for t in (0.01, 0.1, 1.0) for f in (0.1, 1.0, 10.0)}
    assert open_sides(settings(0.1, 1.0), grid) == []
    assert open_sides(settings(0.01, 10.0), grid) == [("tau", "below"), ("factor", "above")]
    # a value searched elsewhere is not a neighbour: only the line through the best counts
    cross = {settings(0.1, f) for f in (0.1, 1.0)} | {settings(t, 10.0) for t in (0.01, 1.0)}
    assert open_sides(settings(0.1, 1.0), cross) == [("tau", "below"), ("tau", "above"), ("factor", "above")]
    # a setting the group never varied is not tuned, so it has no edge
    assert open_sides(settings(0.1, 1.0, beta=0.5), {settings(0.1, f, 0.5) for f in (0.1, 1.0, 10.0)}) == []


def _losses(method: dict, tau: float, factor: float, path) -> np.ndarray:
    t = config_table(run={"name": "t", "n_workers": 4, "rounds": 40, "seed": 3},
                     method={**method, "tau": tau, "target_epsilon": 4.0, "delta": 1e-3},
                     compressor={"name": "identity"}, stepsize={"factor": factor})
    arrays = run_completed(t, path)
    assert np.all(arrays["workers/clip_active"][:-1] == 1.0)  # the premise: every message (example) clipped (the
    # last row, the final x, sent nothing)
    return arrays["loss"]


@pytest.mark.parametrize("method", [{"name": "clip_gd"}, {"name": "clip_sgd", "batch": 0.5},
                                    {"name": "clip_sgdm", "batch": 0.5, "beta": 0.3},
                                    {"name": "dp_sgd", "batch": 0.5}], ids=lambda m: m["name"])
def test_while_every_message_is_clipped_only_the_product_of_step_and_threshold_matters(method, tmp_path):
    """The reason the frontier gives for a best τ on the lower edge of these methods: (τ/10, 10γ) is the run of
    (τ, γ) to rounding, so a smaller τ buys nothing the step size does not."""
    assert method["name"] in SCALE_FREE_WHEN_CLIPPED
    a = _losses(method, 1e-3, 0.5, tmp_path / "a.h5")
    b = _losses(method, 1e-4, 5.0, tmp_path / "b.h5")
    assert abs(a[-1] - a[0]) > 1e-4  # it moved, so the equality below is not that of two runs standing still
    np.testing.assert_allclose(b, a, rtol=1e-9)


def test_error_feedback_is_not_scale_free_so_its_threshold_edges_stay_unexplained(tmp_path):
    assert "clip21_gd" not in SCALE_FREE_WHEN_CLIPPED
    t = lambda tau, factor: config_table(
        run={"name": "t", "n_workers": 4, "rounds": 40, "seed": 3},
        method={"name": "clip21_gd", "tau": tau, "target_epsilon": 4.0, "delta": 1e-3},
        compressor={"name": "identity"}, stepsize={"factor": factor})
    a = run_completed(t(1e-3, 0.5), tmp_path / "a.h5")["loss"]
    b = run_completed(t(1e-4, 5.0), tmp_path / "b.h5")["loss"]
    assert np.max(np.abs(a - b) / np.abs(a)) > 1e-6


def _run(tmp_path, label: str, factor: float, **method):
    from mpiclip.trace import load_trace

    t = config_table(run={"name": "t", "n_workers": 4, "rounds": 40, "seed": 3},
                     method={"target_epsilon": 16.0, "delta": 1e-3, **method}, compressor={"name": "identity"},
                     stepsize={"factor": factor})
    run_completed(t, tmp_path / f"{label}.h5")
    return load_trace(str(tmp_path / f"{label}.h5"))


def test_the_reasons_an_edge_may_stand_are_read_from_the_runs(tmp_path):
    from mpiclip.reproduce.frontier import NO_GAIN, RIDGE, final, why_edge

    loose = _run(tmp_path, "loose", name="clip_sgd", batch=0.5, tau=100.0, factor=1.0, target_epsilon=0.0)
    assert np.nanmax(loose.workers["clip_active"]) == 0
    best = settings(100.0, 1.0)
    scores = {best: final(loose, "loss")}
    assert loose.loss[0] - scores[best] > NO_GAIN * loose.loss[0]  # it trained
    assert why_edge("clip_sgd", "tau", "above", best, [loose], scores).startswith("nothing clipped")
    assert why_edge("clip_sgd", "tau", "below", best, [loose], scores) == ""  # nothing says so
    assert why_edge("clip_sgd", "factor", "above", best, [loose], scores) == ""

    still = _run(tmp_path, "still", name="clip_sgd", batch=0.5, tau=100.0, factor=1e-7)
    assert why_edge("clip_sgd", "factor", "below", settings(100.0, 1e-7), [still],
                    {settings(100.0, 1e-7): final(still, "loss")}).startswith("the best improves on x⁰")

    # Clip21-GD is not scale-free: its τ edge stands only where the next τ at the same γτ is as good
    ef = _run(tmp_path, "ef", name="clip21_gd", tau=1e-3, factor=0.5)
    best, up = settings(1e-3, 0.5), settings(1e-2, 0.05)
    gain = ef.loss[0] - final(ef, "loss")
    assert gain > NO_GAIN * ef.loss[0]
    near = {best: final(ef, "loss"), up: final(ef, "loss") + RIDGE * gain / 2}
    assert "a limit the runs have reached" in why_edge("clip21_gd", "tau", "below", best, [ef], near)
    far = {best: final(ef, "loss"), up: final(ef, "loss") + 2 * RIDGE * gain}
    assert why_edge("clip21_gd", "tau", "below", best, [ef], far) == ""


@pytest.mark.parametrize("method", [{"name": "clip21_gd"}, {"name": "clip21_sgd2m", "batch": 1.0, "beta1": 0.1,
                                                             "beta2": 0.1}], ids=lambda m: m["name"])
def test_a_method_that_samples_no_records_runs_alike_under_both_record_relations(method, tmp_path):
    """Why the frontier lends these methods' replace runs to the record-level add/remove unit."""
    from helpers import differences, trace_arrays

    from mpiclip import config as cfg
    from mpiclip.reproduce.frontier import samples_no_records

    runs = {}
    for relation in ("replace", "add_remove_record"):
        t = config_table(run={"name": "t", "n_workers": 4, "rounds": 20, "seed": 1},
                         method={**method, "tau": 0.01, "target_epsilon": 2.0, "delta": 1e-3, "relation": relation},
                         compressor={"name": "identity"})
        assert samples_no_records(cfg.validate(dict(t)))
        run_completed(t, tmp_path / f"{relation}.h5")
        runs[relation] = trace_arrays(str(tmp_path / f"{relation}.h5"))
    assert differences(runs["replace"], runs["add_remove_record"]) == []
