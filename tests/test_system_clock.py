"""The simulated clock of the synchronous and federated runners ([system]) on real short runs: a round's time is the
slowest worker's compute plus the collective's α–β cost of the bytes the trace counts, [system] changes nothing
else, the time budget ends a run honestly, and a dropped client never contributes."""

import h5py
import numpy as np
import pytest
from helpers import config_table, differences, run_completed, trace_arrays

from mpiclip import config as cfg
from mpiclip import session, system, trace
from mpiclip.comm import SerialComm
from mpiclip.compressors import ENCODINGS
from mpiclip.errors import InputError

CLOCK = trace.CLOCK_COLUMNS


def run(path, **sections):
    t = config_table(**sections)
    t["run"] = {"name": "s", "n_workers": 4, "rounds": 6, **t["run"]}
    t["output"] = {"path": str(path), "exists": "overwrite"}
    (prepared,) = session.prepare_all([cfg.validate(t)], SerialComm(), "test", log=lambda *a: None)
    result = session.execute(prepared)
    return result, trace_arrays(str(path))


def without_clock(arrays: dict) -> dict:
    return {k: v for k, v in arrays.items() if k not in CLOCK + (trace.DROPPED,)}


def test_without_system_nothing_changes_and_with_a_system_only_the_clock_columns_are_new(tmp_path):
    _, plain = run(tmp_path / "plain.h5")
    assert not set(CLOCK) & set(plain)
    result, timed = run(tmp_path / "timed.h5", system={"compute_time": "lognormal", "slow_workers": [1]})
    assert result.status.startswith("completed: round budget")
    assert differences(plain, without_clock(timed)) == []
    assert set(CLOCK) <= set(timed)


@pytest.mark.parametrize("collective", sorted(system.COLLECTIVES))
def test_each_round_is_the_slowest_compute_plus_the_collective_of_the_bits_sent(tmp_path, collective):
    """EF21 with Top-2 (d = 12) on 4 workers whose compute times are 0.1, 0.1, 0.4 (a straggler) and 0.1 s."""
    sys_table = {"mean_time": 0.1, "slow_workers": [2], "slow_factor": 4.0, "latency": 1e-3, "bandwidth_up": 1e4,
                 "collective": collective, "server_latency": 2e-3, "server_bandwidth": 5e3}
    _, arrays = run(tmp_path / "t.h5", system=sys_table)
    rounds = arrays["rounds"]
    sent = np.concatenate([[0.0], np.cumsum(arrays["bits/up/paper"].sum(axis=1))[1:]])  # rows count rounds before them
    sent = sent + arrays["bits/initial/up/paper"].sum()  # EF21's initial round is a round of messages too
    sent[0] = 0.0
    c = system.COLLECTIVES[collective]
    latency, bandwidth = (2e-3, 5e3) if c.server else (1e-3, 1e4)
    comm = rounds * c.latency_terms(4) * latency + c.bandwidth_share(4) * sent / 8 / bandwidth
    np.testing.assert_allclose(arrays["sim_comm"], comm, rtol=1e-12)
    np.testing.assert_allclose(arrays["sim_compute"], rounds * 0.175, rtol=1e-12)  # the mean worker computes
    np.testing.assert_allclose(arrays["sim_wait"], rounds * (0.4 - 0.175), rtol=1e-12)  # and waits for the slowest
    np.testing.assert_allclose(arrays["sim_time"], rounds * 0.4 + comm, rtol=1e-12)
    if collective == "ring_allgather":  # one round by hand: 4 workers send 2 values of 32 bits (paper) each
        one_round = 0.4 + 3 * 1e-3 + 3 / 4 * (4 * 64 / 8) / 1e4
        assert arrays["sim_time"][3] - arrays["sim_time"][2] == pytest.approx(one_round, rel=1e-12)


def test_the_encoding_key_picks_the_bits_that_make_the_bytes(tmp_path):
    _, paper = run(tmp_path / "p.h5", system={"mean_time": 0.0001, "latency": 0.0})
    _, wire = run(tmp_path / "w.h5", system={"mean_time": 0.0001, "latency": 0.0, "encoding": "wire"})
    ratio = wire["bits/up/wire"][1:].sum() / paper["bits/up/paper"][1:].sum()
    assert ratio > 2  # float64 values and int32 indices against 32-bit values
    comm = lambda a: a["sim_comm"][-1] - a["sim_comm"][1]  # rounds 1..5, past the initial round
    assert comm(wire) / comm(paper) == pytest.approx(ratio, rel=1e-9)
    assert ENCODINGS.index("wire") == system.SystemModel(system.parse({"encoding": "wire"}), 4, 0).encoding


def test_a_downlink_is_broadcast_on_the_clock(tmp_path):
    """EF21-BC's compressed server message (/bits/down) travels down a binomial tree: log2(4) = 2 hops."""
    _, arrays = run(tmp_path / "bc.h5", method={"name": "ef21_bc"},
                    system={"mean_time": 1e-9, "latency": 0.0, "bandwidth_up": 1e300, "bandwidth_down": 1e3})
    down = np.concatenate([[0.0], np.cumsum(arrays["bits/down/paper"])[1:]]) + arrays["bits/initial/down/paper"]
    down[0] = 0.0
    assert down[-1] > 0
    np.testing.assert_allclose(arrays["sim_comm"], 2 * down / 8 / 1e3, rtol=1e-9, atol=1e-12)


def test_the_time_budget_ends_the_run_with_an_honest_status(tmp_path):
    path = tmp_path / "budget.h5"
    result, arrays = run(path, run={"rounds": 50}, system={"mean_time": 0.5, "latency": 0.0, "max_time": 2.2})
    assert result.status.startswith("completed: time budget 2.2 s reached at round 5 (simulated time 2.5")
    assert arrays["rounds"][-1] == 5 and arrays["sim_time"][-2] < 2.2 <= arrays["sim_time"][-1]
    with h5py.File(path) as f:
        assert f.attrs["status"] == "completed" and f.attrs["sim_time"] == arrays["sim_time"][-1]


def test_bad_system_settings_fail_at_validation():
    with pytest.raises(InputError, match="system.latency"):
        cfg.validate(config_table(system={"latency": -1.0}))


# ------------------------------------------------------------------------------------------- federated rounds
def fed(path, federated=None, method=None, **system_table):
    t = config_table(run={"name": "f", "n_workers": 4, "rounds": 6, "x0": "zeros"},
                     method=method or {"name": "fedavg", "local_steps": 3}, compressor={"name": "identity"},
                     stepsize={"rule": "constant", "value": 0.5})
    t["federated"] = federated or {}
    if system_table:
        t["system"] = system_table
    return run_completed(t, path)


def test_a_constant_fleet_without_dropouts_keeps_the_federated_trajectory_and_times_its_rounds(tmp_path):
    plain = fed(tmp_path / "a.h5", {"clients_per_round": 3})
    timed = fed(tmp_path / "b.h5", {"clients_per_round": 3}, mean_time=0.1, latency=0.01, bandwidth_up=1e5,
                bandwidth_down=1e6)
    assert differences(plain, without_clock(timed)) == []
    # a round: download x (12 floats = 48 bytes, paper), 3 local steps of 0.1 s, upload the update (48 bytes)
    one_round = 0.01 + 48 / 1e6 + 3 * 0.1 + 0.01 + 48 / 1e5
    np.testing.assert_allclose(timed["sim_time"], timed["rounds"] * one_round, rtol=1e-12)
    np.testing.assert_allclose(timed["sim_compute"], timed["rounds"] * 0.3, rtol=1e-12)
    assert timed["sim_dropped"].tolist() == [0] * 7


def test_a_client_dropped_at_the_deadline_never_contributes(tmp_path):
    """Client 2 computes 10× slower and misses the 1 s deadline every round: the run is the one in which client 2 is
    offline (an availability trace): the same iterates, losses and uploads."""
    late = fed(tmp_path / "late.h5", mean_time=0.1, factors=[1, 1, 10, 1], deadline=1.0)
    online = tmp_path / "online.txt"
    online.write_text("1 1 1 1 1 1 1\n" * 2 + "0 0 0 0 0 0 1\n" + "1 1 1 1 1 1 1\n")
    offline = fed(tmp_path / "off.h5", mean_time=0.1, availability="file", availability_file=str(online))
    plain = fed(tmp_path / "plain.h5")
    assert not np.array_equal(plain["x_final"], late["x_final"])
    changed = differences(without_clock(late), without_clock(offline))
    # what differs: the downloads client 2 received, and the diagnostics of the clients that computed (client 2 did)
    assert changed == ["bits/down/compact", "bits/down/coo32", "bits/down/paper", "bits/down/wire", "workers/grad_gap",
                       "workers/grad_gap_rel", "workers/update_norm"]
    assert late["bits/up/paper"][1:, 2].sum() == 0 and late["bits/up/paper"][1:, [0, 1, 3]].min() > 0
    assert late["sim_dropped"].tolist() == offline["sim_dropped"].tolist() == list(range(7))
    np.testing.assert_allclose(late["sim_time"], late["rounds"] * 1.0)  # the server waits until the deadline


def test_over_selection_keeps_the_first_clients_that_finish(tmp_path):
    """P = 2 with 50 % over-selection samples 3 clients a round; the slowest of them (client 3, 5× slower) is
    dropped whenever it is drawn, and a round lasts until the second client has finished."""
    arrays = fed(tmp_path / "o.h5", {"clients_per_round": 2}, mean_time=0.1, factors=[1, 2, 3, 5], latency=0.0,
                 over_selection=0.5)
    clients = arrays["clients"]
    assert clients.shape == (6, 3)
    seconds = np.array([1, 2, 3, 5])[clients] * 0.3 + 48 / 1.25e9 * 2
    np.testing.assert_allclose(np.diff(arrays["sim_time"]), np.sort(seconds, axis=1)[:, 1], rtol=1e-12)
    assert arrays["sim_dropped"][-1] == 6
    kept = np.sort(clients, axis=1)[:, :2]
    sent = arrays["bits/up/paper"][1:] > 0
    assert all(set(np.flatnonzero(sent[t])) == set(kept[t]) for t in range(6))


def test_a_large_batch_round_holds_its_clients_to_the_deadline_and_over_selection(tmp_path):
    """Large-batch SGD's one gradient is its whole round: client 2, 10× slower, misses the deadline, so the run is
    the one in which client 2 is offline; with 50 % over-selection a round keeps the first P to finish, never more
    (the alignment round of FedGA, which a client step follows, waits for every online client instead)."""
    lbsgd = {"name": "lbsgd"}
    late = fed(tmp_path / "late.h5", method=lbsgd, mean_time=0.1, factors=[1, 1, 10, 1], deadline=0.5)
    online = tmp_path / "online.txt"
    online.write_text("1 1 1 1 1 1 1\n" * 2 + "0 0 0 0 0 0 1\n" + "1 1 1 1 1 1 1\n")
    offline = fed(tmp_path / "off.h5", method=lbsgd, mean_time=0.1, availability="file", availability_file=str(online))
    assert np.array_equal(late["x_final"], offline["x_final"]) and np.array_equal(late["loss"], offline["loss"])
    assert late["bits/up/paper"][1:, 2].sum() == 0 and late["sim_dropped"].tolist() == list(range(7))
    over = fed(tmp_path / "o.h5", {"clients_per_round": 2}, method=lbsgd, mean_time=0.1, factors=[1, 2, 3, 5],
               latency=0.0, over_selection=0.5)
    kept = np.sort(over["clients"], axis=1)[:, :2]
    sent = over["bits/up/paper"][1:] > 0
    assert all(set(np.flatnonzero(sent[t])) == set(kept[t]) for t in range(6)) and over["sim_dropped"][-1] == 6


def test_a_deadline_no_client_can_meet_is_refused():
    t = config_table(method={"name": "fedavg", "local_steps": 3}, compressor={"name": "identity"},
                     system={"mean_time": 1.0, "deadline": 2.5})
    (prepared,) = [session.Session(cfg.validate(t), SerialComm())]
    with pytest.raises(InputError) as e:
        prepared.prepare(check_output=False)
    assert e.value.field == "system.deadline" and "no client can meet it: the fastest, client 0, needs 3" in e.value.reason


@pytest.mark.parametrize("method", ["ef21", "scaffold", "delay_adaptive_asgd"])
def test_a_stopped_and_resumed_run_keeps_its_clock(tmp_path, monkeypatch, method):
    import signal

    from test_resume import at_round, case, signal_self
    from test_resume import run as run_case

    clock = {"compute_time": "exponential", "mean_time": 0.2, "latency": 0.01, "bandwidth_up": 1e5}
    if method == "scaffold":
        clock.update(availability="markov", p_off=0.3, p_on=0.5, deadline=1.0, over_selection=0.5)
    if method == "delay_adaptive_asgd":  # the asynchronous clock takes the links alone (compute: [async])
        clock = {"latency": 0.01, "bandwidth_up": [1e5, 2e3, 1e5, 1e5, 1e4]}
    full = case(method, tmp_path / "full.h5")
    full["system"] = clock
    assert run_case(full).status.startswith("completed")
    cut = {**full, "output": {**full["output"], "path": str(tmp_path / "cut.h5")}}
    with at_round(monkeypatch, 17, signal_self(signal.SIGTERM)):
        assert run_case(cut).status.startswith("interrupted")
    monkeypatch.undo()
    assert run_case(cut, "run.resume='yes'").status.startswith("completed")
    whole, resumed = trace_arrays(str(tmp_path / "full.h5")), trace_arrays(str(tmp_path / "cut.h5"))
    assert differences(whole, resumed) == [] and whole["sim_time"][-1] > 0
