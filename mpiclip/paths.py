"""Where output may go: the first directory that exists on the way to a path, and a real test that it
takes files (``os.access`` says yes to root everywhere, and /proc takes no files whatever it says)."""

from __future__ import annotations

import os
import tempfile


def existing_parent(path: str) -> str:
    """The nearest existing ancestor directory of ``path`` (the directories below it are made later)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent


def takes_files(directory: str) -> bool:
    """Can a file be created in ``directory`` (tried, then removed)?"""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False
