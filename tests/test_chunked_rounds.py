"""Synchronous rounds in chunks of local workers (runners/chunks.py): the same trace to the last bit as the stacked
round, for every method that declares its step row by row, and the pieces that make it so."""

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import config_table, differences, run_completed, trace_arrays

from mpiclip import limits
from mpiclip.compressors import ChunkedMessage, Message, TopK, dense_message
from mpiclip.compressors.base import build_compressor
from mpiclip.methods import METHODS
from mpiclip.problems.linear import LinearDesign
from mpiclip.rng import WorkerRandomness
from mpiclip.runners import chunks, synchronous
from mpiclip.wire import sequential_sum, sequential_sum_of_pieces

D = 12  # the features of config_table's data
TWO_WORKERS = 2 * 8 * D  # CHUNK_BYTES for chunks of two workers: 5 workers step as 2 + 2 + 1

CASES = {
    "ef21-topk": {},
    "ef21-randk": {"compressor": {"name": "randk", "k": 3}},
    "ef21-randk-shared": {"compressor": {"name": "randk_shared", "k": 2}},
    "ef21-compressed-init": {"method": {"name": "ef21", "init": "compressed"}},
    "ef21-sgd": {"method": {"name": "ef21_sgd", "batch": 0.3}},
    "ef21-hb": {"method": {"name": "ef21_hb", "eta": 0.5}},
    "ef21-bc": {"method": {"name": "ef21_bc", "downlink": {"name": "randk", "k": 3}}},
    "ef21-prox": {"method": {"name": "ef21_prox", "prox": "box", "lower": -0.3, "upper": 0.3}},
    "ef14": {"method": {"name": "ef14"}},
    "ef14-sgd": {"method": {"name": "ef14_sgd", "batch": 0.3}},
    "cgd-randk": {"method": {"name": "cgd"}, "compressor": {"name": "randk", "k": 3}},
    "diana-randk": {"method": {"name": "diana"}, "compressor": {"name": "randk_unbiased", "k": 3}},
    "diana-natural": {"method": {"name": "diana"}, "compressor": {"name": "compose", "inner": {"name": "randk_unbiased", "k": 4},
                                                                  "outer": {"name": "natural"}, "scale": False}},
    "clip21-dp-dense": {"method": {"name": "clip21_gd", "tau": 0.3, "sigma": 0.05}, "compressor": {"name": "identity"}},
    "clip21-topk": {"method": {"name": "clip21_gd", "tau": 0.1, "order": "compress_first"}},
    "clip-sgd": {"method": {"name": "clip_sgd", "tau": 0.3, "sigma": 0.05, "batch": 0.3}, "compressor": {"name": "identity"}},
    "clip21-sgd2m-pp": {"method": {"name": "clip21_sgd2m", "tau": 0.3, "batch": 0.3, "participation": 0.4,
                                   "participation_sampling": "poisson"}, "compressor": None},
    "dp-sgd": {"method": {"name": "dp_sgd", "tau": 0.3, "sigma": 0.5, "batch": 0.3}, "compressor": None},
    "least-squares": {"problem": {"name": "least_squares"},
                      "data": {"source": "synthetic", "n_samples": 200, "n_features": D, "density": 0.3, "labels": "raw"}},
    "dense-storage": {"data": {"source": "synthetic", "n_samples": 200, "n_features": D, "density": 0.9, "storage": "dense"}},
    "system-clock-per-sample": {"method": {"name": "ef21_sgd", "batch": 0.3},
                                "system": {"mean_time": 1e-3, "compute_unit": "sample", "latency": 1e-4}},
}


def chunked_steps(monkeypatch) -> list:
    """Count the rounds the runner steps in chunks."""
    calls = []
    step = synchronous.step_in_chunks
    monkeypatch.setattr(synchronous, "step_in_chunks", lambda *a, **k: calls.append(1) or step(*a, **k))
    return calls


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_round_in_chunks_writes_the_stacked_rounds_trace_bit_for_bit(tmp_path, monkeypatch, case):
    def table():  # recorded (every 3rd) and unrecorded rounds; 5 workers in chunks of 2, 2 and 1
        return config_table(run={"name": case, "n_workers": 5, "rounds": 16, "eval_every": 3}, **CASES[case])

    stacked = run_completed(table(), tmp_path / "stacked.h5")
    calls = chunked_steps(monkeypatch)
    monkeypatch.setattr(limits, "CHUNK_BYTES", TWO_WORKERS)
    chunked = run_completed(table(), tmp_path / "chunked.h5")
    assert len(calls) == 16
    assert differences(stacked, chunked) == []


@pytest.mark.parametrize("method", ["gd", "ef21_plus", "ef21_page", "ef21_pp"])
def test_methods_that_need_all_rows_keep_the_stacked_round(tmp_path, monkeypatch, method):
    calls = chunked_steps(monkeypatch)
    monkeypatch.setattr(limits, "CHUNK_BYTES", TWO_WORKERS)
    extra = {"ef21_plus": {"stepsize": {"rule": "ef21_pl", "factor": 4.0}}, "gd": {"compressor": None}}.get(method, {})
    run_completed(config_table(run={"name": method, "n_workers": 5, "rounds": 4}, method={"name": method}, **extra),
                  tmp_path / "t.h5")
    assert calls == [] and not chunks.row_separable(METHODS.get(method, "m"))


def test_the_chunk_size_keeps_a_chunks_array_within_the_budget_and_at_least_one_worker():
    assert chunks.chunk_workers(20, 123) == 20  # a9a: one chunk, the stacked round
    assert chunks.chunk_workers(500, 10**5) == limits.CHUNK_BYTES // (8 * 10**5)  # 41 of w1000's workers
    assert chunks.chunk_workers(10, 10**7) == 1  # one d-vector is over the budget


def test_a_design_of_some_workers_gives_their_bits():
    rng = np.random.default_rng(1)
    X = sp.random(40, 30, density=0.2, format="csr", random_state=2)
    design = LinearDesign(X, rng.standard_normal(40), np.array([0, 7, 15, 16, 30, 40]))
    s, x = rng.standard_normal(40), rng.standard_normal(30)
    sums, z = design.worker_sums(s), design.products(x).copy()
    for lo, hi in [(0, 2), (1, 4), (4, 5), (0, 5)]:
        part, rows = design.workers(lo, hi), slice(design.offsets[lo], design.offsets[hi])
        assert np.array_equal(part.worker_sums(s[rows]), sums[lo:hi])
        assert np.array_equal(part.products(x), z[rows])


def test_the_sum_of_pieces_side_by_side_has_the_bits_of_the_stacked_sum():
    rng = np.random.default_rng(3)
    pieces = [rng.standard_normal((6, 5)) * 10.0 ** rng.integers(-8, 8, (6, 5)), rng.standard_normal((6, 1)),
              np.zeros((6, 0)), -np.zeros((6, 2))]
    stacked = np.hstack(pieces)
    start = rng.standard_normal(8)
    assert np.array_equal(sequential_sum_of_pieces(pieces).view(np.int64), sequential_sum(stacked).view(np.int64))
    assert np.array_equal(sequential_sum_of_pieces(pieces, start), sequential_sum(stacked, start))
    # numpy's unordered sum over rows adds them one after another onto 0.0 (MPIComm.sum_row_blocks relies on it)
    assert np.array_equal(stacked.sum(axis=0).view(np.int64), sequential_sum_of_pieces(pieces, np.zeros(8)).view(np.int64))


def test_a_message_joined_from_chunks_is_the_message_of_all_workers():
    v = np.random.default_rng(4).standard_normal((5, 9))
    topk = TopK(type("P", (), {"k": 2})())
    whole = topk(v, None)
    joined = ChunkedMessage(5)
    for lo, hi in [(0, 2), (2, 4), (4, 5)]:
        joined.add(topk(v[lo:hi], None))
    msg = joined.message()
    for field in ("values", "indices", "counts", "bits"):
        assert np.array_equal(getattr(msg, field), getattr(whole, field)), field
    assert msg.fixed_count == whole.fixed_count == 2 and msg.d == 9


def test_a_dense_message_is_read_from_the_state_that_holds_it_and_copied_otherwise():
    state, other = np.arange(20.0).reshape(5, 4), -np.arange(20.0).reshape(5, 4)
    borrowed = ChunkedMessage(5)
    for lo, hi in [(0, 2), (2, 5)]:
        borrowed.add(dense_message(state[lo:hi]), held_in=state)
    assert borrowed.message().values is state
    mixed = ChunkedMessage(5)  # the first chunk's rows in the state, the second's not: one array of both
    mixed.add(dense_message(state[:2]), held_in=state)
    mixed.add(dense_message(other[2:]))
    values = mixed.message().values
    assert values is not state and np.array_equal(values, np.vstack([state[:2], other[2:]]))


def test_random_compressors_draw_the_same_per_worker_values_in_any_chunk():
    v = np.random.default_rng(5).standard_normal((5, 30))
    ids = np.arange(10, 15)
    rand = build_compressor({"name": "randk", "k": 4}, "compressor")
    whole = rand(v, WorkerRandomness(7, 1, ids, 3))
    parts = [rand(v[lo:hi], WorkerRandomness(7, 1, ids[lo:hi], 3)) for lo, hi in [(0, 3), (3, 5)]]
    assert isinstance(whole, Message)
    assert np.array_equal(np.concatenate([p.indices for p in parts]), whole.indices)


def test_a_chunked_run_stopped_and_resumed_writes_the_stacked_runs_trace(tmp_path, monkeypatch):
    """The state's rows are overwritten in place by a chunked round: a checkpoint at a stop holds the state of
    the top of that round, and the resumed run (chunked too) ends with the uninterrupted stacked run's trace."""
    import os
    import signal

    from mpiclip import config as cfg
    from mpiclip import session
    from mpiclip.comm import SerialComm

    def run(path, *overrides):
        table = config_table(run={"name": "cut", "n_workers": 5, "rounds": 20, "eval_every": 3}, method={"name": "diana"},
                             compressor={"name": "randk_unbiased", "k": 3})
        table["output"] = {"path": str(path), "exists": "overwrite"}
        config = cfg.validate(cfg.apply_overrides(table, [cfg.parse_override(o) for o in overrides]))
        (prepared,) = session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
        return session.execute(prepared)

    assert run(tmp_path / "stacked.h5").status.startswith("completed")
    monkeypatch.setattr(limits, "CHUNK_BYTES", TWO_WORKERS)
    advance = synchronous.SynchronousRunner.advance

    def stop_at_round_11(self, state):
        if state.t == 11 and self.chunks is not None:
            os.kill(os.getpid(), signal.SIGTERM)
        return advance(self, state)

    monkeypatch.setattr(synchronous.SynchronousRunner, "advance", stop_at_round_11)
    assert run(tmp_path / "chunked.h5").status.startswith("interrupted")
    monkeypatch.setattr(synchronous.SynchronousRunner, "advance", advance)
    assert run(tmp_path / "chunked.h5", "run.resume='yes'").status.startswith("completed")
    assert differences(trace_arrays(tmp_path / "stacked.h5"), trace_arrays(tmp_path / "chunked.h5")) == []
