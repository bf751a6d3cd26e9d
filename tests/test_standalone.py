"""The repository stands alone: no tracked file points to a document or a directory outside it.

Design and algorithms live in docs/design.md and docs/algorithms.md; data sets are downloaded by the user and found
through --data-dir or $MPICLIP_DATA_DIR. A reference to a file that a user of the repository does not have (notes
kept beside the repository, or a data directory next to it) is a dead link for them.
"""

import os
import shutil
import subprocess

import pytest
from helpers import REPO

# The names are built from pieces so that this file, which is tracked too, does not name them itself.
_DESIGN, _ALGORITHMS, _MPI, _SLURM = "DES" + "IGN", "ALGO" + "RITHMS", "MPI" + "_NOTES", "SLURM" + "_LOCAL"
FORBIDDEN = (_DESIGN + ".md", _ALGORITHMS + ".md", _MPI + ".md", _SLURM + ".md", _ALGORITHMS + " §", _DESIGN + " §",
             _MPI, _SLURM, ".." + "/shared")
BINARY = (".png", ".pdf", ".h5", ".npy", ".npz", ".gz", ".zip", ".jpg", ".jpeg", ".gif", ".ico", ".pkl", ".pt")


def tracked_text_files() -> list[str]:
    """The repository's tracked regular files that are text, relative to its root, in ``git ls-files`` order."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proc = subprocess.run(["git", "-C", REPO, "ls-files", "-z"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"{REPO} is not a git checkout")
    files = []
    for name in proc.stdout.decode("utf-8").split("\0"):
        path = os.path.join(REPO, name)
        if not name or name.lower().endswith(BINARY) or os.path.islink(path) or not os.path.isfile(path):
            continue  # binary by name, a link (jobs/sweeps), or deleted in the work tree
        with open(path, "rb") as f:
            if b"\0" in f.read(8192):
                continue  # binary by content
        files.append(name)
    return files


def first_outside_reference(files: list[str], root: str = REPO):
    """(file, line number, name, line) of the first place that names a file outside the repository, or None."""
    for name in files:
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                for pattern in FORBIDDEN:
                    if pattern in line:
                        return name, number, pattern, line.strip()
    return None


def test_no_tracked_file_names_a_file_outside_the_repository():
    files = tracked_text_files()
    assert "README.md" in files and "docs/design.md" in files and "docs/algorithms.md" in files
    found = first_outside_reference(files)
    if found is not None:
        name, number, pattern, line = found
        pytest.fail(f"{name}:{number} names {pattern!r}, which a user of the repository does not have; point to "
                    f"docs/design.md or docs/algorithms.md instead, or say it in words: {line[:200]}")


def test_the_check_finds_a_reference(tmp_path):
    """The search itself works: a file naming one of the documents is reported with its line."""
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.md").write_text("fine\nsee " + _ALGORITHMS + " §8\n")
    assert first_outside_reference(["a.py", "b.md"], str(tmp_path)) == ("b.md", 2, _ALGORITHMS + " §", "see " + _ALGORITHMS + " §8")
    (tmp_path / "b.md").write_text("fine\nsee docs/algorithms.md §8\n")
    assert first_outside_reference(["a.py", "b.md"], str(tmp_path)) is None
