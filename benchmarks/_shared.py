"""Small helpers of the bench scripts (importable because a script's own folder is first on sys.path)."""

from __future__ import annotations

import json


def write_json(path: str | None, data: dict) -> None:
    """Write the figures a script measured to ``path`` (its ``--json`` option; nothing when None): rank 0 calls it."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
