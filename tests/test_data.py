"""LibSVM reading (plain and compressed, every bad line named), partitions, shards."""

import bz2
import gzip
import lzma

import numpy as np
import pytest
from helpers import random_classification, write_libsvm

from mpiclip.data import DataParams, DataSpec, LibsvmParams, SyntheticParams, libsvm, plan
from mpiclip.data.partition import SPLITS, DirichletParams, NoParams, SeededParams, block_sizes
from mpiclip.errors import InputError


@pytest.fixture(autouse=True)
def no_cache(monkeypatch):
    """These tests are about the parser: every read parses (tests/test_parsed_cache.py tests the cache)."""
    monkeypatch.setenv("MPICLIP_CACHE", "off")


@pytest.fixture
def dataset(tmp_path):
    X, y = random_classification(n=57, d=9, seed=3, labels=(1, 2))
    return write_libsvm(str(tmp_path / "d.txt"), X, y), X, y


@pytest.mark.parametrize("opener", [None, gzip.open, bz2.open, lzma.open])
def test_reads_plain_and_compressed_files(tmp_path, dataset, opener):
    path, X, y = dataset
    if opener is not None:
        packed = str(tmp_path / "packed.bin")  # no telling suffix: recognised by content
        with open(path, "rb") as src, opener(packed, "wb") as dst:
            dst.write(src.read())
        path = packed
    summary = libsvm.summarize(path, "data.path")
    assert summary.n_rows == 57 and summary.n_features == 9
    np.testing.assert_array_equal(summary.labels, y)
    rows = np.array([0, 5, 6, 56])
    A, labels = libsvm.read_rows(path, "data.path", rows, 9)
    np.testing.assert_array_equal(A.toarray(), X[rows])
    np.testing.assert_array_equal(labels, y[rows])


def test_reads_only_the_requested_rows_across_blocks(tmp_path, monkeypatch, dataset):
    path, X, y = dataset
    monkeypatch.setattr(libsvm, "BLOCK_BYTES", 64)  # many small blocks
    rows = np.arange(3, 57, 7)
    A, labels = libsvm.read_rows(path, "data.path", rows, 12)
    assert A.shape == (len(rows), 12)
    np.testing.assert_array_equal(A.toarray()[:, :9], X[rows])


def test_comments_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"# header\r\n+1 1:0.5 3:2\r\n\r\n-1 2:1 # trailing\r\n")
    s = libsvm.summarize(str(path), "data.path")
    assert s.n_rows == 2 and s.n_features == 3
    A, y = libsvm.read_rows(str(path), "data.path", np.array([0, 1]), 3)
    np.testing.assert_array_equal(A.toarray(), [[0.5, 0, 2], [0, 1, 0]])
    np.testing.assert_array_equal(y, [1, -1])


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"1 3:1 4", "feature '4' is not index:value"),
        (b"1 3:1:2", "feature '3:1:2' is not index:value"),
        (b"x 1:1", "label 'x' is not a number"),
        (b"1 a:1", "feature 'a:1': index is not an integer"),
        (b"1 2.5:1", "feature '2.5:1': index is not an integer"),
        (b"1 2:y", "feature '2:y': value is not a number"),
        (b"1 0:1", "feature '0:1': indices start at 1"),
        (b"1 2:nan", "feature '2:nan': value is not finite"),
        (b"1 3:1 2:1", "feature '2:1': indices must increase along a line"),
        (b"1 3:1 3:1", "feature '3:1': indices must increase along a line"),
        (b"inf 1:1", "label 'inf' is not finite"),
    ],
)
def test_bad_line_is_reported_with_its_number(tmp_path, line, reason):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"1 1:1\n\n-1 2:1\n" + line + b"\n1 1:1\n")
    with pytest.raises(InputError) as info:
        libsvm.summarize(str(path), "data.path")
    assert str(info.value) == f"data.path = {str(path)!r}: line 4: {reason}"


def test_missing_empty_and_directory_paths(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        libsvm.summarize(str(tmp_path / "none.txt"), "data.path")
    with pytest.raises(InputError, match="is a directory"):
        libsvm.summarize(str(tmp_path), "data.path")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(InputError, match="holds no samples"):
        libsvm.summarize(str(tmp_path / "empty.txt"), "data.path")
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match="cannot be decompressed"):
        libsvm.summarize(str(tmp_path / "broken.gz"), "data.path")


# ----------------------------------------------------------------------------------- partitions
LABELS = np.random.default_rng(1).integers(0, 3, size=103).astype(float)
SPLIT_PARAMS = {"contiguous": NoParams(), "iid": SeededParams(4), "label_sorted": NoParams(),
                "dirichlet": DirichletParams(0.5, 2)}


@pytest.mark.parametrize("name", sorted(SPLIT_PARAMS))
@pytest.mark.parametrize("n", [1, 4, 10])
def test_every_sample_in_exactly_one_shard(name, n):
    shards = SPLITS.get(name, "data.split").make(LABELS, n, SPLIT_PARAMS[name])
    assert len(shards) == n and all(len(s) for s in shards)
    assert all(np.all(np.diff(s) > 0) for s in shards)
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(len(LABELS)))


def test_contiguous_split_is_the_official_one():
    shards = SPLITS.get("contiguous", "").make(np.zeros(8124), 20, NoParams())
    assert [len(s) for s in shards] == [406] * 19 + [410]  # mushrooms, docs/algorithms.md §9 item 2
    assert shards[0][0] == 0 and shards[19][-1] == 8123 and shards[1][0] == 406
    assert list(block_sizes(11055, 20)) == [552] * 19 + [567]


def test_label_sorted_split_puts_labels_together():
    shards = SPLITS.get("label_sorted", "").make(LABELS, 3, NoParams())
    for a, b in zip(shards[:-1], shards[1:]):
        assert LABELS[a].max() <= LABELS[b].min()


def test_iid_and_dirichlet_depend_on_their_seed_only():
    iid = SPLITS.get("iid", "").make
    a, b, c = (iid(LABELS, 4, SeededParams(s)) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_dirichlet_skews_labels_more_for_small_alpha():
    labels = np.repeat([0.0, 1.0], 2000)
    make = SPLITS.get("dirichlet", "").make

    def skew(alpha):
        shards = make(labels, 10, DirichletParams(alpha, 0))
        return np.mean([abs(labels[s].mean() - 0.5) for s in shards])

    assert skew(0.05) > 0.3 > 0.05 > skew(100.0)


def test_dirichlet_that_leaves_a_worker_empty_is_an_error():
    with pytest.raises(InputError, match=r"^data.alpha = 0.001: the Dirichlet split left a worker"):
        SPLITS.get("dirichlet", "").make(np.zeros(12), 10, DirichletParams(0.001, 0))


# ----------------------------------------------------------------------------------- plan/shard
def libsvm_spec(path, **common):
    return DataSpec(DataParams(source="libsvm", **common), LibsvmParams(path=path), NoParams())


def test_plan_maps_labels_and_loads_worker_rows_in_worker_order(dataset):
    path, X, y = dataset
    p = plan(libsvm_spec(path, split="label_sorted", storage="csr"), 4, "pm1")
    assert list(p.label_values) == [1.0, 2.0]
    shard = p.load(np.array([2, 3]))
    rows = np.concatenate([p.shards[2], p.shards[3]])
    np.testing.assert_array_equal(shard.X.toarray(), X[rows])
    np.testing.assert_array_equal(shard.y, np.where(y[rows] == 2, 1.0, -1.0))
    np.testing.assert_array_equal(shard.offsets, [0, len(p.shards[2]), len(rows)])
    assert p.label_counts.sum() == 57 and p.sample_counts.sum() == 57


def test_plan_errors(tmp_path, dataset):
    path, X, y = dataset
    with pytest.raises(InputError, match=r"^run.n_workers = 58: exceeds the 57 samples"):
        plan(libsvm_spec(path), 58, "pm1")
    three = write_libsvm(str(tmp_path / "three.txt"), X, np.arange(57) % 3)
    with pytest.raises(InputError, match=r"^data.path = .*: has 3 distinct labels \(0, 1, 2\); a binary problem"):
        plan(libsvm_spec(three), 4, "pm1")
    assert plan(libsvm_spec(three, labels="raw"), 4, "pm1").label_map == "raw"
    with pytest.raises(InputError, match=r"^data.n_features = 5: the file uses feature index 9"):
        plan(DataSpec(DataParams(source="libsvm"), LibsvmParams(path=path, n_features=5), NoParams()), 2, "pm1")


def test_storage_choice(dataset):
    path, X, y = dataset
    dense = plan(libsvm_spec(path, storage="dense"), 2, "pm1").load(np.array([0]))
    sparse = plan(libsvm_spec(path, storage="csr"), 2, "pm1").load(np.array([0]))
    assert isinstance(dense.X, np.ndarray) and not isinstance(sparse.X, np.ndarray)
    np.testing.assert_array_equal(dense.X, sparse.X.toarray())


def test_synthetic_rows_do_not_depend_on_who_makes_them():
    spec = DataSpec(DataParams(), SyntheticParams(n_samples=9000, n_features=30, density=0.2), NoParams())
    p = plan(spec, 5, "pm1")
    together = p.load(np.arange(5))
    apart = [p.load(np.array([w])) for w in range(5)]
    np.testing.assert_array_equal(together.X.toarray(), np.vstack([s.X.toarray() for s in apart]))
    assert set(np.unique(together.y)) == {-1.0, 1.0}
    assert 0.15 < together.X.nnz / (9000 * 30) < 0.2


# ------------------------------------------------------------------------- federated splits (issue 11)
def federated_labels(classes=4, per_class=(30, 20, 25, 25), seed=0):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(classes), per_class))


def test_percentage_iid_as_gradalign_cuts_the_label_sorted_rest_into_equal_chunks():
    from mpiclip.data.partition import PercentageParams

    labels = federated_labels()  # 100 samples
    split = SPLITS.get("percentage_iid", "")
    zero = split.make(labels, 4, PercentageParams(0.0, 5))
    assert [len(s) for s in zero] == [25] * 4
    flat = np.concatenate([s[np.argsort(labels[s], kind="stable")] for s in zero])
    np.testing.assert_array_equal(labels[flat], np.sort(labels))  # chunk w is the w-th quarter of the sorted labels
    half = split.make(labels, 5, PercentageParams(0.5, 5))
    assert sorted(np.concatenate(half).tolist()) == list(range(100))  # every sample once
    iid = np.random.default_rng([5, 3]).permutation(100)[:50]
    for shard in half:
        assert len(shard) == 20 and np.isin(shard, iid).sum() == 10  # 10 iid + 10 label-sorted rows each
    everyone = split.make(labels, 3, PercentageParams(-1.0, 0))
    assert all(np.array_equal(s, np.arange(100)) for s in everyone)
    with pytest.raises(InputError, match=r"^data.percentage = 0.0: leaves 100 label-sorted samples of 100, which do "
                                         r"not divide into 3 equal chunks"):
        split.make(labels, 3, PercentageParams(0.0, 0))
    with pytest.raises(InputError, match=r"^data.percentage = 0.3: leaves 30 iid samples"):
        split.make(labels, 4, PercentageParams(0.3, 0))


def test_one_class_gives_every_worker_a_single_class():
    labels = federated_labels()
    split = SPLITS.get("one_class", "")
    shards = split.make(labels, 8, NoParams())
    assert sorted(np.concatenate(shards).tolist()) == list(range(100))
    for w, shard in enumerate(shards):
        assert set(labels[shard]) == {w % 4}
    with pytest.raises(InputError, match=r"^run.n_workers = 6: one_class needs a multiple of the 4 classes"):
        split.make(labels, 6, NoParams())
    with pytest.raises(InputError, match=r"^data.split = 'one_class': class 1 has 20 samples for 30 workers"):
        split.make(labels, 120, NoParams())


def leaf_spec(**values):
    from mpiclip import config as cfg

    return cfg.validate({"data": {"source": "leaf_synthetic", "users": 6, "n_features": 12, "classes": 4, **values},
                         "problem": {"name": "least_squares"}, "run": {"n_workers": 6}}).data


def test_leaf_synthetic_rows_do_not_depend_on_who_reads_them_and_users_differ():
    from mpiclip.data import SOURCES, leaf

    spec = leaf_spec(split="natural")
    p = spec.source
    source = SOURCES.get("leaf_synthetic", "")
    summary = source.summarize(p)
    sizes = leaf.sizes(p.seed, p.users)
    assert summary.n_rows == sizes.sum() and (sizes >= 50).all()
    np.testing.assert_array_equal(summary.groups, np.repeat(np.arange(6), sizes))
    X, y = source.read(p, np.arange(summary.n_rows), 12)
    np.testing.assert_array_equal(y, summary.labels)
    rows = np.random.default_rng(0).permutation(summary.n_rows)[:300]
    X2, y2 = source.read(p, rows, 12)
    np.testing.assert_array_equal(X2.toarray(), X.toarray()[rows])
    np.testing.assert_array_equal(y2, y[rows])
    # heterogeneous users: their label histograms differ (total variation between users' label shares)
    shares = np.array([np.bincount(y[summary.groups == k].astype(int), minlength=4) / sizes[k] for k in range(6)])
    assert np.abs(shares[:, None] - shares[None]).sum(axis=2).max() > 0.8
    # features: x ~ N(v_k, diag(j^-1.2)) within a user
    Xd = X.toarray()[summary.groups == int(np.argmax(sizes))]
    np.testing.assert_allclose(Xd.var(axis=0) / np.arange(1, 13) ** -1.2, 1.0, atol=6 * np.sqrt(2 / len(Xd)))


def test_natural_split_gives_each_worker_its_user_and_refuses_other_counts():
    from mpiclip.data import leaf

    shards = plan(leaf_spec(split="natural"), 6, "raw").shards
    sizes = leaf.sizes(0, 6)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for k, shard in enumerate(shards):
        np.testing.assert_array_equal(shard, np.arange(starts[k], starts[k + 1]))
    with pytest.raises(InputError, match=r"^run.n_workers = 5: the natural split needs one worker per client \(6\)"):
        plan(leaf_spec(split="natural"), 5, "raw")
    from mpiclip import config as cfg

    synthetic = cfg.validate({"data": {"source": "synthetic", "split": "natural"}}).data
    with pytest.raises(InputError, match=r"^data.split = 'natural': needs a source with natural clients"):
        plan(synthetic, 4, "pm1")


def npz_spec(path, **values):
    from mpiclip import config as cfg

    return cfg.validate({"data": {"source": "npz", "path": str(path), **values}, "problem": {"name": "least_squares"},
                         "run": {"n_workers": 3}}).data


def test_npz_source_reads_the_users_arrays_and_flattens_images(tmp_path):
    from mpiclip.data import SOURCES

    rng = np.random.default_rng(0)
    images, labels = rng.random((30, 4, 5)), rng.integers(0, 3, 30)
    np.savez(tmp_path / "d.npz", images=images, classes=labels)
    spec = npz_spec(tmp_path / "d.npz", x_key="images", y_key="classes")
    p = plan(spec, 3, "raw")
    assert p.n_features == 20 and p.summary.checksum.startswith("sha256:")
    shard = p.load(np.array([1, 2]))
    rows = np.concatenate([p.shards[1], p.shards[2]])
    np.testing.assert_array_equal(np.asarray(shard.X.todense() if hasattr(shard.X, "todense") else shard.X),
                                  images.reshape(30, 20)[rows])
    np.testing.assert_array_equal(shard.y, labels[rows])
    X, y = SOURCES.get("npz", "").read(spec.source, np.array([5, 1]), 20)
    np.testing.assert_array_equal(X.toarray(), images.reshape(30, 20)[[5, 1]])


@pytest.mark.parametrize("arrays,keys,message", [
    ({"X": np.ones((4, 2)), "y": np.ones(4)}, {"x_key": "features"}, r"^data.x_key = 'features': is not an array of"),
    ({"X": np.ones((4, 2)), "y": np.ones(3)}, {}, r"^data.y_key = 'y': must hold one number per row of X \(4\)"),
    ({"X": np.ones(4), "y": np.ones(4)}, {}, r"^data.x_key = 'X': must be a numeric array with one row per sample"),
    ({"X": np.array([[1.0, np.nan]]), "y": np.ones(1)}, {}, r"^data.path = .*: holds non-finite values"),
])
def test_npz_source_refuses_bad_files_in_one_line(tmp_path, arrays, keys, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(InputError, match=message):
        plan(npz_spec(tmp_path / "d.npz", **keys), 1, "raw")
    (tmp_path / "plain.npz").write_text("not numpy")
    with pytest.raises(InputError, match=r"^data.path = .*plain.npz': is not an .npz archive \(a zip file"):
        plan(npz_spec(tmp_path / "plain.npz"), 1, "raw")


def digits_spec(**values):
    from mpiclip import config as cfg

    return cfg.validate({"data": {"source": "digits", **values}, "problem": {"name": "softmax"},
                         "run": {"n_workers": 10}}).data


def test_digits_are_scikit_learns_scaled_to_the_unit_interval():
    from sklearn.datasets import load_digits

    reference = load_digits()
    p = plan(digits_spec(split="one_class"), 10, "classes")
    assert p.summary.n_rows == 1797 and p.n_features == 64 and list(p.label_values) == list(range(10))
    for k in (0, 7):
        shard = p.load(np.array([k]))
        X = shard.X.toarray() if hasattr(shard.X, "toarray") else shard.X
        np.testing.assert_array_equal(X, reference.data[reference.target == k] / 16.0)
        assert set(shard.y) == {float(k)} and shard.classes == 10
    assert plan(digits_spec(), 10, "classes").summary.checksum == p.summary.checksum


def test_digits_without_scikit_learn_is_a_one_line_error(monkeypatch):
    import sys

    from mpiclip.data import DigitsSource, _summary

    _summary.cache_clear()
    DigitsSource._arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails as if it were not installed
    with pytest.raises(InputError, match=r"^data.source = 'digits': needs scikit-learn.*pip install 'mpiclip\[fed\]'"):
        plan(digits_spec(), 10, "classes")
    _summary.cache_clear()
    DigitsSource._arrays.cache_clear()
