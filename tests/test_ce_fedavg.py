"""CE-FedAvg (mpiclip/methods/ce_fedavg.py) against an independent loop of its rounds, with and without error
feedback and noise, and the setting it refuses."""

import numpy as np
import pytest
from test_federated import all_clients, reference_local, run, table

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import SerialComm
from mpiclip.errors import InputError
from mpiclip.rng import NOISE, generator

ETA, K, TAU = 0.5, 2, 0.05


def clip(v, tau):
    norm = np.sqrt(v @ v)
    return v * (tau / norm) if norm > tau else v


@pytest.mark.parametrize("feedback, sigma", [(False, 0.0), (True, 0.0), (True, 0.01)])
def test_ce_fedavg_matches_a_reference_loop(tmp_path, feedback, sigma):
    t = table(tmp_path / "a.h5", {"name": "ce_fedavg", "local_steps": K, "tau": TAU, "sigma": sigma,
                                  "feedback": feedback}, {"clients_per_round": 2})
    out = run(t)
    problem, _ = all_clients(t)
    seed = cfg.validate(t).run.seed
    x, e = np.zeros(problem.d), np.zeros((len(problem.local_sizes), problem.d))
    clipped = 0
    for rnd, chosen in enumerate(out["clients"]):
        sent = []
        for i in chosen:
            target = x - reference_local(problem, x, i, K, ETA) + e[i]
            s = clip(target, TAU)
            clipped += bool(np.linalg.norm(target) > TAU)
            if feedback:
                e[i] = target - s
            sent.append(s + sigma * generator(seed, NOISE, int(i), rnd).standard_normal(problem.d))
        x = x - np.mean(sent, axis=0)
    assert clipped > 0  # the threshold acts, so the test sees the clipping
    np.testing.assert_allclose(out["x_final"], x, rtol=1e-10, atol=1e-13)


def test_ce_fedavg_with_a_large_threshold_is_fedavg(tmp_path):
    ce = run(table(tmp_path / "a.h5", {"name": "ce_fedavg", "local_steps": K, "tau": 1e9}, {"clients_per_round": 2}))
    plain = run(table(tmp_path / "b.h5", {"name": "fedavg", "local_steps": K}, {"clients_per_round": 2}))
    np.testing.assert_allclose(ce["x_final"], plain["x_final"], rtol=1e-12, atol=1e-15)


def test_ce_fedavg_refuses_the_runners_update_clipping(tmp_path):
    t = table(tmp_path / "a.h5", {"name": "ce_fedavg"}, {"update_clip": 0.1})
    with pytest.raises(InputError, match=r"federated.update_clip = 0.1: method 'ce_fedavg' clips its clients' updates"):
        session.prepare_all([cfg.validate(t)], SerialComm(), "test", log=lambda *a: None)
    assert not (tmp_path / "a.h5").exists()
