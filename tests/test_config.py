"""Config parsing and validation: every bad key or value is one error naming the field and the value."""

import re

import pytest
from helpers import config_table, write_toml

from mpiclip import config as cfg
from mpiclip.errors import InputError


def load_table(tmp_path, table, overrides=()):
    return cfg.load(write_toml(str(tmp_path / "c.toml"), table), list(overrides))


def error_of(tmp_path, table, overrides=()) -> str:
    with pytest.raises(InputError) as info:
        load_table(tmp_path, table, overrides)
    return str(info.value)


def test_defaults_are_filled_and_stored(tmp_path):
    (c,) = load_table(tmp_path, config_table())
    table = c.as_table()
    assert table["run"]["seed"] == 0 and table["run"]["deterministic"] is True
    assert table["compressor"] == {"name": "topk", "k": 2}
    assert table["method"] == {"name": "ef21", "init": "full"}
    assert table["data"]["split"] == "contiguous" and table["data"]["density"] == 0.3
    assert c.trace_path == "results/t.h5"


@pytest.mark.parametrize(
    "sections, field, value",
    [
        ({"method": {"name": "ef22"}}, "method.name", "'ef22'"),
        ({"compressor": {"name": "top_k"}}, "compressor.name", "'top_k'"),
        ({"problem": {"name": "svm"}}, "problem.name", "'svm'"),
        ({"compressor": {"name": "topk", "k": 0}}, "compressor.k", "0"),
        ({"compressor": {"name": "topk", "kk": 2}}, "compressor.kk", "2"),
        ({"run": {"n_workers": 4, "rouns": 10}}, "run.rouns", "10"),
        ({"stepsize": {"factor": 0.0}}, "stepsize.factor", "0.0"),
        ({"stepsize": {"factor": -2.0}}, "stepsize.factor", "-2.0"),
        ({"stepsize": {"rule": "constant", "value": -1.0}}, "stepsize.value", "-1.0"),
        ({"stepsize": {"rule": "constant"}}, "stepsize.value", "'missing'"),
        ({"stepsize": {"rule": "ef21", "value": 0.1}}, "stepsize.value", "0.1"),
        ({"stepsize": {"rule": "fast"}}, "stepsize.rule", "'fast'"),
        ({"run": {"n_workers": 0}}, "run.n_workers", "0"),
        ({"run": {"n_workers": 2.5}}, "run.n_workers", "2.5"),
        ({"run": {"deterministic": "yes"}}, "run.deterministic", "'yes'"),
        ({"data": {"source": "csv"}}, "data.source", "'csv'"),
        ({"data": {"split": "random"}}, "data.split", "'random'"),
        ({"data": {"split": "contiguous", "alpha": 0.3}}, "data.alpha", "0.3"),
        ({"data": {"split": "dirichlet", "alpha": 0.0}}, "data.alpha", "0.0"),
        ({"data": {"source": "synthetic", "density": 1.5}}, "data.density", "1.5"),
        ({"output": {"exists": "append"}}, "output.exists", "'append'"),
        ({"method": {"name": "gd"}}, "compressor.name", "'topk'"),
        ({"problem": {"name": "quadratic"}}, "data", "{source, n_samples, n_features, density}"),
        ({"problem": {"name": "quadratic", "mu": 2.0}, "data": None}, "problem.mu", "2.0"),
    ],
)
def test_bad_values_name_field_and_value(tmp_path, sections, field, value):
    message = error_of(tmp_path, config_table(**sections))
    assert message.startswith(f"{field} = {value}: "), message
    assert "\n" not in message


def test_unknown_section_and_non_table(tmp_path):
    table = config_table()
    table["runs"] = {"rounds": 3}
    assert error_of(tmp_path, table).startswith("runs = {rounds}: unknown section")


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[run\nrounds = 3\n")
    with pytest.raises(InputError, match=r"^config = '.*bad.toml': is not valid TOML"):
        cfg.load(str(path))


def test_missing_config_and_unknown_preset():
    with pytest.raises(InputError, match=r"^config = 'nope.toml': no such file"):
        cfg.load("nope.toml")
    with pytest.raises(InputError, match=r"^config = 'nopreset': is neither a .toml file nor a preset"):
        cfg.load("nopreset")


def test_overrides_parse_toml_values_and_bare_strings(tmp_path):
    (c,) = load_table(tmp_path, config_table(), ["compressor.k=3", "run.name=abc", "stepsize.factor=2",
                                                   "run.deterministic=false", 'output.path="x/{name}.h5"'])
    assert c.compressor.params.k == 3 and c.run.name == "abc" and c.stepsize.factor == 2.0
    assert c.run.deterministic is False and c.trace_path == "x/abc.h5"


def test_override_errors(tmp_path):
    assert error_of(tmp_path, config_table(), ["compressor"]).startswith("--set = 'compressor': expected section.key=value")
    assert error_of(tmp_path, config_table(), ["solver.k=1"]).startswith("--set solver.k = 1: unknown section")
    assert error_of(tmp_path, config_table(), ["compressor.k=x"]).startswith("compressor.k = 'x': expected an integer")


def test_changing_a_component_drops_its_old_keys(tmp_path):
    (c,) = load_table(tmp_path, config_table(), ["compressor.name=identity", "method.name=gd"])
    assert c.compressor.name == "identity" and c.method.name == "gd"
    # component first, then its keys, whatever the order on the command line
    (c,) = load_table(tmp_path, config_table(), ["compressor.k=3", "compressor.name=randk"])
    assert c.compressor.name == "randk" and c.compressor.params.k == 3


def test_whole_section_override(tmp_path):
    (c,) = load_table(tmp_path, config_table(), ['compressor={name = "randk", k = 4}'])
    assert c.compressor.name == "randk" and c.compressor.params.k == 4


def test_variants_expand_to_one_run_each(tmp_path):
    table = config_table()
    table["variants"] = {"GD": {"method": {"name": "gd"}, "compressor": {"name": "identity"}},
                         "EF21": {"stepsize": {"factor": 8.0}}}
    gd, ef21 = load_table(tmp_path, table)
    assert (gd.run.name, gd.method.name, gd.compressor.name) == ("t-GD", "gd", "identity")
    assert (ef21.run.name, ef21.method.name, ef21.stepsize.factor, ef21.compressor.params.k) == ("t-EF21", "ef21", 8.0, 2)
    bad = config_table()
    bad["variants"] = {"X": {"solver": {"a": 1}}}
    assert error_of(tmp_path, bad).startswith("variants.X.solver")


def test_every_preset_is_valid():
    for name in cfg.preset_names():
        overrides = ["data.path=x.txt"] if name == "ef21-libsvm" else []
        assert cfg.load(name, overrides), name


def test_config_round_trips_through_its_table(tmp_path):
    (c,) = load_table(tmp_path, config_table(data={"source": "synthetic", "split": "dirichlet", "alpha": 0.7}))
    again = cfg.validate(c.as_table())
    assert again == c


@pytest.mark.parametrize("override", [
    "stepsize.factor=inf", "stepsize.factor=-inf", "run.x0_scale=inf", "run.tol=inf", "run.max_bits=inf",
    "output.flush_seconds=inf", "data.noise=inf", "method.tau=inf", "method.sigma=inf", "method.delta=-inf",
    "stepsize.value=inf", "method.eta=inf",
])
def test_no_setting_takes_an_infinite_number(override):
    """inf passes a "> 0" check but makes a run that looks fine (γ = inf·rule diverges; tol = inf stops at once)."""
    key, value = cfg.parse_override(override)
    method = {"name": "clip21_gd", "tau": 1.0} if key.startswith("method.") and key != "method.eta" else {"name": "ef21_hb"}
    table = config_table(method=method, compressor={"name": "identity"} if method["name"] == "clip21_gd" else None)
    table["stepsize"] = {"rule": "constant", "value": 0.1} if key == "stepsize.value" else table["stepsize"]
    with pytest.raises(InputError) as e:
        cfg.validate(cfg.apply_overrides(table, [(key, value)]))
    assert str(e.value).startswith(f"{key} = {value}: must be"), str(e.value)


def test_overrides_reach_any_depth_and_a_new_component_drops_the_old_ones_keys():
    base = config_table(compressor={"name": "compose", "inner": {"name": "topk", "k": 2}, "outer": {"name": "natural"}})
    sets = [cfg.parse_override(o) for o in ("compressor.inner.k=5", "compressor.outer.name=dithering",
                                            "compressor.outer.s=3")]
    table = cfg.apply_overrides(base, sets)
    assert table["compressor"] == {"name": "compose", "inner": {"name": "topk", "k": 5},
                                   "outer": {"name": "dithering", "s": 3}}
    assert cfg.validate(table).compressor.params.inner == {"name": "topk", "k": 5}
    # naming another inner operator drops k (which randk_shared would otherwise inherit), whatever the order
    changed = cfg.apply_overrides(base, [("compressor.inner.k", 3), ("compressor.inner.name", "randk_shared")])
    assert changed["compressor"]["inner"] == {"name": "randk_shared", "k": 3}
    same = cfg.apply_overrides(base, [("compressor.inner.name", "topk")])  # the same component keeps its keys
    assert same["compressor"]["inner"] == {"name": "topk", "k": 2}
    assert cfg.apply_overrides(base, [("method.downlink.name", "randk")])["method"]["downlink"] == {"name": "randk"}


@pytest.mark.parametrize("override, message", [
    ("compressor.inner.k.x=1", "--set compressor.inner.k.x = 1: compressor.inner.k = 2 is not a table"),
    ("compressor..k=1", "--set compressor..k = 1: expected section.key or section.table.key (no empty parts)"),
    ("solver.k=1", "--set solver.k = 1: unknown section"),
])
def test_a_bad_deep_override_names_the_key(override, message):
    base = config_table(compressor={"name": "compose", "inner": {"name": "topk", "k": 2}, "outer": {"name": "natural"}})
    with pytest.raises(InputError) as e:
        cfg.apply_overrides(base, [cfg.parse_override(override)])
    assert str(e.value).startswith(message), str(e.value)


def test_multirun_is_the_product_of_the_comma_lists(tmp_path):
    path = write_toml(str(tmp_path / "m.toml"), config_table(run={"name": "m"}))
    configs = cfg.load(path, ["compressor.k=1,2,4", "stepsize.factor=1,64", "run.rounds=7"], multirun=True)
    assert [(c.compressor.params.k, c.stepsize.factor) for c in configs] == \
        [(k, f) for k in (1, 2, 4) for f in (1.0, 64.0)]
    assert configs[1].run.name == "m-compressor.k=1,stepsize.factor=64" and {c.run.rounds for c in configs} == {7}
    assert len({c.trace_path for c in configs}) == 6 and len({c.hash for c in configs}) == 6
    # commas inside arrays, inline tables and strings do not split; without --multirun nothing splits
    (one,) = cfg.load(path, ["run.name='a,b'", "compressor={name = 'topk', k = 3}"], multirun=True)
    assert one.run.name == "a,b" and one.compressor.params.k == 3
    with pytest.raises(InputError, match="compressor.k"):
        cfg.load(path, ["compressor.k=1,2"])
    with pytest.raises(InputError) as e:
        cfg.load(path, ["compressor.k=1,,2"], multirun=True)
    assert str(e.value) == "--set compressor.k = '1,,2': an empty value in a comma list"


def test_a_named_data_file_is_looked_for_here_first_then_in_the_data_directories(tmp_path, monkeypatch):
    from mpiclip.paths import find_data

    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second):
        d.mkdir()
    (second / "d.txt").write_text("1 1:1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPICLIP_DATA_DIR", f"{first}:{second}")
    assert find_data("d.txt") == str(second / "d.txt")
    (first / "d.txt").write_text("1 1:1\n")
    assert find_data("d.txt") == str(first / "d.txt")  # the directories in their order
    (tmp_path / "d.txt").write_text("1 1:1\n")
    assert find_data("d.txt") == "d.txt"  # the current directory before any data directory
    assert find_data("/abs/none.txt") == "/abs/none.txt" and find_data("none.txt") == "none.txt"



def test_overrides_apply_from_the_top_down_whatever_their_order():
    """A component named at the top replaces its table before the keys below it are set, so the order of
    the --set options does not matter; a section that is not a table is an error, not a traceback."""
    base = config_table(compressor={"name": "topk", "k": 2})
    sets = [("compressor.inner.k", 4), ("compressor.outer.name", "natural"), ("compressor.inner.name", "randk"),
            ("compressor.name", "compose")]
    for order in (sets, sets[::-1]):
        assert cfg.apply_overrides(base, order)["compressor"] == {
            "name": "compose", "inner": {"name": "randk", "k": 4}, "outer": {"name": "natural"}}
    whole = cfg.apply_overrides(base, [("compressor.k", 3), ("compressor", {"name": "topk", "k": 1})])
    assert whole["compressor"] == {"name": "topk", "k": 3}
    with pytest.raises(InputError) as e:
        cfg.apply_overrides({**base, "compressor": 5}, [("compressor.k", 1)])
    assert str(e.value).startswith("--set compressor.k = 1: compressor = 5 is not a table")


def test_the_config_hash_does_not_depend_on_where_the_data_is_found(tmp_path, monkeypatch):
    (tmp_path / "d.txt").write_text("1 1:1\n-1 2:1\n")
    table = config_table(data={"source": "libsvm", "path": "d.txt"})
    here = cfg.validate(table)
    monkeypatch.setenv("MPICLIP_DATA_DIR", str(tmp_path))
    monkeypatch.chdir("/")
    there = cfg.validate(table)
    assert here.hash == there.hash and there.data.source.path == "d.txt"


def test_range_and_choice_are_hydra_sweeps_of_a_multirun(tmp_path):
    """range(start, stop[, step]) excludes stop, counts integers as integers and floats in decimal (0.1 steps give
    0.1, 0.2, 0.3, not 0.30000000000000004); choice(a, b) is the comma list a,b; both need --multirun."""
    path = write_toml(str(tmp_path / "m.toml"), config_table(run={"name": "m"}))
    axis = lambda text: [v for _, v in cfg.grid_axes([text])[0]]
    assert axis("compressor.k=range(1,4)") == [1, 2, 3] and axis("compressor.k=range(1, 8, step=3)") == [1, 4, 7]
    assert axis("run.seed=range(5,2,-1)") == [5, 4, 3] and all(type(v) is int for v in axis("run.seed=range(0,3)"))
    assert axis("stepsize.factor=range(0.1,0.45,0.1)") == [0.1, 0.2, 0.3, 0.4]
    assert axis("stepsize.factor=range(0,1,0.25)") == [0.0, 0.25, 0.5, 0.75] and axis("stepsize.factor=range(1,2.5)") == [1.0, 2.0]
    assert axis("method.name=choice(ef21, 'ef14')") == ["ef21", "ef14"] == axis("method.name=ef21,ef14")
    huge = cfg.grid_axes(["run.seed=range(0,10000000000)"])[0]  # a range axis stays lazy
    assert len(huge) == 10**10 and huge[-1] == ("run.seed", 10**10 - 1)
    configs = cfg.load(path, ["compressor.k=range(1,3)", "stepsize.factor=choice(1, 64)"], multirun=True)
    assert [(c.compressor.params.k, c.stepsize.factor) for c in configs] == [(1, 1.0), (1, 64.0), (2, 1.0), (2, 64.0)]
    assert configs[1].run.name == "m-compressor.k=1,stepsize.factor=64"
    with pytest.raises(InputError, match=r"^--set compressor.k = 'range\(1,3\)': range\(...\) and choice\(...\) are "
                       r"sweeps: add --multirun$"):
        cfg.load(path, ["compressor.k=range(1,3)"])
    for bad, reason in [("range(1)", "expected range"), ("range(1,2,3,4)", "expected range"), ("range(1,inf)", "expected"),
                        ("range(1,2,stop=3)", "expected"), ("range(true,3)", "expected"), ("range(3,1)", "is an empty range")]:
        with pytest.raises(InputError, match=f"^--set compressor.k = '{re.escape(bad)}': {reason}"):
            cfg.grid_axes([f"compressor.k={bad}"])


def test_a_task_of_a_huge_multirun_makes_only_its_own_config(tmp_path):
    path = write_toml(str(tmp_path / "m.toml"), config_table(run={"name": "m"}))
    runs = cfg.ConfigRuns(path, ["run.seed=range(0,1000000)", "compressor.k=range(1,1001)"], multirun=True)
    assert len(runs) == 10**9
    config = runs[123456789]  # seed 123456, k 790: 123456 * 1000 + 789
    assert (config.run.seed, config.compressor.params.k) == (123456, 790)
    assert config.run.name == "m-run.seed=123456,compressor.k=790"
    assert [c.run.name for c in runs[:2]] == ["m-run.seed=0,compressor.k=1", "m-run.seed=0,compressor.k=2"]


@pytest.mark.parametrize("table, overrides, message", [
    ({}, ["stepsize.factr=2"], "stepsize.factr = 2: unknown key (valid keys: factor, rule, value); did you mean 'factor'?"),
    ({}, ["runn.rounds=2"], "--set runn.rounds = 2: unknown section (valid: run, data, problem, method, compressor, "
     "stepsize, async, federated, system, output); did you mean 'run'?"),
    ({"compresor": {"k": 2}}, [], "compresor = {k}: unknown section (valid: run, data, problem, method, compressor, "
     "stepsize, async, federated, system, output); did you mean 'compressor'?"),
    ({}, ["compressor.name=rnadk"], "compressor.name = 'rnadk': unknown compressor (valid: "),
    ({}, ["data.split=contiguos"], "data.split = 'contiguos': unknown split (valid: "),
    ({}, ["run.x0_scal=2"], "run.x0_scal = 2: unknown key (valid keys: "),
    ({}, ["run.zzz=2"], "run.zzz = 2: unknown key (valid keys: "),
])
def test_a_misspelt_name_says_what_was_meant_in_the_same_line(tmp_path, table, overrides, message):
    message_of = error_of(tmp_path, {**config_table(), **table}, overrides)
    assert message_of.startswith(message) and "\n" not in message_of
    close = {"rnadk": "randk", "contiguos": "contiguous", "x0_scal": "x0_scale"}
    word = next((w for w in close if w in message), None)
    if word:
        assert message_of.endswith(f"; did you mean {close[word]!r}?")
    elif "zzz" in message:
        assert "did you mean" not in message_of  # nothing close: no guess
