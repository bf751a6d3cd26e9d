"""The EF21 page's section on the paper's points that miss (mpiclip/reproduce/ef21_misses.py), on the real traces
of a small sweep shaped as the shipped ef21-paper-misses: its table and its causes carry the traces' numbers."""

import math
import os
import statistics
import textwrap

import pytest
from helpers import checked_tables, run_sweep_here

from mpiclip.reproduce import ef21, ef21_misses
from mpiclip.reproduce.page import Page
from mpiclip.results import bits_to
from mpiclip.sweep import load_sweep, read_sweep
from mpiclip.trace import load_trace

# the shipped sweep's blocks at a test's size: EF21 at 1024× (stalls on these data) and 4× (converges), EF21+
# under both rules, GD for 5 rounds; 4 workers on 240 rows
SWEEP = textwrap.dedent('''
    [sweep]
    name = "ef21-paper-misses"
    base = "ef21-libsvm"
    output = "{name}"
    [set]
    "run.tol" = 1e-7
    "run.n_workers" = 4
    "run.max_bits" = 6400
    "run.rounds" = 100
    [[grid]]
    "data.path" = ["mushrooms.txt"]
    "method.name" = ["ef21"]
    "compressor.k" = [2]
    "stepsize.factor" = [1024, 4]
    "run.seed" = [0, 1, 2]
    [[grid]]
    "data.path" = ["a9a.txt"]
    "method.name" = ["ef21_plus"]
    "compressor.k" = [1]
    "stepsize.factor" = [16]
    "stepsize.rule" = ["ef21", "ef21_pl"]
    "run.seed" = [0, 1]
    [[grid]]
    "data.path" = ["mushrooms.txt"]
    "method.name" = ["gd"]
    "compressor.name" = ["identity"]
    "stepsize.factor" = [1]
    "run.rounds" = [5]
    "run.seed" = [0, 1, 2]
    [select]
    group = ["data.path", "method.name", "stepsize.factor", "stepsize.rule"]
    ''')


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """The sweep's runs, made in this process (its traces in <root>/ef21-paper-misses/)."""
    root = tmp_path_factory.mktemp("misses")
    run_sweep_here(root, SWEEP, {"mushrooms.txt": 2, "a9a.txt": 3})
    return root


def section(folder, sweep_dir):
    """The ef21 page of the sweep alone (the section renders without the ef21-logreg-* traces): (text, tables)."""
    page = Page(str(folder), "EF21")
    ef21.write(page, {"ef21-paper-misses": load_sweep(str(sweep_dir / "misses.toml"))})
    text = open(page.write()).read()
    return text, checked_tables(str(folder), text)


def finals_by(sweep_dir, method, key):
    """{value of key: [(seed, final ‖∇f‖², bits to 1e-7, γ)]} of the sweep's traces of ``method``."""
    out = {}
    for path in sorted((sweep_dir / "ef21-paper-misses").glob("*.h5")):
        tr = load_trace(str(path))
        if tr.attrs["method"] == method:
            section_, name = key.split(".")
            out.setdefault(tr.config[section_][name], []).append(
                (tr.config["run"]["seed"], float(tr.grad_norm_sq[-1]), bits_to(tr, 1e-7), float(tr.attrs["gamma"])))
    return out


def test_the_table_and_the_causes_carry_the_numbers_of_the_traces(sweep_dir, tmp_path):
    text, tables = section(tmp_path, sweep_dir)
    rows = {(r[0], r[2]): r for r in tables["ef21-paper-misses"][1:]}
    assert len(rows) == 5  # two factors, two rules, one GD; nothing of w8a, which this sweep lacks
    ef21_runs = finals_by(sweep_dir, "ef21", "stepsize.factor")
    for factor, runs in ef21_runs.items():
        row = rows[("mushrooms, EF21, k = 2, 1024×", f"{factor:g}×")]
        finals = [f for _, f, _, _ in runs]
        reached = [b for _, _, b, _ in runs if not math.isnan(b)]
        assert row[4:7] == ["3 of 3", f"{len(reached)} of 3",
                            "-" if not reached else ef21_misses.spread(reached, ef21_misses.kilo)]
        assert row[7] == f"{statistics.median(finals):.3g} ({min(finals):.3g}–{max(finals):.3g})"
        assert row[8] == f"{next(f for s, f, _, _ in runs if s == 0):.3g}"
    # on these data 1024× stalls and 4× converges from every start: the cause's counts say so
    assert rows[("mushrooms, EF21, k = 2, 1024×", "1024×")][5] == "0 of 3"
    assert rows[("mushrooms, EF21, k = 2, 1024×", "4×")][5] == "3 of 3"
    at = [f for _, f, _, _ in ef21_runs[1024.0]]
    assert (f"At the paper's 1024×, 0 of 3 starting points reach 1e-7 within 6k bits; the final ‖∇f‖² spreads over "
            f"{min(at):.3g}–{max(at):.3g}") in text
    assert "here 0 of 3 starting points settle, so the starting point alone does not decide it" in text
    rules = finals_by(sweep_dir, "ef21_plus", "stepsize.rule")
    sweeps_gamma, official_gamma = rules["ef21"][0][3], rules["ef21_pl"][0][3]
    assert f"the sweeps' γ is {sweeps_gamma / official_gamma:.3g}× the paper's" in text
    assert rows[("a9a, EF21+, k = 1, 2048×", "rule ef21_pl")][3] == f"{official_gamma:.4g}"
    gd = [f for _, f, _, _ in finals_by(sweep_dir, "gd", "stepsize.factor")[1.0]]
    assert f"the bit budget is 5 rounds, too few to forget x⁰: over 3 starting points the final ‖∇f‖² spreads over " \
           f"{min(gd):.3g}–{max(gd):.3g}" in text
    assert ("inside that range." if min(gd) <= 1e-2 <= max(gd) else "outside that range") in text


def test_runs_not_run_are_counted_and_a_miss_without_traces_says_nothing(sweep_dir, tmp_path):
    traces = sweep_dir / "ef21-paper-misses"
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    moved = [p for p in traces.glob("*.h5") if "factor=4," in p.name and "seed=1" in p.name] + \
        [p for p in traces.glob("*.h5") if "method.name=gd" in p.name]
    assert len(moved) == 4
    for p in moved:
        os.rename(p, hidden / p.name)
    try:
        text, tables = section(tmp_path / "page", sweep_dir)
    finally:
        for p in moved:
            os.rename(hidden / p.name, p)
    rows = {(r[0], r[2]): r for r in tables["ef21-paper-misses"][1:]}
    assert rows[("mushrooms, EF21, k = 2, 1024×", "4×")][4:6] == ["2 of 3", "2 of 2"]
    assert rows[("mushrooms, GD, 4×", "1×")][3:] == ["-", "0 of 3", "0 of 0", "-", "-", "-"]
    assert "mushrooms, GD, 4×:" not in text and "mushrooms, EF21, k = 2, 1024×: **Cause" in text


def test_the_shipped_sweep_holds_the_papers_points_with_their_budgets():
    """Each block repeats the ef21-logreg-* sweep's own run (seed 0, its budgets) at the paper's point."""
    table, _ = read_sweep("ef21-paper-misses")
    for block, (data, method, k, factor) in zip(table["grid"], (("mushrooms", "ef21", 2, 1024),
                                                                ("w8a", "ef21_plus", 1, 2048),
                                                                ("a9a", "ef21_plus", 1, 2048),
                                                                ("mushrooms", "gd", None, 4))):
        logreg, _ = read_sweep(f"ef21-logreg-{data}")
        assert block["data.path"] == [f"{data}.txt"] and block["method.name"] == [method]
        assert block["run.max_bits"] == [logreg["set"]["run.max_bits"]] and block["run.rounds"] == [logreg["set"]["run.rounds"]]
        assert factor in block["stepsize.factor"] and 0 in block["run.seed"]
        assert k is None or block["compressor.k"] == [k]
    assert [m.title for m in ef21_misses.MISSES] == ["mushrooms, EF21, k = 2, 1024×", "w8a, EF21+, k = 1, 2048×",
                                                     "a9a, EF21+, k = 1, 2048×", "mushrooms, GD, 4×"]
