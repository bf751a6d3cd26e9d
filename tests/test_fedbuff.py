"""FedBuff (Nguyen et al., AISTATS 2022) on the asynchronous runner: against an independent numpy FedBuff that
replays the run's own schedule, the reduction to ASGD, the clock's K gradients per job and its bits (bad settings:
the catalogue in tests/test_faults.py)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from test_async import async_table, run

from mpiclip import config as cfg
from mpiclip import data as datamod

SAMPLING = 2  # the stream of minibatch draws (mpiclip.rng), written out: the reference shares no code with the runner
LAM = 0.1  # logreg's nonconvex regulariser λ Σ x²/(1 + x²)


def shards(table: dict, n: int):
    config = cfg.validate(table)
    shard = datamod.plan(config.data, n, "pm1").load(np.arange(n))
    X = shard.X.toarray() if hasattr(shard.X, "toarray") else np.asarray(shard.X)
    return [(X[shard.offsets[w] : shard.offsets[w + 1]], shard.y[shard.offsets[w] : shard.offsets[w + 1]]) for w in range(n)]


def grad(A: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = b * (A @ x)
    return -(A * (b / (1 + np.exp(z)))[:, None]).mean(axis=0) + LAM * 2 * x / (1 + x * x) ** 2


def reference_fedbuff(trace: str, data: list, seed: int, gamma: float, lr: float, steps: int, rows: int, buffer: int,
                      weight) -> tuple[np.ndarray, list]:
    """A plain FedBuff loop over the trace's arrivals (/events: which client, which model version, which job): each
    client runs its K local steps from the model it fetched, on minibatches keyed (seed, client, job, step); the
    server buffers w(τ)·Δ and steps with η_g Σ/K_buf. Returns x and the staleness it saw per arrival."""
    with h5py.File(trace) as f:
        x = f["x0"][()]
        workers, starts, jobs = (f[f"events/{c}"][()] for c in ("worker", "start", "job"))
    versions, total, count, seen = [x], np.zeros_like(x), 0, []
    for w, start, job in zip(workers, starts, jobs):
        A, b = data[w]
        y = versions[start].copy()
        for q in range(steps):
            pick = np.random.default_rng([seed, SAMPLING, w, job, q]).choice(len(b), rows, replace=False) \
                if 0 < rows < len(b) else np.arange(len(b))
            y = y - lr * grad(A[pick], b[pick], y)
        stale = len(versions) - 1 - start
        seen.append(stale)
        total = total + gamma * weight(stale) * (versions[start] - y)
        count += 1
        if count == buffer:
            versions.append(versions[-1] - total / buffer)
            total, count = np.zeros_like(x), 0
    return versions[-1], seen


CASES = {  # method keys, [async] keys, the weight the reference applies
    "inverse_sqrt": ({"local_steps": 4, "buffer": 3}, {"oracle": "minibatch", "batch_size": 5},
                     lambda s: 1 / math.sqrt(1 + s)),
    "polynomial": ({"local_steps": 2, "buffer": 2, "staleness": "polynomial", "staleness_exponent": 0.7},
                   {"oracle": "full", "assignment": "random", "concurrency": 4}, lambda s: (1 + s) ** -0.7),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fedbuff_matches_a_numpy_fedbuff_replaying_its_schedule(tmp_path, case):
    keys, clock, weight = CASES[case]
    n, lr = 5, 0.7
    method = {"name": "fedbuff", "client_lr": lr, **keys}
    table = async_table(tmp_path / "f.h5", method, n=n, rounds=30,
                        **{"async": {"compute_time": "exponential", "factors": [1.0, 1.0, 2.0, 3.0, 6.0], **clock}})
    result = run(table)
    assert result.status.startswith("completed: round budget 30"), result.status
    x, seen = reference_fedbuff(str(tmp_path / "f.h5"), shards(table, n), 0, result.gamma, lr, keys["local_steps"],
                                clock.get("batch_size", 0), keys["buffer"], weight)
    with h5py.File(tmp_path / "f.h5") as f:
        np.testing.assert_allclose(f["x_final"][()], x, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(f["events/delay"][()], seen)
        assert max(seen) >= 3 and len(seen) == 30 * keys["buffer"]  # stale updates were weighed; every one used


def test_one_local_step_one_update_buffers_and_constant_weights_are_asgd_with_gamma_eta_g_eta_l(tmp_path):
    """Δ = x − (x − η_l g) = η_l g up to rounding: x − η_g Δ is ASGD's step with γ = η_g η_l on the same schedule
    (full local gradients: a minibatch local step draws its rows from its own key, not from the ASGD job's)."""
    clock = {"async": {"compute_time": "lognormal", "slow_workers": [1]}}
    fed = async_table(tmp_path / "f.h5", {"name": "fedbuff", "client_lr": 0.25, "local_steps": 1, "buffer": 1,
                                          "staleness": "constant"}, **clock)
    fed["stepsize"] = {"rule": "constant", "value": 2.0}
    asgd = async_table(tmp_path / "a.h5", {"name": "asgd"}, **clock)
    asgd["stepsize"] = {"rule": "constant", "value": 0.5}
    run(fed), run(asgd)
    with h5py.File(tmp_path / "f.h5") as f, h5py.File(tmp_path / "a.h5") as a:
        for column in ("worker", "start", "job", "sim_time"):
            np.testing.assert_array_equal(f[f"events/{column}"][()], a[f"events/{column}"][()])
        np.testing.assert_allclose(f["x_final"][()], a["x_final"][()], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(f["loss"][()], a["loss"][()], rtol=1e-12)
        assert not np.array_equal(f["x_final"][()], f["x0"][()])


def test_a_job_of_k_local_steps_takes_k_gradients_of_compute_time(tmp_path):
    for steps in (1, 3):
        table = async_table(tmp_path / f"k{steps}.h5", {"name": "fedbuff", "client_lr": 0.1, "local_steps": steps,
                                                        "buffer": 2}, n=3, rounds=4,
                            **{"async": {"compute_time": "constant", "mean_time": 0.5, "factors": [1.0, 2.0, 5.0]}})
        run(table)
        with h5py.File(tmp_path / f"k{steps}.h5") as f:
            first = {int(w): t for w, t in zip(f["events/worker"][()][::-1], f["events/sim_time"][()][::-1])}
        assert first == {0: 0.5 * steps, 1: 1.0 * steps, 2: 2.5 * steps}


def test_compressed_updates_count_the_compressors_bits_per_message(tmp_path):
    """Top-k on the uplink: every arrival's bits are one top-2 message, as ASGD's under the same compressor."""
    runs = {}
    for name, keys in (("fedbuff", {"client_lr": 0.2, "local_steps": 2, "buffer": 2}), ("asgd", {})):
        table = async_table(tmp_path / f"{name}.h5", {"name": name, **keys}, rounds=10)
        table["compressor"] = {"name": "topk", "k": 2}
        run(table)
        with h5py.File(tmp_path / f"{name}.h5") as f:
            runs[name] = f["events/bits/paper"][()], f["bits/up/paper"][()].sum()
    bits, total = runs["fedbuff"]
    assert len(bits) == 20 and np.all(bits == runs["asgd"][0][0]) and total == bits.sum()
