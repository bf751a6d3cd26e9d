"""Is a virtual environment ready to run this checkout? Run by the environment's own Python, isolated (-I: no
PYTHONPATH, no current directory on the path), by jobs/venv.sh:

    VENV/bin/python -I jobs/venv_check.py REPO EXTRAS [--stamp]

Ready means: mpiclip imports from REPO (an editable install of this checkout, not another copy), at the version
the checkout declares, every requirement of the package and of EXTRAS (comma list) is installed at a version it
accepts, and pyproject.toml is the one the environment was installed from (a stamp in the environment records
its hash). Exit 0 if ready; else print why, in a few words, and exit 1. ``--stamp`` records the current
pyproject.toml after an install (and checks first). Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import sys

STAMP = ".mpiclip-installed-from"


def pyproject_hash(repo: str) -> str:
    with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def stamp_path() -> str:
    return os.path.join(sys.prefix, STAMP)


def requirement_problem(text: str, extras: set) -> str | None:
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    req = Requirement(text)
    if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
        return None
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return f"{req.name} is not installed"
    if req.specifier and not req.specifier.contains(installed, prereleases=True):
        return f"{req.name} {installed} does not satisfy {req.specifier}"
    return None


def problem(repo: str, extras: set) -> str | None:
    try:
        import mpiclip
    except Exception as e:  # noqa: BLE001 - a broken install can fail in any way
        return f"mpiclip does not import ({type(e).__name__}: {e})"
    where = os.path.dirname(os.path.dirname(os.path.realpath(mpiclip.__file__)))
    if where != os.path.realpath(repo):
        return f"mpiclip is imported from {where}, not from this checkout"
    try:
        version = metadata.version("mpiclip")
    except metadata.PackageNotFoundError:
        return "mpiclip is not installed"
    if version != mpiclip.__version__:
        return f"mpiclip {version} is installed, the checkout is {mpiclip.__version__}"
    for text in metadata.requires("mpiclip") or []:
        reason = requirement_problem(text, extras)
        if reason:
            return reason
    try:
        with open(stamp_path()) as f:
            recorded = f.read().split()
    except OSError:
        return "no record of the pyproject.toml it was installed from"
    if recorded != [pyproject_hash(repo), os.path.realpath(repo)]:
        return "pyproject.toml changed since it was installed"
    return None


def main() -> int:
    repo, extras = sys.argv[1], {e for e in sys.argv[2].split(",") if e}
    if "--stamp" in sys.argv[3:]:
        with open(stamp_path(), "w") as f:
            f.write(f"{pyproject_hash(repo)} {os.path.realpath(repo)}\n")
    reason = problem(repo, extras)
    if reason:
        print(reason)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
