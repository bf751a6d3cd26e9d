"""Asynchronous SGD: the simulated clock, the methods' server rules, the runner against an independent
simulation, replay, time budgets and bad input."""

from __future__ import annotations

import heapq
import math

import h5py
import numpy as np
import pytest
from helpers import config_table, differences, trace_arrays

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.asynchrony import AsyncParams, ComputeTimes, Policy, Schedule
from mpiclip.comm import SerialComm
from mpiclip.compressors import COMPRESSORS, Identity
from mpiclip.errors import InputError, RunFailed
from mpiclip.methods import METHODS
from mpiclip.methods.asgd import AsyncServer
from mpiclip.oracles import sub_weibull
from mpiclip.rng import WorkerRandomness
from mpiclip.trace import load_trace


def run(table: dict, *overrides: str):
    config = cfg.validate(cfg.apply_overrides(table, [cfg.parse_override(o) for o in overrides]))
    (prepared,) = session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
    return session.execute(prepared)


def async_table(path, method: dict, n: int = 6, rounds: int = 80, **sections) -> dict:
    table = config_table(run={"name": "a", "n_workers": n, "rounds": rounds, "eval_every": 1}, method=method,
                         compressor={"name": "identity"}, stepsize={"factor": 1.0})
    table["output"] = {"path": str(path), "exists": "overwrite"}
    table.update(sections)
    return table


# ------------------------------------------------------------------------------------ the clock
def params(n: int = 4, **values) -> AsyncParams:
    p = AsyncParams(**values)
    p.validate(n)
    return p


def test_one_straggler_s_times_slower_makes_tau_max_exactly_m_minus_1_times_s():
    """Constant times: M−1 workers take 1, the last (largest id: last at ties) takes s; while its job runs
    the others deliver (M−1)·s gradients, so every one of its gradients is (M−1)·s updates stale."""
    for m, s in [(4, 1), (5, 10), (8, 100)]:
        schedule = Schedule(params(m, compute_time="constant", slow_workers=(m - 1,), slow_factor=float(s)), m, 0, Policy())
        schedule.begin()
        t, delays = 0, {w: [] for w in range(m)}
        for _ in range(4 * m * s):
            arrival = schedule.pop()
            delays[arrival.worker].append(t - arrival.start)
            t += 1
            schedule.after(arrival, True, t)
        assert max(max(v) for v in delays.values()) == (m - 1) * s
        assert set(delays[m - 1]) == {(m - 1) * s}
        assert len(delays[0]) == pytest.approx(s * len(delays[m - 1]), abs=s)  # 1/s of the fast workers' share


def test_ties_arrive_in_worker_order_and_times_are_keyed_by_worker_and_job():
    p = params(4, compute_time="constant")
    schedule = Schedule(p, 4, 0, Policy())
    schedule.begin()
    assert [schedule.pop().worker for _ in range(4)] == [0, 1, 2, 3]
    a = ComputeTimes(params(4, compute_time="exponential", mean_time=2.0), 4, seed=3)
    b = ComputeTimes(params(4, compute_time="exponential", mean_time=2.0), 4, seed=3)
    order = [(w, k) for k in range(3000) for w in range(4)]
    first = {key: a.duration(*key) for key in order}
    assert all(b.duration(*key) == first[key] for key in reversed(order))  # any order of asking
    values = np.array(list(first.values()))
    assert values.mean() == pytest.approx(2.0, rel=0.05)  # 12,000 Exp draws: standard error 0.9 %
    lognormal = ComputeTimes(params(4, compute_time="lognormal", lognormal_sigma=0.5), 4, seed=1)
    draws = np.array([lognormal.duration(0, k) for k in range(20000)])
    assert draws.mean() == pytest.approx(1.0, rel=0.03) and np.log(draws).std() == pytest.approx(0.5, rel=0.03)
    listed = ComputeTimes(params(2, compute_time="list", times=((1.0, 3.0), (2.0,)), factors=(1.0, 5.0)), 2, seed=0)
    assert [listed.duration(0, k) for k in range(3)] == [1.0, 3.0, 1.0] and listed.duration(1, 7) == 10.0


@pytest.mark.parametrize("start,duration,expected", [(0.0, 5.0, 7.0), (3.0, 5.0, 11.0), (4.0, 1.0, 5.0),
                                                      (0.0, 1.0, 1.0), (0.0, 2.0, 2.0), (1.0, 9.0, 14.0)])
def test_a_job_pauses_through_its_workers_outages(start, duration, expected):
    """Windows [2, 4) and [8, 10) (given overlapping: [8, 9) and [8.5, 10) merge)."""
    times = ComputeTimes(params(2, compute_time="list", times=((duration,),),
                                outages=((0, 2.0, 4.0), (0, 8.0, 9.0), (0, 8.5, 10.0), (1, 0.0, 100.0))), 2, 0)
    assert times.finish(0, 0, start) == expected
    assert times.finish(1, 0, start) == 100.0 + duration


def test_a_clock_that_leaves_the_floats_fails_the_run_instead_of_ending_it_completed():
    """Validation refuses settings whose clock could overflow; a schedule that still gets there (settings made
    without validate) raises RunFailed with the reason, where an infinite finish time once read as the end of a
    replayed schedule, and a 'completed' run."""
    with pytest.raises(InputError, match="async.mean_time = 1e[+]308: the simulated clock would overflow"):
        params(compute_time="constant", mean_time=1e308)
    params(compute_time="constant", mean_time=1e290)  # 2**53 such jobs still add up to a finite time
    schedule = Schedule(AsyncParams(compute_time="constant", mean_time=1e308), 1, 0, Policy())
    schedule.begin()
    arrival = schedule.pop()
    assert arrival.time == 1e308
    with pytest.raises(RunFailed, match="the simulated clock overflowed: worker 0's job 1, started at time 1e[+]308, "
                                        "would finish at inf"):
        schedule.after(arrival, True, 1)


def test_random_assignment_keeps_tau_c_jobs_in_flight_and_queues_at_busy_workers():
    n, jobs = 6, 4
    schedule = Schedule(params(n, assignment="random", concurrency=jobs), n, 5, Policy())
    schedule.begin()
    chosen = []
    for t in range(1, 3000):
        arrival = schedule.pop()
        before = schedule.requests
        schedule.after(arrival, True, t)
        assert schedule.requests == before + 1
        busy = np.isfinite(schedule.finish).sum()
        assert busy + sum(schedule.queued) == jobs and busy <= jobs
        chosen.append(arrival.worker)
    assert set(chosen) == set(range(n))  # every worker gets jobs, not only the first τ_C


def test_ringmaster_stops_leave_no_job_r_updates_stale_and_a_saved_schedule_continues_identically():
    p = params(5, compute_time="exponential", slow_workers=(4,), slow_factor=50.0)
    policy = Policy(max_delay=3, stops=True)
    a = Schedule(p, 5, 1, policy)
    a.begin()
    log = []
    for t in range(1, 400):
        arrival = a.pop()
        a.after(arrival, True, t)
        busy = np.isfinite(a.finish)
        assert (np.array(a.start)[busy] > t - 3).all()
        log.append(arrival)
        if t == 200:
            b = Schedule(p, 5, 1, policy, a.saved())
            rest_b = []
    assert a.stopped > 0
    for t in range(201, 300):  # b resumes from t = 200 and follows a's arrivals exactly
        arrival = b.pop()
        b.after(arrival, True, t)
        rest_b.append(arrival)
    assert rest_b == log[200:299]


def test_sub_weibull_noise_has_the_tail_it_promises_and_zero_mean():
    rng = np.random.default_rng(0)
    for theta, sigma in [(0.5, 1.0), (1.0, 2.0), (2.0, 0.5)]:
        xi = np.array([sub_weibull(rng, 10, theta, sigma) for _ in range(20000)])
        norms = np.sort(np.linalg.norm(xi, axis=1))
        empirical = np.arange(1, len(norms) + 1) / len(norms)
        cdf = 1.0 - np.exp(-((norms / sigma) ** (1.0 / theta)))
        assert np.abs(empirical - cdf).max() < 0.015  # Kolmogorov–Smirnov at 20,000 draws: 1 % level is 0.0115
        assert np.abs(xi.mean(axis=0)).max() < 8 * norms.std() / np.sqrt(len(norms) / 10)


# ------------------------------------------------------------------------------------ server rules
def method(name: str, gamma: float = 0.5, n: int = 4, compressor=None, **values):
    from mpiclip.methods.base import RunInfo

    cls = METHODS.get(name, "")
    return cls.create(cls.params(**values), compressor or Identity(), gamma).bind(RunInfo(n, 10, 3, concurrency=n))


def fresh(d: int = 3) -> AsyncServer:
    return AsyncServer(np.zeros(d), np.zeros((), dtype=np.int64))


def test_asgd_clipped_and_delay_adaptive_steps_are_the_formulas():
    x, g = np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 0.0])
    _, x1, r = method("asgd").receive(fresh(), x, g, delay=7)
    np.testing.assert_array_equal(x1, x - 0.5 * g)
    assert r.admitted and r.stepped and r.norm == 5.0 and not r.clipped
    _, x2, r = method("clipped_asgd", tau=2.0).receive(fresh(), x, g, delay=7)
    np.testing.assert_allclose(x2, x - 0.5 * 2.0 * g / 5.0, rtol=1e-15)
    assert r.clipped
    _, x3, r = method("clipped_asgd", tau=6.0).receive(fresh(), x, g, delay=7)
    np.testing.assert_array_equal(x3, x1)
    assert not r.clipped
    adaptive = method("delay_adaptive_asgd", n=4)
    _, x4, _ = adaptive.receive(fresh(), x, g, delay=8)
    np.testing.assert_allclose(x4, x - 0.5 * 4 / 8 * g, rtol=1e-15)
    _, x5, _ = adaptive.receive(fresh(), x, g, delay=3)
    np.testing.assert_array_equal(x5, x1)


def test_rennala_keeps_only_fresh_gradients_and_ringmaster_discards_stale_ones():
    x = np.zeros(3)
    rennala = method("rennala_sgd", batch=2)
    server, x1, r = rennala.receive(fresh(), x, np.ones(3), delay=1)
    assert not r.admitted and x1 is x
    server, x1, r = rennala.receive(server, x, np.ones(3), delay=0)
    assert r.admitted and not r.stepped and np.array_equal(x1, x)
    server, x2, r = rennala.receive(server, x1, 3 * np.ones(3), delay=0)
    assert r.stepped and np.allclose(x2, -0.5 * 2.0) and int(server.count) == 0
    ring = method("ringmaster_asgd", max_delay=3)
    assert [ring.receive(fresh(), x, np.ones(3), delay=d)[2].admitted for d in range(5)] == [True, True, True, False, False]
    assert method("ringmaster_asgd").policy().max_delay == 4  # R = 0 means n
    mb = method("minibatch_sgd", n=3)
    assert mb.policy() == Policy(batch=3, wait_all=True)


def test_ef21_uplink_sends_compressed_differences_and_the_server_uses_the_estimate():
    topk = COMPRESSORS.get("topk", "").build(COMPRESSORS.get("topk", "").params(k=1))
    m = method("asgd", compressor=topk)
    estimate = np.zeros(3)
    rng = WorkerRandomness(0, 1, np.array([2]), 0)
    for g in (np.array([1.0, -5.0, 2.0]), np.array([1.0, -5.0, 2.0]), np.array([0.0, 0.0, 0.0])):
        new, used, bits = m.send(estimate, g, rng)
        diff = g - estimate
        j = np.argmax(np.abs(diff))
        expected = estimate.copy()
        expected[j] += diff[j]
        np.testing.assert_array_equal(new, expected)
        assert used is new and bits[0] == 32.0
        estimate = new


# ------------------------------------------------------------------------------------ the runner
def reference_asgd(table: dict, n: int, rounds: int, gamma: float, factors, tau: float = 0.0):
    """An independent simulation: constant compute times, finisher assignment, full logistic gradients."""
    config = cfg.validate(table)
    from mpiclip import data as datamod

    plan = datamod.plan(config.data, n, "pm1")
    shard = plan.load(np.arange(n))
    X, y = shard.X.toarray() if hasattr(shard.X, "toarray") else shard.X, shard.y
    lam = 0.1

    def grad(w, x):
        A, b = X[shard.offsets[w] : shard.offsets[w + 1]], y[shard.offsets[w] : shard.offsets[w + 1]]
        z = b * (A @ x)
        return -(A * (b / (1 + np.exp(z)))[:, None]).mean(axis=0) + lam * 2 * x / (1 + x * x) ** 2

    x = np.random.default_rng([config.run.seed, 0, 0, 0]).standard_normal(config.data.source.n_features)
    heap = [(factors[w], w) for w in range(n)]
    pending = {w: (0, grad(w, x)) for w in range(n)}
    norms = [float(np.mean([grad(w, x) for w in range(n)], axis=0) @ np.mean([grad(w, x) for w in range(n)], axis=0))]
    for t in range(rounds):
        now, w = heapq.heappop(heap)
        start, g = pending[w]
        norm = np.linalg.norm(g)
        used = g * (tau / norm) if 0 < tau < norm else g
        x = x - gamma * used
        pending[w] = (t + 1, grad(w, x))
        heapq.heappush(heap, (now + factors[w], w))
        full = np.mean([grad(v, x) for v in range(n)], axis=0)
        norms.append(float(full @ full))
    return x, np.array(norms)


@pytest.mark.parametrize("name,tau", [("asgd", 0.0), ("clipped_asgd", 0.05)])
def test_the_runner_matches_an_independent_simulation(tmp_path, name, tau):
    n, rounds = 5, 60
    factors = (1.0, 1.0, 1.0, 2.0, 7.0)
    m = {"name": name, "tau": tau} if tau else {"name": name}
    table = async_table(tmp_path / "a.h5", m, n=n, rounds=rounds,
                        **{"async": {"compute_time": "constant", "factors": list(factors)}})
    result = run(table)
    trace = load_trace(str(tmp_path / "a.h5"))
    x, norms = reference_asgd(table, n, rounds, result.gamma, factors, tau)
    with h5py.File(tmp_path / "a.h5") as f:
        np.testing.assert_allclose(f["x_final"][()], x, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(trace.grad_norm_sq, norms, rtol=1e-9)
    assert trace.tables["events"]["clipped"].any() == bool(tau)


def test_time_budget_and_trace_summary(tmp_path):
    table = async_table(tmp_path / "a.h5", {"name": "asgd"}, rounds=100000,
                        **{"async": {"max_time": 25.0, "slow_workers": [0], "slow_factor": 10.0}})
    table["run"]["eval_every"] = 7
    result = run(table)
    assert result.status.startswith("completed: time budget 25 reached at update"), result.status
    trace = load_trace(str(tmp_path / "a.h5"))
    ev = trace.tables["events"]
    assert ev["sim_time"].max() <= 25.0 and np.all(np.diff(ev["sim_time"]) >= 0)
    np.testing.assert_array_equal(ev["update"], np.arange(len(ev["update"])))  # ASGD applies every arrival
    np.testing.assert_array_equal(ev["delay"], ev["update"] - ev["start"])
    with h5py.File(tmp_path / "a.h5") as f:
        a = f.attrs
        assert a["tau_max"] == ev["delay"].max() and a["arrivals"] == len(ev["delay"])
        assert a["delay_mean"] == pytest.approx(ev["delay"].mean()) and a["concurrency"] == 6
        assert a["delay_p99"] == np.sort(ev["delay"])[math.ceil(0.99 * len(ev["delay"])) - 1]
        rows, sim = f["rounds"][()], f["sim_time"][()]
    assert rows[-1] == result.rounds and rows[-1] == len(ev["update"])
    updates_at = dict(zip(ev["update"] + 1, ev["sim_time"]))
    assert all(sim[i] == updates_at[r] for i, r in enumerate(rows) if r)


def test_replay_reproduces_a_noisy_run_bit_for_bit_and_fits_another_method(tmp_path):
    noisy = {"oracle": "noise", "noise_sigma": 0.3, "assignment": "random", "slow_workers": [2], "slow_factor": 8.0}
    table = async_table(tmp_path / "orig.h5", {"name": "asgd"}, **{"async": noisy})
    run(table)
    replay = async_table(tmp_path / "replay.h5", {"name": "asgd"}, **{"async": {**noisy, "replay": str(tmp_path / "orig.h5")}})
    result = run(replay)
    assert result.status.startswith("completed: round budget"), result.status
    a, b = trace_arrays(tmp_path / "orig.h5"), trace_arrays(tmp_path / "replay.h5")
    assert differences(a, b) == []
    clipped = async_table(tmp_path / "clip.h5", {"name": "clipped_asgd", "tau": 0.1},
                          **{"async": {**noisy, "replay": str(tmp_path / "orig.h5")}})
    run(clipped)
    c = trace_arrays(tmp_path / "clip.h5")
    for column in ("worker", "start", "job", "sim_time", "delay"):
        np.testing.assert_array_equal(c[f"events/{column}"], a[f"events/{column}"])
    assert not np.array_equal(c["x_final"], a["x_final"])


def test_replay_of_a_method_that_discards_into_one_that_does_not_is_refused_mid_run(tmp_path):
    table = async_table(tmp_path / "ring.h5", {"name": "ringmaster_asgd", "max_delay": 2},
                        **{"async": {"slow_workers": [1], "slow_factor": 6.0}})
    run(table)
    assert (load_trace(str(tmp_path / "ring.h5")).tables["events"]["update"] == -1).any()
    other = async_table(tmp_path / "b.h5", {"name": "asgd"}, **{"async": {"replay": str(tmp_path / "ring.h5")}})
    from mpiclip.errors import RunFailed

    with pytest.raises(RunFailed, match="replayed schedule does not fit"):
        run(other)


BAD = [
    ({"method": {"name": "clipped_asgd", "tau": 0.0}}, "method.tau = 0.0: must be a finite number > 0"),
    ({"method": {"name": "clipped_asgd", "tau": -1.0}}, "method.tau = -1.0"),
    ({"async": {"slow_workers": [1], "slow_factor": 0.0}}, "async.slow_factor = 0.0"),
    ({"async": {"slow_workers": [1], "slow_factor": float("inf")}}, "async.slow_factor = inf"),
    ({"async": {"factors": [1.0, 1.0, 1.0, 1.0, 1.0, -2.0]}}, "async.factors = -2.0"),
    ({"async": {"factors": [1.0, 2.0]}}, "async.factors = 2: factors given for n = 6"),
    ({"async": {"slow_workers": [6]}}, "async.slow_workers = 6: is not a worker id"),
    ({"async": {"concurrency": 7}}, "async.concurrency = 7: exceeds the 6 workers"),
    ({"async": {"outages": [[0, 5.0, 2.0]]}}, "async.outages = [0.0, 5.0, 2.0]"),
    ({"async": {"times": [[1.0]]}}, "async.times = [1.0]: is only used with compute_time = 'list'"),
    ({"async": {"compute_time": "list", "times": [[1.0, 0.0]]}}, "async.times = [1.0, 0.0]"),
    ({"async": {"mean_time": float("nan")}}, "async.mean_time = nan"),
    ({"method": {"name": "minibatch_sgd"}, "async": {"assignment": "random"}}, "async.assignment = 'random'"),
    ({"method": {"name": "ringmaster_asgd", "stops": True}, "async": {"assignment": "random"}}, "async.assignment"),
    ({"method": {"name": "ef21"}, "async": {"concurrency": 2}}, "async = {concurrency}: method 'ef21' runs on the synchronous runner"),
    ({"async": {"replay": "/nonexistent/x.h5"}}, "async.replay = '/nonexistent/x.h5': cannot be read"),
    ({"compressor": {"name": "clip", "tau": 1.0}}, "compressor.name = 'clip': asgd clips with method.tau"),
    ({"async": {"mode": "real"}}, "async.mode = 'real': needs a server rank and at least one worker rank"),
    ({"async": {"mode": "real", "replay": "x.h5"}}, "async.replay = 'x.h5': is a simulated-mode setting"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_input_is_one_line_naming_the_field_before_anything_is_written(tmp_path, changes, message):
    table = async_table(tmp_path / "bad.h5", {"name": "asgd"}, **{k: v for k, v in changes.items() if k != "method"})
    if "method" in changes:
        table["method"] = changes["method"]
    with pytest.raises(InputError) as e:
        run(table)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "bad.h5").exists()


def test_replay_from_another_worker_count_or_problem_is_refused(tmp_path):
    run(async_table(tmp_path / "orig.h5", {"name": "asgd"}))
    for changes, message in [({"run": {"name": "a", "n_workers": 5, "rounds": 10}}, "n_workers = 6, this run has 5"),
                             ({"problem": {"name": "least_squares"}}, "problem = logreg, this run has least_squares")]:
        table = async_table(tmp_path / "b.h5", {"name": "asgd"}, **{"async": {"replay": str(tmp_path / "orig.h5")}})
        table.update(changes)
        with pytest.raises(InputError, match=message):
            run(table)
        assert not (tmp_path / "b.h5").exists()
    sync = config_table(run={"name": "s", "n_workers": 6, "rounds": 3})
    sync["output"] = {"path": str(tmp_path / "sync.h5")}
    run(sync)
    with pytest.raises(InputError, match="has no arrival schedule"):
        run(async_table(tmp_path / "b.h5", {"name": "asgd"}, **{"async": {"replay": str(tmp_path / "sync.h5")}}))


def test_analysis_plots_asynchronous_traces_and_counts_gradients(tmp_path):
    import os
    import sys

    from helpers import REPO

    from mpiclip.plotting import gradients_computed

    run(async_table(tmp_path / "a.h5", {"name": "ringmaster_asgd", "max_delay": 3},
                    **{"async": {"slow_workers": [0], "slow_factor": 9.0}}))
    tr = load_trace(str(tmp_path / "a.h5"))
    counts = gradients_computed(tr)
    assert counts[0] == 0 and np.all(np.diff(counts) >= 1)  # at least one arrival per update
    assert counts[-1] == len(tr.tables["events"]["update"])  # the last row's iterate came from the last arrival
    sys.path.insert(0, os.path.join(REPO, "analysis"))
    import plot_traces

    for args in (["--x", "sim_time"], ["--x", "gradients"], ["--delays"], ["--contributions"]):
        out = str(tmp_path / f"{args[-1].strip('-')}.png")
        assert plot_traces.main([str(tmp_path / "a.h5"), "-o", out, *args]) == 0
        assert os.path.getsize(out) > 5000
    sync = config_table(run={"name": "s", "n_workers": 4, "rounds": 3})
    sync["output"] = {"path": str(tmp_path / "s.h5")}
    run(sync)
    assert plot_traces.main([str(tmp_path / "s.h5"), "-o", str(tmp_path / "x.png"), "--delays"]) == 2


def test_sigterm_ends_a_real_run_with_its_rows_evaluated_and_no_checkpoint(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import write_toml

    table = async_table(tmp_path / "real.h5", {"name": "asgd"}, n=4, rounds=10_000_000,
                        **{"async": {"mode": "real", "slow_workers": [3], "slow_factor": 3.0, "time_unit": 1e-4}})
    table["run"]["eval_every"] = 50
    path = write_toml(str(tmp_path / "real.toml"), table)
    cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", "2", sys.executable, "-m", "mpi4py", "-m",
           "mpiclip", "run", path]
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "real.h5").exists():
        time.sleep(0.1)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (143, -15), (proc.returncode, err)
    tr = load_trace(str(tmp_path / "real.h5"))
    assert tr.status == "interrupted" and "real mode: not resumable" in tr.attrs["stop_reason"]
    assert len(tr.rounds) > 1 and np.isfinite(tr.grad_norm_sq).all()
    assert len(tr.tables["events"]["update"]) >= tr.rounds[-1]
    assert not (tmp_path / "real.ckpt.h5").exists()


def test_job_oracles_are_unbiased_and_keyed_by_worker_and_job():
    from mpiclip import data as datamod
    from mpiclip.oracles import JobOracle
    from mpiclip.problems import PROBLEMS

    config = cfg.validate(config_table(run={"name": "o", "n_workers": 4}))
    plan = datamod.plan(config.data, 4, "pm1")
    ids = np.arange(4)
    problem = PROBLEMS.get("logreg", "").build(config.problem.params, plan.load(ids), ids, 4)
    x = np.random.default_rng(3).standard_normal(12)
    full = problem.loss_grads(x, False)[1]
    for data, target in (("heterogeneous", full[2]), ("homogeneous", full.mean(axis=0))):
        for oracle, extra in (("minibatch", {"batch_size": 5}), ("noise", {"noise_sigma": 0.5, "noise_theta": 2.0})):
            p = params(4, data=data, oracle=oracle, **extra)
            jobs = JobOracle(problem, p, seed=1)
            draws = np.array([jobs.gradient(x, 2, 2, k, 0) for k in range(3000)])
            spread = draws.std(axis=0) / np.sqrt(len(draws))
            assert np.all(np.abs(draws.mean(axis=0) - target) < 6 * spread + 1e-12), (data, oracle)
            again = JobOracle(problem, p, seed=1)
            np.testing.assert_array_equal(again.gradient(x, 2, 2, 17, 5), draws[17])  # keyed, not sequential
            assert not np.array_equal(jobs.gradient(x, 1, 1, 17, 0), draws[17])  # another worker, other draws
    exact = JobOracle(problem, params(4), seed=1)
    np.testing.assert_array_equal(exact.gradient(x, 2, 2, 0, 0), full[2])
