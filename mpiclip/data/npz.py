"""A user's own data set as a numpy ``.npz`` file: a feature array and a label vector (e.g. EMNIST exported
with ``np.savez("emnist.npz", X=images.reshape(len(images), -1), y=labels)``).

Arrays with more than two dimensions are flattened per row; N×H×W and N×C×H×W arrays are images, whose shape
(C = 1 for N×H×W) and per-channel statistics become the layout. Their values are kept as stored: save uint8
pixels divided by 255 to follow the [0, 1] convention of the other image sources. Rows keep their order.

The archive is read member by member with its .npy headers checked before any data is: a file that is not a
zip archive, a damaged or truncated archive or member, a header that promises more bytes than the member
holds, and an array of Python objects (which only unpickling could load, and a pickle can run any code: it
is never allowed) are each one InputError naming data.path, never a traceback from numpy or zipfile.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from typing import Optional

import numpy as np
import numpy.lib.format as npy
import scipy.sparse as sp

from mpiclip import limits
from mpiclip.data.layout import Layout, image_layout
from mpiclip.data.libsvm import _sha256
from mpiclip.errors import InputError

FIELD = "data.path"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with members; an empty one
_HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)


class _Archive:
    """An .npz file opened for checked reads of its arrays."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as e:
            raise InputError(FIELD, path, f"is not a readable .npz file ({e.strerror or e})") from None
        if head.startswith(_NPY_MAGIC):
            raise InputError(FIELD, path, "holds a single array; expected an .npz archive with features and labels")
        if not head.startswith(_ZIP_MAGIC):
            raise InputError(FIELD, path, f"is not an .npz archive (a zip file of .npy arrays, as np.savez writes): it "
                             f"starts with {head[:4].hex(' ') or 'nothing'}")
        try:
            self.zip = zipfile.ZipFile(path)
        except _DAMAGE as e:
            raise InputError(FIELD, path, f"is a damaged or truncated .npz archive ({e})") from None
        self.members = {(n[:-4] if n.endswith(".npy") else n): n for n in self.zip.namelist()}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def array(self, key: str, key_field: str) -> np.ndarray:
        """The array ``key``, its header and size checked before its data is read."""
        if key not in self.members:
            raise InputError(key_field, key, f"is not an array of {self.path} (it has: {', '.join(self.members)})")
        info = self.zip.getinfo(self.members[key])
        try:
            with self.zip.open(info) as f:
                shape, fortran, dtype, start = self._header(f, key)
                size = math.prod(shape) * dtype.itemsize
                if info.file_size - start != size:
                    raise self.bad(key, f"is {'truncated' if info.file_size - start < size else 'longer than its header says'}"
                                   f": its header promises {size:,} bytes (shape {shape}, {dtype}) and it holds "
                                   f"{info.file_size - start:,}")
                limits.check_fits(size, FIELD, self.path, f"array {key!r} of shape {shape}")
                data = f.read()  # to the member's end, where zipfile checks its CRC
        except InputError:
            raise
        except _DAMAGE as e:
            raise self.bad(key, f"is damaged ({e})") from None
        if len(data) != size:
            raise self.bad(key, f"is truncated: {len(data):,} bytes of the {size:,} its header promises")
        return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")

    def _header(self, f, key: str):
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise self.bad(key, "is not a .npy array (its member does not start with the .npy magic bytes)")
        version = tuple(f.read(2))
        if version not in _HEADER_READERS:
            raise self.bad(key, f"uses .npy format version {'.'.join(map(str, version))}, which is not read here "
                           "(save it with np.savez of numeric arrays)")
        shape, fortran, dtype = _HEADER_READERS[version](f)
        if dtype.hasobject:
            raise self.bad(key, "holds Python objects (dtype object), which only unpickling could load; a pickle can "
                           "run any code, so it is refused: save numeric arrays, e.g. np.asarray(x, dtype=float)")
        return shape, fortran, dtype, f.tell()

    def bad(self, key: str, reason: str) -> InputError:
        return InputError(FIELD, self.path, f"array {key!r} {reason}")


def summarize(path: str, x_key: str, y_key: str) -> tuple[int, int, np.ndarray, str, Optional[Layout]]:
    """(rows, features, labels, sha256, layout), with every check of the arrays themselves."""
    with _Archive(path) as archive:
        X, y = archive.array(x_key, "data.x_key"), archive.array(y_key, "data.y_key")
    if X.ndim < 2 or X.shape[0] == 0 or min(X.shape[1:]) == 0 or X.dtype.kind not in "biuf":
        raise InputError("data.x_key", x_key, f"must be a numeric array with one row per sample (has shape {X.shape}, "
                         f"dtype {X.dtype})")
    if y.ndim != 1 or len(y) != X.shape[0] or y.dtype.kind not in "biuf":
        raise InputError("data.y_key", y_key, f"must hold one number per row of {x_key} ({X.shape[0]}); has shape "
                         f"{y.shape} and dtype {y.dtype}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise InputError("data.path", path, "holds non-finite values (nan or inf)")
    shape = (1, *X.shape[1:]) if X.ndim == 3 else X.shape[1:]
    layout = image_layout(X.reshape(len(X), -1), shape) if len(shape) == 3 and min(shape) > 0 else None
    return X.shape[0], int(np.prod(X.shape[1:])), y.astype(np.float64), _sha256(path), layout


def read(path: str, x_key: str, y_key: str, rows: np.ndarray, d: int) -> tuple[sp.csr_matrix, np.ndarray]:
    with _Archive(path) as archive:
        X, y = archive.array(x_key, "data.x_key"), archive.array(y_key, "data.y_key")
    return sp.csr_matrix(X.reshape(X.shape[0], -1)[rows].astype(np.float64)), y[rows].astype(np.float64)
