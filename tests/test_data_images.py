"""Image and text sources (idx, CIFAR, LEAF JSON, npz images, synthetic images): small files in each real
format, read back exactly; every kind of damage is one InputError naming the file and what is wrong."""

import gzip
import io
import json
import os
import pickle
import string
import struct
import tarfile

import numpy as np
import pytest

from mpiclip import config as cfg
from mpiclip.data import SOURCES, images, plan
from mpiclip.errors import InputError

RNG = np.random.default_rng(7)


def spec(source, **values):
    return cfg.validate({"data": {"source": source, **values}}).data


def check_source(data, n_train, n_test=0):
    """The summary's shape; any subset of rows reads as the full read; plan() splits it over 3 workers."""
    source = SOURCES.get(data.common.source, "")
    summary = source.summarize(data.source)
    n = summary.n_rows
    assert n == n_train + n_test and len(summary.labels) == n and summary.labels.dtype == np.float64
    assert summary.checksum.startswith(("sha256:", "synthetic_images:"))
    if n_test:
        np.testing.assert_array_equal(summary.test_rows, np.arange(n_train, n))
    else:
        assert summary.test_rows is None
    X, y = source.read(data.source, np.arange(n), summary.n_features)
    assert X.shape == (n, summary.n_features) and X.dtype == np.float32
    np.testing.assert_array_equal(y, summary.labels)
    for rows in (np.array([n - 1]), np.sort(RNG.choice(n, size=n // 2, replace=False)), np.zeros(0, dtype=np.int64)):
        Xs, ys = source.read(data.source, rows, summary.n_features)
        np.testing.assert_array_equal(Xs, X[rows])
        np.testing.assert_array_equal(ys, y[rows])
    p = plan(data, 3, "classes")
    assert len(p.label_values) == summary.classes and sum(len(s) for s in p.shards) == n_train
    assert len(p.test_rows) == n_test
    shard = p.load(np.arange(3), storage="dense")
    np.testing.assert_array_equal(shard.X, X[np.concatenate(p.shards)])
    assert shard.layout == summary.layout and shard.classes == summary.classes
    return summary, X, y


def touch(path):
    """Another modification time, so that a rewritten file is a new cache entry whatever the clock's grain."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def flip_byte(path, at=-1):
    raw = bytearray(open(path, "rb").read())
    raw[at] ^= 1
    open(path, "wb").write(bytes(raw))
    touch(path)


# ----------------------------------------------------------------------------------------------- idx
def idx_bytes(array, type_byte=8):
    return bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def write_idx(path, array, gz=False):
    raw = idx_bytes(np.asarray(array, dtype=np.uint8))
    open(path, "wb").write(gzip.compress(raw) if gz else raw)
    return str(path)


def mnist_dir(root, gz=False, prefix="", test_stem="t10k", n=(20, 8)):
    root.mkdir(exist_ok=True)
    arrays = {}
    for stem, count in (("train", n[0]), (test_stem, n[1])):
        X, y = RNG.integers(0, 256, (count, 7, 6)), RNG.integers(0, 5, count)
        y[0] = 4  # the largest label appears: 5 classes
        ending = ".gz" if gz else ""
        write_idx(root / f"{prefix}{stem}-images-idx3-ubyte{ending}", X, gz)
        write_idx(root / f"{prefix}{stem}-labels-idx1-ubyte{ending}", y, gz)
        arrays[stem] = (X.reshape(count, -1), y)
    return str(root), arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("prefix, test_stem", [("", "t10k"), ("emnist-balanced-", "test")])
def test_idx_directory_reads_train_and_official_test_split(tmp_path, gz, prefix, test_stem):
    path, arrays = mnist_dir(tmp_path / "mnist", gz, prefix, test_stem)
    summary, X, y = check_source(spec("idx", path=path, prefix=prefix), 20, 8)
    pixels = np.concatenate([arrays["train"][0], arrays[test_stem][0]])
    np.testing.assert_array_equal(X, pixels.astype(np.float32) / np.float32(255))  # ToTensor's values, bit for bit
    np.testing.assert_array_equal(y, np.concatenate([arrays["train"][1], arrays[test_stem][1]]))
    assert summary.classes == 5 and summary.n_features == 42
    assert summary.layout.kind == "image" and summary.layout.shape == (1, 7, 6)
    np.testing.assert_allclose(summary.layout.mean, [arrays["train"][0].mean() / 255])  # training images only
    np.testing.assert_allclose(summary.layout.std, [(arrays["train"][0] / 255).std()])
    alone = SOURCES.get("idx", "").summarize(spec("idx", path=path, prefix=prefix, test=False).source)
    assert alone.n_rows == 20 and alone.test_rows is None and alone.checksum != summary.checksum


def test_idx_checksum_follows_every_byte(tmp_path):
    path, _ = mnist_dir(tmp_path / "mnist", gz=True)
    source, params = SOURCES.get("idx", ""), spec("idx", path=path).source
    before = source.summarize(params).checksum
    flip_byte(os.path.join(path, "t10k-labels-idx1-ubyte.gz"), at=4)  # the gzip header's time: data unchanged
    assert source.summarize(params).checksum != before


def test_read_idx_accepts_any_name_and_dimensions(tmp_path):
    a = RNG.integers(0, 256, (3, 2, 4, 5))
    np.testing.assert_array_equal(images.read_idx(write_idx(tmp_path / "x.bin", a, gz=True)), a)
    np.testing.assert_array_equal(images.read_idx(write_idx(tmp_path / "y.gz", a[0, 0])), a[0, 0])  # plain, whatever the name


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize("raw, message", [
    (gzip.compress(GOOD)[:-9], r"is a damaged gzip file \(Compressed file ended"),
    (gzip.compress(GOOD)[:-4] + b"\0\0\0\0", r"is a damaged gzip file"),
    (GOOD[:-1], r"is truncated: 23 bytes of data for dimensions 2×3×4$"),
    (GOOD + b"\0\0", r"has 2 bytes after the data of dimensions 2×3×4$"),
    (b"\x01\x02" + GOOD[2:], r"is not an idx file: it starts with 01 02 08 03, not 00 00 08$"),
    (GOOD[:2] + b"\x0d" + GOOD[3:], r"holds idx values of type 0x0d \(float\); images and labels are unsigned bytes"),
    (GOOD[:9], r"has a truncated idx header \(9 bytes for 3 dimensions\)"),
    (b"", r"is not an idx file: it starts with nothing"),
    (b"label\n1\n2\n", r"is not an idx file: it starts with 6c 61 62 65"),
])
def test_read_idx_refuses_damage_in_one_line(tmp_path, raw, message):
    path = tmp_path / "f"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=rf"^data.path = '{path}': {message}"):
        images.read_idx(str(path))


def test_idx_directory_problems_are_named(tmp_path):
    path, _ = mnist_dir(tmp_path / "m")
    write_idx(os.path.join(path, "t10k-labels-idx1-ubyte"), np.zeros(7))
    with pytest.raises(InputError, match=r"t10k-labels-idx1-ubyte': holds an array of shape \(7,\), not one label for each "
                                         r"of the 8 images of t10k-images-idx3-ubyte$"):
        plan(spec("idx", path=path), 3, "classes")
    write_idx(os.path.join(path, "t10k-images-idx3-ubyte"), np.zeros((7, 6, 7)))
    with pytest.raises(InputError, match=r"holds an array of shape \(7, 6, 7\), not N images of 7×6 as the training images"):
        SOURCES.get("idx", "").summarize(spec("idx", path=path).source)
    os.remove(os.path.join(path, "t10k-images-idx3-ubyte"))
    with pytest.raises(InputError, match=r"has no t10k-images-idx3-ubyte\[.gz\] \(nor test-...\); it holds t10k-labels.*; "
                                         r"data.test = false reads the training files alone$"):
        SOURCES.get("idx", "").summarize(spec("idx", path=path).source)
    assert SOURCES.get("idx", "").summarize(spec("idx", path=path, test=False).source).n_rows == 20
    with pytest.raises(InputError, match=r"has no emnist-train-images-idx3-ubyte\[.gz\]; it holds t10k-labels-idx1-ubyte, "
                                         r"train-images.*; data.prefix names"):
        SOURCES.get("idx", "").summarize(spec("idx", path=path, prefix="emnist-").source)
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte': must be the directory of the idx files$"):
        SOURCES.get("idx", "").summarize(spec("idx", path=os.path.join(path, "train-images-idx3-ubyte")).source)
    write_idx(os.path.join(path, "train-images-idx3-ubyte"), np.zeros((0, 7, 6)))
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte': holds no images$"):
        SOURCES.get("idx", "").summarize(spec("idx", path=path, test=False).source)


# --------------------------------------------------------------------------------------------- CIFAR
class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's str and numpy.core paths, as the CIFAR batches were written."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        head = pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256 else pickle.BINSTRING + struct.pack("<i", len(data))
        self.write(head + data)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_py2_str


def py2_pickle(obj):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_batch(n, keys=(b"labels",), classes=(10,)):
    batch = {b"batch_label": b"training batch 1 of 5", b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [b"x.png"] * n}
    for key, k in zip(keys, classes):
        batch[key] = [int(v) for v in RNG.integers(0, k, n)]
    return batch


def cifar10_dir(root, write=py2_pickle):
    """A small cifar-10-batches-py under root: 5 training batches of 4 images and a test batch of 5."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": cifar_batch(4) for i in range(1, 6)} | {"test_batch": cifar_batch(5)}
    for name, batch in batches.items():
        (folder / name).write_bytes(write(batch))
    (folder / "batches.meta").write_bytes(write({b"label_names": [b"airplane"] * 10}))
    return folder, batches


def tar_gz(folder, target):
    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder, arcname=os.path.basename(folder))
    return str(target)


def expected(batches, names, key=b"labels"):
    X = np.concatenate([batches[n][b"data"] for n in names])
    return X.astype(np.float32) / np.float32(255), np.concatenate([batches[n][key] for n in names]).astype(float)


CIFAR10_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def test_cifar10_directory_parent_and_archive_read_alike(tmp_path):
    folder, batches = cifar10_dir(tmp_path / "d")
    X_want, y_want = expected(batches, CIFAR10_NAMES)
    summaries = []
    for path in (str(folder), str(tmp_path / "d"), tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")):
        summary, X, y = check_source(spec("cifar10", path=path), 20, 5)
        np.testing.assert_array_equal(X, X_want)
        np.testing.assert_array_equal(y, y_want)
        summaries.append(summary)
    layout = summaries[0].layout
    assert layout.shape == (3, 32, 32) and summaries[0].classes == 10 and summaries[0].n_features == 3072
    train = X_want[:20].reshape(20, 3, -1).astype(np.float64)
    np.testing.assert_allclose(layout.mean, train.mean(axis=(0, 2)))
    np.testing.assert_allclose(layout.std, train.std(axis=(0, 2)), rtol=1e-6)
    assert summaries[0].checksum == summaries[1].checksum != summaries[2].checksum  # the bytes read: batches or archive
    batches["test_batch"][b"data"][4, 3071] ^= 1  # one pixel
    (folder / "test_batch").write_bytes(py2_pickle(batches["test_batch"]))
    touch(folder / "test_batch")
    assert SOURCES.get("cifar10", "").summarize(spec("cifar10", path=str(folder)).source).checksum != summaries[0].checksum


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar100_fine_and_coarse_from_python3_pickles(tmp_path, protocol):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    batches = {name: cifar_batch(n, (b"fine_labels", b"coarse_labels"), (100, 20)) for name, n in (("train", 9), ("test", 4))}
    batches["test"] = {k.decode(): v for k, v in batches["test"].items()}  # str keys, as a Python 3 script writes them
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    archive = tar_gz(folder, tmp_path / "cifar-100-python.tar.gz")
    for coarse, key, classes in ((False, "fine_labels", 100), (True, "coarse_labels", 20)):
        summary, X, y = check_source(spec("cifar100", path=archive, coarse=coarse), 9, 4)
        assert summary.classes == classes and summary.layout.shape == (3, 32, 32)
        labels = list(batches["train"][key.encode()]) + list(batches["test"][key])
        np.testing.assert_array_equal(y, labels)
    alone = SOURCES.get("cifar100", "").summarize(spec("cifar100", path=str(folder), test=False).source)
    assert alone.n_rows == 9 and alone.test_rows is None


def test_cifar_pickle_with_any_other_class_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    folder, _ = cifar10_dir(tmp_path / "d")
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(InputError, match=r"data_batch_2': is a pickle that asks for (posix|os)\.system, which a CIFAR batch "
                                         r"never needs: refused, nothing was run$"):
        plan(spec("cifar10", path=str(folder)), 3, "classes")
    assert not marker.exists()
    with pytest.raises(InputError, match=r"member cifar-10-batches-py/data_batch_2: is a pickle that asks for"):
        plan(spec("cifar10", path=tar_gz(folder, tmp_path / "c.tar.gz")), 3, "classes")
    assert not marker.exists()


def damaged(batch):
    return {k: v for k, v in batch.items() if k != b"labels"}


@pytest.mark.parametrize("change, message", [
    (lambda b: py2_pickle(damaged(b)), r"is not a CIFAR batch of this kind: it has no 'labels' \(it has: batch_label, data, "
                                       r"filenames\)$"),
    (lambda b: py2_pickle(b | {b"data": b[b"data"][:, :3071]}), r"'data' must be a uint8 array of N×3072 pixels \(3×32×32, "
                                                                 r"channel by channel\), not an array of shape \(4, 3071\)"),
    (lambda b: py2_pickle(b | {b"data": b[b"data"].astype(float)}), r"'data' must be a uint8 array .*, not an array of shape \(4, 3072\) and dtype float64$"),
    (lambda b: py2_pickle(b | {b"labels": b[b"labels"][:3]}), r"'labels' must hold one integer per image \(4\), not a list of 3$"),
    (lambda b: py2_pickle(b | {b"labels": [0.5] * 4}), r"'labels' must hold one integer per image \(4\), not a list of 4$"),
    (lambda b: py2_pickle(b | {b"labels": [0, 1, 10, 2]}), r"'labels' holds label 10, outside 0..9$"),
    (lambda b: py2_pickle(b)[:-20], r"is not a CIFAR batch \(a damaged or foreign pickle: "),
    (lambda b: py2_pickle([b]), r"is not a CIFAR batch \(a pickled list, not a dict\)$"),
    (lambda b: b"", r"is not a CIFAR batch \(a damaged or foreign pickle: EOFError"),
    (lambda b: b"\x89PNG\r\n", r"is not a CIFAR batch \(a damaged or foreign pickle: "),
])
def test_cifar_batch_damage_is_named(tmp_path, change, message):
    folder, batches = cifar10_dir(tmp_path / "d")
    (folder / "data_batch_3").write_bytes(change(batches["data_batch_3"]))
    with pytest.raises(InputError, match=rf"^data.path = '{folder / 'data_batch_3'}': {message}"):
        SOURCES.get("cifar10", "").summarize(spec("cifar10", path=str(folder)).source)


def test_cifar_missing_batches_and_damaged_archives(tmp_path):
    folder, _ = cifar10_dir(tmp_path / "d")
    archive = tar_gz(folder, tmp_path / "c.tar.gz")
    (folder / "data_batch_4").unlink()
    with pytest.raises(InputError, match=r"/d': has no batch data_batch_4 \(looked in .*cifar-10-batches-py\)$"):
        SOURCES.get("cifar10", "").summarize(spec("cifar10", path=str(tmp_path / "d")).source)
    with pytest.raises(InputError, match=r"holds neither train nor cifar-100-python/train: expected the directory of the python"):
        SOURCES.get("cifar100", "").summarize(spec("cifar100", path=str(folder)).source)
    with pytest.raises(InputError, match=r"c.tar.gz': has no member cifar-100-python/train \(expected the archive of the python"):
        SOURCES.get("cifar100", "").summarize(spec("cifar100", path=archive).source)
    raw = open(archive, "rb").read()
    for name, broken in (("cut.tar.gz", raw[: len(raw) // 2]), ("batch.tar.gz", py2_pickle(cifar_batch(2)))):
        (tmp_path / name).write_bytes(broken)
        with pytest.raises(InputError, match=rf"{name}': is not a readable .tar.gz of the data set's python version \("):
            SOURCES.get("cifar10", "").summarize(spec("cifar10", path=str(tmp_path / name)).source)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"holds neither data_batch_1 nor cifar-10-batches-py/data_batch_1"):
        plan(spec("cifar10", path=str(tmp_path / "empty")), 3, "classes")


# ---------------------------------------------------------------------------------------------- LEAF
def leaf_file(path, users):
    """users: {name: (x, y)}, written in LEAF's format (in the given order, not sorted)."""
    names = list(users)
    data = {"users": names, "num_samples": [len(users[u][1]) for u in names], "hierarchies": [],
            "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def femnist_user(n, quantised=True):
    pixels = RNG.integers(0, 256, (n, 784)) / 255 if quantised else RNG.random((n, 784))
    return pixels.tolist(), [int(v) for v in RNG.integers(0, 62, n)]


def test_femnist_directory_orders_users_and_rows(tmp_path):
    users = {"f3": femnist_user(4), "f1": femnist_user(3), "f2": femnist_user(5)}
    leaf_file(tmp_path / "femnist" / "b.json", {"f3": users["f3"]})
    leaf_file(tmp_path / "femnist" / "a.json", {"f2": users["f2"], "f1": users["f1"]})
    (tmp_path / "femnist" / "README.txt").write_text("not data")
    summary, X, y = check_source(spec("leaf", path=str(tmp_path / "femnist")), 12)
    order = ["f1", "f2", "f3"]
    want = np.concatenate([users[u][0] for u in order])
    np.testing.assert_array_equal(X, (np.rint(want * 255).astype(np.float32) / np.float32(255)))
    np.testing.assert_allclose(X, want, atol=1e-7)
    np.testing.assert_array_equal(y, np.concatenate([users[u][1] for u in order]))
    np.testing.assert_array_equal(summary.groups, [0] * 3 + [1] * 5 + [2] * 4)
    assert summary.layout.shape == (1, 28, 28) and summary.classes == 62 and summary.description.startswith("leaf femnist:")
    np.testing.assert_allclose(summary.layout.mean, [want.mean()])
    p = plan(spec("leaf", path=str(tmp_path / "femnist"), split="natural"), 3, "classes")
    assert [list(s) for s in p.shards] == [[0, 1, 2], [3, 4, 5, 6, 7], [8, 9, 10, 11]]


def test_leaf_train_and_test_directories_share_users(tmp_path):
    train = {"u2": femnist_user(3, quantised=False), "u0": femnist_user(2, quantised=False)}
    test = {"u2": femnist_user(1, quantised=False), "u1": femnist_user(2, quantised=False)}
    leaf_file(tmp_path / "train" / "all_train.json", train)
    leaf_file(tmp_path / "test" / "all_test.json", test)
    summary, X, y = check_source(spec("leaf", path=str(tmp_path), task="femnist"), 5, 3)
    want = np.concatenate([train["u0"][0], train["u2"][0], test["u1"][0], test["u2"][0]])
    np.testing.assert_array_equal(X, want.astype(np.float32))  # not multiples of 1/255: kept as float32
    np.testing.assert_array_equal(summary.groups, [0, 0, 2, 2, 2, 1, 1, 2])
    np.testing.assert_allclose(summary.layout.mean, [np.mean(train["u0"][0] + train["u2"][0])], rtol=1e-6)
    alone = SOURCES.get("leaf", "").summarize(spec("leaf", path=str(tmp_path), test=False).source)
    assert alone.n_rows == 5 and alone.test_rows is None and alone.checksum != summary.checksum
    before = summary.checksum
    flip_byte(tmp_path / "test" / "all_test.json", at=-2)  # "}}" -> "}|": damaged JSON
    with pytest.raises(InputError, match=r"all_test.json': is not JSON \("):
        SOURCES.get("leaf", "").summarize(spec("leaf", path=str(tmp_path)).source)
    flip_byte(tmp_path / "test" / "all_test.json", at=-2)
    assert SOURCES.get("leaf", "").summarize(spec("leaf", path=str(tmp_path)).source).checksum == before


def test_shakespeare_characters_are_indices_into_printable(tmp_path):
    users = {"HAMLET": (["To be, or ", "ot to be: "], ["n", "t"]), "OPHELIA": (["Good my lo"], ["r"])}
    path = leaf_file(tmp_path / "s.json", users)
    summary, X, y = check_source(spec("leaf", path=path), 3)
    ids = [[string.printable.index(c) for c in s] for s in ("To be, or ", "ot to be: ", "Good my lo")]
    np.testing.assert_array_equal(X, ids)
    np.testing.assert_array_equal(y, [string.printable.index(c) for c in "ntr"])
    assert summary.layout.kind == "tokens" and summary.layout.shape == (10,) and summary.layout.vocab == 100
    assert summary.classes == 100


def test_sent140_vocabulary_from_training_rows(tmp_path):
    def tweets(texts, labels):
        return [[str(i), "Mon Apr 06", "NO_QUERY", "someone", t] for i, t in enumerate(texts)], labels

    train = {"bob": tweets(["b a a, c!", "c d"], [0, 4]), "amy": tweets(["don't e"], [1])}
    test = {"cat": tweets(["a zebra! c d e f g"], [0])}
    leaf_file(tmp_path / "train" / "t.json", train)
    leaf_file(tmp_path / "test" / "t.json", test)
    summary, X, y = check_source(spec("leaf", path=str(tmp_path), vocab=6, seq_len=4), 3, 1)
    # counts over the training rows: a 2, c 2, "," "!" b d "don't" e 1 -> the 4 kept: a c ! ,
    a, c, bang, comma, pad, unknown = 2, 3, 4, 5, 0, 1
    np.testing.assert_array_equal(X, [[unknown, unknown, pad, pad],  # amy: "don't e"
                                      [unknown, a, a, comma],  # bob: b a a , (c ! cut)
                                      [c, unknown, pad, pad],
                                      [a, unknown, bang, c]])  # cat (test): a zebra ! c (d ... cut)
    np.testing.assert_array_equal(y, [1, 0, 1, 0])  # Sentiment140's 4 is positive
    assert summary.layout.shape == (4,) and summary.layout.vocab == 6 and summary.classes == 2
    np.testing.assert_array_equal(summary.groups, [0, 1, 1, 2])
    big = SOURCES.get("leaf", "").summarize(spec("leaf", path=str(tmp_path), seq_len=4).source)
    assert big.layout.vocab == 2 + 8  # every training word: a c ! , b d don't e


@pytest.mark.parametrize("content, message", [
    ("", r"is empty$"),
    ("{'users': []}", r"is not JSON \(Expecting property name"),
    ('{"users": [], "num_samples": []}', r"is not a LEAF file: no 'user_data' \(LEAF files have users, num_samples, user_data\)$"),
    ('[1, 2]', r"is not a LEAF file: no 'users'"),
    ('{"users": ["a"], "num_samples": [1, 2], "user_data": {}}', r"'num_samples' must hold one count per user \(1\)$"),
    ('{"users": ["a"], "num_samples": [1], "user_data": {"b": {}}}', r"'user_data' must hold exactly the users listed \(differs at 'a'\)$"),
    ('{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": ["abc"]}}}', r"user 'a' has no lists 'x' and 'y'$"),
    ('{"users": ["a"], "num_samples": [2], "user_data": {"a": {"x": ["abc"], "y": ["d"]}}}', r"user 'a' has 1 x and 1 y for num_samples 2$"),
    ('{"users": ["a", "b"], "num_samples": [1, 1], "user_data": {"a": {"x": ["abc"], "y": ["d"]}, "b": {"x": ["ab"], "y": ["c"]}}}',
     None),
    ('{"users": ["a"], "num_samples": [2], "user_data": {"a": {"x": ["abc", "abcd"], "y": ["d", "e"]}}}',
     r"user 'a': x holds strings of 3 to 4 characters; every x must have the same length$"),
    ('{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": ["ab\\u00e9"], "y": ["d"]}}}',
     r"user 'a': character 'é' is not in string.printable, the vocabulary$"),
    ('{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": [""], "y": ["d"]}}}', r"user 'a': x holds empty strings$"),
    ('{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": ["abc"], "y": ["de"]}}}',
     r"user 'a': x must be strings and y single characters for shakespeare$"),
    ('{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": [[1, 2]], "y": [1]}}}',
     r"^data.task = 'auto': cannot tell the LEAF task from the first sample of .* \(x = \[1, 2\]\); set it to one of femnist"),
    ('{"users": ["a"], "num_samples": [1], "user_data": {"a": {"x": [["1", "d", "q", "u", "hi"]], "y": [2]}}}',
     r"user 'a': y must be 0 or 1 \(or Sentiment140's 4 for positive\)$"),
])
def test_leaf_damage_is_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    if message is None:  # the second user's x is shorter than the first's
        message = r"user 'b': x holds strings of 2 characters, not 3 as the first user's$"
        with pytest.raises(InputError, match=message):
            SOURCES.get("leaf", "").summarize(spec("leaf", path=str(path)).source)
        return
    with pytest.raises(InputError, match=message if message.startswith("^") else rf"^data.path = '{path}': {message}"):
        SOURCES.get("leaf", "").summarize(spec("leaf", path=str(path)).source)


def test_femnist_damage_and_leaf_layout_problems(tmp_path):
    x, y = femnist_user(2)
    for bad_x, bad_y, message in (([x[0], x[1][:-1]], y, r"user 'u': x must be lists of 784 pixel values \(28×28\) for femnist$"),
                                  ([x[0], [2.0] * 784], y, r"user 'u': pixel values must be in \[0, 1\]$"),
                                  (x, [0, 62], r"user 'u': label 62 is not an integer in 0..61$"),
                                  (x, [0, "a"], r"user 'u': label 'a' is not an integer in 0..61$")):
        path = leaf_file(tmp_path / "f.json", {"u": (bad_x, bad_y)})
        with pytest.raises(InputError, match=rf"^data.path = '{path}': {message}"):
            SOURCES.get("leaf", "").summarize(spec("leaf", path=path).source)
        os.remove(path)
    with pytest.raises(InputError, match=r"user 'u': x must be \[id, date, query, user, text\] for sent140$"):
        SOURCES.get("leaf", "").summarize(spec("leaf", path=leaf_file(tmp_path / "g.json", {"u": (x, y)}), task="sent140").source)
    leaf_file(tmp_path / "d" / "a.json", {"u": (x, y)})
    leaf_file(tmp_path / "d" / "b.json", {"u": (x, y)})
    with pytest.raises(InputError, match=r"b.json': repeats user 'u' of .*a.json$"):
        SOURCES.get("leaf", "").summarize(spec("leaf", path=str(tmp_path / "d")).source)
    (tmp_path / "e" / "train").mkdir(parents=True)
    (tmp_path / "e" / "test").mkdir()
    with pytest.raises(InputError, match=r"'.*/e': train/ holds no .json files$"):
        plan(spec("leaf", path=str(tmp_path / "e")), 3, "classes")
    leaf_file(tmp_path / "e" / "train" / "t.json", {"u": (x, y)})
    with pytest.raises(InputError, match=r"test/ holds no .json files \(data.test = false reads train/ alone\)$"):
        plan(spec("leaf", path=str(tmp_path / "e")), 1, "classes")
    assert plan(spec("leaf", path=str(tmp_path / "e"), test=False), 2, "classes").summary.n_rows == 2
    (tmp_path / "n").mkdir()
    with pytest.raises(InputError, match=r"holds no LEAF .json files, nor train/ and test/ directories of them$"):
        plan(spec("leaf", path=str(tmp_path / "n")), 3, "classes")
    leaf_file(tmp_path / "z.json", {"u": ([], [])})
    with pytest.raises(InputError, match=r"z.json': holds no samples$"):
        plan(spec("leaf", path=str(tmp_path / "z.json")), 1, "classes")


# ----------------------------------------------------------------------------------------------- npz
@pytest.mark.parametrize("shape, layout", [((12, 3, 4, 5), (3, 4, 5)), ((12, 4, 5), (1, 4, 5)), ((12, 20), None)])
def test_npz_images_have_a_layout_and_keep_their_values(tmp_path, shape, layout):
    X, y = RNG.random(shape), RNG.integers(0, 3, 12)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    data = spec("npz", path=str(tmp_path / "d.npz"))
    summary = SOURCES.get("npz", "").summarize(data.source)
    A, labels = SOURCES.get("npz", "").read(data.source, np.arange(12), 60 if len(shape) == 4 else 20)
    np.testing.assert_array_equal(A.toarray(), X.reshape(12, -1))  # float64, as before
    np.testing.assert_array_equal(labels, y)
    if layout is None:
        assert summary.layout is None
    else:
        assert summary.layout.kind == "image" and summary.layout.shape == layout
        np.testing.assert_allclose(summary.layout.mean, X.reshape(12, layout[0], -1).mean(axis=(0, 2)))
    assert plan(data, 3, "classes").summary.layout == summary.layout


# ------------------------------------------------------------------------------------ synthetic images
def test_synthetic_images_any_rows_alone_and_learnable():
    data = spec("synthetic_images", n_samples=2500, classes=4, channels=3, size=8, seed=3)
    summary, X, y = check_source(data, 2500)  # three chunks, read in any subset
    assert summary.layout.shape == (3, 8, 8) and summary.classes == 4 and X.min() >= 0 and X.max() <= 1
    Xa, ya = SOURCES.get("synthetic_images", "").read(data.source, np.array([1023, 1024, 2499]), 192)
    np.testing.assert_array_equal(Xa, X[[1023, 1024, 2499]])
    other = SOURCES.get("synthetic_images", "").summarize(spec("synthetic_images", n_samples=2500, classes=4, channels=3,
                                                               size=8, seed=4).source)
    assert other.checksum != summary.checksum and not np.array_equal(other.labels, summary.labels)
    p = spec("synthetic_images").source  # the defaults: 2,000 grey 28×28 images of 10 classes
    X, y = SOURCES.get("synthetic_images", "").read(p, np.arange(p.n_samples), 784)
    templates = images.synthetic_templates(p.seed, p.classes, p.channels, p.size).reshape(p.classes, -1)
    guess = np.argmin(((X[:, None, :] - templates[None]) ** 2).sum(axis=2), axis=1)
    accuracy = np.mean(guess == y)
    assert 0.6 < accuracy < 0.98  # well above chance (0.1), not trivial
    assert np.bincount(y.astype(int), minlength=10).min() > 150
