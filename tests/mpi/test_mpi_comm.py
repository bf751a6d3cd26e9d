"""The communicator's collectives against serial computations, including empty contributions."""

import numpy as np
import pytest
from mpi4py import MPI

from mpiclip.comm import AgreedError, MPIComm, SerialComm
from mpiclip.comm.mpi import ORDERED_GATHER_BYTES
from mpiclip.errors import InputError
from mpiclip.wire import INDEX_DTYPE, sequential_sum

WORLD = MPI.COMM_WORLD


def collective(ok: bool) -> bool:
    return WORLD.allreduce(bool(ok), op=MPI.LAND)


def everyone(n_workers, seed=0, m=5):
    """Rows of all workers, identical on every rank; each rank keeps its block."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_workers, m)) * 10.0 ** rng.uniform(-6, 6, (n_workers, 1))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("ring", [False, True])
@pytest.mark.parametrize("senders", [[], [0], [1, 2, 6], [0, 3, 4, 5], list(range(7))])
def test_the_sum_of_some_workers_rows_has_the_bits_of_the_sum_of_all(monkeypatch, senders, ring):
    """Only the senders' rows travel (gathered, or in the ring above ORDERED_GATHER_BYTES), yet the sum has the bits
    of the ordered sum of every worker's row with zeros for the others: −0.0 and the columns included."""
    import mpiclip.comm.mpi as mpi_module

    if ring:
        monkeypatch.setattr(mpi_module, "ORDERED_GATHER_BYTES", -1)
    comm = MPIComm()
    n = 7
    layout = comm.bind(n)
    senders = np.array(senders, dtype=np.int64)
    rows = everyone(n, seed=3)
    rows[:, 0] = -0.0  # a column of negative zeros: the skipped workers' zeros turn them into +0.0
    rows[senders[1:2], 1] = -0.0
    filled = np.zeros_like(rows)
    filled[senders] = rows[senders]
    columns = everyone(n, seed=4, m=2)
    mine = layout.workers_of(comm.rank)
    local_senders = senders[np.isin(senders, mine)]
    total = comm.sum_rows_of(rows[local_senders], senders, ordered=True)
    ok = total.tobytes() == sequential_sum(filled).tobytes()
    total, column_total = comm.sum_rows_of(rows[local_senders], senders, ordered=True, columns=columns[mine])
    ok &= total.tobytes() == sequential_sum(filled).tobytes()
    ok &= column_total.tobytes() == sequential_sum(columns).tobytes()
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("n_workers", [None, 7])
@pytest.mark.parametrize("m", [5, ORDERED_GATHER_BYTES // 8 // 2 + 1], ids=["gathered", "ring"])
def test_ordered_sum_is_the_serial_sequential_sum(n_workers, m):
    """Small sums are gathered, large ones go round a ring: both give the serial worker-order sum's bits."""
    comm = MPIComm()
    n = n_workers or comm.size
    layout = comm.bind(n)
    rows = everyone(n, m=m)
    mine = rows[layout.workers_of(comm.rank)]
    ordered = comm.sum_rows(mine, ordered=True)
    ok = np.array_equal(ordered, sequential_sum(rows))
    unordered = comm.sum_rows(mine, ordered=False)
    ok &= np.allclose(unordered, rows.sum(axis=0), rtol=1e-12, atol=1e-6)
    ok &= np.array_equal(comm.allgather_rows(mine), rows)
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("m", [5, ORDERED_GATHER_BYTES // 8 // 2 + 1], ids=["gathered", "ring"])
def test_a_sum_of_blocks_has_the_bits_of_sum_rows_however_each_rank_cuts_its_rows(m):
    """sum_row_blocks takes a rank's rows as blocks of pieces side by side (a chunked round), sum_rows as one array
    (a stacked one): some ranks chunk and others not in one round, and both make the same collective and give the
    serial worker-order sum's bits (a rank deciding from its own rows would leave the others waiting)."""
    comm = MPIComm()
    n = 2 * comm.size + 1
    layout = comm.bind(n)
    rows = everyone(n, m=m)
    mine = rows[layout.workers_of(comm.rank)]
    if comm.rank % 2:
        total = comm.sum_rows(mine, ordered=True)
    else:  # blocks of one row, each cut into two pieces side by side
        total = comm.sum_row_blocks(([row[None, :2], row[None, 2:]] for row in mine), m, ordered=True)
    assert collective(total.tobytes() == sequential_sum(rows).tobytes())


@pytest.mark.mpi(min_size=2)
def test_sparse_gather_with_empty_messages_on_some_ranks():
    comm = MPIComm()
    n = comm.size + 3
    layout = comm.bind(n)
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 4, size=n)
    counts[layout.workers_of(0)] = 0  # rank 0 sends nothing at all
    values = [rng.standard_normal(c) for c in counts]
    indices = [np.sort(rng.choice(20, c, replace=False)).astype(INDEX_DTYPE) for c in counts]
    flags = rng.integers(0, 2, size=n).astype(np.int8)
    mine = layout.workers_of(comm.rank)
    got = comm.gather_sparse(counts[mine], np.concatenate([values[w] for w in mine] + [np.zeros(0)]),
                             np.concatenate([indices[w] for w in mine] + [np.zeros(0, INDEX_DTYPE)]), flags[mine])
    ok = np.array_equal(got.counts, counts) and np.array_equal(got.flags, flags)
    ok &= np.array_equal(got.values, np.concatenate(values)) and np.array_equal(got.indices, np.concatenate(indices))
    serial = SerialComm()
    serial.bind(n)
    target, expected = np.ones(20), np.ones(20)
    got.sum_into(target, divisor=n)
    serial.gather_sparse(counts, np.concatenate(values), np.concatenate(indices)).sum_into(expected, divisor=n)
    ok &= np.array_equal(target, expected)
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_fixed_count_gather_and_gather_to_root():
    comm = MPIComm()
    n = 2 * comm.size + 1
    layout = comm.bind(n)
    mine = layout.workers_of(comm.rank)
    k = 2
    vals = np.repeat(mine.astype(float), k) + 0.5
    idx = np.tile(np.arange(k, dtype=INDEX_DTYPE), len(mine))
    got = comm.gather_sparse(np.full(len(mine), k), vals, idx, fixed_count=k)
    ok = np.array_equal(got.values, np.repeat(np.arange(n, dtype=float), k) + 0.5)
    block = np.array([[[100.0 * r + w for _ in range(3)] for w in mine] for r in range(4)])
    root = comm.gather_to_root(block)
    if comm.rank == 0:
        ok &= root.shape == (4, n, 3) and root[2, n - 1, 0] == 200.0 + n - 1
    else:
        ok &= root is None
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_agree_raises_the_first_error_everywhere():
    comm = MPIComm()
    error = InputError("run.rounds", -1, "must be >= 0") if comm.rank == comm.size - 1 else None
    with pytest.raises((AgreedError, InputError), match=r"^run.rounds = -1: must be >= 0$") as info:
        comm.agree(error)
    assert collective(info.value.exit_code == 2)
    comm.agree(None)  # no error: returns on every rank


@pytest.mark.mpi(min_size=2)
def test_checksum_detects_ranks_that_disagree():
    comm = MPIComm()
    x = np.linspace(0, 1, 11)
    same, sums = comm.same_on_all(x)
    ok = same and len(set(sums)) == 1
    y = x.copy()
    if comm.rank == 1:
        y[3] = np.nextafter(y[3], 2.0)
    same, sums = comm.same_on_all(y)
    ok &= not same and sums[0] != sums[1]
    ok &= comm.any(comm.rank == 1) and not comm.any(False)
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_stream_to_root_hands_every_block_in_rank_order():
    comm = MPIComm()
    n = 2 * comm.size + 1
    layout = comm.bind(n)
    mine = layout.workers_of(comm.rank)
    block = np.stack([np.full((3, 2), w, dtype=np.int64) for w in mine])
    seen = []
    comm.stream_to_root(block, lambda first, rows: seen.append((first, rows.copy())))
    ok = True
    if comm.rank == 0:
        ok &= [first for first, _ in seen] == list(layout.starts)
        ok &= np.array_equal(np.concatenate([rows for _, rows in seen])[:, 0, 0], np.arange(n))
    else:
        ok &= seen == []
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_nonblocking_broadcasts_from_each_rank_in_turn_deliver_the_roots_values():
    """Comm.ibcast_array (the simulated asynchronous runner's arrivals): every rank begins the same broadcasts in the
    same order, works while one is not done, and then holds the root's values."""
    comm = MPIComm()
    for root in list(range(comm.size)) * 2:
        buf = np.full(1000, float(comm.rank))
        if comm.rank == root:
            buf[:] = np.arange(1000) * (root + 1.5)
        request = comm.ibcast_array(buf, root)
        while request.test() is None:
            pass
        assert collective(np.array_equal(buf, np.arange(1000) * (root + 1.5)) and request.wait().source == root)


@pytest.mark.mpi(min_size=2)
def test_allgather_sized_concatenates_every_ranks_values_in_rank_order_empty_ones_included():
    """Sizes every rank knows (rank 1 sends nothing): one Allgatherv gives every rank the same concatenation, the
    bits of each value kept (−0.0, a subnormal); a rank whose values do not match its size is refused before it."""
    comm = MPIComm()
    sizes = np.array([0 if r == 1 else 3 + r for r in range(comm.size)])
    rng = np.random.default_rng(5)
    every = [rng.standard_normal(s) * 10.0 ** rng.uniform(-300, 300, s) for s in sizes]
    every[0][0], every[0][1] = -0.0, 5e-324
    got = comm.allgather_sized(every[comm.rank], sizes)
    ok = np.array_equal(got.view(np.uint64), np.concatenate(every).view(np.uint64))
    with pytest.raises(ValueError, match="its size says"):
        comm.allgather_sized(np.zeros(int(sizes[comm.rank]) + 1), sizes)
    serial = np.array([1.5, -0.0])
    ok &= np.array_equal(SerialComm().allgather_sized(serial, [2]).view(np.uint64), serial.view(np.uint64))
    assert collective(ok)
