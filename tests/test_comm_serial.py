"""SerialComm's point-to-point loopback: a single process sending to itself, matched like MPI; its sums."""

import numpy as np
import pytest

from mpiclip.comm import ANY_SOURCE, ANY_TAG, CANCELLED, SerialComm, Status
from mpiclip.wire import sequential_sum


def received(comm, n, dtype=np.float64, **match):
    buf = np.empty(n, dtype=dtype)
    status = comm.recv(buf, **match)
    return buf[: status.count], status


def test_fifo_order_per_tag():
    comm = SerialComm()
    comm.send(np.array([1.0]), 0, tag=5)
    comm.send(np.array([2.0, 2.5]), 0, tag=6)
    comm.send(np.array([3.0]), 0, tag=5)
    assert received(comm, 4, tag=6)[0].tolist() == [2.0, 2.5]
    first, status = received(comm, 4, source=0, tag=5)
    assert first.tolist() == [1.0] and status == Status(0, 5, 1)
    assert received(comm, 4, tag=5)[0].tolist() == [3.0]
    assert comm.iprobe() is None


def test_any_tag_takes_the_oldest_message_of_any_tag():
    comm = SerialComm()
    for tag in (3, 1, 2):
        comm.send(np.array([tag], dtype=np.int64), 0, tag=tag)
    got = [received(comm, 1, np.int64, source=ANY_SOURCE, tag=ANY_TAG) for _ in range(3)]
    assert [s.tag for _, s in got] == [3, 1, 2] and [int(b[0]) for b, _ in got] == [3, 1, 2]


def test_exact_contents_and_the_sender_may_reuse_its_buffer():
    comm = SerialComm()
    x = np.array([np.nan, -0.0, np.inf, 5e-324, 1 / 3])
    request = comm.isend(x, 0, tag=1)
    sent = x.copy()
    x[:] = 0.0  # the message was copied when sent
    assert request.test() == Status(0, 1, 5) and request.wait() == Status(0, 1, 5)
    got, _ = received(comm, 5)
    assert got.tobytes() == sent.tobytes()
    ints = np.array([[np.iinfo(np.int64).min, -1], [0, np.iinfo(np.int64).max]])
    comm.send(ints, 0)
    into = np.empty((2, 2), dtype=np.int64)
    assert comm.recv(into).count == 4 and np.array_equal(into, ints)


def test_iprobe_and_probe_count_elements_of_the_given_dtype():
    comm = SerialComm()
    assert comm.iprobe() is None and comm.iprobe(0, 4, dtype=np.float64) is None
    comm.send(np.arange(5.0), 0, tag=4)
    comm.send(np.arange(3, dtype=np.int32), 0, tag=7)
    assert comm.iprobe() == Status(0, 4, 40)  # bytes by default
    assert comm.iprobe(dtype=np.float64) == Status(0, 4, 5)
    assert comm.iprobe(tag=4, dtype=np.int32) == Status(0, 4, 10)
    assert comm.probe(source=0, tag=7, dtype=np.int32) == Status(0, 7, 3)
    with pytest.raises(ValueError, match="not a whole number of complex128"):
        comm.iprobe(tag=4, dtype=np.complex128)
    with pytest.raises(ValueError, match="not supported"):
        comm.iprobe(dtype=object)
    # probe, allocate, receive: the protocol of a receiver that does not know the length
    for tag, dtype in ((7, np.int32), (4, np.float64)):
        status = comm.probe(tag=tag, dtype=dtype)
        buf = np.empty(status.count, dtype=dtype)
        assert comm.recv(buf, status.source, status.tag) == status
    assert comm.iprobe() is None


def test_irecv_posted_before_the_send_completes_when_it_arrives():
    comm = SerialComm()
    first, second = comm.irecv(np.zeros(3), tag=2), comm.irecv(np.zeros(3), tag=2)
    other = comm.irecv(np.zeros(3, dtype=np.int64), tag=ANY_TAG)
    assert first.test() is None and second.test() is None and other.test() is None
    comm.send(np.array([1.0, 2.0]), 0, tag=2)  # goes to the oldest posted receive of its tag
    assert first.test() == Status(0, 2, 2) and first.wait() == Status(0, 2, 2)
    assert first.buf.tolist() == [1.0, 2.0, 0.0] and second.test() is None
    comm.send(np.array([9], dtype=np.int64), 0, tag=8)
    assert other.wait() == Status(0, 8, 1) and other.buf[0] == 9
    comm.send(np.array([3.0, 4.0, 5.0]), 0, tag=2)
    assert second.wait().count == 3 and second.buf.tolist() == [3.0, 4.0, 5.0]
    assert comm.iprobe() is None  # every message went to a posted receive


def test_waitany_returns_each_index_once():
    comm = SerialComm()
    requests = [comm.irecv(np.zeros(1), tag=t) for t in range(4)]
    with pytest.raises(RuntimeError, match="deadlock"):
        comm.waitany(requests)
    order = [2, 0, 3, 1]
    seen = []
    for tag in order:
        comm.send(np.array([float(tag)]), 0, tag=tag)
        index, status = comm.waitany(requests)
        seen.append(index)
        assert status == Status(0, tag, 1) and requests[index].buf[0] == tag
    assert seen == order
    with pytest.raises(ValueError, match="no active request"):
        comm.waitany(requests)
    assert [s.tag for s in comm.waitall(requests)] == [0, 1, 2, 3]


def test_blocking_calls_with_nothing_to_match_raise_instead_of_hanging():
    comm = SerialComm()
    with pytest.raises(RuntimeError, match="deadlock"):
        comm.recv(np.zeros(1))
    with pytest.raises(RuntimeError, match="deadlock"):
        comm.probe()
    comm.send(np.zeros(1), 0, tag=1)
    with pytest.raises(RuntimeError, match=r"recv\(source=0, tag=2\).*deadlock"):
        comm.recv(np.zeros(1), source=0, tag=2)
    pending = comm.irecv(np.zeros(1), tag=3)
    with pytest.raises(RuntimeError, match="deadlock"):
        pending.wait()
    with pytest.raises(RuntimeError, match="deadlock"):
        comm.waitall([pending])
    assert pending.cancel() and pending.wait() == CANCELLED and not pending.cancel()
    comm.send(np.ones(1), 0, tag=3)  # the cancelled receive does not take it
    assert pending.buf[0] == 0.0 and comm.iprobe(tag=3) is not None
    # the failed blocking receives left nothing posted: both messages are still queued
    assert received(comm, 1, tag=1)[1].tag == 1 and received(comm, 1, tag=3)[0][0] == 1.0


def test_bad_ranks_tags_and_buffers_are_rejected():
    comm = SerialComm()
    x = np.zeros(2)
    for dest in (1, -2, ANY_SOURCE):
        with pytest.raises(ValueError, match="rank"):
            comm.send(x, dest)
        with pytest.raises(ValueError, match="rank"):
            comm.isend(x, dest)
    for source in (1, -2):
        with pytest.raises(ValueError, match="rank"):
            comm.recv(x, source=source)
        with pytest.raises(ValueError, match="rank"):
            comm.irecv(x, source=source)
        with pytest.raises(ValueError, match="rank"):
            comm.iprobe(source=source)
    with pytest.raises(ValueError, match="tag"):
        comm.send(x, 0, tag=ANY_TAG)
    with pytest.raises(ValueError, match="contiguous"):
        comm.send(np.zeros((3, 3))[:, 0], 0)
    readonly = np.zeros(2)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        comm.irecv(readonly)
    assert comm.iprobe() is None  # nothing was sent or posted by the rejected calls
    assert not comm._posted


def test_truncation_consumes_the_message_like_mpi():
    comm = SerialComm()
    comm.send(np.arange(4.0), 0)
    with pytest.raises(ValueError, match="truncated"):
        comm.recv(np.zeros(3))
    assert comm.iprobe() is None
    comm.send(np.arange(2.0), 0)  # a longer buffer is fine: count says how much arrived
    assert comm.recv(np.zeros(5)).count == 2


def test_split_is_a_new_communicator_with_its_own_messages():
    comm = SerialComm()
    sub = comm.split(0, key=0)
    assert (sub.rank, sub.size) == (0, 1) and sub is not comm
    comm.send(np.ones(1), 0, tag=1)
    assert sub.iprobe() is None
    sub.send(np.full(1, 2.0), 0, tag=1)
    assert received(sub, 1)[0][0] == 2.0 and received(comm, 1)[0][0] == 1.0


def test_the_sum_of_some_workers_rows_has_the_bits_of_the_sum_of_all():
    """sum_rows_of skips the rows of the workers that send nothing, yet gives sequential_sum's bits over all of
    them: a −0.0 meets the skipped zeros (and becomes +0.0) exactly where the dense sum adds them."""
    rng = np.random.default_rng(0)
    comm = SerialComm()
    for _ in range(500):
        n = int(rng.integers(1, 8))
        comm.bind(n)
        senders = np.sort(rng.choice(n, int(rng.integers(0, n + 1)), replace=False))
        rows = rng.choice([0.0, -0.0, 1.0, -1.0, 1e-300, np.inf, np.nan, 3.5], size=(len(senders), 4))
        filled = np.zeros((n, 4))
        filled[senders] = rows
        columns = rng.standard_normal((n, 2))
        total, column_total = comm.sum_rows_of(rows, senders, ordered=True, columns=columns)
        assert total.tobytes() == sequential_sum(filled).tobytes() == comm.sum_rows_of(rows, senders, True).tobytes()
        assert column_total.tobytes() == sequential_sum(columns).tobytes()
    with pytest.raises(ValueError, match="2 rows for 1 senders"):
        comm.sum_rows_of(np.zeros((2, 4)), np.array([0]), True)


def test_a_nonblocking_broadcast_on_one_rank_is_complete_at_once_and_leaves_the_buffer():
    comm, buf = SerialComm(), np.array([1.0, -2.0, 3.5])
    request = comm.ibcast_array(buf, 0)
    assert request.test() == Status(0, 0, 3) and request.wait() == Status(0, 0, 3)
    assert buf.tolist() == [1.0, -2.0, 3.5]
    with pytest.raises(ValueError, match="rank 1 is not in this communicator"):
        comm.ibcast_array(buf, 1)


def test_the_sequential_sum_of_short_rows_has_the_bits_of_the_row_by_row_loop():
    """sequential_sum adds short rows with one np.add.reduce over axis 0: every column's terms in worker order from
    row 0, as the loop it replaces (−0.0, infinities, NaN, overflow, one row, rows as wide as the fast path takes)."""
    def loop(rows):
        acc = rows[0].copy()
        for row in rows[1:]:
            acc += row
        return acc

    rng = np.random.default_rng(1)
    specials = [0.0, -0.0, 1.0, -1.0, 1e-300, -1e-320, 1e308, -1e308, np.inf, -np.inf, np.nan, 3.5, 0.1]
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(400):
            shape = (int(rng.integers(1, 30)), int(rng.choice([2, 3, 7, 125, 1000, 8192])))
            rows = rng.choice(specials, size=shape) if rng.random() < 0.5 else rng.standard_normal(shape) * 1e3
            if rng.random() < 0.3:
                rows[:, int(rng.integers(shape[1]))] = -0.0  # a whole column of −0.0
            assert sequential_sum(rows).tobytes() == loop(rows).tobytes(), shape
