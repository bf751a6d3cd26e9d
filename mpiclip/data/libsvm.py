"""Streaming LibSVM reader: validate a whole file, then materialise only the requested rows.

Format: one sample per line, ``label index:value index:value ...`` with 1-based indices; blank lines
and ``#`` comments are skipped. Plain, gzip, bzip2 and xz files are recognised by their magic bytes.
Every problem in a file is reported as one line naming the file and the line number.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
import scipy.sparse as sp

from mpiclip.data import parsed_cache
from mpiclip.errors import InputError
from mpiclip.limits import MAX_INDEX

BLOCK_BYTES = 1 << 22  # lines are read and parsed in blocks of about 4 MB
# No number or index is longer (the digits of a float64 in full, an exponent, a sign): a longer token is refused
# before numpy makes an array as wide as it for every token of the block.
MAX_TOKEN = 400
SHOWN = 40  # characters of a bad token shown in a message
# The bytes of a LibSVM line: printable ASCII and whitespace (anything else is a binary file, or UTF-16, a BOM...)
_TEXT = bytes(range(0x20, 0x7F)) + b"\t\n\r\x0b\x0c"

_MAGIC = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


@dataclass(frozen=True)
class FileSummary:
    """What a first pass over the file learns: enough to validate the config and partition the rows."""

    n_rows: int
    n_features: int  # largest index present
    labels: np.ndarray  # (n_rows,) raw labels
    sha256: str


def summarize(path: str, field: str) -> FileSummary:
    """Parse and validate every line of ``path`` (raising InputError(field, path, ...)), keep only labels;
    the parsed rows go to the cache (:mod:`mpiclip.data.parsed_cache`), and a cached file is not parsed."""
    _open(path, field).close()  # the file's own errors first, cached or not
    cached = parsed_cache.load(path)
    if cached is None:
        with parsed_cache.turn(path):
            cached = parsed_cache.load(path)  # published while this process waited for its turn
            if cached is None:
                return _parse_file(path, field)
    return FileSummary(len(cached.labels), cached.n_features, cached.labels, cached.sha256)


def _parse_file(path: str, field: str) -> FileSummary:
    labels, max_index = [], 0
    writer = parsed_cache.Writer(path)
    try:
        for lineno0, lines in _blocks(path, field):
            block = _parse(lines, lineno0, path, field)
            writer.add(block.indptr, block.indices, block.values)
            labels.append(block.labels)
            if len(block.indices):
                max_index = max(max_index, int(block.indices.max()) + 1)
        all_labels = np.concatenate(labels) if labels else np.zeros(0)
        if len(all_labels) == 0:
            raise InputError(field, path, "the file holds no samples")
        summary = FileSummary(len(all_labels), max_index, all_labels, _sha256(path))
        writer.finish(summary.labels, summary.n_features, summary.sha256)
        return summary
    finally:
        writer.abandon()


def read_rows(path: str, field: str, rows: np.ndarray, n_features: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """The given data rows (sorted global row numbers) as CSR with ``n_features`` columns, and their labels."""
    cached = parsed_cache.load(path)
    if cached is not None:
        return cached.rows(rows, n_features)
    wanted = np.zeros(0, dtype=bool)
    if len(rows):
        wanted = np.zeros(int(rows[-1]) + 1, dtype=bool)
        wanted[rows] = True
    parts, labels, seen = [], [], 0
    for lineno0, lines in _blocks(path, field):
        lines = [ln for ln in lines if _is_data(ln)]
        keep = wanted[seen : seen + len(lines)]
        chosen = [ln for ln, k in zip(lines, keep) if k]
        seen += len(lines)
        if chosen:
            block = _parse(chosen, lineno0, path, field)
            parts.append(block.matrix(n_features))
            labels.append(block.labels)
        if seen >= len(wanted):
            break
    if not parts:
        return sp.csr_matrix((0, n_features)), np.zeros(0)
    return sp.vstack(parts, format="csr"), np.concatenate(labels)


@dataclass
class _Block:
    labels: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray  # 0-based
    values: np.ndarray

    def matrix(self, n_features: int) -> sp.csr_matrix:
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=(len(self.labels), n_features))


def _is_data(line: bytes) -> bool:
    stripped = line.split(b"#", 1)[0].strip()
    return bool(stripped)


def _parse(lines: list[bytes], lineno0: int, path: str, field: str) -> _Block:
    """Vectorised parse of a block of lines; on any problem, re-parse line by line to name the line."""
    label_tokens, feature_tokens, counts = [], [], []
    for line in lines:
        parts = line.split(b"#", 1)[0].split()
        if not parts:
            continue
        label_tokens.append(parts[0])
        feature_tokens.extend(parts[1:])
        counts.append(len(parts) - 1)
    try:
        if any(t.count(b":") != 1 or len(t) > MAX_TOKEN for t in feature_tokens) or \
                any(len(t) > MAX_TOKEN for t in label_tokens):
            raise ValueError
        pieces = b" ".join(feature_tokens).replace(b":", b" ").split()
        if len(pieces) != 2 * len(feature_tokens):
            raise ValueError
        labels = np.array(label_tokens).astype(np.float64) if label_tokens else np.zeros(0)
        indices = np.array(pieces[0::2]).astype(np.int64) - 1 if pieces else np.zeros(0, dtype=np.int64)
        values = np.array(pieces[1::2]).astype(np.float64) if pieces else np.zeros(0)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if not (np.isfinite(labels).all() and np.isfinite(values).all() and (indices >= 0).all()
                and (indices < MAX_INDEX).all()):
            raise ValueError
        if len(indices) and not _strictly_increasing_per_row(indices, indptr):
            raise ValueError
    except (ValueError, OverflowError):
        _raise_first_bad_line(lines, lineno0, path, field)
        raise AssertionError("a block failed to parse but no line is bad") from None  # pragma: no cover
    return _Block(labels, indptr, indices.astype(np.int32), values)


def _strictly_increasing_per_row(indices: np.ndarray, indptr: np.ndarray) -> bool:
    step = np.diff(indices)
    row_start = np.zeros(len(indices), dtype=bool)
    row_start[indptr[:-1][indptr[:-1] < len(indices)]] = True
    return bool(np.all((step > 0) | row_start[1:]))


def _raise_first_bad_line(lines: list[bytes], lineno0: int, path: str, field: str) -> None:
    for offset, line in enumerate(lines):
        reason = _line_problem(line)
        if reason:
            raise InputError(field, path, f"line {lineno0 + offset}: {reason}")


def _line_problem(line: bytes) -> str | None:
    data = line.split(b"#", 1)[0]
    foreign = data.translate(None, _TEXT)
    if foreign:
        column = data.index(foreign[:1]) + 1
        return (f"byte 0x{foreign[0]:02x} at column {column} is not text: a LibSVM file is ASCII text, plain or compressed "
                "with gzip, bzip2 or xz (is it binary, UTF-16, or does it start with a byte-order mark?)")
    parts = data.split()
    if not parts:
        return None
    long = next((t for t in parts if len(t) > MAX_TOKEN), None)
    if long is not None:
        return f"{_text(long)} is too long ({len(long):,} characters) to be a label or an index:value pair"
    try:
        label = float(parts[0])
    except ValueError:
        return f"label {_text(parts[0])} is not a number"
    if not np.isfinite(label):
        return f"label {_text(parts[0])} is not finite"
    previous = 0
    for token in parts[1:]:
        pieces = token.split(b":")
        if len(pieces) != 2:
            return f"feature {_text(token)} is not index:value"
        try:
            index = int(pieces[0])
        except ValueError:
            return f"feature {_text(token)}: index is not an integer"
        try:
            value = float(pieces[1])
        except ValueError:
            return f"feature {_text(token)}: value is not a number"
        if index < 1:
            return f"feature {_text(token)}: indices start at 1"
        if index > MAX_INDEX:
            return f"feature {_text(token)}: index {index} exceeds {MAX_INDEX}, the largest supported (32-bit CSR indices)"
        if not np.isfinite(value):
            return f"feature {_text(token)}: value is not finite"
        if index <= previous:
            return f"feature {_text(token)}: indices must increase along a line"
        previous = index
    return None


def _text(token: bytes) -> str:
    shown = token.decode("ascii", "replace")
    return repr(shown if len(shown) <= SHOWN else shown[:SHOWN] + "...")


def _open(path: str, field: str) -> BinaryIO:
    if not os.path.exists(path):
        raise InputError(field, path, "no such file")
    if os.path.isdir(path):
        raise InputError(field, path, "is a directory, not a LibSVM file")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        opener = next((op for magic, op in _MAGIC if head.startswith(magic)), open)
        return opener(path, "rb")
    except OSError as e:
        raise InputError(field, path, f"cannot be read: {e.strerror or e}") from None


def _blocks(path: str, field: str) -> Iterator[tuple[int, list[bytes]]]:
    """(1-based number of the first line, lines) in blocks of about BLOCK_BYTES."""
    lineno = 1
    with _open(path, field) as f:
        while True:
            try:
                lines = f.readlines(BLOCK_BYTES)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
                raise InputError(field, path, f"cannot be decompressed: {e}") from None
            if not lines:
                return
            yield lineno, lines
            lineno += len(lines)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
