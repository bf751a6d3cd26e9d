"""The simulated clock of the synchronous and federated runners ([system]) on real short runs: a round's time is the
slowest worker's compute plus the collective's α–β cost of the bytes the trace counts, [system] changes nothing
else, the time budget ends a run honestly, and a dropped client never contributes."""

import h5py
import numpy as np
import pytest
from helpers import config_table, differences, trace_arrays

from mpiclip import config as cfg
from mpiclip import session, system
from mpiclip.comm import SerialComm
from mpiclip.compressors import ENCODINGS
from mpiclip.errors import InputError

CLOCK = system.CLOCK_COLUMNS


def run(path, **sections):
    t = config_table(**sections)
    t["run"] = {"name": "s", "n_workers": 4, "rounds": 6, **t["run"]}
    t["output"] = {"path": str(path), "exists": "overwrite"}
    (prepared,) = session.prepare_all([cfg.validate(t)], SerialComm(), "test", log=lambda *a: None)
    result = session.execute(prepared)
    return result, trace_arrays(str(path))


def without_clock(arrays: dict) -> dict:
    return {k: v for k, v in arrays.items() if k not in CLOCK + (system.DROPPED,)}


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
