"""The system model ([system]): closed forms of the links and collectives against numbers worked by hand, the
compute and availability models, and the section's bad input."""

import math

import numpy as np
import pytest

from mpiclip import system
from mpiclip.asynchrony import AsyncParams, ComputeTimes
from mpiclip.errors import InputError


def model(n=4, seed=0, **table):
    return system.SystemModel(system.parse(table), n, seed)


def test_a_message_costs_latency_plus_bytes_over_bandwidth():
    assert system.link_time(1000, 0.05, 1.25e6) == pytest.approx(0.05 + 0.0008)


# P = 8 workers, m = 1000 bytes each (M = 8000), α = 1 ms, β = 1e6 bytes/s, worked by hand
HAND = {
    "ring_allgather": 7 * 1e-3 + 7 * 1000 / 1e6,  # (P−1)α + (P−1)m/β = 0.014
    "recursive_doubling": 3 * 1e-3 + 7 * 1000 / 1e6,  # log2(8)α + (P−1)m/β = 0.010
    "ring_allreduce": 14 * 1e-3 + 2 * 7 / 8 * 1000 / 1e6,  # 2(P−1)α + 2(P−1)/P·m/β = 0.01575
    "binary_tree": 6 * (1e-3 + 1000 / 1e6),  # 2 log2(8) (α + m/β) = 0.012
    "parameter_server": 8 * 1e-3 + 8000 / 1e6,  # Pα + Σm/β = 0.016
}


@pytest.mark.parametrize("name", sorted(system.COLLECTIVES))
def test_every_collective_has_its_closed_form(name):
    assert system.COLLECTIVES[name].seconds(8, 8000.0, 1e-3, 1e6) == pytest.approx(HAND[name], rel=1e-12)
    assert set(HAND) == set(system.COLLECTIVES)


def test_a_collective_of_one_worker_sends_nothing_but_a_server_still_receives():
    for collective in system.COLLECTIVES.values():
        expected = 1e-3 + 1000 / 1e6 if collective.server else 0.0
        assert collective.seconds(1, 1000.0, 1e-3, 1e6) == pytest.approx(expected)


def test_recursive_doubling_rounds_up_to_a_power_of_two():
    assert system.COLLECTIVES["recursive_doubling"].seconds(5, 0.0, 1.0, 1.0) == 3


def test_the_model_runs_its_collective_at_the_slowest_link_and_the_server_on_its_own():
    m = model(n=3, latency=[1e-3, 2e-3, 1e-3], bandwidth_up=[1e6, 5e5, 2e6], collective="ring_allgather")
    assert m.collective_seconds(3000.0) == pytest.approx(2 * 2e-3 + 2 * 1000 / 5e5)
    assert m.collective_latency() + m.collective_per_byte() * 3000.0 == pytest.approx(m.collective_seconds(3000.0))
    ps = model(n=3, collective="parameter_server", server_latency=0.01, server_bandwidth=1e3)
    assert ps.collective_seconds(3000.0) == pytest.approx(3 * 0.01 + 3.0)
    assert ps.broadcast(100.0) == pytest.approx(3 * (0.01 + 0.1))
    tree = model(n=8, latency=1e-3, bandwidth_down=[1e6] * 7 + [1e5])
    assert tree.broadcast(1000.0) == pytest.approx(3 * (1e-3 + 1000 / 1e5))


def test_links_per_class():
    m = model(n=4, classes=[0, 1, 1, 0], latency=[1e-5, 0.05], bandwidth_up=[1.25e9, 1.25e6], bandwidth_down=1e7)
    assert m.links.latency.tolist() == [1e-5, 0.05, 0.05, 1e-5]
    assert m.links.up.tolist() == [1.25e9, 1.25e6, 1.25e6, 1.25e9]
    assert m.links.down.tolist() == [1e7] * 4


def test_compute_times_are_the_asynchronous_models_keyed_by_worker_and_round():
    m = model(n=4, seed=3, compute_time="lognormal", mean_time=0.2, slow_workers=[2], slow_factor=5.0)
    same = ComputeTimes(AsyncParams(compute_time="lognormal", mean_time=0.2, slow_workers=(2,), slow_factor=5.0), 4, 3)
    assert m.compute_seconds([0, 1, 2, 3], 7).tolist() == [same.duration(w, 7) for w in range(4)]
    assert m.compute_seconds([2], 7)[0] == model(n=4, seed=3, compute_time="lognormal", mean_time=0.2, slow_workers=[2],
                                                 slow_factor=5.0).compute_seconds([3, 2], 7)[1]  # whoever else asks
    assert model(compute_time="constant", mean_time=0.5).compute_seconds([0, 3], 9).tolist() == [0.5, 0.5]


def test_measured_speeds_are_the_workers_factors(tmp_path):
    path = tmp_path / "speeds.txt"
    path.write_text("# seconds per step\n0.5\n1.5\n2\n0.25\n")
    m = model(speeds_file=str(path), compute_time="constant", mean_time=1.0)
    assert m.compute_seconds(range(4), 0).tolist() == [0.5, 1.5, 2.0, 0.25]
    assert m.fastest_compute().tolist() == [0.5, 1.5, 2.0, 0.25]


def test_availability_from_a_file_cycles_and_a_markov_chain_is_keyed_and_stationary(tmp_path):
    path = tmp_path / "on.txt"
    path.write_text("1 0 1\n1 1 1\n0 0 1\n")
    m = model(n=3, availability="file", availability_file=str(path))
    assert m.availability.online(np.arange(3), 0).tolist() == [True, True, False]
    assert m.availability.online(np.arange(3), 4).tolist() == [False, True, False]
    chain = model(n=200, seed=1, availability="markov", p_off=0.2, p_on=0.3)
    online = np.array([chain.availability.online(np.arange(200), t) for t in range(50)])
    assert online.mean() == pytest.approx(0.6, abs=0.05)  # p_on / (p_on + p_off)
    again = model(n=200, seed=1, availability="markov", p_off=0.2, p_on=0.3)
    assert again.availability.online(np.array([17, 3]), 49).tolist() == online[49, [17, 3]].tolist()


@pytest.mark.parametrize("table, field, reason", [
    ({"latency": -1e-3}, "system.latency", "must be a finite number >= 0"),
    ({"bandwidth_up": [1e6, 0.0, 1e6, 1e6]}, "system.bandwidth_up", "must be a finite number > 0"),
    ({"bandwidth_down": float("inf")}, "system.bandwidth_down", "must be a finite number > 0"),
    ({"latency": float("nan")}, "system.latency", "must be a finite number >= 0"),
    ({"mean_time": -1.0}, "system.mean_time", "must be a finite number > 0"),
    ({"factors": [1.0, -2.0, 1.0, 1.0]}, "system.factors", "must be a finite number > 0"),
    ({"slow_workers": [7]}, "system.slow_workers", "is not a worker id"),
    ({"bandwidth_up": [1e6, 1e6]}, "system.bandwidth_up", "values given: need 1 or one per worker (n = 4)"),
    ({"classes": [0, 1, 1, 0], "latency": [0.1, 0.2, 0.3]}, "system.latency", "need 1 or one per class (2)"),
    ({"availability": "file"}, "system.availability_file", "is needed exactly when"),
    ({"availability": "markov", "p_on": 0.0}, "system.p_on", "would never come online"),
    ({"p_off": 1.5}, "system.p_off", "must be in [0, 1]"),
])
def test_bad_settings_name_their_field(table, field, reason):
    with pytest.raises(InputError) as e:
        model(**table)
    assert e.value.field == field and reason in e.value.reason


@pytest.mark.parametrize("name, text, reason", [
    ("speeds_file", "1\n2\n3\n", "holds 3 numbers, need one per worker (n = 4)"),
    ("speeds_file", "1\n2\n-3\n4\n", "worker 2's speed -3 is not a finite number > 0"),
    ("speeds_file", "1\n2\ninf\n4\n", "worker 2's speed inf is not a finite number > 0"),
    ("speeds_file", "1\ntwo\n3\n4\n", "line 2: 'two' is not a list of numbers"),
    ("availability_file", "1 1\n1 0\n0 1\n", "holds 3 lines, need one per client (n = 4)"),
    ("availability_file", "1 1\n1 0\n0 0\n1 1\n", "client 2 is never online"),
    ("availability_file", "1 1\n1 0\n0 2\n1 1\n", "holds values other than 0 (offline) and 1 (online)"),
    ("availability_file", "1 1\n1\n0 1\n1 1\n", "its lines have different lengths (one column per round)"),
])
def test_bad_files_name_their_field_and_what_is_wrong(tmp_path, name, text, reason):
    path = tmp_path / "f.txt"
    path.write_text(text)
    extra = {"availability": "file"} if name == "availability_file" else {}
    with pytest.raises(InputError) as e:
        model(**{name: str(path)}, **extra)
    assert e.value.field == f"system.{name}" and e.value.reason == reason
    with pytest.raises(InputError, match="no such file"):
        model(**{name: str(tmp_path / "missing.txt")}, **extra)


def test_the_rounds_of_the_formulas_are_finite_for_large_fleets():
    for collective in system.COLLECTIVES.values():
        assert math.isfinite(collective.seconds(10**6, 1e12, 1e-5, 1.25e9))
