"""Compressors: contraction, tie-breaking, bits under every encoding, message algebra."""

import math

import numpy as np
import pytest

from mpiclip.compressors import COMPRESSORS, ENCODINGS, KParams, RandK, RandKUnbiased, TopK, top_k_positions
from mpiclip.errors import InputError
from mpiclip.rng import WorkerRandomness

RNG = np.random.default_rng(0)


def rngs(t=0, n=4):
    return WorkerRandomness(7, 1, np.arange(n), t)


@pytest.mark.parametrize("k", [1, 2, 5, 9, 10])
def test_top_k_keeps_the_largest_magnitudes(k):
    v = RNG.standard_normal((4, 10))
    msg = TopK(KParams(k))(v, rngs())
    dense = msg.dense(v.shape)
    for row, kept in zip(v, dense):
        order = np.argsort(-np.abs(row), kind="stable")[:k]
        expected = np.zeros(10)
        expected[order] = row[order]
        np.testing.assert_array_equal(kept, expected)
    assert msg.fixed_count == k and list(msg.counts) == [k] * 4
    assert all(np.all(np.diff(msg.indices.reshape(4, k), axis=1) > 0) for _ in [0])


def test_top_k_contraction_alpha_k_over_d():
    for k in (1, 3, 7):
        v = RNG.standard_normal((50, 20))
        err = TopK(KParams(k))(v, rngs(n=50)).error_sq(v)
        assert np.all(err <= (1 - k / 20) * np.einsum("ij,ij->i", v, v) + 1e-12)
        assert TopK(KParams(k)).alpha(20) == k / 20


def test_a_one_entry_message_error_has_the_bits_of_the_per_worker_sum():
    """error_sq of a message of one entry a worker takes the entry's term as it is: the one-term sum it skips starts
    from +0.0 and a square less a square is never −0.0, so the bits are the sum's (zeros, infinities, NaN, tiny)."""
    specials = [0.0, -0.0, 1.0, -2.5, 1e-170, -1e-320, 1e200, np.inf, -np.inf, np.nan]
    rng = np.random.default_rng(3)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(200):
            v = rng.choice(specials, size=(6, 5)) if rng.random() < 0.6 else rng.standard_normal((6, 5))
            msg = TopK(KParams(1))(v, rngs(n=6))
            kept = v[msg.entry_rows(), msg.indices]
            summed = ((msg.values - kept) ** 2 - kept**2).reshape(6, 1).sum(axis=1)  # the per-worker sum it replaces
            assert msg.error_sq(v).tobytes() == (np.einsum("ij,ij->i", v, v) + summed).tobytes()


def test_top_k_ties_go_to_the_smaller_index():
    v = np.array([[1.0, -3.0, 3.0, 2.0, -3.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    for k, expected in [(1, [1]), (2, [1, 2]), (3, [1, 2, 4]), (4, [1, 2, 4, 5]), (5, [1, 2, 3, 4, 5])]:
        rows, cols = top_k_positions(v, k)
        assert list(cols[rows == 0]) == expected
        assert list(cols[rows == 1]) == list(range(k))  # the zero vector: first k coordinates


def test_top_k_with_nan_still_sends_k_entries():
    v = np.array([[1.0, np.nan, 2.0, 0.5]])
    rows, cols = top_k_positions(v, 2)
    assert len(cols) == 2 and 1 in cols


def test_bits_under_every_encoding():
    d, k = 1000, 7
    msg = TopK(KParams(k))(RNG.standard_normal((3, d)), rngs(n=3))
    bits = dict(zip(ENCODINGS, msg.bits[0]))
    assert bits == {"paper": 32 * k, "coo32": 64 * k, "compact": 32 * k + k * math.ceil(math.log2(d)),
                    "wire": 8 * (8 + 4) * k}
    assert msg.bits.shape == (3, len(ENCODINGS))
    # positions cost at most a d-bit bitmap
    many = TopK(KParams(900))(RNG.standard_normal((1, d)), rngs(n=1))
    assert dict(zip(ENCODINGS, many.bits[0]))["compact"] == 32 * 900 + d
    dense = COMPRESSORS.get("identity", "").build(None)(RNG.standard_normal((2, d)), rngs(n=2))
    assert dict(zip(ENCODINGS, dense.bits[1])) == {"paper": 32 * d, "coo32": 32 * d, "compact": 32 * d, "wire": 64 * d}


def test_wire_bits_are_the_bytes_handed_to_mpi():
    from mpiclip.wire import ENTRY

    msg = TopK(KParams(3))(RNG.standard_normal((2, 50)), rngs(n=2))
    assert msg.bits[0, ENCODINGS.index("wire")] == 8 * 3 * ENTRY.itemsize
    assert msg.values.itemsize + msg.indices.itemsize == ENTRY.itemsize


def test_rand_k_draws_depend_on_worker_and_round_only():
    v = RNG.standard_normal((4, 30))
    a = RandK(KParams(5))(v, WorkerRandomness(1, 1, np.array([0, 1, 2, 3]), 4))
    b = RandK(KParams(5))(v[2:], WorkerRandomness(1, 1, np.array([2, 3]), 4))
    np.testing.assert_array_equal(a.indices.reshape(4, 5)[2:], b.indices.reshape(2, 5))
    c = RandK(KParams(5))(v, WorkerRandomness(1, 1, np.array([0, 1, 2, 3]), 5))
    assert not np.array_equal(a.indices, c.indices)


def test_rand_k_unbiased_and_contractive_by_monte_carlo():
    d, k, trials = 12, 3, 20000
    x = RNG.standard_normal(d)
    v = np.tile(x, (trials, 1))
    r = WorkerRandomness(3, 1, np.arange(trials), 0)
    unbiased = RandKUnbiased(KParams(k))(v, r).dense(v.shape)
    # mean within 5 standard errors; variance matches ω = d/k − 1
    se = np.sqrt((d / k - 1) * x**2 / trials)
    assert np.all(np.abs(unbiased.mean(axis=0) - x) < 5 * se + 1e-12)
    var = np.mean(np.sum((unbiased - x) ** 2, axis=1)) / (x @ x)
    assert var == pytest.approx(d / k - 1, rel=0.05)
    plain = RandK(KParams(k))(v, r)
    assert np.mean(plain.error_sq(v)) / (x @ x) == pytest.approx(1 - k / d, rel=0.05)
    assert RandKUnbiased(KParams(k)).alpha(d) is None and RandKUnbiased(KParams(k)).omega(d) == d / k - 1


def test_k_larger_than_d_is_an_input_error():
    with pytest.raises(InputError, match=r"^compressor.k = 11: must be <= d = 10"):
        TopK(KParams(11)).validate(10)
    TopK(KParams(10)).validate(10)


def test_message_algebra_matches_dense():
    v = RNG.standard_normal((3, 9))
    base = RNG.standard_normal((3, 9))
    msg = RandKUnbiased(KParams(4))(v, rngs(n=3))
    dense = msg.dense(v.shape)
    np.testing.assert_allclose(msg.added_to(base), base + dense)
    np.testing.assert_allclose(msg.error_sq(v), np.sum((dense - v) ** 2, axis=1))
    assert msg.dense(v.shape) is not base


def test_edge_cases_zero_vector_and_k_equal_d():
    z = np.zeros((2, 5))
    msg = TopK(KParams(5))(RNG.standard_normal((2, 5)), rngs(n=2))
    assert msg.error_sq(msg.dense((2, 5))).max() == 0
    assert np.all(TopK(KParams(2))(z, rngs(n=2)).values == 0)


@pytest.mark.parametrize("kind", ["gaussian", "rounded", "half-zero", "few-nonzero", "all-zero", "nan"])
@pytest.mark.parametrize("d", [100_003, 5_000])
def test_top_k_on_long_vectors_is_the_exact_rule(kind, d):
    """The threshold path for long rows (d >= 65536), and the partition path of rows with ties, give exactly the stable-sort answer, ties included,
    also when fewer than k entries lie above the sampled threshold (an EF21 difference is often zero
    almost everywhere) and with NaNs, which the exact rule ranks first."""
    rng = np.random.default_rng(7)
    v = rng.standard_normal((3, d))
    if kind == "rounded":
        v = np.round(v * 2)
    if kind == "half-zero":
        v[:, ::2] = 0.0
    if kind == "few-nonzero":
        v[:, rng.permutation(d)[20:]] = 0.0
    if kind == "all-zero":
        v[:] = 0.0
    if kind == "nan":
        v[:, [5, d - 9]] = np.nan
    for k in (1, 2, 37, 1500):
        rows, cols = top_k_positions(v, k)
        for r in range(3):
            expected = np.sort(np.argsort(-np.nan_to_num(np.abs(v[r]), nan=np.inf), kind="stable")[:k])
            np.testing.assert_array_equal(cols[rows == r], expected)


def test_a_sparse_message_added_in_a_scratch_array_gives_the_same_bits():
    """added_to(base, out=scratch) writes base + C(v) into the scratch array; when the message's values live
    in the scratch array, a new array is made instead."""
    v = RNG.standard_normal((4, 50))
    base = RNG.standard_normal((4, 50))
    msg = TopK(KParams(3))(v, rngs(n=4))
    expected = msg.added_to(base)
    scratch = np.empty_like(base)
    assert msg.added_to(base, out=scratch) is scratch and np.array_equal(scratch, expected)
    aliased = msg.replace(values=scratch.ravel()[: len(msg.values)])
    result = aliased.added_to(base, out=scratch)
    assert result is not scratch


@pytest.mark.parametrize("d", [123, 8192, 8193, 50_001])
def test_row_norms_do_not_depend_on_the_rows_stacked_with_them(d):
    """A worker's ‖v_i‖² (clipping, norm quantizers, EF21+'s choice, metrics) has the same bits whether its
    rank holds it alone or with others; numpy's einsum over a stack of long rows does not guarantee that."""
    from mpiclip.wire import row_sq_norms

    v = RNG.standard_normal((5, d))
    stacked = row_sq_norms(v)
    alone = np.array([row_sq_norms(v[i : i + 1].copy())[0] for i in range(5)])
    pairs = np.array([row_sq_norms(v[i : i + 2])[0] for i in range(4)])
    assert np.array_equal(stacked, alone) and np.array_equal(stacked[:4], pairs)
    np.testing.assert_allclose(stacked, (v * v).sum(axis=1), rtol=1e-12)



@pytest.mark.parametrize("d, k", [(10, 1), (10, 3), (1 << 17, 1), (1 << 17, 5)])
def test_top_k_of_no_rows_is_empty(d, k):
    """A rank whose workers all sit a round out (EF21-PP) compresses a (0, d) array."""
    rows, cols = top_k_positions(np.zeros((0, d)), k)
    assert rows.shape == cols.shape == (0,)
