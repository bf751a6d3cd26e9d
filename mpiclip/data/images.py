"""Readers of the public image and text data sets in the formats they are distributed in, with numpy alone.

Every reader checks its input thoroughly: a damaged, truncated or foreign file is one InputError naming
data.path and what is wrong, never a traceback from inside a parser. ``sha`` (a hashlib object, optional)
is fed the bytes of every file read, in the order read, for the data set's checksum.

- idx (MNIST, Fashion-MNIST, EMNIST): :func:`read_idx`, plain or gzipped (recognised by content).
- CIFAR-10/100, python version: :func:`read_cifar`, its directory or the .tar.gz itself. The batches are
  pickles, loaded by an unpickler that builds numpy arrays and nothing else (a pickle can run any code).
- LEAF JSON (FEMNIST, Shakespeare, Sent140): :func:`read_leaf`.
- synthetic class-conditional images, made chunk by chunk: :func:`synthetic_labels`, :func:`synthetic_chunk`.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import io
import json
import math
import os
import pickle
import posixpath
import re
import string
import struct
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from mpiclip.errors import InputError

FIELD = "data.path"


def _read(path: str, sha=None) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(FIELD, path, f"cannot be read ({e.strerror or e})") from None
    if sha is not None:
        sha.update(raw)
    return raw


# ----------------------------------------------------------------------------------------------- idx
_IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}


def read_idx(path: str, sha=None) -> np.ndarray:
    """An idx file (00 00 08 ndim, big-endian int32 dimensions, then the bytes), plain or gzipped, as a
    read-only uint8 array of its dimensions. Only unsigned bytes, the type of every image and label file."""
    raw = _read(path, sha)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(FIELD, path, f"is a damaged gzip file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise InputError(FIELD, path, f"is not an idx file: it starts with {raw[:4].hex(' ') or 'nothing'}, not 00 00 08")
    if raw[2] != 0x08:
        raise InputError(FIELD, path, f"holds idx values of type 0x{raw[2]:02x} ({_IDX_TYPES.get(raw[2], 'unknown')}); "
                         "images and labels are unsigned bytes (0x08)")
    ndim, header = raw[3], 4 + 4 * raw[3]
    if ndim == 0 or len(raw) < header:
        raise InputError(FIELD, path, f"has a truncated idx header ({len(raw)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    shape, count, body = "×".join(map(str, dims)), math.prod(dims), len(raw) - header
    if min(dims) < 0 or body < count:
        raise InputError(FIELD, path, f"is truncated: {body:,} bytes of data for dimensions {shape}")
    if body > count:
        raise InputError(FIELD, path, f"has {body - count:,} bytes after the data of dimensions {shape}")
    return np.frombuffer(raw, np.uint8, count, header).reshape(dims)


# --------------------------------------------------------------------------------------------- CIFAR
CIFAR = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
         "cifar100": ("cifar-100-python", ["train"], ["test"])}

try:
    from numpy._core import multiarray as _multiarray  # numpy >= 2
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

# what pickled numpy arrays, dtypes and scalars need (and Python 3's protocol-2 bytes): nothing that acts
_PICKLE_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
for _core in ("numpy.core", "numpy._core"):
    _PICKLE_GLOBALS.update({(f"{_core}.multiarray", "_reconstruct"): _multiarray._reconstruct,
                            (f"{_core}.multiarray", "scalar"): _multiarray.scalar,
                            (f"{_core}.numeric", "_frombuffer"): _numeric._frombuffer})  # protocol 5


class _Refused(Exception):
    pass


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id, which only a custom pickler writes")


def read_cifar(path: str, kind: str, label_key: str, classes: int, test: bool, sha=None) -> tuple[np.ndarray, np.ndarray, int]:
    """(images as N×3072 uint8 rows, channel by channel, labels, training rows) of the CIFAR python version
    ``kind`` ('cifar10' or 'cifar100'): the training batches, then the test batch when ``test``. ``path`` is
    its directory (or the one above it) or the downloaded .tar.gz, read as it is."""
    folder, train, tests = CIFAR[kind]
    names = train + (tests if test else [])
    batches = _cifar_dir(path, folder, names, sha) if os.path.isdir(path) else _cifar_archive(path, folder, names, sha)
    parts = [_cifar_batch(raw, where, prefix, label_key, classes) for where, prefix, raw in batches]
    n_train = sum(len(y) for _, y in parts[: len(train)])
    return np.concatenate([X for X, _ in parts]), np.concatenate([y for _, y in parts]), n_train


def _cifar_dir(path: str, folder: str, names: list, sha) -> list:
    base = path if os.path.isfile(os.path.join(path, names[0])) else os.path.join(path, folder)
    if not os.path.isfile(os.path.join(base, names[0])):
        raise InputError(FIELD, path, f"holds neither {names[0]} nor {folder}/{names[0]}: expected the directory of the "
                         "python version of the data set or its .tar.gz")
    found = [os.path.join(base, n) for n in names]
    for f in found:
        if not os.path.isfile(f):
            raise InputError(FIELD, path, f"has no batch {os.path.basename(f)} (looked in {base})")
    return [(f, "", _read(f, sha)) for f in found]


def _cifar_archive(path: str, folder: str, names: list, sha) -> list:
    raw, wanted, found = _read(path, sha), {f"{folder}/{n}": n for n in names}, {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r|*") as tar:
            for member in tar:
                name = posixpath.normpath(member.name)
                if name in wanted and member.isfile():
                    found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise InputError(FIELD, path, f"is not a readable .tar.gz of the data set's python version ({e})") from None
    for name in wanted:
        if name not in found:
            raise InputError(FIELD, path, f"has no member {name} (expected the archive of the python version)")
    return [(path, f"member {name}: ", found[name]) for name in wanted]


def _cifar_batch(raw: bytes, path: str, prefix: str, label_key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch pickle's (data, labels), checked."""
    def bad(reason: str) -> InputError:
        return InputError(FIELD, path, prefix + reason)

    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as e:
        raise bad(f"is a pickle that asks for {e}, which a CIFAR batch never needs: refused, nothing was run") from None
    except Exception as e:  # a damaged pickle can fail in any way  # noqa: BLE001
        raise bad(f"is not a CIFAR batch (a damaged or foreign pickle: {type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise bad(f"is not a CIFAR batch (a pickled {type(batch).__name__}, not a dict)")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in batch.items()}
    for key in ("data", label_key):
        if key not in batch:
            raise bad(f"is not a CIFAR batch of this kind: it has no {key!r} (it has: {', '.join(sorted(batch))})")
    X = batch["data"]
    if not isinstance(X, np.ndarray) or X.dtype != np.uint8 or X.ndim != 2 or X.shape[1] != 3072:
        raise bad(f"'data' must be a uint8 array of N×3072 pixels (3×32×32, channel by channel), not {_describe(X)}")
    try:
        y = np.asarray(batch[label_key])
    except ValueError:
        y = np.zeros(0, dtype=object)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(X):
        raise bad(f"{label_key!r} must hold one integer per image ({len(X):,}), not {_describe(batch[label_key])}")
    outside = y[(y < 0) | (y >= classes)]
    if len(outside):
        raise bad(f"{label_key!r} holds label {outside[0]}, outside 0..{classes - 1}")
    return X, y.astype(np.int64)


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}" + (f" of {len(value)}" if isinstance(value, (list, tuple)) else "")


# ---------------------------------------------------------------------------------------------- LEAF
LEAF_TASKS = ("femnist", "shakespeare", "sent140")
_CHAR_IDS = np.full(256, 255, dtype=np.uint8)  # byte -> index in string.printable (255: not there)
_CHAR_IDS[np.frombuffer(string.printable.encode(), np.uint8)] = np.arange(len(string.printable))
_WORDS = re.compile(r"[\w']+|[.,!?;]")  # LEAF's split_line


@dataclass(frozen=True)
class LeafSet:
    X: np.ndarray  # (rows, features): FEMNIST pixels (uint8, or float32 when not multiples of 1/255) or token ids
    labels: np.ndarray  # int64
    groups: np.ndarray  # every row's user: its index among the sorted names of all users
    n_train: int  # the training rows come first
    task: str
    vocab: int  # token ids are 0..vocab−1 (0 for images)


def read_leaf(path: str, task: str = "auto", vocab: int = 10000, seq_len: int = 25, test: bool = True,
              sha=None) -> LeafSet:
    """A LEAF data set: a JSON file, a directory of them, or a directory with train/ and test/ (LEAF's
    layout: test/ is the official test split, read when ``test``). Rows user by user, users by sorted name,
    training rows first; a name in train/ and test/ is one user (client).

    femnist: x = 784 pixel values in [0, 1] (28×28), y = class 0..61. shakespeare: x = a string of L
    characters, y = the next one; both become indices into ``string.printable`` (an unknown character is an
    error). sent140: x = [id, date, query, user, text], y = 0/1 (the raw Sentiment140 label 4 also counts as
    1); the text is split into words as LEAF does (case kept), which become ids among the ``vocab`` − 2 most
    frequent words of the training rows (ties alphabetical; 0 pads, 1 is any other word), cut or padded at
    the end to ``seq_len``. No pretrained embeddings (LEAF's GloVe vectors) are used."""
    train_files, test_files = _leaf_files(path, test)
    state = {"task": task}
    train = _leaf_users(train_files, state, sha)
    if not train:
        raise InputError(FIELD, path, "holds no samples")
    tests = _leaf_users(test_files, state, sha)
    task = state["task"]
    index = {u: i for i, u in enumerate(sorted(set(train) | set(tests)))}
    parts = [(index[u], *split[u]) for split in (train, tests) for u in sorted(split)]
    n_train = sum(len(y) for x, y in train.values())
    labels = np.concatenate([y for _, _, y in parts])
    groups = np.concatenate([np.full(len(y), g) for g, _, y in parts]).astype(np.int64)
    if task == "sent140":
        counts = Counter(w for x, _ in train.values() for words in x for w in words)
        ids = {w: i + 2 for i, w in enumerate(sorted(counts, key=lambda w: (-counts[w], w))[: vocab - 2])}
        size = len(ids) + 2
        X = np.zeros((len(labels), seq_len), dtype=np.min_scalar_type(size - 1))
        for r, words in enumerate(words for _, x, _ in parts for words in x):
            X[r, : min(len(words), seq_len)] = [ids.get(w, 1) for w in words[:seq_len]]
        return LeafSet(X, labels, groups, n_train, task, size)
    pixels = [x for _, x, _ in parts]
    if any(x.dtype != np.uint8 for x in pixels):
        pixels = [x / np.float32(255) if x.dtype == np.uint8 else x for x in pixels]
    return LeafSet(np.concatenate(pixels), labels, groups, n_train, task, len(string.printable) if task == "shakespeare" else 0)


def _leaf_files(path: str, test: bool) -> tuple[list, list]:
    if not os.path.isdir(path):
        return [path], []

    def jsons(d: str) -> list:
        return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".json") and os.path.isfile(os.path.join(d, n)))

    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        train, tests = jsons(train_dir), jsons(test_dir) if test else []
        if not train or (test and not tests):
            raise InputError(FIELD, path, f"{'test/' if train else 'train/'} holds no .json files"
                             + (" (data.test = false reads train/ alone)" if train else ""))
        return train, tests
    files = jsons(path)
    if not files:
        raise InputError(FIELD, path, "holds no LEAF .json files, nor train/ and test/ directories of them")
    return files, []


def _leaf_users(files: list, state: dict, sha) -> dict:
    """{user: (x converted, labels)} of ``files`` (one split); ``state['task']`` is set by the first sample."""
    users, seen = {}, {}
    for path in files:
        for user, x, y in _leaf_file(_read(path, sha), path):
            if user in seen:
                raise InputError(FIELD, path, f"repeats user {user!r} of {seen[user]}")
            seen[user] = path
            if state["task"] == "auto":
                state["task"] = _detect(x[0], path)
            bad = functools.partial(_user_error, path, user)
            users[user] = _CONVERT[state["task"]](x, y, bad)
            length = users[user][0].shape[1] if state["task"] == "shakespeare" else 0
            if length != state.setdefault("length", length):
                raise bad(f"x holds strings of {length} characters, not {state['length']} as the first user's")
    return users


def _user_error(path: str, user: str, reason: str) -> InputError:
    return InputError(FIELD, path, f"user {user!r}: {reason}")


def _leaf_file(raw: bytes, path: str):
    """(user, x, y) of every user with samples, after checking the file's structure."""
    if not raw.strip():
        raise InputError(FIELD, path, "is empty")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InputError(FIELD, path, f"is not JSON ({e})") from None
    missing = [k for k in ("users", "num_samples", "user_data") if not isinstance(data, dict) or k not in data]
    if missing:
        raise InputError(FIELD, path, f"is not a LEAF file: no {missing[0]!r} (LEAF files have users, num_samples, user_data)")
    users, counts, user_data = data["users"], data["num_samples"], data["user_data"]
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users) or len(set(users)) != len(users):
        raise InputError(FIELD, path, "'users' must be a list of distinct names")
    if not isinstance(counts, list) or len(counts) != len(users):
        raise InputError(FIELD, path, f"'num_samples' must hold one count per user ({len(users)})")
    if not isinstance(user_data, dict) or set(user_data) != set(users):
        odd = sorted(set(user_data) ^ set(users)) if isinstance(user_data, dict) else ["(not a table)"]
        raise InputError(FIELD, path, f"'user_data' must hold exactly the users listed (differs at {odd[0]!r})")
    for user, n in zip(users, counts):
        d = user_data[user]
        x, y = (d.get("x"), d.get("y")) if isinstance(d, dict) else (None, None)
        if not isinstance(x, list) or not isinstance(y, list):
            raise InputError(FIELD, path, f"user {user!r} has no lists 'x' and 'y'")
        if not len(x) == len(y) == n:
            raise InputError(FIELD, path, f"user {user!r} has {len(x)} x and {len(y)} y for num_samples {n}")
        if n:
            yield user, x, y


def _detect(x, path: str) -> str:
    if isinstance(x, str):
        return "shakespeare"
    if isinstance(x, list) and len(x) == 5 and isinstance(x[4], str):
        return "sent140"
    if isinstance(x, list) and len(x) == 784:
        return "femnist"
    shown = repr(x) if len(repr(x)) < 60 else repr(x)[:57] + "..."
    raise InputError("data.task", "auto", f"cannot tell the LEAF task from the first sample of {path} (x = {shown}); "
                     f"set it to one of {', '.join(LEAF_TASKS)}")


def _femnist(x: list, y: list, bad) -> tuple[np.ndarray, np.ndarray]:
    try:
        X = np.asarray(x, dtype=np.float64)
    except (ValueError, TypeError):
        X = np.zeros(0)
    if X.ndim != 2 or X.shape[1] != 784:
        raise bad("x must be lists of 784 pixel values (28×28) for femnist")
    if not np.isfinite(X).all() or X.min() < 0 or X.max() > 1:
        raise bad("pixel values must be in [0, 1]")
    q = np.rint(X * 255)  # LEAF writes k/255: kept as bytes, a quarter of float32
    return (q.astype(np.uint8) if np.abs(q - X * 255).max() < 1e-3 else X.astype(np.float32)), _classes(y, 62, bad)


def _shakespeare(x: list, y: list, bad) -> tuple[np.ndarray, np.ndarray]:
    if not all(isinstance(s, str) for s in x) or not all(isinstance(c, str) and len(c) == 1 for c in y):
        raise bad("x must be strings and y single characters for shakespeare")
    lengths = {len(s) for s in x}
    if len(lengths) > 1 or 0 in lengths:
        raise bad(f"x holds strings of {min(lengths)} to {max(lengths)} characters; every x must have the same length"
                  if len(lengths) > 1 else "x holds empty strings")
    text = "".join(x) + "".join(y)
    unknown = sorted(set(text) - set(string.printable))
    if unknown:
        raise bad(f"character {unknown[0]!r} is not in string.printable, the vocabulary")
    ids = _CHAR_IDS[np.frombuffer(text.encode("ascii"), np.uint8)]
    return ids[: len(text) - len(y)].reshape(len(x), len(x[0])), ids[len(text) - len(y):].astype(np.int64)


def _sent140(x: list, y: list, bad) -> tuple[list, np.ndarray]:
    if not all(isinstance(s, list) and len(s) == 5 and isinstance(s[4], str) for s in x):
        raise bad("x must be [id, date, query, user, text] for sent140")
    labels = _classes(y, 5, bad)
    if np.isin(labels, [2, 3]).any():
        raise bad("y must be 0 or 1 (or Sentiment140's 4 for positive)")
    return [_WORDS.findall(s[4]) for s in x], np.where(labels == 4, 1, labels)


def _classes(y: list, k: int, bad) -> np.ndarray:
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < k for v in y):
        wrong = next(v for v in y if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < k))
        raise bad(f"label {wrong!r} is not an integer in 0..{k - 1}")
    return np.array(y, dtype=np.int64)


_CONVERT = {"femnist": _femnist, "shakespeare": _shakespeare, "sent140": _sent140}


# ----------------------------------------------------------------------------------- synthetic images
SYNTHETIC_CHUNK = 1024
_TEMPLATES, _CHUNK = 1, 2  # purposes in the seed sequence


def synthetic_templates(seed: int, classes: int, channels: int, size: int) -> np.ndarray:
    """One smooth random image per class, (classes, channels, size, size), values about 0.5 ± 0.35: Gaussian
    bumps of width size/6 weighted by random normal coefficients on a 6×6 grid."""
    rng = np.random.default_rng([seed, _TEMPLATES])
    coarse = rng.standard_normal((classes, channels, 6, 6))
    t = np.linspace(0, 5, size)
    M = np.exp(-0.5 * (t[:, None] - np.arange(6)) ** 2)
    T = np.einsum("ik,nckl,jl->ncij", M, coarse, M)
    return np.clip(0.5 + 0.18 * T / T.std(), 0, 1)


def synthetic_labels(seed: int, c: int, n_rows: int, classes: int) -> np.ndarray:
    """The classes of chunk c's rows (the first draw of its generator, so labels alone are cheap)."""
    rows = min(SYNTHETIC_CHUNK, n_rows - c * SYNTHETIC_CHUNK)
    return np.random.default_rng([seed, _CHUNK, c]).integers(0, classes, rows)


def synthetic_chunk(seed: int, c: int, n_rows: int, noise: float, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [c·CHUNK, min((c+1)·CHUNK, n_rows)): each its class's template shifted by up to size/10 pixels
    (edges repeated) plus noise·N(0, 1), clipped to [0, 1], as float32 rows of C·H·W; and the classes."""
    classes, channels, size, _ = templates.shape
    rows = min(SYNTHETIC_CHUNK, n_rows - c * SYNTHETIC_CHUNK)
    rng = np.random.default_rng([seed, _CHUNK, c])
    y = rng.integers(0, classes, rows)
    s = max(1, size // 10)
    padded = np.pad(templates, ((0, 0), (0, 0), (s, s), (s, s)), mode="edge")
    dy, dx = rng.integers(0, 2 * s + 1, (2, rows))
    i = (dy[:, None] + np.arange(size))[:, None, :, None]
    j = (dx[:, None] + np.arange(size))[:, None, None, :]
    X = padded[y[:, None, None, None], np.arange(channels)[None, :, None, None], i, j]
    X = np.clip(X + noise * rng.standard_normal(X.shape), 0, 1)
    return X.reshape(rows, -1).astype(np.float32), y
