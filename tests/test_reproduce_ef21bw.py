"""`mpiclip reproduce ef21bw` (EF21 with Bells & Whistles): its sweeps carry the official code's settings, its laptop
preset keeps the paper's runs, its page is written from small real runs, and each figure draws what the paper draws
(‖∇f‖², f − f* or the gradient mapping against bits per worker or epochs)."""

import os
import sys
import textwrap

import numpy as np
import pytest
from helpers import REPO, checked_tables, mpiclip, random_classification, write_libsvm

from mpiclip import plotting, reproduce
from mpiclip.reproduce import ef21bw, ef21bw_misses
from mpiclip.sweep import best_runs, read_sweep, sweep_file, sweep_of
from mpiclip.trace import load_trace

FAMILY = reproduce.family("ef21bw")


def configs(name, preset="full"):
    table, source = read_sweep(name)
    if preset != "full":
        table = reproduce.cut_table(name, table, FAMILY.laptop[name])
    return [r.config for r in sweep_of(table, source).runs]


def test_the_family_is_listed_and_its_sweeps_are_shipped_in_both_places():
    assert "ef21bw" in reproduce.MODULES and FAMILY.name == "ef21bw" and FAMILY.docs == "docs/ef21bw"
    assert set(FAMILY.laptop) == set(FAMILY.sweeps)  # the laptop preset runs every figure
    for name in FAMILY.sweeps:
        assert name.startswith("ef21bw-") and sweep_file(name) == os.path.join(REPO, "mpiclip", "sweeps", name + ".toml")
        assert os.path.samefile(os.path.join(REPO, "jobs", "sweeps", name + ".toml"), sweep_file(name))
    assert ef21bw.AXES.keys() <= set(FAMILY.sweeps) and ef21bw.PAPER.keys() <= set(FAMILY.sweeps)


def test_every_run_has_the_official_setting_and_the_extensions_their_official_values():
    """n = 20, λ = 0.1 (logistic), file-order split, a9a, the EF21 rule (PL rule for least squares) times 1×…4096×."""
    seen = {}
    for name in FAMILY.sweeps:
        for c in (c.as_table() for c in configs(name)):
            run, data, problem, method, compressor = (c[k] for k in ("run", "data", "problem", "method", "compressor"))
            assert (run["n_workers"], data["split"], data["path"]) == (20, "contiguous", "a9a.txt")
            lsq = name.endswith("lsq-a9a")
            assert problem["name"] == ("least_squares" if lsq else "logreg")
            assert c["stepsize"]["rule"] == ("ef21_pl" if lsq else "ef21")
            assert lsq or (problem["lam"], problem["regularizer"]) == (0.1, "nonconvex")
            assert compressor["name"] == "topk" and compressor["k"] == (1 if lsq else 2)
            seen.setdefault(name, {}).setdefault(method["name"], set()).add(c["stepsize"]["factor"])
            extension = {"ef21_sgd": "batch", "ef21_page": "batch", "ef21_pp": "participation", "ef21_hb": "eta",
                         "ef21_prox": "l1"}.get(method["name"])
            if extension:
                seen[name].setdefault(extension, set()).add(method[extension])
            if method["name"] == "ef21_bc":
                seen[name].setdefault("downlink", set()).add(method["downlink"]["k"])
    grid = {float(2 ** i) for i in range(13)}
    assert seen["ef21bw-sgd-a9a"] == {"ef21_sgd": grid, "batch": {1.0, 0.25, 0.125, 0.015}}
    assert seen["ef21bw-page-a9a"] == {"ef21_page": grid, "ef21_sgd": grid, "batch": {0.25, 0.125, 0.015}}
    assert seen["ef21bw-pp-a9a"] == {"ef21_pp": grid, "ef21": grid, "participation": {0.5, 0.25, 0.125, 0.065}}
    assert seen["ef21bw-bc-a9a"] == {"ef21_bc": grid, "ef21": grid, "downlink": {2, 4, 8, 16}}
    assert seen["ef21bw-hb-a9a"]["eta"] == {0.5, 0.9, 0.99} and seen["ef21bw-lsq-a9a"]["eta"] == {0.5, 0.9, 0.99}
    assert seen["ef21bw-lsq-a9a"]["ef21"] == grid | {8192.0}


def test_the_laptop_preset_keeps_every_run_the_paper_gives_a_number_for():
    for name, points in ef21bw.PAPER.items():
        laptop = [dict(v) for v in (r.values for r in sweep_of(reproduce.cut_table(name, *read_sweep(name)[:1],
                                                                                     FAMILY.laptop[name]), name).runs)]
        for point in points:
            assert any(ef21bw.matches(v, point.where) for v in laptop), (name, point)


def test_epochs_count_the_data_passes_of_the_workers_gradients(tmp_path):
    data = tmp_path / "a9a.txt"
    write_libsvm(str(data), *random_classification(n=400, d=12, seed=3))
    common = ["ef21-libsvm", "--set", f"data.path={data}", "--set", "run.rounds=30", "--set", "compressor.k=2"]
    out = lambda name: ["--set", f"output.path={tmp_path / name}.h5"]
    for name, extra in (("sgd", ["method.name=ef21_sgd", "method.batch=0.25"]), ("sparse", ["method.name=ef21_sgd",
                        "run.eval_every=5"]), ("ef21", ["method.name=ef21"])):
        proc = mpiclip(["run", *common, *out(name), *[a for e in extra for a in ("--set", e)]])
        assert proc.returncode == 0, proc.stderr
    tr = load_trace(str(tmp_path / "sgd.h5"))
    taus = sum(max(1, int(0.25 * n)) for n in [20] * 20)  # 400 rows in 20 shards of 20
    assert np.allclose(plotting.epochs(tr), np.r_[0, 1 + taus / 400 * np.arange(30)])
    with pytest.raises(ValueError, match="did not record every round"):
        plotting.epochs(load_trace(str(tmp_path / "sparse.h5")))
    with pytest.raises(ValueError, match="counts no samples"):
        plotting.epochs(load_trace(str(tmp_path / "ef21.h5")))


# -- the page, from small real runs --------------------------------------------------------------------------
TINY = textwrap.dedent('''
    from mpiclip.reproduce import Cut, Family, ef21bw

    SHORT = {"run.rounds": 40, "run.max_bits": 0}
    F = {"stepsize.factor": [64, 128]}
    FAMILY = Family(name="tinybw.ef21bw", title="EF21-BW, tiny", write=ef21bw.write,
                    sweeps=("ef21bw-sgd-a9a", "ef21bw-page-a9a", "ef21bw-pp-a9a", "ef21bw-bc-a9a", "ef21bw-prox-a9a",
                            "ef21bw-lsq-a9a"),
                    laptop={"ef21bw-sgd-a9a": Cut(grids=({"method.batch": [1.0, 0.25], "stepsize.factor": [16]},), set=SHORT),
                            "ef21bw-page-a9a": Cut(grids=({"method.batch": [0.015], **F},), set=SHORT),
                            "ef21bw-pp-a9a": Cut(grids=({"method.participation": [0.5], "stepsize.factor": [64]},
                                                        {"stepsize.factor": [128]}), set=SHORT),
                            "ef21bw-bc-a9a": Cut(grids=({"method.downlink": [{"name": "topk", "k": 2}], **F}, None), set=SHORT),
                            "ef21bw-prox-a9a": Cut(grids=({"method.l1": [0.0, 0.01], "stepsize.factor": [16]},), set=SHORT),
                            "ef21bw-lsq-a9a": Cut(grids=(None, {"stepsize.factor": [64]}), set=SHORT)})
    ''')


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ef21bw")
    (root / "tinybw").mkdir()
    (root / "tinybw" / "__init__.py").write_text("")
    (root / "tinybw" / "ef21bw.py").write_text(TINY)
    (root / "data").mkdir()
    write_libsvm(str(root / "data" / "a9a.txt"), *random_classification(n=400, d=24, seed=5))
    env = {"PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = mpiclip(["reproduce", "tinybw.ef21bw", "--out", "page", "--traces", "traces", "--data-dir",
                    str(root / "data")], cwd=str(root), timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "reproduce: 13 runs: 13 completed" in proc.stdout and "warning" not in proc.stderr, proc.stdout + proc.stderr
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


def test_the_page_has_a_best_table_per_figure_the_paper_numbers_and_the_figures(tiny):
    page = (tiny / "page" / "README.md").read_text()
    tables = checked_tables(tiny / "page", page)
    names = ("ef21bw-sgd-a9a", "ef21bw-page-a9a", "ef21bw-pp-a9a", "ef21bw-bc-a9a", "ef21bw-prox-a9a", "ef21bw-lsq-a9a")
    assert {f"{n}-best" for n in names} | {f"{n}-paper" for n in ef21bw.PAPER} | {"runs"} == set(tables)
    for name in names:
        for axis in ef21bw.AXES.get(name, ("bits",)):
            figure = name if axis == "bits" else f"{name}-{axis}"
            assert f"]({figure}.png)" in page and (tiny / "page" / f"{figure}.pdf").exists()
    sgd = {r[0]: r for r in tables["ef21bw-sgd-a9a-best"][1:]}
    assert set(sgd) == {"EF21-SGD, full batch (EF21)", "EF21-SGD, batch 25 %"}
    traces = {tr.config["method"]["batch"]: tr for tr in
              (load_trace(str(p)) for p in (tiny / "traces" / "ef21bw-sgd-a9a").glob("*.h5"))}
    assert sgd["EF21-SGD, batch 25 %"][2] == f"{traces[0.25].grad_norm_sq[-1]:.3g}"
    paper = tables["ef21bw-page-a9a-paper"]
    assert paper[1][:3] == ["EF21-PAGE, batch 1.5 %", "128×", "≈1e-6 at ≈23k bits"]
    page128 = next(load_trace(str(p)) for p in (tiny / "traces" / "ef21bw-page-a9a").glob("*.h5")
                   if "ef21_page" in p.name and "128" in p.name)
    assert paper[1][3] == f"{page128.grad_norm_sq[-1]:.3g}"
    pp = tables["ef21bw-pp-a9a-paper"]
    assert [r[3] for r in pp[1:]][1:4] == ["not in this preset"] * 3  # 25 %, 12.5 %, 6.5 % were not run
    bc = tables["ef21bw-bc-a9a-paper"]
    assert bc[1][3] == "not in this preset" and bc[4][0] == "EF21-BC, downlink Top-2" and bc[4][1].startswith("best: ")


def test_each_figure_draws_the_papers_data_against_the_papers_axis(tiny):
    """The lines of every figure are the best runs' metric against bits per worker (and epochs for EF21-SGD and
    EF21-PAGE), on a log y axis, as the paper draws them."""
    fam = reproduce.family("tinybw.ef21bw")
    plans = {p.sweep.params.name: p.sweep for p in reproduce.plan(fam, "laptop", str(tiny / "traces"))}
    expect = {"ef21bw-sgd-a9a": ("grad_norm_sq", ("epochs", "bits")), "ef21bw-page-a9a": ("grad_norm_sq", ("bits", "epochs")),
              "ef21bw-pp-a9a": ("grad_norm_sq", ("bits",)), "ef21bw-bc-a9a": ("grad_norm_sq", ("bits",)),
              "ef21bw-prox-a9a": ("grad_mapping_sq", ("bits",)), "ef21bw-lsq-a9a": ("gap", ("bits",))}
    for name, (metric, axes) in expect.items():
        sweep = plans[name]
        assert sweep.select.metric == metric and ef21bw.AXES.get(name, ("bits",)) == axes
        best = [b.trace for b in best_runs(sweep)]
        for axis, (figure, fig) in zip(axes, ef21bw.figures(name, sweep, best, [ef21bw.curve_label(dict(b.run.values))
                                                                               for b in best_runs(sweep)])):
            assert figure == (name if axis == "bits" else f"{name}-{axis}")
            ax = fig.axes[0]
            assert ax.get_yscale() == "log" and ax.get_ylabel() == plotting.Y_LABEL[metric]
            assert ax.get_xlabel().startswith({"bits": "bits per worker (paper", "epochs": "epochs"}[axis])
            for line, tr in zip(ax.get_lines(), best):
                xs = plotting.epochs(tr) if axis == "epochs" else tr.bits_per_worker("paper")
                ys = plotting.y_values(tr, metric)
                keep = ys > 0
                assert np.array_equal(line.get_xdata(), xs[keep]) and np.array_equal(line.get_ydata(), ys[keep])
            plotting.pyplot().close(fig)


def test_the_docs_page_is_the_laptop_output_of_reproduce():
    """docs/ef21bw is `mpiclip reproduce ef21bw` at the laptop size (the full grids need about a CPU-hour): every
    run completed, every table with its CSV, every figure with its PDF, and the page says that it is the laptop's."""
    import re

    folder = os.path.join(REPO, FAMILY.docs)
    page = open(os.path.join(folder, FAMILY.page)).read()
    assert page.startswith(f"# {FAMILY.title}\n\nMade by `mpiclip reproduce ef21bw` (laptop preset)")
    tables = checked_tables(folder, page)
    runs = {row[0]: row for row in tables["runs"][1:]}
    assert list(runs) == list(FAMILY.sweeps) and all(row[1] == row[2] for row in runs.values())
    assert f"## {ef21bw_misses.SWEEP}" in page and f"]({ef21bw_misses.SWEEP}.csv)" in page
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\.png\)", page)
    assert len(figures) == len(FAMILY.sweeps) - len(ef21bw.SECTIONS) + len(ef21bw.AXES)  # a section draws none
    assert all(os.path.exists(os.path.join(folder, f + ext)) for f in figures for ext in (".png", ".pdf"))
