"""The asynchronous clock with [system]'s links (issue 29 item 3): a job downloads x, computes and uploads its
message, α + bytes/β each way; the upload's size, priced when the job starts, is the size the trace counts."""

import numpy as np
import pytest
from helpers import config_table, differences, run_completed, trace_arrays

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import SerialComm
from mpiclip.compressors import build_compressor
from mpiclip.methods.base import METHODS
from mpiclip.rng import COMPRESSOR, WorkerRandomness

D = 12  # config_table's n_features


def run(path, n=1, system=None, method=None, compressor=None, updates=6, **async_table):
    t = config_table(method=method or {"name": "asgd"}, compressor=compressor or {"name": "identity"})
    t["run"] = {"name": "a", "n_workers": n, "rounds": updates}
    t["async"] = {"compute_time": "constant", "mean_time": 0.5, **async_table}
    if system is not None:
        t["system"] = system
    return run_completed(t, path)


@pytest.mark.parametrize("compressor, encoding", [({"name": "identity"}, "paper"), ({"name": "topk", "k": 2}, "coo32"),
                                                  ({"name": "natural"}, "wire")])
def test_one_worker_arrives_every_compute_plus_two_latencies_plus_the_bytes_each_way(tmp_path, compressor, encoding):
    c, alpha, up, down = 0.5, 0.01, 1e4, 2.5e4
    trace = run(tmp_path / "t.h5", system={"latency": alpha, "bandwidth_up": up, "bandwidth_down": down,
                                           "encoding": encoding}, compressor=compressor)
    down_bytes = {"paper": 32, "coo32": 32, "compact": 32, "wire": 64}[encoding] * D / 8  # x: d dense values
    up_bytes = trace[f"events/bits/{encoding}"] / 8  # what each upload really took
    assert np.all(up_bytes == up_bytes[0]) and up_bytes[0] > 0
    k = np.arange(1, len(up_bytes) + 1)
    expected = k * (c + 2 * alpha + down_bytes / down + up_bytes[0] / up)
    assert np.allclose(trace["events/sim_time"], expected, rtol=1e-12, atol=0)
    assert np.allclose(trace["sim_time"][1:], expected, rtol=1e-12, atol=0)  # row t: after the t-th arrival


def test_a_fast_network_keeps_the_schedule_and_the_trajectory_and_adds_its_transfer_times(tmp_path):
    """Latency 0 and 1 GB/s each way: the same arrivals and iterates; each worker's job k arrives (k + 1) transfers
    of 48 bytes down and 48 up later (finisher assignment: a worker restarts at its own arrival)."""
    kw = {"n": 4, "compute_time": "exponential", "updates": 40}
    plain = run(tmp_path / "plain.h5", **kw)
    timed = run(tmp_path / "timed.h5", system={"latency": 0.0, "bandwidth_up": 1e9, "bandwidth_down": 1e9}, **kw)
    times = ("events/sim_time", "sim_time", "sim_compute", "sim_comm", "sim_wait")  # the time split: [system]'s alone
    assert differences({k: v for k, v in plain.items() if k not in times},
                       {k: v for k, v in timed.items() if k not in times}) == []
    shift = (plain["events/job"] + 1) * 2 * 48 / 1e9
    assert np.allclose(timed["events/sim_time"] - plain["events/sim_time"], shift, rtol=0, atol=1e-13)
    assert not np.array_equal(timed["events/sim_time"], plain["events/sim_time"])


def test_a_slow_uplink_delays_its_worker_and_changes_who_arrives_first(tmp_path):
    kw = {"n": 2, "updates": 4, "method": {"name": "asgd"}}
    plain = run(tmp_path / "plain.h5", **kw)
    assert plain["events/worker"].tolist()[:2] == [0, 1]  # a tie at 0.5: worker 0 first
    timed = run(tmp_path / "timed.h5", system={"latency": 0.0, "bandwidth_up": [40.0, 1e9], "bandwidth_down": 1e9}, **kw)
    assert timed["events/worker"].tolist() == [1, 1, 1, 0]  # worker 0's 48 bytes take 1.2 s on its uplink
    assert timed["events/sim_time"][-1] == pytest.approx(0.5 + 48 / 1e9 + 48 / 40.0, rel=1e-12)


@pytest.mark.parametrize("compressor", [{"name": "identity"}, {"name": "topk", "k": 3}, {"name": "randk", "k": 3},
                                        {"name": "natural"}, {"name": "dithering"}, {"name": "sign"},
                                        {"name": "compose", "inner": {"name": "topk", "k": 4},
                                         "outer": {"name": "natural"}}])
@pytest.mark.parametrize("method", ["asgd", "fedbuff"])
def test_the_upload_priced_before_the_job_is_the_upload_sent(compressor, method):
    """upload_bits(d) (a probe vector) equals the bits of real uploads of other vectors, in every encoding."""
    t = config_table(method={"name": method, **({"client_lr": 0.1} if method == "fedbuff" else {})},
                     compressor=compressor)
    c = cfg.validate(t)
    built = build_compressor(compressor, "compressor")
    built.validate(D)
    m = METHODS.get(method, "method.name").create(c.method.params, built, 1.0)
    priced = m.upload_bits(D, seed=3)
    rng = np.random.default_rng(0)
    width = 0 if compressor["name"] == "identity" else D
    for job in range(3):
        gradient = rng.standard_normal(D) * 10.0 ** rng.integers(-3, 3)
        _, _, bits = m.send(np.zeros(width) + rng.standard_normal(width), gradient,
                            WorkerRandomness(3, COMPRESSOR, np.array([1]), job))
        assert np.array_equal(bits, priced), (job, bits, priced)


def test_one_worker_splits_its_time_into_its_compute_and_its_transfers(tmp_path):
    """Issue 29 item 2: one worker is never idle, so row t has computed t · c and sent t · (2α + bytes/β each way)."""
    c, alpha, up, down = 0.5, 0.01, 1e4, 2.5e4
    trace = run(tmp_path / "t.h5", system={"latency": alpha, "bandwidth_up": up, "bandwidth_down": down})
    t = np.arange(len(trace["sim_time"]))
    transfers = 2 * alpha + D * 32 / 8 / down + trace["events/bits/paper"][0] / 8 / up
    np.testing.assert_allclose(trace["sim_compute"], t * c, rtol=1e-12, atol=0)
    np.testing.assert_allclose(trace["sim_comm"], t * transfers, rtol=1e-12, atol=0)
    np.testing.assert_allclose(trace["sim_wait"], 0.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(trace["sim_compute"] + trace["sim_comm"] + trace["sim_wait"], trace["sim_time"], rtol=1e-12)


def test_minibatch_sgd_charges_the_fast_workers_wait_for_the_slowest_to_sim_wait(tmp_path):
    """Two workers, compute c and 3c, one step per both arrivals: per step the mean worker computes 2c, sends the
    same transfers, and waits c (worker 0 idles 2c, worker 1 never)."""
    c, alpha = 0.5, 0.02
    trace = run(tmp_path / "t.h5", n=2, method={"name": "minibatch_sgd"}, factors=[1.0, 3.0],
                system={"latency": alpha, "bandwidth_up": 1e9, "bandwidth_down": 1e9})
    t = np.arange(len(trace["sim_time"]))
    transfers = 2 * alpha + 2 * D * 32 / 8 / 1e9
    np.testing.assert_allclose(trace["sim_time"], t * (3 * c + transfers), rtol=1e-12)
    np.testing.assert_allclose(trace["sim_compute"], t * 2 * c, rtol=1e-12)
    np.testing.assert_allclose(trace["sim_comm"], t * transfers, rtol=1e-12)
    np.testing.assert_allclose(trace["sim_wait"], t * c, rtol=1e-12)


def test_fedbuff_counts_a_buffered_arrival_at_the_step_it_joins(tmp_path):
    """FedBuff steps every `buffer` arrivals: a row's split covers exactly the arrivals up to its step, so the
    three parts add up to sim_time and none is negative."""
    trace = run(tmp_path / "t.h5", n=3, method={"name": "fedbuff", "client_lr": 0.1, "buffer": 2},
                compute_time="exponential", updates=8,
                system={"latency": 0.05, "bandwidth_up": 1e3, "bandwidth_down": 1e4})
    parts = trace["sim_compute"] + trace["sim_comm"] + trace["sim_wait"]
    np.testing.assert_allclose(parts, trace["sim_time"], rtol=1e-12, atol=1e-12)
    assert (trace["sim_wait"] > 0).any() and (np.diff(trace["sim_compute"]) > 0).all()


def test_without_system_the_trace_has_no_time_split(tmp_path):
    trace = run(tmp_path / "t.h5")
    assert "sim_time" in trace and not {"sim_compute", "sim_comm", "sim_wait"} & set(trace)


def test_a_run_stopped_and_resumed_keeps_its_time_split(tmp_path, monkeypatch):
    """The split's sums live in the checkpoint's runner data: a SIGTERM then resume gives the uninterrupted trace."""
    import os
    import signal

    from mpiclip.runners.asynchronous import AsynchronousRunner

    kw = {"n": 3, "method": {"name": "fedbuff", "client_lr": 0.1, "buffer": 2}, "compute_time": "exponential",
          "updates": 12, "system": {"latency": 0.05, "bandwidth_up": 1e3, "bandwidth_down": 1e4}}
    full = run(tmp_path / "full.h5", **kw)
    fired, original = [], AsynchronousRunner.advance

    def advance(self, state):
        if state.t == 5 and not fired:
            fired.append(5)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, state)

    monkeypatch.setattr(AsynchronousRunner, "advance", advance)
    with pytest.raises(AssertionError, match="interrupted"):
        run(tmp_path / "cut.h5", **kw)
    monkeypatch.setattr(AsynchronousRunner, "advance", original)
    assert fired == [5]
    t = config_table(method=kw["method"], compressor={"name": "identity"})
    t["run"] = {"name": "a", "n_workers": 3, "rounds": 12, "resume": "yes"}
    t["async"] = {"compute_time": "exponential", "mean_time": 0.5}
    t["system"] = kw["system"]
    t["output"] = {"path": str(tmp_path / "cut.h5"), "exists": "overwrite"}
    (prepared,) = session.prepare_all([cfg.validate(t)], SerialComm(), "test", log=lambda *a: None)
    assert session.execute(prepared).status.startswith("completed")
    assert differences(full, trace_arrays(str(tmp_path / "cut.h5"))) == []


def test_an_outage_is_waiting_not_computing(tmp_path):
    """One worker, c = 0.5, α = 0.01, an outage [0.1, 0.6): job 0 downloads until 0.01, computes until 0.1, pauses
    0.5 s, computes 0.41 more and uploads until 1.02; its split is 0.5 computing, 0.02 sending, 0.5 waiting."""
    trace = run(tmp_path / "t.h5", outages=[[0, 0.1, 0.6]], updates=3,
                system={"latency": 0.01, "bandwidth_up": 1e15, "bandwidth_down": 1e15})
    np.testing.assert_allclose(trace["sim_time"], [0.0, 1.02, 1.54, 2.06], rtol=1e-12)
    np.testing.assert_allclose(trace["sim_compute"], [0.0, 0.5, 1.0, 1.5], rtol=1e-12)
    np.testing.assert_allclose(trace["sim_comm"], [0.0, 0.02, 0.04, 0.06], rtol=1e-9)
    np.testing.assert_allclose(trace["sim_wait"], 0.5 * (np.arange(4) > 0), rtol=1e-9, atol=1e-12)
