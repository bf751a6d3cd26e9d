"""Where output may go: the first directory that exists on the way to a path, and a real test that it
takes files (``os.access`` says yes to root everywhere, and /proc takes no files whatever it says); no
symbolic link to nothing on the way (it would be followed and a file made wherever it points); names
without control characters (they become file names and table cells); where data files are found: the
current directory, then the data directories."""

from __future__ import annotations

import os
import tempfile
import unicodedata
from typing import Optional


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


def dangling_link(path: str) -> Optional[str]:
    """The outermost of ``path`` and the directories on the way to it that is a symbolic link to nothing, or None.
    Creating a file through such a link makes it wherever the link points, outside the directory it seems in."""
    chain, here = [], os.path.abspath(path)
    while True:
        chain.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return next((p for p in reversed(chain) if os.path.islink(p) and not os.path.exists(p)), None)


def control_character(text: str) -> Optional[str]:
    """The first control character in ``text`` (C0 with tab and newline, DEL, C1), or None."""
    return next((ch for ch in text if unicodedata.category(ch) == "Cc"), None)


def printable(text: str) -> Optional[str]:
    """A parameter check (:func:`mpiclip.params.param`): names and paths hold no control character, since
    they become file names, table cells and one-line messages."""
    ch = control_character(text)
    return None if ch is None else f"holds the control character {ch!r}; use printable characters"


def check_printable(field: str, text: str) -> None:
    """InputError naming ``field`` if ``text`` holds a control character."""
    from mpiclip.errors import InputError

    reason = printable(text) if isinstance(text, str) else None
    if reason:
        raise InputError(field, text, reason)


DATA_DIR_VARIABLE = "MPICLIP_DATA_DIR"


def find_data(path: str) -> str:
    """A relative data path that is not there from the current directory is looked up in the directories of
    $MPICLIP_DATA_DIR (separated by ':', as PATH; ``--data-dir`` puts one in front), so that configs and sweep
    files can name a data set ("a9a.txt") instead of a place; the path found is the one the run records."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for directory in filter(None, os.environ.get(DATA_DIR_VARIABLE, "").split(os.pathsep)):
        candidate = os.path.join(os.path.expanduser(directory), path)
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return path


def missing_data(path: str) -> str:
    """Why a data file was not found, saying where it was looked for."""
    dirs = os.environ.get(DATA_DIR_VARIABLE, "")
    if os.path.isabs(path):
        return "no such file"
    if dirs:
        return f"no such file here nor in ${DATA_DIR_VARIABLE} ({dirs})"
    return f"no such file (--data-dir DIR or ${DATA_DIR_VARIABLE} adds directories to look in)"


def use_data_dir(directory) -> None:
    """``--data-dir DIR``: look for data files in DIR before the directories of $MPICLIP_DATA_DIR."""
    from mpiclip.errors import InputError

    if directory is None:
        return
    if not os.path.isdir(directory):
        raise InputError("--data-dir", directory, "is not a directory")
    os.environ[DATA_DIR_VARIABLE] = os.pathsep.join(filter(None, [os.path.abspath(directory),
                                                                  os.environ.get(DATA_DIR_VARIABLE, "")]))
