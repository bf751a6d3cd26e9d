"""Broken user data files in their real formats (issue 28, item 4): every one is a single InputError naming
data.path (or the key) and what is wrong, never a traceback; a damaged parsed-cache entry is rebuilt,
never trusted. The catalogue in test_faults.py runs the same kinds of file through `mpiclip run`."""

import bz2
import gzip
import io
import struct
import zipfile

import numpy as np
import pytest
from helpers import write_libsvm

from mpiclip.data import libsvm, npz, parsed_cache, vision
from mpiclip.errors import InputError

X = np.arange(40.0).reshape(8, 5) / 40
Y = np.array([1, -1] * 4)


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def archive(members: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return buf.getvalue()


def good() -> bytes:
    return archive({"X.npy": npy(X), "y.npy": npy(Y)})


def flip(raw: bytes, at: int, count: int = 8) -> bytes:
    return raw[:at] + bytes(b ^ 0xFF for b in raw[at : at + count]) + raw[at + count :]


def huge_header() -> bytes:
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 5), }"
    header += b" " * (118 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(80)


NPZ = [  # (id, file bytes, expected message after "data.<field> = '<path>': " or the key)
    ("object-array", archive({"X.npy": npy(np.array([np.zeros(2), np.zeros(3)], dtype=object)), "y.npy": npy(Y)}),
     "data.path", "array 'X' holds Python objects (dtype object), which only unpickling could load"),
    ("truncated-archive", good()[: len(good()) // 2], "data.path", "is a damaged or truncated .npz archive"),
    ("cut-to-10-bytes", good()[:10], "data.path", "is a damaged or truncated .npz archive"),
    ("corrupt-member", flip(good(), good().index(b"\x93NUMPY") + 200), "data.path", "array 'X' is damaged (Bad CRC-32"),
    ("corrupt-compressed-member", flip(archive({"X.npy": npy(X), "y.npy": npy(Y)}, zipfile.ZIP_DEFLATED), 60),
     "data.path", "array 'X' is damaged"),
    ("truncated-member", archive({"X.npy": npy(X)[:-100], "y.npy": npy(Y)}), "data.path",
     "array 'X' is truncated: its header promises 320 bytes (shape (8, 5), float64) and it holds 220"),
    ("header-beyond-data", archive({"X.npy": huge_header(), "y.npy": npy(Y)}), "data.path",
     "array 'X' is truncated: its header promises 4,000,000,000,000 bytes"),
    ("member-not-npy", archive({"X.npy": b"just text", "y.npy": npy(Y)}), "data.path", "array 'X' is not a .npy array"),
    ("not-a-zip", b"hello, world\n", "data.path", "is not an .npz archive (a zip file of .npy arrays, as np.savez "
     "writes): it starts with 68 65 6c 6c"),
    ("single-npy", npy(X), "data.path", "holds a single array; expected an .npz archive"),
    ("empty-file", b"", "data.path", "is not an .npz archive (a zip file of .npy arrays, as np.savez writes): it "
     "starts with nothing"),
    ("strings", archive({"X.npy": npy(np.full((8, 5), "a")), "y.npy": npy(Y)}), "data.x_key",
     "must be a numeric array with one row per sample (has shape (8, 5), dtype <U1)"),
    ("complex", archive({"X.npy": npy(X + 1j), "y.npy": npy(Y)}), "data.x_key", "must be a numeric array"),
    ("nan-feature", archive({"X.npy": npy(np.where(X > 0.5, np.nan, X)), "y.npy": npy(Y)}), "data.path",
     "holds non-finite values (nan or inf)"),
    ("inf-label", archive({"X.npy": npy(X), "y.npy": npy(np.where(Y > 0, np.inf, -1))}), "data.path",
     "holds non-finite values"),
    ("0-d-features", archive({"X.npy": npy(np.float64(3)), "y.npy": npy(Y)}), "data.x_key", "must be a numeric array"),
    ("no-features", archive({"X.npy": npy(np.zeros((8, 0))), "y.npy": npy(Y)}), "data.x_key",
     "must be a numeric array with one row per sample (has shape (8, 0)"),
    ("3-d-labels", archive({"X.npy": npy(X), "y.npy": npy(Y.reshape(8, 1, 1))}), "data.y_key",
     "must hold one number per row of X (8); has shape (8, 1, 1)"),
    ("mismatched-lengths", archive({"X.npy": npy(X), "y.npy": npy(Y[:5])}), "data.y_key",
     "must hold one number per row of X (8); has shape (5,)"),
]


@pytest.mark.parametrize("name, raw, field, message", NPZ, ids=[c[0] for c in NPZ])
def test_a_broken_npz_file_is_one_line(tmp_path, name, raw, field, message):
    path = tmp_path / "d.npz"
    path.write_bytes(raw)
    with pytest.raises(InputError) as info:
        npz.summarize(str(path), "X", "y")
    shown = {"data.path": repr(str(path)), "data.x_key": "'X'", "data.y_key": "'y'"}[field]
    assert str(info.value).startswith(f"{field} = {shown}: {message}"), str(info.value)
    assert "\n" not in str(info.value)


def test_a_sound_npz_file_reads_as_np_load_reads_it(tmp_path):
    """The checked reader gives what numpy gives, Fortran order and compression included."""
    for order, compress in (("C", np.savez), ("F", np.savez_compressed)):
        path = tmp_path / f"{order}.npz"
        compress(path, X=np.asarray(X, order=order), y=Y)
        rows, d, labels, _, _ = npz.summarize(str(path), "X", "y")
        A, b = npz.read(str(path), "X", "y", np.arange(8), d)
        np.testing.assert_array_equal(A.toarray(), X)
        np.testing.assert_array_equal(b, Y)
        assert (rows, d) == (8, 5)


LIBSVM_TEXT = b"1 1:0.5 3:1\n-1 2:1\n" * 4

LIBSVM = [  # (id, file bytes, expected message after "data.path = '<path>': ")
    ("binary-garbage", bytes(range(256)) * 4, "line 1: byte 0x00 at column 1 is not text: a LibSVM file is ASCII text"),
    ("latin-1-value", LIBSVM_TEXT + b"1 1:\xe9\n", "line 9: byte 0xe9 at column 5 is not text"),
    ("utf-16", LIBSVM_TEXT.decode().encode("utf-16"), "line 1: byte 0xff at column 1 is not text"),
    ("nan-value", LIBSVM_TEXT + b"1 1:nan\n", "line 9: feature '1:nan': value is not finite"),
    ("nan-label", LIBSVM_TEXT + b"nan 1:1\n", "line 9: label 'nan' is not finite"),
    ("huge-token", LIBSVM_TEXT + b"1 1:" + b"1" * 1_000_000 + b"\n",
     "line 9: '1:11111111111111111111111111111111111111...' is too long (1,000,002 characters)"),
    ("truncated-gzip", gzip.compress(LIBSVM_TEXT * 50)[:60], "cannot be decompressed: Compressed file ended"),
    ("corrupt-gzip", flip(gzip.compress(LIBSVM_TEXT * 50), 20, 10), "cannot be decompressed: "),
    ("truncated-bzip2", bz2.compress(LIBSVM_TEXT * 50)[:60], "cannot be decompressed: Compressed file ended"),
]


@pytest.mark.parametrize("name, raw, message", LIBSVM, ids=[c[0] for c in LIBSVM])
def test_a_broken_libsvm_file_is_one_line(tmp_path, monkeypatch, name, raw, message):
    monkeypatch.setenv("MPICLIP_CACHE", "off")
    path = tmp_path / "d.txt"
    path.write_bytes(raw)
    with pytest.raises(InputError) as info:
        libsvm.summarize(str(path), "data.path")
    assert str(info.value).startswith(f"data.path = {str(path)!r}: {message}"), str(info.value)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("spoil", ["indices.i32", "values.f64", "labels.npy", "indptr.npy", "meta.json"])
def test_a_cache_entry_damaged_in_place_is_rebuilt_not_trusted(tmp_path, monkeypatch, spoil):
    """Bytes changed in place (same size, so no shape check sees it) are caught by the entry's checksums: the
    entry is removed, the file parsed again, and a sound entry published in its place."""
    monkeypatch.setenv("MPICLIP_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    A, y = rng.random((30, 6)), np.where(rng.random(30) < 0.5, -1, 1)
    path = write_libsvm(str(tmp_path / "d.txt"), A, y)
    libsvm.summarize(path, "data.path")
    (entry,) = (p for p in (tmp_path / "cache" / "libsvm").iterdir() if p.is_dir())
    target = entry / spoil
    raw = target.read_bytes()
    at = len(raw) - 4 if spoil != "meta.json" else raw.index(b'"n_features": ') + len(b'"n_features": ')
    target.write_bytes(raw[:at] + (b"9" if spoil == "meta.json" else b"\x7f\x7f\x7f\x7f") + raw[at + 1 if spoil ==
                                                                                           "meta.json" else at + 4:])
    parsed_cache._verify.cache_clear()
    assert parsed_cache.load(path) is None and not entry.exists()  # refused and removed
    again = libsvm.summarize(path, "data.path")  # parsed again, and published again
    assert again.n_features == 6 and entry.exists() and parsed_cache.load(path) is not None
    rows, labels = libsvm.read_rows(path, "data.path", np.arange(30), 6)
    np.testing.assert_array_equal(rows.toarray(), A)
    np.testing.assert_array_equal(labels, y)


def idx(array) -> bytes:
    return b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("images, labels, message", [
    (idx(np.zeros((4, 28, 28)))[:-5], idx(np.arange(4)), "train-images-idx3-ubyte': is truncated: 3,131 bytes"),
    (b"PK\x03\x04" + idx(np.zeros((4, 28, 28)))[4:], idx(np.arange(4)), "is not an idx file: it starts with 50 4b"),
    (idx(np.zeros((4, 28, 28))), idx(np.arange(3)), "train-labels-idx1-ubyte': holds an array of shape (3,), not one"),
    (idx(np.zeros((4, 0, 28))), idx(np.arange(4)), "train-images-idx3-ubyte': holds an array of shape (4, 0, 28)"),
    (gzip.compress(idx(np.zeros((4, 28, 28))))[:30], idx(np.arange(4)), "is a damaged gzip file"),
])
def test_a_broken_idx_file_is_one_line(tmp_path, images, labels, message):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(images)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(InputError) as info:
        vision.IdxSource.decode(vision.IdxParams(path=str(tmp_path), test=False))
    assert str(info.value).startswith("data.path = ") and message in str(info.value), str(info.value)
