"""MPIComm's point-to-point calls between ranks: exact contents, a ring, a server/worker protocol.

Every test receives every message it sends and checks that nothing is left pending, so that no
message can match a later test's receive; every verdict is collective, so ranks stay in step.
"""

import numpy as np
import pytest
from mpi4py import MPI

from mpiclip.comm import ANY_SOURCE, ANY_TAG, MPIComm, Status

WORLD = MPI.COMM_WORLD


def collective(ok: bool) -> bool:
    return WORLD.allreduce(bool(ok), op=MPI.LAND)


def drained(*comms) -> bool:
    """Nothing pending on any of ``comms`` once every rank is done sending."""
    WORLD.Barrier()
    return all(c.iprobe() is None for c in comms)


def raises(call, error) -> bool:
    try:
        call()
    except error:
        return True
    return False


PAYLOADS = {
    "float64": np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324, np.finfo(np.float64).max, 1 / 3, np.pi]),
    "int64": np.array([np.iinfo(np.int64).min, -1, 0, 1, 2**53 + 1, np.iinfo(np.int64).max], dtype=np.int64),
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_ping_pong_keeps_exact_contents(name):
    comm = MPIComm()
    x = PAYLOADS[name]
    partner = comm.rank ^ 1  # pairs (0, 1), (2, 3), ...; an odd last rank sits out
    ok = True
    if partner < comm.size:
        if comm.rank % 2 == 0:
            comm.send(x, partner, tag=21)
            back = np.empty_like(x)
            status = comm.recv(back, partner, tag=22)
            ok = status == Status(partner, 22, len(x)) and back.tobytes() == x[::-1].tobytes()
        else:
            got = np.empty(len(x) + 3, dtype=x.dtype)  # longer than the message: count tells
            status = comm.recv(got, ANY_SOURCE, ANY_TAG)
            ok = status == Status(partner, 21, len(x)) and got[: len(x)].tobytes() == x.tobytes()
            comm.send(np.ascontiguousarray(got[: len(x)][::-1]), partner, tag=22)
    ok &= drained(comm)
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_ring_with_isend_irecv_and_waitall():
    comm = MPIComm()
    rank, size, n = comm.rank, comm.size, 4
    right, left = (rank + 1) % size, (rank - 1) % size
    incoming = [np.zeros(n + 1) for _ in range(n)]
    # message k has k + 1 entries and tag k; sent in reverse order, matched by tag
    requests = [comm.irecv(incoming[k], left, tag=k) for k in range(n)]
    requests += [comm.isend(np.full(k + 1, 100.0 * rank + k), right, tag=k) for k in reversed(range(n))]
    statuses = comm.waitall(requests)
    ok = all(statuses[k] == Status(left, k, k + 1) for k in range(n))
    ok &= all(np.array_equal(incoming[k][: k + 1], np.full(k + 1, 100.0 * left + k)) for k in range(n))
    ok &= statuses[n:] == [Status(rank, k, k + 1) for k in reversed(range(n))]
    ok &= not any(r.active for r in requests) and requests[0].wait() == statuses[0]
    ok &= drained(comm)
    assert collective(ok)


def work_item(worker: int, j: int) -> np.ndarray:
    """Message j of a worker: lengths differ between workers and messages, 0 included."""
    return worker * 1000.0 + j + np.arange((worker + 2 * j) % 7, dtype=np.float64)


@pytest.mark.mpi(min_size=2)
def test_server_learns_source_tag_and_length_by_probing_and_answers_each_message():
    comm = MPIComm()
    n_items, first_tag = 5, 100
    ok = True
    if comm.rank == 0:
        answers, order = [], {w: [] for w in range(1, comm.size)}
        for i in range((comm.size - 1) * n_items):
            if i % 2:
                status = comm.probe(dtype=np.float64)
            else:
                while (status := comm.iprobe(ANY_SOURCE, ANY_TAG, dtype=np.float64)) is None:
                    pass
            buf = np.empty(status.count)
            ok &= comm.recv(buf, status.source, status.tag) == status
            j = status.tag - first_tag
            ok &= np.array_equal(buf, work_item(status.source, j))
            order[status.source].append(j)
            answer = np.array([status.source, status.tag, status.count], dtype=np.int64)
            answers.append(comm.isend(answer, status.source, tag=status.tag))
        comm.waitall(answers)
        ok &= all(js == list(range(n_items)) for js in order.values())  # one sender's messages keep their order
    else:
        # the temporary arrays live on in their requests until sent
        sends = [comm.isend(work_item(comm.rank, j), 0, tag=first_tag + j) for j in range(n_items)]
        tags = []
        for _ in range(n_items):
            answer = np.empty(3, dtype=np.int64)
            status = comm.recv(answer, source=0)
            tags.append(status.tag)
            expected = [comm.rank, status.tag, len(work_item(comm.rank, status.tag - first_tag))]
            ok &= status == Status(0, status.tag, 3) and answer.tolist() == expected
        ok &= sorted(tags) == [first_tag + j for j in range(n_items)]
        ok &= [s.count for s in comm.waitall(sends)] == [len(work_item(comm.rank, j)) for j in range(n_items)]
    ok &= drained(comm)
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_waitany_over_many_irecvs_returns_each_index_exactly_once():
    comm = MPIComm()
    others = [p for p in range(comm.size) if p != comm.rank]
    expected = [(p, t) for p in others for t in (7, 8)]
    requests = [comm.irecv(np.zeros(2, dtype=np.int64), p, t) for p, t in expected]
    sends = [comm.isend(np.array([comm.rank, t], dtype=np.int64), p, t) for p, t in reversed(expected)]
    seen, ok = [], True
    for _ in requests:
        i, status = comm.waitany(requests)
        seen.append(i)
        ok &= status == Status(*expected[i], 2) and requests[i].buf.tolist() == list(expected[i])
    ok &= sorted(seen) == list(range(len(requests)))
    ok &= raises(lambda: comm.waitany(requests), ValueError)
    comm.waitall(sends)
    ok &= drained(comm)
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_split_then_point_to_point_inside_a_sub_communicator():
    world = MPIComm()
    color = world.rank % 2
    members = sorted((p for p in range(world.size) if p % 2 == color), reverse=True)  # key = -rank
    sub = world.split(color, key=-world.rank)
    ok = sub.size == len(members) and sub.rank == members.index(world.rank)
    # a message on the world never matches on the sub-communicator
    note = world.isend(np.array([world.rank], dtype=np.int64), world.rank, tag=5)
    ok &= world.probe(world.rank, 5) == Status(world.rank, 5, 8)  # bytes by default
    ok &= sub.iprobe(tag=5) is None
    ok &= world.recv(np.empty(1, dtype=np.int64), world.rank, 5) == Status(world.rank, 5, 1)
    note.wait()
    # a ring in sub ranks (a size-1 sub-communicator sends to itself)
    right, left = (sub.rank + 1) % sub.size, (sub.rank - 1) % sub.size
    sending = sub.isend(np.array([world.rank], dtype=np.int64), right, tag=6)
    got = np.empty(1, dtype=np.int64)
    ok &= sub.recv(got, left, tag=6) == Status(left, 6, 1) and got[0] == members[left]
    ok &= sending.wait() == Status(sub.rank, 6, 1)
    ok &= raises(lambda: sub.send(got, sub.size), ValueError)
    ok &= drained(world, sub)
    assert collective(ok)
