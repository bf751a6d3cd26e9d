"""system.compute_unit = 'sample': a worker's compute is its per-sample time × the samples its gradients touched."""

import numpy as np
import pytest
from helpers import config_table, differences, run_completed

from mpiclip import config as cfg
from mpiclip.cli import main

C = 1e-3  # seconds per sample
UNEVEN = {"source": "synthetic", "n_samples": 203, "n_features": 12, "density": 0.3}  # shards of 51, 51, 51, 50 rows


def run(path, **sections):
    t = config_table(**{"data": UNEVEN, **sections})
    t["run"] = {"name": "s", "n_workers": 4, "rounds": 6, **t.get("run", {})}
    return run_completed(t, path)


def shard_sizes(path) -> np.ndarray:
    import h5py

    with h5py.File(path) as f:
        return f["partition/sample_counts"][:]


def test_a_gd_round_costs_the_largest_shard_times_the_per_sample_time(tmp_path):
    path = tmp_path / "gd.h5"
    arrays = run(path, data={**UNEVEN, "split": "dirichlet"}, system={"mean_time": C, "compute_unit": "sample", "latency": 0.0})
    m = shard_sizes(path)
    assert m.max() > 1.5 * m.min()
    rounds = arrays["rounds"]
    np.testing.assert_allclose(arrays["sim_compute"], rounds * C * m.mean(), rtol=1e-12)
    np.testing.assert_allclose(arrays["sim_wait"], rounds * C * (m.max() - m.mean()), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(arrays["sim_time"] - arrays["sim_comm"], rounds * C * m.max(), rtol=1e-12)


def test_a_minibatch_round_costs_its_batch_rows(tmp_path):
    """EF21-SGD with batch 0.25: round 0 takes the full gradients g_i^0 = ∇f_i(x^0) (m_i rows), every later round
    worker i's int(0.25·m_i) rows."""
    path = tmp_path / "sgd.h5"
    arrays = run(path, method={"name": "ef21_sgd", "batch": 0.25},
                 system={"mean_time": C, "compute_unit": "sample", "latency": 0.0})
    m = shard_sizes(path)
    taus = np.floor(0.25 * m)
    rounds = arrays["rounds"]
    expected = np.where(rounds > 0, C * m.max() + (rounds - 1) * C * taus.max(), 0.0)
    np.testing.assert_allclose(arrays["sim_time"] - arrays["sim_comm"], expected, rtol=1e-12)


def test_the_default_unit_is_todays_clock_to_the_bit(tmp_path):
    plain = run(tmp_path / "a.h5", system={"mean_time": C})
    step = run(tmp_path / "b.h5", system={"mean_time": C, "compute_unit": "step"})
    assert differences(plain, step) == []
    sample = run(tmp_path / "c.h5", system={"mean_time": C, "compute_unit": "sample"})
    assert differences({k: v for k, v in plain.items() if not k.startswith("sim_")},
                       {k: v for k, v in sample.items() if not k.startswith("sim_")}) == []
    assert sample["sim_compute"][-1] > plain["sim_compute"][-1]
    base = {"system": {"mean_time": C}}
    assert cfg.validate(config_table(**base)).hash == \
        cfg.validate(config_table(system={"mean_time": C, "compute_unit": "step"})).hash
    assert cfg.validate(config_table(**base)).hash != \
        cfg.validate(config_table(system={"mean_time": C, "compute_unit": "sample"})).hash


def fed(path, method, federated):
    t = dict(run={"n_workers": 4, "x0": "zeros"}, method=method, compressor={"name": "identity"},
             stepsize={"rule": "constant", "value": 0.5})
    return run(path, **t, federated=federated, system={"mean_time": C, "compute_unit": "sample", "latency": 0.0,
                                                          "bandwidth_up": 1e300, "bandwidth_down": 1e300})


@pytest.mark.parametrize("batch", [0, 5])
def test_a_federated_local_step_costs_its_batch_or_its_shard(tmp_path, batch):
    """FedAvg, 3 local steps, every client every round: a step takes c·b (batch b) or c·m_i (full gradients)."""
    path = tmp_path / "f.h5"
    arrays = fed(path, {"name": "fedavg", "local_steps": 3}, {"batch_size": batch})
    m = shard_sizes(path)
    per_client = 3 * C * (np.full(4, batch) if batch else m)
    np.testing.assert_allclose(arrays["sim_compute"], arrays["rounds"] * per_client.mean(), rtol=1e-12)
    np.testing.assert_allclose(arrays["sim_time"], arrays["rounds"] * per_client.max(), rtol=1e-12)


def test_fedgas_alignment_gradient_counts_too(tmp_path):
    path = tmp_path / "ga.h5"
    arrays = fed(path, {"name": "fedga", "local_steps": 2}, {"batch_size": 5})
    m = shard_sizes(path)
    # the alignment round waits for the largest shard's full gradient, then 2 steps of 5 samples
    np.testing.assert_allclose(arrays["sim_time"], arrays["rounds"] * C * (m.max() + 2 * 5), rtol=1e-12)


def test_options_say_what_the_unit_means(capsys):
    assert main(["options", "system"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("compute_unit"))
    assert "default 'step'" in line and "'sample': seconds per gradient of one sample" in line
    assert "(one of: step, sample)" in line
    assert "per sample: compute_unit = 'sample'" in out


def test_page_rounds_cost_what_they_drew(tmp_path):
    """EF21-PAGE draws a full round (m_i rows) or one minibatch at two points (2τ_i): each round's compute is C times
    the most samples a worker's gradients touched, as the method itself records them (/workers/samples)."""
    arrays = run(tmp_path / "page.h5", method={"name": "ef21_page", "batch": 0.25, "p": 0.5},
                 system={"mean_time": C, "compute_unit": "sample", "latency": 0.0})
    samples = arrays["workers/samples"]
    samples = samples[:-1]  # the last row is x^T: no step
    assert len(np.unique(samples.max(axis=1))) == 2  # both kinds of round happened
    compute = np.diff(arrays["sim_time"] - arrays["sim_comm"])
    np.testing.assert_allclose(compute, C * samples.max(axis=1), rtol=1e-12)
