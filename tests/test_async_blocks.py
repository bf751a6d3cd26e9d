"""The asynchronous runner's one-rank loop (``AsynchronousRunner._arrivals``): the arrivals between two rows, checks
or checkpoints run as one block whose events, delays and bits are handed over at its end; the clock draws its compute
times as far as they are asked for. Either must give what one update at a time and one whole block of draws give, to
the bit."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
from helpers import config_table, differences, run_completed, trace_arrays

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.asynchrony import BLOCK, AsyncParams, ComputeTimes
from mpiclip.comm import SerialComm
from mpiclip.compressors import ENCODINGS
from mpiclip.oracles import JobOracle
from mpiclip.recorder import TABLE_ROWS, Recorder
from mpiclip.rng import TIMES, generator
from mpiclip.runners.asynchronous import EVENTS, count_uploads
from mpiclip.runners.base import Ledger


def table(method: dict, compressor: dict = None, **run) -> dict:
    t = config_table(method=method, compressor=compressor or {"name": "identity"}, stepsize={"factor": 1.0})
    t["run"] = {"name": "b", "n_workers": 5, "rounds": 120, **run}
    t["async"] = {"compute_time": "exponential"}
    return t


@pytest.mark.parametrize("method, compressor", [({"name": "asgd"}, None), ({"name": "asgd"}, {"name": "topk", "k": 2}),
                                                ({"name": "rennala_sgd", "batch": 2}, None),
                                                ({"name": "ringmaster_asgd", "max_delay": 2, "stops": True}, None)])
def test_a_block_of_arrivals_gives_the_events_bits_and_iterate_of_one_update_at_a_time(tmp_path, method, compressor):
    """Rows and checks at every update make blocks of one update; rows every 60 make blocks of up to 50 (a check every
    50): the same /events, the same final x, and each long row's bits the sum of the short rows' since the last."""
    one = run_completed(table(method, compressor, eval_every=1, check_every=1), tmp_path / "one.h5")
    long = run_completed(table(method, compressor, eval_every=60, check_every=50), tmp_path / "long.h5")
    events = sorted(k for k in one if k.startswith("events/"))
    assert len(one["events/worker"]) >= 120
    assert differences({k: one[k] for k in events}, {k: long[k] for k in events}) == []
    assert np.array_equal(one["x_final"], long["x_final"])
    rows = one["rounds"]
    for e in ENCODINGS:
        between = [one[f"bits/up/{e}"][(rows > lo) & (rows <= hi)].sum(axis=0) for lo, hi in zip([-1, 0, 60], [0, 60, 120])]
        assert np.array_equal(long[f"bits/up/{e}"], np.array(between)), e


def test_a_stop_agreed_at_a_check_ends_the_run_after_that_update_and_resumes_to_the_same_trace(tmp_path, monkeypatch):
    """A SIGTERM reaches the run at its 25th gradient (5 jobs at the start, then one per update: during update 19); the
    check at update 20 agrees on it and the run stops there, as one update at a time did (no block runs past a check,
    though the next row is at 50); resumed, it ends as the uninterrupted run."""
    t = table({"name": "asgd"}, eval_every=50, check_every=10)
    full = run_completed(t, tmp_path / "full.h5")
    calls, gradient = [0], JobOracle.gradient

    def signalling(self, *args):
        calls[0] += 1
        if calls[0] == 25:
            os.kill(os.getpid(), signal.SIGTERM)
        return gradient(self, *args)

    monkeypatch.setattr(JobOracle, "gradient", signalling)
    t["output"] = {"path": str(tmp_path / "cut.h5"), "exists": "overwrite"}
    (prepared,) = session.prepare_all([cfg.validate(t)], SerialComm(), "test", log=lambda *a: None)
    assert session.execute(prepared).status == "interrupted: SIGTERM at round 20"
    monkeypatch.setattr(JobOracle, "gradient", gradient)
    t["run"]["resume"] = "yes"
    (prepared,) = session.prepare_all([cfg.validate(t)], SerialComm(), "test", log=lambda *a: None)
    assert session.execute(prepared).status.startswith("completed")
    assert differences(full, trace_arrays(str(tmp_path / "cut.h5"))) == []


def test_uploads_counted_per_worker_equal_their_bits_added_one_by_one():
    """Whole bits on whole totals below 2⁵³: count × bits at once. Bits or a total that are not whole, or a sum past 2⁵³:
    one by one, where count × bits would round differently (each of those cases is one where it does)."""
    workers = [2, 0, 2, 2, 1, 2]  # worker 2 uploads 4 times
    cases = [(0.0, np.array([4096.0, 123.0, 77.0, 8.0]), True), (0.2, np.array([0.3, 0.1, 1.0, 2.0]), False),
             (1.0, np.array([0.7, 0.1, 3.0, 5.0]), False), (2.0**53 - 2, np.array([3.0, 5.0, 7.0, 9.0]), False)]
    for start, bits, exact in cases:
        ledger, one_by_one = Ledger.empty(3), Ledger.empty(3)
        for copy in (ledger, one_by_one):
            copy.sent_up += start
        count_uploads(ledger, workers, bits)
        for i in workers:
            one_by_one.sent_up[i] += bits
            one_by_one.pending_up[i] += bits
        assert np.array_equal(ledger.sent_up, one_by_one.sent_up) and np.array_equal(ledger.pending_up, one_by_one.pending_up)
        assert np.array_equal(start + 4 * bits, one_by_one.sent_up[2]) == exact
    ledger = Ledger.empty(1)  # bits that are not whole, whose count × bits is: 10 × 0.1 = 1.0, one by one 0.9999999999999999
    count_uploads(ledger, [0] * 10, np.full(len(ENCODINGS), 0.1))
    assert ledger.sent_up[0, 0] == sum([0.1] * 10) != 1.0


def test_rows_added_at_once_fill_and_write_the_table_buffer_as_rows_added_one_by_one():
    """add_rows across a full buffer (TABLE_ROWS) hands the same rows to the trace at the same points as add."""
    width = len(EVENTS.columns)
    rows = np.random.default_rng(0).standard_normal((TABLE_ROWS + 900, width))
    bits = np.arange(len(rows) * len(ENCODINGS), dtype=np.float64).reshape(len(rows), -1)
    written = {}
    for how in ("one", "block", "fixed"):
        recorder = Recorder(SerialComm(), 1, (), None, 4, tables=((EVENTS, 0),))
        handed = []
        recorder._write_table = lambda buffer, handed=handed: (handed.append(buffer.rows[: buffer.n].copy()),
                                                                setattr(buffer, "n", 0))
        if how == "one":
            for row, b in zip(rows, bits):
                recorder.add("events", tuple(row), b)
        elif how == "block":
            for lo, hi in ((0, 3000), (3000, 3000), (3000, 4200), (4200, len(rows))):
                recorder.add_rows("events", rows[lo:hi], bits[lo:hi])
        else:
            recorder.add_rows("events", rows, bits[7])
        handed.append(recorder.tables["events"].rows[: recorder.buffered("events")].copy())
        written[how] = handed
    assert [len(h) for h in written["one"]] == [TABLE_ROWS, 900]
    for one, block in zip(written["one"], written["block"]):
        assert np.array_equal(one, block)
    fixed = np.concatenate(written["fixed"])
    assert np.array_equal(fixed[:, :width], rows) and (fixed[:, width:] == bits[7]).all()


@pytest.mark.parametrize("model", [{"compute_time": "exponential", "mean_time": 2.0},
                                   {"compute_time": "lognormal", "lognormal_sigma": 0.7}])
def test_compute_times_drawn_as_far_as_asked_are_the_draws_of_the_whole_block(model):
    """Any order of asking, across two blocks: factor × mean × draw k mod BLOCK of the block's one draw × steps."""
    times = ComputeTimes(AsyncParams(**model, factors=(1.0, 3.0)), 2, seed=5, steps=2)
    keys = [(w, k) for w in (0, 1) for k in list(range(40)) + [BLOCK - 1, BLOCK, BLOCK + 300]]
    random.Random(1).shuffle(keys)
    for w, k in keys:
        block = generator(5, TIMES, w, k // BLOCK)
        if model["compute_time"] == "exponential":
            draw = block.standard_exponential(BLOCK)[k % BLOCK]
        else:
            s = model["lognormal_sigma"]
            draw = np.exp(s * block.standard_normal(BLOCK) - 0.5 * s * s)[k % BLOCK]
        assert times.duration(w, k) == (1.0, 3.0)[w] * model.get("mean_time", 1.0) * float(draw) * 2


def test_blocks_cut_at_block_updates_change_nothing(tmp_path, monkeypatch):
    """Rows and checks rarer than BLOCK_UPDATES: blocks end there too (a block's events wait in lists); the trace is the
    same as with blocks up to the next check."""
    from mpiclip.runners import asynchronous

    whole = run_completed(table({"name": "asgd"}, eval_every=60, check_every=50), tmp_path / "whole.h5")
    cuts = []
    horizon = asynchronous.AsynchronousRunner._horizon
    monkeypatch.setattr(asynchronous, "BLOCK_UPDATES", 7)
    monkeypatch.setattr(asynchronous.AsynchronousRunner, "_horizon", lambda self, t: cuts.append(horizon(self, t)) or cuts[-1])
    cut = run_completed(table({"name": "asgd"}, eval_every=60, check_every=50), tmp_path / "cut.h5")
    assert cuts[:3] == [7, 14, 21] and 50 in cuts and 60 in cuts
    assert differences(whole, cut) == []
