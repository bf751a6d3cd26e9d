"""Where a run came from: code version, libraries, machine and batch job (trace schema 2's ``provenance``).

Collected once per process (a sweep's runs share it); the MPI library and the hosts are the run's own.
Nothing here imports mpi4py.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import uuid
from importlib import metadata

PACKAGES = ("mpiclip", "numpy", "scipy", "h5py", "mpi4py", "mpich", "dp-accounting", "matplotlib")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME", "SLURM_CLUSTER_NAME",
              "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT")


def new_run_id() -> str:
    return uuid.uuid4().hex


def collect(mpi_library: str, hostnames: list[str]) -> dict:
    """The provenance record of a run (JSON-ready)."""
    return {**_process(), "mpi_library": mpi_library, "hostnames": hostnames,
            "slurm": {v: os.environ[v] for v in SLURM_VARS if v in os.environ}}


@functools.lru_cache(maxsize=1)
def _process() -> dict:
    return {"git": _git(), "packages": _versions(), "python": sys.version.split()[0],
            "platform": platform.platform(), "argv": list(sys.argv)}


def _versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        import h5py

        out["hdf5"] = h5py.version.hdf5_version
    except ImportError:  # pragma: no cover - h5py is a core dependency
        pass
    return out


def _git() -> dict:
    """Commit and dirty flag of the source tree the package was imported from (empty if not a git checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": dirty}
