"""Small helpers of the bench scripts (importable because a script's own folder is first on sys.path)."""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Optional

LIBSVM_SITE = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/"


def write_json(path: str | None, data: dict) -> None:
    """Write the figures a script measured to ``path`` (its ``--json`` option; nothing when None): rank 0 calls it."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)


def data_file(name: str, option: str = "--data", data_dir: Optional[str] = None, dirs_from: str = "") -> str:
    """The absolute path of a data file such as "a9a.txt", found as `mpiclip run` finds it (the path itself, then
    the directories of ``--data-dir`` and $MPICLIP_DATA_DIR: :func:`mpiclip.paths.find_data`); a file that is in
    none of them is an InputError naming the data set and where it was looked for (the LibSVM files are not part
    of the repository: a user downloads them). ``dirs_from`` names the script's own option that adds a directory."""
    from mpiclip.errors import InputError
    from mpiclip.paths import DATA_DIR_VARIABLE, find_data, use_data_dir

    use_data_dir(data_dir)
    found = find_data(name)
    if os.path.isfile(found):
        return os.path.abspath(found)
    dirs = [d for d in os.environ.get(DATA_DIR_VARIABLE, "").split(os.pathsep) if d]
    looked = f"{os.getcwd()}" + (f" and ${DATA_DIR_VARIABLE} ({os.pathsep.join(dirs)})" if dirs else
                                 f" (${DATA_DIR_VARIABLE} is not set)")
    hint = f"download it from {LIBSVM_SITE}" if name.endswith((".txt", ".bz2", ".gz", ".xz")) else "give its path"
    raise InputError(option, name, f"data set not found: looked in {looked}; {hint} and name its directory with "
                     f"{dirs_from + ' or ' if dirs_from else ''}${DATA_DIR_VARIABLE}")


def main_of(main: Callable[[], int]) -> int:
    """Run a script's ``main``: bad input (a data set not found, a bad option) ends it with one line, as `mpiclip`
    does, instead of a traceback."""
    from mpiclip.errors import MpiclipError

    try:
        return main()
    except MpiclipError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
