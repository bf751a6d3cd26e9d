"""Where a run came from: code version, libraries, launcher, machine and batch job (trace schema 2's ``provenance``).

The code version and machine are collected once per process (a sweep's runs share them); the MPI library, the
hosts, the launcher and the optional packages imported so far are the run's own. Provenance is volatile: two
runs of one config differ in it and in nothing that tests compare (the trace's datasets). Nothing here
imports mpi4py.
"""

from __future__ import annotations

import atexit
import functools
import os
import platform
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Optional

PACKAGES = ("mpiclip", "numpy", "scipy", "h5py", "mpi4py", "mpich")  # every run's, when installed
# the optional packages, by the module a run imports when it uses one: recorded only when imported
OPTIONAL = {"sklearn": "scikit-learn", "pandas": "pandas", "dp_accounting": "dp-accounting", "torch": "torch",
            "torchvision": "torchvision", "opacus": "opacus", "matplotlib": "matplotlib"}


@dataclass(frozen=True)
class Launcher:
    """A program that starts the ranks, told by the variables it sets in their environment."""

    name: str
    size: str  # the variable holding its rank count ("" if it sets none)
    marks: tuple[str, ...]  # variables that only it sets (all present: this launcher)


# in order of precedence: Open MPI's mpirun runs under Slurm through srun, and srun can serve PMI too
LAUNCHERS = (
    Launcher("mpirun (Open MPI)", "OMPI_COMM_WORLD_SIZE", ("OMPI_COMM_WORLD_SIZE",)),
    Launcher("mpiexec (MPICH Hydra)", "PMI_SIZE", ("HYDI_CONTROL_FD", "PMI_SIZE")),
    Launcher("srun (Slurm)", "SLURM_STEP_NUM_TASKS", ("SLURM_STEP_ID", "SLURM_PROCID")),
    Launcher("PMIx launcher", "", ("PMIX_RANK",)),
    Launcher("PMI launcher", "PMI_SIZE", ("PMI_RANK", "PMI_SIZE")),
)
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME", "SLURM_CLUSTER_NAME",
              "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT")


def new_run_id() -> str:
    return uuid.uuid4().hex


def collect(mpi_library: str, hostnames: list[str], n_ranks: Optional[int] = None) -> dict:
    """The provenance record of a run (JSON-ready); ``n_ranks``: the run's world size, which picks the launcher
    whose rank count it is when the environment names several."""
    return {**_process(), "packages": {**_process()["packages"], **optional_packages()}, "mpi_library": mpi_library,
            "hostnames": hostnames, "launcher": launcher(os.environ, n_ranks),
            "slurm": {v: os.environ[v] for v in SLURM_VARS if v in os.environ}}


def launcher(env, n_ranks: Optional[int] = None) -> dict:
    """{name, ranks, detected_by} of the launcher that started this process ("none": started directly)."""
    found = [(lau, _count(env.get(lau.size))) for lau in LAUNCHERS if all(env.get(v) for v in lau.marks)]
    if not found:
        return {"name": "none", "ranks": 1, "detected_by": []}
    lau, ranks = next(((lau, r) for lau, r in found if n_ranks is not None and r == n_ranks), found[0])
    return {"name": lau.name, "ranks": ranks, "detected_by": sorted(set(lau.marks) | ({lau.size} - {""}))}


def _count(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def optional_packages() -> dict:
    """Versions of the optional packages this process has imported (so a run that used them)."""
    return {dist: version for module, dist in OPTIONAL.items() if module in sys.modules
            for version in [_package_version(module, dist)] if version is not None}


@functools.lru_cache(maxsize=1)
def _process() -> dict:
    return {"git": _git(), "packages": _versions(), "python": sys.version.split()[0],
            "platform": platform.platform(), "argv": list(sys.argv)}


def _package_version(module: str, dist: str) -> Optional[str]:
    """The version of distribution ``dist`` as imported (its module's ``__version__``), else as installed. A run has
    imported the core packages by now, and reading their attribute spares importlib.metadata's scan of every installed
    distribution (about 2 ms a package at start-up); the MPI wheel has no module of that name and is looked up."""
    version = getattr(sys.modules.get(module), "__version__", None)
    return str(version) if version is not None else _installed_version(dist)


@functools.lru_cache(maxsize=None)
def _installed_version(dist: str) -> Optional[str]:
    """The version of an installed distribution, from the name of its metadata directory on sys.path,
    ``<name>-<version>.dist-info`` or ``.egg-info`` (the first found, as importlib.metadata finds it): reading the
    version from the file inside would import the email package and parse it, milliseconds at start-up."""
    prefix = dist.replace("-", "_").lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a directory that is gone
            continue
        for name in names:
            stem, _, kind = name.rpartition(".")
            if kind in ("dist-info", "egg-info") and stem.lower().startswith(prefix):
                return stem[len(prefix):].split("-")[0]
    return None


def _versions() -> dict:
    out = {name: version for name in PACKAGES for version in [_package_version(name, name)] if version is not None}
    try:
        import h5py

        out["hdf5"] = h5py.version.hdf5_version
    except ImportError:  # pragma: no cover - h5py is a core dependency
        pass
    return out


_GIT_STATUS = ("status", "--porcelain=v2", "--branch", "--untracked-files=no")  # the header has the commit, then changes
_started: list = []  # the git process start_git launched, read by the first _git()


def start_git() -> None:
    """Launch the git process of the code version now, so that it runs while the run imports and reads its data (a
    process takes milliseconds); the first provenance record reads its answer (later ones reuse it: nothing to start)."""
    if not _started and not _process.cache_info().currsize:
        try:
            _started.append(subprocess.Popen(["git", "-C", _here(), *_GIT_STATUS], stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True))
            atexit.register(_reap)  # a run that ends before its trace (bad input) never reads it
        except OSError:
            pass


def _reap() -> None:
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()


def _here() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def _git() -> dict:
    """Commit and dirty flag of the source tree the package was imported from (empty if not a git checkout)."""
    try:
        if _started:
            started = _started[-1]
            try:
                out, _ = started.communicate(timeout=10)
            finally:
                _reap()
            if started.returncode:
                raise subprocess.CalledProcessError(started.returncode, started.args)
        else:
            out = subprocess.run(["git", "-C", _here(), *_GIT_STATUS], capture_output=True, text=True, timeout=10,
                                 check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = out.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), "")
    if not commit or commit == "(initial)":  # a repository without a commit yet
        return {}
    return {"commit": commit, "dirty": any(not line.startswith("#") for line in lines)}
