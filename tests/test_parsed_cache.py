"""The cache of parsed LibSVM files: cached rows are the parsed rows, a changed or damaged file or entry is
parsed again, concurrent jobs publish one entry, and a cache that cannot be written costs only the parse."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import random_classification, write_libsvm

from mpiclip.data import libsvm, parsed_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MPICLIP_CACHE", str(folder))
    return folder / "libsvm"


@pytest.fixture
def dataset(tmp_path):
    X, y = random_classification(n=300, d=40, density=0.2, seed=5, labels=(-1, 1))
    return write_libsvm(str(tmp_path / "d.txt"), X, y), X, y


def entries(cache) -> list:
    """The published entries (not the locks beside them, nor a temporary being written)."""
    return sorted(p.name for p in cache.iterdir() if p.is_dir()) if cache.exists() else []


def parser_must_not_run(monkeypatch):
    def refuse(*args):
        raise AssertionError("the file was parsed again")

    monkeypatch.setattr(libsvm, "_parse", refuse)


def test_cached_rows_are_the_parsed_rows(cache, dataset, monkeypatch):
    path, X, y = dataset
    parsed = libsvm.summarize(path, "data.path")
    assert len(entries(cache)) == 1
    parser_must_not_run(monkeypatch)
    cached = libsvm.summarize(path, "data.path")
    assert (cached.n_rows, cached.n_features, cached.sha256) == (parsed.n_rows, parsed.n_features, parsed.sha256)
    np.testing.assert_array_equal(cached.labels, y)
    rng = np.random.default_rng(0)
    for rows in (np.arange(300), np.arange(40, 97), np.sort(rng.choice(300, 50, replace=False)), np.array([299]),
                 np.zeros(0, dtype=np.int64)):
        A, labels = libsvm.read_rows(path, "data.path", rows, 45)
        assert A.shape == (len(rows), 45) and A.indices.dtype == np.int32
        np.testing.assert_array_equal(A.toarray()[:, :40], X[rows])
        np.testing.assert_array_equal(labels, y[rows])


def test_a_changed_file_is_parsed_again(cache, dataset):
    path, X, y = dataset
    libsvm.summarize(path, "data.path")
    text = open(path).read()
    assert text.startswith("-1 ") or "\n-1 " in text
    first = 0 if text.startswith("-1 ") else text.index("\n-1 ") + 1
    open(path, "w").write(text[:first] + "+1" + text[first + 2:])  # same length, perhaps the same timestamp tick
    flipped = y.copy()
    flipped[np.argmax(y == -1)] = 1
    again = libsvm.summarize(path, "data.path")
    np.testing.assert_array_equal(again.labels, flipped)
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("spoil", ["values.f64", "indptr.npy", "meta.json"])
def test_a_damaged_entry_is_ignored(cache, dataset, spoil):
    path, X, y = dataset
    libsvm.summarize(path, "data.path")
    (entry,) = entries(cache)
    target = cache / entry / spoil
    target.write_bytes(target.read_bytes()[:-9])
    assert parsed_cache.load(path) is None
    A, labels = libsvm.read_rows(path, "data.path", np.arange(300), 40)
    np.testing.assert_array_equal(A.toarray(), X)


def test_an_unwritable_or_disabled_cache_only_costs_the_parse(tmp_path, dataset, monkeypatch):
    path, X, y = dataset
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv("MPICLIP_CACHE", str(blocked))
    assert libsvm.summarize(path, "data.path").n_rows == 300 and parsed_cache.load(path) is None
    monkeypatch.setenv("MPICLIP_CACHE", "off")
    assert libsvm.summarize(path, "data.path").n_rows == 300 and parsed_cache.directory() is None


def test_a_bad_file_is_reported_and_not_cached(cache, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1:1\n1 2:x\n")
    with pytest.raises(Exception, match="line 2"):
        libsvm.summarize(str(bad), "data.path")
    assert entries(cache) == []


def test_concurrent_jobs_publish_one_whole_entry(cache, dataset):
    path, X, y = dataset
    script = ("import sys; from mpiclip.data import libsvm; s = libsvm.summarize(sys.argv[1], 'data.path'); "
              "A, _ = libsvm.read_rows(sys.argv[1], 'data.path', list(range(s.n_rows)), s.n_features); print(A.sum())")
    procs = [subprocess.Popen([sys.executable, "-c", script, path], stdout=subprocess.PIPE, text=True,
                              env={**os.environ}) for _ in range(4)]
    sums = [float(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    np.testing.assert_allclose(sums, X.sum())
    assert len(entries(cache)) == 1  # and no half-written ".writing-" directory left behind


def test_the_ranks_of_a_node_take_turns_and_parse_once(cache, dataset):
    """While one process parses (it holds the entry's lock), another waits, then maps the published entry
    without parsing."""
    path, X, y = dataset
    script = ("import sys; from mpiclip.data import libsvm; parsed = []; original = libsvm._parse\n"
              "libsvm._parse = lambda *a: parsed.append(1) or original(*a)\n"
              "s = libsvm.summarize(sys.argv[1], 'data.path'); print(s.n_rows, len(parsed))")
    with parsed_cache.turn(path):  # this test is the first process, in the middle of its parse
        waiting = subprocess.Popen([sys.executable, "-c", script, path], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiting.poll() is None and entries(cache) == []  # it waits for its turn
        writer = parsed_cache.Writer(path)
        A, labels = libsvm.read_rows(path, "data.path", np.arange(300), 40)  # no entry yet: parsed
        writer.add(A.indptr, A.indices, A.data)
        writer.finish(labels, 40, libsvm._sha256(path))
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out.split() == ["300", "0"]  # the rows, without one line parsed
