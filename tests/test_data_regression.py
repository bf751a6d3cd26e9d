"""The `regression` data source: konstmish/asynchronous_sgd's random least-squares problem, made in chunks."""

import math

import numpy as np
import pytest
from helpers import config_table

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import SerialComm
from mpiclip.data import SOURCES, DataParams, DataSpec, RegressionParams, plan, regression
from mpiclip.data.partition import NoParams
from mpiclip.errors import InputError
from mpiclip.trace import load_trace

SOURCE = SOURCES.get("regression", "data.source")


def read_all(p: RegressionParams):
    X, y = SOURCE.read(p, np.arange(p.n_samples), p.n_features)
    return X.toarray(), y


def test_defaults_are_the_konstmish_problem():
    p = RegressionParams()
    assert (p.n_samples, p.n_features, p.noise, p.seed) == (10000, 400, 1e-5, 0)
    s = SOURCE.summarize(p)
    assert (s.n_rows, s.n_features) == (10000, 400) and s.labels.shape == (10000,)


def test_rows_do_not_depend_on_which_or_how_many_are_read():
    p = RegressionParams(n_samples=3 * regression.CHUNK_ROWS + 17, n_features=9, noise=0.1, seed=5)
    X, y = read_all(p)
    np.testing.assert_array_equal(y, SOURCE.summarize(p).labels)
    # two disjoint calls, each crossing chunk boundaries, rows in increasing order
    rows = np.random.default_rng(1).permutation(p.n_samples)
    first, second = np.sort(rows[: p.n_samples // 3]), np.sort(rows[p.n_samples // 3 :])
    for part in (first, second):
        Xp, yp = SOURCE.read(p, part, p.n_features)
        np.testing.assert_array_equal(Xp.toarray(), X[part])
        np.testing.assert_array_equal(yp, y[part])
    # any order, repeated rows, a single row from the last (partial) chunk, no rows at all
    odd = np.array([p.n_samples - 1, 0, regression.CHUNK_ROWS, 0, 5])
    Xo, yo = regression.read(p.seed, p.n_samples, p.n_features, p.noise, odd)
    np.testing.assert_array_equal(Xo.toarray(), X[odd])
    np.testing.assert_array_equal(yo, y[odd])
    empty, none = SOURCE.read(p, np.zeros(0, dtype=np.int64), p.n_features)
    assert empty.shape == (0, 9) and none.shape == (0,)
    # a smaller N is a prefix of a larger one
    small = RegressionParams(n_samples=regression.CHUNK_ROWS + 3, n_features=9, noise=0.1, seed=5)
    Xs, ys = read_all(small)
    np.testing.assert_array_equal(Xs, X[: small.n_samples])
    np.testing.assert_array_equal(ys, y[: small.n_samples])


def test_rows_of_workers_loaded_together_or_apart_agree():
    spec = DataSpec(DataParams(source="regression"), RegressionParams(n_samples=2500, n_features=20), NoParams())
    p = plan(spec, 5, "raw")
    assert p.label_map == "raw" and len(p.label_values) == 2500  # real-valued targets, kept raw
    together = p.load(np.arange(5))
    apart = [p.load(np.array([w])) for w in range(5)]
    assert isinstance(together.X, np.ndarray)  # storage 'auto': all entries are nonzero, so dense
    np.testing.assert_array_equal(together.X, np.vstack([s.X for s in apart]))
    np.testing.assert_array_equal(together.y, np.concatenate([s.y for s in apart]))
    counts = p.label_counts  # every target is distinct: worker w counts each of its own targets once
    assert counts.shape == (5, 2500) and counts.max() == 1 and list(counts.sum(axis=1)) == [500] * 5
    for w, rows in enumerate(p.shards):
        np.testing.assert_array_equal(counts[w], np.isin(p.label_values, p.summary.labels[rows]))


def test_features_are_uniform_over_0_to_1_over_sqrt_d():
    p = RegressionParams()  # 10000 x 400: 4e6 entries
    X, _ = read_all(p)
    scale = 1 / math.sqrt(p.n_features)
    assert X.min() >= 0 and X.max() <= scale
    # U[0,1): mean 1/2, variance 1/12; over 4e6 entries the standard error of the mean is 1.4e-4
    # (of the variance 1.9e-5), so these tolerances are over 35 standard errors wide
    assert X.mean() / scale == pytest.approx(0.5, abs=5e-3)
    assert X.var() / scale**2 == pytest.approx(1 / 12, abs=1e-3)
    assert X.min() / scale < 1e-4 and X.max() / scale > 1 - 1e-4


@pytest.mark.parametrize("noise", [1e-5, 0.3])
def test_targets_are_the_planted_model_plus_the_stated_noise(noise):
    p = RegressionParams(noise=noise, n_samples=10000, n_features=50)
    X, y = read_all(p)
    x_star = regression.truth(p.seed, p.n_features)
    residual = y - X @ x_star
    # 1e4 draws: the sample sd is within 0.7% of sigma per standard error, the mean within sigma/100
    assert residual.std() == pytest.approx(noise, rel=0.05)
    assert abs(residual.mean()) < 0.05 * noise


def test_planted_vector_is_standard_normal():
    x_star = regression.truth(0, 20000)  # standard errors: 0.007 for the mean and 0.005 for the sd
    assert abs(x_star.mean()) < 0.05 and x_star.std() == pytest.approx(1.0, abs=0.05)
    np.testing.assert_array_equal(regression.truth(0, 10), x_star[:10])


def test_no_noise_is_the_exact_linear_model():
    p = RegressionParams(noise=0.0, n_samples=300, n_features=7, seed=3)
    X, y = read_all(p)
    np.testing.assert_allclose(y, X @ regression.truth(3, 7), rtol=0, atol=1e-13)


@pytest.mark.parametrize("change", [{"n_samples": 10001}, {"n_features": 401}, {"noise": 2e-5}, {"seed": 1}])
def test_checksum_depends_on_every_parameter(change):
    base = SOURCE.summarize(RegressionParams()).checksum
    assert SOURCE.summarize(RegressionParams(**change)).checksum != base
    assert SOURCE.summarize(RegressionParams()).checksum == base


@pytest.mark.parametrize(
    "data, field, value",
    [
        ({"n_samples": 0}, "data.n_samples", "0"),
        ({"n_features": 0}, "data.n_features", "0"),
        ({"n_features": 2.5}, "data.n_features", "2.5"),
        ({"noise": -1e-5}, "data.noise", "-1e-05"),
        ({"noise": math.inf}, "data.noise", "inf"),
        ({"noise": -math.inf}, "data.noise", "-inf"),
        ({"noise": math.nan}, "data.noise", "nan"),
        ({"noise": "small"}, "data.noise", "'small'"),
        ({"seed": -1}, "data.seed", "-1"),
        ({"density": 0.5}, "data.density", "0.5"),  # a key of the synthetic source
    ],
)
def test_bad_parameters_name_the_field_and_value(data, field, value):
    table = config_table(data={"source": "regression", **data}, problem={"name": "least_squares"},
                         method={"name": "gd"}, compressor={"name": "identity"}, stepsize=None)
    with pytest.raises(InputError) as info:
        cfg.validate(table)
    message = str(info.value)
    assert info.value.field == field and message.startswith(f"{field} = {value}: ") and "\n" not in message


def test_binary_problem_rejects_real_targets():
    spec = DataSpec(DataParams(source="regression"), RegressionParams(n_samples=50, n_features=3), NoParams())
    with pytest.raises(InputError, match=r"^data.source = 'regression': has 50 distinct labels .*a binary problem needs"):
        plan(spec, 2, "pm1")


def test_gd_on_least_squares_converges_towards_f_star(tmp_path):
    noise = 1e-3
    table = config_table(run={"name": "reg", "n_workers": 4, "rounds": 300},
                         data={"source": "regression", "n_samples": 2000, "n_features": 40, "noise": noise},
                         problem={"name": "least_squares"}, method={"name": "gd"}, compressor={"name": "identity"},
                         stepsize=None)
    table["output"] = {"path": str(tmp_path / "{name}.h5")}
    config = cfg.validate(table)
    (prepared,) = session.prepare_all([config], SerialComm(), "test", log=lambda *a: None)
    result = session.execute(prepared)
    tr = load_trace(result.path)
    assert result.status.startswith("completed")
    f_star = tr.attrs["f_star"]
    # at the least-squares solution only the noise is left: f* = sigma^2 (N - d) / (2N) in expectation
    assert f_star == pytest.approx(0.5 * noise**2 * (2000 - 40) / 2000, rel=0.2)  # 6 standard errors
    assert tr.attrs["dataset_checksum"] == "regression:n_samples=2000,n_features=40,noise=0.001,seed=0"
    gap = tr.loss - f_star
    assert np.all(np.diff(tr.loss) <= 1e-15)  # GD with gamma = 1/L on a convex quadratic never goes up
    assert np.all(gap > -1e-12)
    assert gap[-1] < 0.05 * gap[0]
