"""Provenance (issue 28 item 14): the launcher that started the ranks and the optional packages a run used are
recorded in the trace's ``provenance`` attribute and shown by ``mpiclip info``. Provenance is volatile: it is an
attribute, and the traces that tests compare bit for bit are compared by their datasets (helpers.trace_arrays)."""

import importlib
import os
import sys

import pytest
from helpers import config_table, mpiclip, write_toml

from mpiclip import provenance
from mpiclip.trace import load_trace

HYDRA = {"PMI_RANK": "0", "PMI_SIZE": "4", "PMI_FD": "5", "HYDI_CONTROL_FD": "7"}
OPEN_MPI = {"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "0"}
SRUN = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "16"}


@pytest.mark.parametrize("env, ranks, name, count, evidence", [
    ({}, None, "none", 1, []),
    ({"SLURM_JOB_ID": "42", "SLURM_NTASKS": "4"}, 1, "none", 1, []),  # a batch script's own python: no launcher
    (HYDRA, 4, "mpiexec (MPICH Hydra)", 4, ["HYDI_CONTROL_FD", "PMI_SIZE"]),
    (OPEN_MPI, 8, "mpirun (Open MPI)", 8, ["OMPI_COMM_WORLD_SIZE"]),
    (SRUN, 16, "srun (Slurm)", 16, ["SLURM_PROCID", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS"]),
    ({**SRUN, "PMI_RANK": "3", "PMI_SIZE": "16"}, 16, "srun (Slurm)", 16,  # srun --mpi=pmi2 serves PMI too
     ["SLURM_PROCID", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS"]),
    ({**SRUN, **OPEN_MPI, "SLURM_STEP_NUM_TASKS": "2"}, 8, "mpirun (Open MPI)", 8, ["OMPI_COMM_WORLD_SIZE"]),  # its daemons' step
    ({**SRUN, **OPEN_MPI}, 16, "srun (Slurm)", 16, ["SLURM_PROCID", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS"]),  # the world's count
    ({"PMIX_RANK": "0", "PMIX_NAMESPACE": "x"}, 2, "PMIx launcher", None, ["PMIX_RANK"]),
    ({"PMI_RANK": "1", "PMI_SIZE": "two"}, 2, "PMI launcher", None, ["PMI_RANK", "PMI_SIZE"]),
])
def test_the_launcher_is_told_by_its_environment(env, ranks, name, count, evidence):
    assert provenance.launcher(env, ranks) == {"name": name, "ranks": count, "detected_by": evidence}


def test_optional_packages_are_recorded_when_imported(monkeypatch):
    for module in provenance.OPTIONAL:
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert provenance.optional_packages() == {}
    pandas = importlib.import_module("pandas")
    assert provenance.optional_packages() == {"pandas": pandas.__version__}
    monkeypatch.setitem(sys.modules, "opacus", object())  # imported but not installed: no version to record
    assert provenance.optional_packages() == {"pandas": pandas.__version__}


def test_a_run_under_mpiexec_records_its_launcher_and_info_shows_it(tmp_path):
    table = config_table(run={"name": "p", "n_workers": 2, "rounds": 3})
    table["output"] = {"path": str(tmp_path / "{name}.h5")}
    path = write_toml(str(tmp_path / "c.toml"), table)
    proc = mpiclip(["run", path, "-q", "--plot", str(tmp_path / "p.png")], ranks=2)
    assert proc.returncode == 0, proc.stderr
    p = load_trace(str(tmp_path / "p.h5")).provenance
    assert p["launcher"] == {"name": "mpiexec (MPICH Hydra)", "ranks": 2, "detected_by": ["HYDI_CONTROL_FD", "PMI_SIZE"]}
    assert "matplotlib" in p["packages"] and "torch" not in p["packages"]  # used by --plot; no network here
    info = mpiclip(["info", str(tmp_path / "p.h5")]).stdout.splitlines()
    assert "launcher   mpiexec (MPICH Hydra), 2 ranks (HYDI_CONTROL_FD, PMI_SIZE)" in info
    packages = next(line for line in info if line.startswith("packages   "))
    assert f"matplotlib {p['packages']['matplotlib']}" in packages and "numpy " in packages


def test_the_code_version_comes_from_git_started_early_or_late_and_from_a_tree_without_git(tmp_path):
    """One `git status --porcelain=v2 --branch` gives the commit and the dirty flag: the same record whether start_git
    launched it during start-up or _git runs it when the trace is made; a started git that nobody reads is reaped at
    exit without a warning; a copy of the package outside any repository records no commit."""
    import shutil
    import subprocess

    provenance._process.cache_clear()  # as in a fresh process: no provenance record made yet (earlier tests ran runs)
    late = provenance._git()
    provenance.start_git()
    assert provenance._started and provenance._git() == late and not provenance._started
    provenance._process()  # once the process's record is made, no run needs git again: nothing is started
    provenance.start_git()
    assert not provenance._started
    here = provenance._here()
    if late:  # a checkout: the commit is HEAD's
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert late["commit"] == head and isinstance(late["dirty"], bool)
    code = "from mpiclip import provenance; provenance.start_git(); print('ok')"
    proc = subprocess.run([sys.executable, "-X", "dev", "-W", "error", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "ok\n" and proc.stderr == "", proc.stderr
    copy = tmp_path / "elsewhere" / "mpiclip"
    shutil.copytree(here, copy, ignore=shutil.ignore_patterns("__pycache__"))
    code = "from mpiclip import provenance; print(provenance._git())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(copy.parent)})
    assert proc.stdout == "{}\n", proc.stderr


@pytest.mark.parametrize("dist", ["mpich", "numpy", "h5py", "mpi4py", "pytest", "not-installed-anywhere"])
def test_an_installed_version_read_from_its_metadata_directory_is_importlib_metadatas(dist):
    """The version provenance reads from a distribution's metadata directory name (start-up) is the version
    importlib.metadata reads from the file inside; a distribution that is not installed has none."""
    from importlib import metadata

    try:
        expected = metadata.version(dist)
    except metadata.PackageNotFoundError:
        expected = None
    assert provenance._installed_version(dist) == expected
