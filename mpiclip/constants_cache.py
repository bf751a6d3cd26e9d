"""A cache of problems' smoothness constants, beside the parsed-data cache, so that a run on data it has seen
before skips the spectral work (a9a: 21 sparse Gram products and eigenvalue problems, and scipy.linalg's
import) at start-up.

An entry is a JSON file named by the SHA-256 of everything the constants depend on: the data set's checksum,
the whole [data] section (source, split and their seeds), the problem and its parameters, the number of
workers, and the source code of the problem's classes (so that editing how a constant is computed never
reads an old value). Only rank 0 reads and writes; the session broadcasts what it found. An entry that does
not hold what it must (JSON, the fields, n finite L_i) is ignored and written again; one that cannot be written
only costs the computation. ``MPICLIP_CACHE=off`` turns it off with the data cache.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import tempfile
from typing import Any, Optional

import numpy as np

from mpiclip.data import parsed_cache
from mpiclip.problems import Smoothness

FORMAT = 1


def key(checksum: Optional[str], data: Any, problem_cls: type, params: Any, n_workers: int) -> Optional[str]:
    """The entry's name, or None for data without a checksum (nothing to name an entry by)."""
    if not checksum or parsed_cache.directory() is None:
        return None
    sources = hashlib.sha256()
    for cls in problem_cls.__mro__:
        if cls.__module__.startswith("mpiclip."):
            with open(inspect.getfile(cls), "rb") as f:
                sources.update(f.read())
    text = json.dumps([FORMAT, checksum, repr(data), problem_cls.name, repr(params), n_workers, sources.hexdigest()])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _path(name: str) -> str:
    return os.path.join(os.path.dirname(parsed_cache.directory()), "constants", name + ".json")


def load(name: Optional[str], n_workers: int) -> Optional[Smoothness]:
    """The cached constants, or None when there are none (or they are not what an entry must hold)."""
    if name is None:
        return None
    try:
        with open(_path(name)) as f:
            entry = json.load(f)
        L, workers, mu, f_star = (entry[k] for k in ("L", "L_workers", "mu", "f_star"))
        numbers = [L, *workers] + [v for v in (mu, f_star) if v is not None]
        if len(workers) != n_workers or not all(isinstance(v, float) and math.isfinite(v) for v in numbers):
            return None
        return Smoothness(L, np.array(workers, dtype=np.float64), mu, f_star)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(name: Optional[str], constants: Smoothness) -> None:
    """Write the entry whole (a temporary file renamed), or nothing if the cache cannot be written."""
    if name is None:
        return
    as_float = [None if v is None else float(v) for v in (constants.mu, constants.f_star)]
    entry = {"L": float(constants.L), "L_workers": [float(v) for v in constants.L_workers],
             "mu": as_float[0], "f_star": as_float[1]}
    path = _path(name)
    temporary = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".part")
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)  # floats as repr: they read back to the same bits
        os.replace(temporary, path)
    except OSError:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)
