"""`mpiclip reproduce FAMILY`: a paper family's sweeps, at a laptop size (the default) or at the papers'
sizes (``full``), then its figures (PNG + PDF) and tables (Markdown + CSV) in one directory with a page
that shows them.

A family module (:mod:`.ef21`, :mod:`.ef21bw`, :mod:`.clip21`, :mod:`.asynchronous`, :mod:`.federated`, :mod:`.frontier`)
names its shipped sweeps, the laptop preset (each sweep it keeps, its grids cut to a subset of the paper's values, and
settings that shorten it) and the function that writes its page from the traces. The sweeps actually run
are written as sweep files beside their traces, so that a Slurm array runs the very same files, and a
reader sees what was run. This module never imports mpi4py.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from mpiclip import paths
from mpiclip.errors import InputError
from mpiclip.sweep import Sweep, read_sweep, status_of, sweep_name, sweep_of, sweep_text

MODULES = {"ef21": "ef21", "clip21": "clip21", "async": "asynchronous", "fed": "federated", "dp": "frontier",  # name -> module
           "ef21bw": "ef21bw",
           "ef21-dl": "ef21_dl", "clip21-dl": "clip21_dl", "dp-dl": "dp_dl", "fed-dl": "fed_dl", "async-dl": "async_dl"}


@dataclass(frozen=True)
class Cut:
    """How the laptop preset shortens one sweep. ``grids[i]`` gives the values that the keys of the sweep's
    i-th grid keep (each a subset of the sweep's own, so a laptop run is a run of the paper's grid), or is
    None to leave that grid out; missing entries leave grids whole. ``set`` changes every run."""

    grids: tuple = ()
    set: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)  # one object per family, compared by identity
class Family:
    name: str
    title: str
    sweeps: tuple  # the sweeps of the papers' sizes, in page order: shipped sweeps by name, or sweep files
    laptop: dict  # sweep name (a file's without .toml) -> Cut: the laptop preset runs these sweeps only
    write: Callable  # write(page, {sweep name: Sweep}) adds the family's sections to the page
    page: str = "README.md"  # the page's file name in the output directory
    docs: str = ""  # the repository directory whose page is this family's full output
    runs_per_task: int = 20  # runs per Slurm array task, unless --runs-per-task says

    def sweeps_of(self, preset: str) -> tuple:
        return self.sweeps if preset == "full" else tuple(s for s in self.sweeps if sweep_name(s) in self.laptop)


def family(name: str) -> Family:
    """A family by its name, or the ``FAMILY`` of an importable module named with a dot (``mylab.figures``:
    families of one's own work the same way)."""
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{MODULES[name]}").FAMILY
    if "." in name:
        try:
            fam = getattr(importlib.import_module(name), "FAMILY", None)
        except ImportError as e:
            raise InputError("family", name, f"cannot be imported: {e}") from None
        if isinstance(fam, Family):
            return fam
        raise InputError("family", name, "is a module without a FAMILY = mpiclip.reproduce.Family(...)")
    raise InputError("family", name, f"is not a family (families: {', '.join(MODULES)}, all; or a module.name)")


def families(names: list[str]) -> list[Family]:
    """The families named (``all``: every one, in the registry's order), each once."""
    wanted = list(MODULES) if "all" in names else list(dict.fromkeys(names))
    return [family(n) for n in wanted]


def cut_table(name: str, table: dict, cut: Cut) -> dict:
    """The sweep table ``table`` shortened by ``cut`` (a new table)."""
    table = copy.deepcopy(table)
    grids = table.get("grid", [{}])
    grids = [grids] if isinstance(grids, dict) else grids
    if len(cut.grids) > len(grids):
        raise ValueError(f"{name}: the laptop preset cuts {len(cut.grids)} grids of {len(grids)}")
    kept = []
    for i, grid in enumerate(grids):
        keep = cut.grids[i] if i < len(cut.grids) else {}
        if keep is None:
            continue
        for key, values in keep.items():
            if key not in grid:
                raise ValueError(f"{name}: the laptop preset cuts {key}, which grid {i} does not vary")
            extra = [v for v in values if v not in grid[key]]
            if extra or not values:
                raise ValueError(f"{name}: the laptop preset's {key} = {values} is not a subset of the grid's {grid[key]}")
            grid[key] = list(values)
        kept.append(grid)
    table["grid"] = kept
    table.setdefault("set", {}).update(cut.set)
    return table


@dataclass(frozen=True)
class Planned:
    """One sweep of a family at a preset: the sweep file it is run from, its text, and the validated sweep."""

    family: Family
    path: str
    text: str
    sweep: Sweep


def plan(fam: Family, preset: str, traces: str, cuda: bool = False) -> list[Planned]:
    """The sweeps of ``fam`` at ``preset``, each to be written as ``traces``/<sweep>.toml with its traces in
    ``traces``/<sweep>/; validated (every run's config), nothing written. ``cuda`` runs the sweeps of networks
    on CUDA (problem.device = "cuda"); other sweeps are left as they are."""
    out = []
    for ref in fam.sweeps_of(preset):
        table, source = read_sweep(ref)
        name = sweep_name(ref)
        if preset != "full":
            table = cut_table(name, table, fam.laptop[name])
        if cuda and all("device" in _problem_keys(run) for run in sweep_of(table, source).runs):
            table.setdefault("set", {})["problem.device"] = "cuda"
        base = table["sweep"].get("base", "")
        if base.endswith(".toml") and not os.path.isabs(base):
            table["sweep"]["base"] = os.path.join(os.path.dirname(os.path.abspath(source)), base)
        table["sweep"]["output"] = os.path.join(os.path.abspath(traces), name)
        path = os.path.join(traces, name + ".toml")
        text = sweep_text(table, f"`mpiclip reproduce {fam.name}`, {preset} preset: the "
                          + (f"shipped sweep {name}" if ref == name else f"sweep {os.path.abspath(source)}")
                          + ("" if preset == "full" else ", cut to a laptop's size") + ".\nWritten by mpiclip; "
                          "edits are overwritten by the next `mpiclip reproduce`.")
        out.append(Planned(fam, path, text, sweep_of(table, path)))
    return out


def _problem_keys(run) -> set:
    return {f.name for f in dataclasses.fields(run.config.problem.params)}


def write_sweep_files(planned: list[Planned]) -> None:
    """Write the planned sweep files (an unchanged file is left alone, with its time stamp)."""
    for p in planned:
        os.makedirs(os.path.dirname(os.path.abspath(p.path)), exist_ok=True)
        if os.path.exists(p.path):
            with open(p.path) as f:
                if f.read() == p.text:
                    continue
        with open(p.path, "w") as f:
            f.write(p.text)


def check_data(sweeps: list[Sweep]) -> None:
    """InputError for the first data file that a run would not find (before any run starts)."""
    seen = set()
    for sweep in sweeps:
        for run in sweep.runs:
            path = getattr(getattr(run.config.data, "source", None), "path", "")
            if path and path not in seen:
                seen.add(path)
                if not os.path.exists(paths.find_data(path)):
                    raise InputError("data.path", path, f"{paths.missing_data(path)}; sweep {sweep.params.name} reads it")


def default_dirs(names: list[str], preset: str, out: Optional[str], traces: Optional[str]) -> tuple[str, str]:
    """(output directory, traces directory): results/reproduce/<families>[-full] and results/sweeps[/laptop]
    (the full sweeps' traces are those of `mpiclip sweep run`, so runs made that way are used too)."""
    label = "all" if "all" in names else "-".join(dict.fromkeys(names))
    suffix = "-full" if preset == "full" else ""
    out = out or os.path.join("results", "reproduce", label + suffix)
    traces = traces or os.path.join("results", "sweeps", *(() if preset == "full" else ("laptop",)))
    return out, traces


def write_pages(planned: list[Planned], preset: str, out: str, command: str) -> tuple[list[str], list[str]]:
    """Each family's page (in ``out``, or in ``out``/<family> for several families, with an index page):
    (the pages written, the layout problems of their figures)."""
    from mpiclip.reproduce.page import Page, markdown_table

    fams = list(dict.fromkeys(p.family for p in planned))
    written, index_rows, problems = [], [], []
    for fam in fams:
        where = out if len(fams) == 1 else os.path.join(out, fam.name)
        page = Page(where, fam.title, fam.page)
        sweeps = {p.sweep.params.name: p.sweep for p in planned if p.family is fam}
        rows = []
        for name, sweep in sweeps.items():
            statuses = Counter(status_of(r.config.trace_path).split(":")[0] for r in sweep.runs)
            rows.append([name, len(sweep.runs), statuses.pop("completed", 0), statuses.pop("failed", 0),
                         statuses.pop("missing", 0), sum(statuses.values())])
        made = (f"Made by `{command}` from the traces of the sweeps below, the papers' sizes." if preset == "full"
                else f"Made by `{command}` (laptop preset) from the traces of the sweeps below, the shipped sweeps cut "
                "to a laptop's size (`--full` runs the papers' sizes).")
        page.text(made + " Each table is also a CSV file, and each figure also a PDF, beside this page.")
        page.table("runs", ["sweep", "runs", "completed", "failed", "not run", "other"], rows)
        fam.write(page, sweeps)
        written.append(page.write())
        problems += page.problems
        index_rows.append([f"[{fam.title}]({fam.name}/{fam.page})", sum(r[1] for r in rows), sum(r[2] for r in rows)])
    if len(fams) > 1:
        index = Page(out, "mpiclip reproduce")
        index.text(f"Made by `{command}`" + ("." if preset == "full" else " (laptop preset)."))
        index.lines += [markdown_table(["family", "runs", "completed"], index_rows), ""]
        written.append(index.write())
    return written, problems
