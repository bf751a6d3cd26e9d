"""Small helpers of the bench scripts (importable because a script's own folder is first on sys.path)."""

from __future__ import annotations

import json
import os


def write_json(path: str | None, data: dict) -> None:
    """Write the figures a script measured to ``path`` (its ``--json`` option; nothing when None): rank 0 calls it."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)


def libsvm(name: str) -> str:
    """A LibSVM file such as "a9a.txt", which the user downloads (the data sets are not part of the repository):
    found in the current directory or a directory of $MPICLIP_DATA_DIR, as an absolute path; ``name`` itself when
    it is in neither (the run then says where it looked)."""
    from mpiclip.paths import find_data

    found = find_data(name)
    return os.path.abspath(found) if os.path.exists(found) else name
