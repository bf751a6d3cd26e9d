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
