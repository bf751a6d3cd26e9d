"""Networks as problems (the torch backend): every model's gradient against finite differences, the torch
softmax against the numpy one, per-example gradients against a loop, keyed augmentation and dropout, the
per-worker BatchNorm state, and the part-by-part Top-k."""

import dataclasses

import numpy as np
import pytest
from helpers import METHOD_CASES, config_table, differences, trace_arrays

from mpiclip import config as cfg
from mpiclip.comm import SerialComm
from mpiclip.compressors.base import build_compressor
from mpiclip.data import Shard
from mpiclip.data.layout import Layout
from mpiclip.problems import PROBLEMS
from mpiclip.rng import drawn

torch = pytest.importorskip("torch", reason="the network tests need the torch extra (tests/run.sh installs it)")


def shard(kind: str, shape: tuple, n: int = 6, classes: int = 3, vocab: int = 0, seed: int = 0, workers: int = 2,
          test: int = 0) -> Shard:
    """``n`` random rows laid out as images or token sequences, split evenly over ``workers`` workers."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    if kind == "tokens":
        X = rng.integers(0, vocab, (n + test, size)).astype(np.float32)
        layout = Layout("tokens", shape, vocab=vocab)
    else:
        X = rng.random((n + test, size), dtype=np.float32)
        layout = Layout("image", shape, mean=(0.4,) * shape[0], std=(0.3,) * shape[0])
    y = np.concatenate([np.arange(classes), rng.integers(0, classes, n + test - classes)]).astype(np.float64)
    offsets = np.linspace(0, n, workers + 1).astype(np.int64)
    held = None
    if test:
        held = Shard(np.arange(workers), np.linspace(0, test, workers + 1).astype(np.int64), X[n:], y[n:], classes,
                     storage="dense", layout=layout)
    return Shard(np.arange(workers), offsets, X[:n], y[:n], classes, held, test, "dense", layout)


def problem(name: str, data: Shard, **params):
    cls = PROBLEMS.get(name, "problem.name")
    return cls.build(cfg.parse_params(cls.params, params, "problem"), data, data.worker_ids, len(data.worker_ids))


def initial(name: str, data: Shard, seed: int = 0, **params) -> np.ndarray:
    """x^0 from the model's initialisation for the shard's inputs."""
    cls = PROBLEMS.get(name, "problem.name")
    p = cfg.parse_params(cls.params, params, "problem")

    class Plan:  # what model_init reads of a data plan
        n_features = data.n_features
        label_values = np.arange(data.classes)
        summary = type("S", (), {"layout": data.layout})

    return cls.model_init(p, Plan, np.random.default_rng(seed))


MODELS = {  # name -> (inputs, problem keys): small enough for finite differences in float64
    "torch_softmax": (("image", (1, 4, 4)), {}),
    "torch_mlp": (("image", (1, 4, 4)), {"hidden": [5, 4], "activation": "tanh"}),
    "cnn_mnist": (("image", (1, 8, 8)), {"channels": [3, 4], "padding": 2}),
    "lenet5": (("image", (3, 32, 32)), {}),
    "resnet20-batch": (("image", (3, 8, 8)), {"norm": "batch"}),
    "resnet20-group": (("image", (3, 8, 8)), {"norm": "group"}),
    "resnet18": (("image", (3, 8, 8)), {}),
    "vgg11": (("image", (3, 32, 32)), {}),
    "char_lstm": (("tokens", (5,)), {"embedding": 3, "hidden": 4}),
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_gradient_against_finite_differences(case):
    """In float64: each worker's ∇f_i along random directions equals the central difference of f_i, weight
    decay included; BatchNorm in train mode normalises by the pass's own rows, so f_i is a function of x."""
    (kind, shape), keys = MODELS[case]
    name = case.split("-")[0]
    data = shard(kind, shape, vocab=7)
    p = problem(name, data, dtype="float64", lam=0.01, **keys)
    x = initial(name, data, **keys)
    assert x.shape == (p.d,) and p.d == PROBLEMS.get(name, "").blocks(p.p, _plan(data)).sum()
    losses, grads = p.loss_grads(x, True)
    rng = np.random.default_rng(1)
    for _ in range(2):
        u = rng.standard_normal(p.d)
        u /= np.linalg.norm(u)
        h = 1e-5
        up, down = p.loss_grads(x + h * u, True)[0], p.loss_grads(x - h * u, True)[0]
        np.testing.assert_allclose((up - down) / (2 * h), grads @ u, rtol=1e-5, atol=1e-8)
    assert np.all(np.isfinite(losses)) and losses.shape == (2,)


def _plan(data):
    return type("Plan", (), {"n_features": data.n_features, "label_values": np.arange(data.classes),
                             "summary": type("S", (), {"layout": data.layout})})


def test_minibatch_and_single_worker_gradients_are_the_full_pass_on_those_rows():
    data = shard("image", (1, 8, 8), n=8)
    p = problem("cnn_mnist", data, dtype="float64", channels=[3, 4], padding=2, lam=0.1)
    x = initial("cnn_mnist", data, channels=[3, 4], padding=2)
    full = p.loss_grads(x, False)[1]
    every = [np.arange(4), np.arange(4)]
    np.testing.assert_allclose(p.minibatch_grads(x, every), full, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(p.worker_grad(x, 1), full[1])
    np.testing.assert_allclose(p.worker_grad(x, 1, decay=False), full[1] - 0.1 * x, rtol=1e-12, atol=1e-14)
    # a minibatch's gradient is the mean of its rows' gradients
    rows = [p.worker_grad(x, 0, np.array([j])) for j in (0, 2, 3)]
    np.testing.assert_allclose(p.worker_grad(x, 0, np.array([0, 2, 3])), np.mean(rows, axis=0), rtol=1e-10, atol=1e-14)


def test_chunked_passes_are_one_pass_up_to_rounding():
    data = shard("image", (1, 8, 8), n=10)
    keys = {"channels": [3, 4], "padding": 2, "dtype": "float64"}
    x = initial("cnn_mnist", data, **keys)
    whole = problem("cnn_mnist", data, **keys).loss_grads(x, True)
    chunked = problem("cnn_mnist", data, chunk=2, **keys).loss_grads(x, True)
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-13)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_torch_softmax_is_the_numpy_softmax(dtype, rtol):
    """One x, the same function: the torch network in the numpy problem's layout and initialisation."""
    table = config_table(run={"name": "s", "n_workers": 3, "rounds": 1, "x0": "model"},
                         data={"source": "digits", "split": "label_sorted", "test_fraction": 0.2},
                         problem={"name": "softmax", "lam": 0.01}, method={"name": "gd"}, compressor=None,
                         stepsize={"rule": "constant", "value": 0.1})
    from mpiclip import session

    def built(problem_keys):
        config = cfg.validate({**table, "problem": problem_keys})
        (s,) = session.prepare_all([config], SerialComm(), log=lambda *a: None)
        s.build(with_trace=False)
        return s

    numpy_session = built({"name": "softmax", "lam": 0.01})
    torch_session = built({"name": "torch_softmax", "lam": 0.01, "dtype": dtype})
    np.testing.assert_array_equal(torch_session.x0, numpy_session.x0)
    x = numpy_session.x0 + 0.1
    a, b = numpy_session.problem, torch_session.problem
    (la, ga), (lb, gb) = a.loss_grads(x, True), b.loss_grads(x, True)
    np.testing.assert_allclose(lb, la, rtol=rtol)
    np.testing.assert_allclose(gb, ga, rtol=rtol * 10, atol=rtol * np.abs(ga).max())
    np.testing.assert_allclose(b.scores(), a.scores(), rtol=rtol, atol=1e-12)
    assert b.score_names == a.score_names


@pytest.mark.parametrize("name, kind, shape, keys", [
    ("cnn_mnist", "image", (1, 8, 8), {"channels": [3, 4], "padding": 2}),
    ("resnet20", "image", (3, 8, 8), {"norm": "group"}),
    ("char_lstm", "tokens", (5,), {"embedding": 3, "hidden": 4}),
])
def test_per_example_clipped_sums_equal_a_loop_over_examples(name, kind, shape, keys):
    """vmap(grad) per example, clipped at τ, summed: the same as one worker_grad per row."""
    data = shard(kind, shape, n=10, vocab=7)
    p = problem(name, data, dtype="float64", lam=0.05, example_chunk=3, **keys)
    x = initial(name, data, **keys)
    batches = [drawn(np.array([0, 2, 3, 4]), 9, 1, 0, 7), drawn(np.array([1, 3]), 9, 1, 1, 7)]
    singles = [[p.worker_grad(x, w, np.array([j])) for j in rows] for w, rows in enumerate(batches)]
    norms_loop = [float(np.linalg.norm(g)) for gs in singles for g in gs]
    tau = float(np.median(norms_loop))
    sums, norms = p.clipped_example_sums(x, batches, tau)
    np.testing.assert_allclose(norms, norms_loop, rtol=1e-10)
    for w, gs in enumerate(singles):
        expected = sum(g * min(1.0, tau / np.linalg.norm(g)) for g in gs)
        np.testing.assert_allclose(sums[w], expected, rtol=1e-9, atol=1e-13)


def test_dropout_acts_on_drawn_minibatches_only_with_masks_keyed_by_the_draw():
    data = shard("image", (3, 32, 32), n=4, workers=1)
    p = problem("vgg11", data, dropout=0.5, example_chunk=1)
    x = initial("vgg11", data)
    rows = np.arange(4)
    a = p.worker_grad(x, 0, drawn(rows, 9, 1, 0, 7))
    np.testing.assert_array_equal(a, p.worker_grad(x, 0, drawn(rows, 9, 1, 0, 7)))
    assert not np.array_equal(a, p.worker_grad(x, 0, drawn(rows, 9, 1, 0, 8)))
    np.testing.assert_array_equal(p.worker_grad(x, 0, rows), p.loss_grads(x, False)[1][0])  # no draw: no dropout
    sums = p.clipped_example_sums(x, [drawn(rows, 9, 1, 0, 7)], 1.0)[0]
    np.testing.assert_array_equal(sums, p.clipped_example_sums(x, [drawn(rows, 9, 1, 0, 7)], 1.0)[0])
    assert not np.array_equal(sums, p.clipped_example_sums(x, [drawn(rows, 9, 1, 0, 8)], 1.0)[0])


def test_batchnorm_statistics_are_per_worker_state_restored_exactly():
    data = shard("image", (3, 8, 8), n=8, test=4)
    p = problem("resnet20", data, norm="batch")
    x = initial("resnet20", data, norm="batch")
    start = p.worker_state()
    assert start.shape[0] == 2 and np.array_equal(start[0], start[1])
    p.loss_grads(x, True)
    p.minibatch_grads(x, [np.array([0, 1]), np.array([2])])
    np.testing.assert_array_equal(p.worker_state(), start)  # full passes and undrawn rows change nothing
    p.minibatch_grads(x, [drawn(np.array([0, 1]), 1, 2, 0, 0), drawn(np.array([2]), 1, 2, 1, 0)])
    after = p.worker_state()
    assert not np.array_equal(after[0], after[1])  # each worker's statistics of its own rows
    p.loss_grads(x, True)
    first = p.scores().copy()
    p.minibatch_grads(x, [drawn(np.array([1, 2]), 1, 2, 0, 1), drawn(np.array([0]), 1, 2, 1, 1)])
    p.restore_state(after)
    np.testing.assert_array_equal(p.worker_state(), after)
    p.restore_state(None)
    np.testing.assert_array_equal(p.worker_state(), start)
    p.loss_grads(x, True)
    assert not np.array_equal(p.scores(), first)  # test metrics (eval mode) read the running statistics ...
    p.restore_state(after)
    p.loss_grads(x, True)
    np.testing.assert_array_equal(p.scores(), first)  # ... restored exactly


def test_augmentation_is_keyed_by_the_draw_and_full_passes_see_the_images():
    data = shard("image", (3, 8, 8), n=4, workers=1)
    p = problem("resnet20", data, norm="group", augment="crop_flip", pad=2)
    x = initial("resnet20", data, norm="group")
    rows = np.array([0, 1, 2, 3])
    a = p.worker_grad(x, 0, drawn(rows, 5, 1, 0, 3))
    assert np.array_equal(a, p.worker_grad(x, 0, drawn(rows, 5, 1, 0, 3)))
    assert not np.array_equal(a, p.worker_grad(x, 0, drawn(rows, 5, 1, 0, 4)))
    plain = problem("resnet20", data, norm="group")
    np.testing.assert_array_equal(p.worker_grad(x, 0, rows), plain.worker_grad(x, 0, rows))  # undrawn rows
    np.testing.assert_array_equal(p.loss_grads(x, False)[1], plain.loss_grads(x, False)[1])
    # the crop moves the image by at most `pad` pixels and fills with black (normalised), the flip mirrors it
    images = p.X[:4]
    out = p._augmented(images, (5, 1, 0, 3))
    black = (-torch.tensor(data.layout.mean) / torch.tensor(data.layout.std)).view(1, 3, 1, 1).to(p.dtype)
    for i in range(4):
        candidates = []
        padded = black.expand(1, 3, 12, 12).clone()
        padded[:, :, 2:10, 2:10] = images[i]
        for dy in range(5):
            for dx in range(5):
                crop = padded[:, :, dy : dy + 8, dx : dx + 8]
                candidates += [crop, crop.flip(-1)]
        assert any(torch.equal(out[i : i + 1], c) for c in candidates)


def test_topk_ratio_per_layer_keeps_the_largest_entries_of_each_part():
    compressor = build_compressor({"name": "topk_ratio", "ratio": 0.3, "per_layer": True}, "c").for_blocks(np.array([5, 3, 2]))
    v = np.random.default_rng(0).standard_normal((2, 10))
    msg = compressor(v, None)
    dense = msg.dense(v.shape)
    for a, b, k in ((0, 5, 1), (5, 8, 1), (8, 10, 1)):
        for row in range(2):
            part = np.abs(v[row, a:b])
            kept = np.flatnonzero(dense[row, a:b])
            assert list(kept) == sorted(np.argsort(-part, kind="stable")[:k])
    assert msg.bits[0, 0] == 3 * 32 and compressor.alpha(10) == pytest.approx(1 / 5)
    # over the whole vector (or without parts) it is Top-k with k = max(1, floor(ratio·d))
    top3 = build_compressor({"name": "topk", "k": 3}, "c")(v, None).dense(v.shape)
    for keys, blocks in (({"per_layer": False}, np.array([5, 3, 2])), ({"per_layer": True}, None)):
        whole = build_compressor({"name": "topk_ratio", "ratio": 0.3, **keys}, "c").for_blocks(blocks)
        np.testing.assert_array_equal(whole(v, None).dense(v.shape), top3)


def test_network_problems_start_from_their_model_and_record_it():
    table = config_table(run={"name": "n", "n_workers": 2, "rounds": 1}, data={"source": "digits"},
                         problem={"name": "cnn_mnist", "padding": 2}, method={"name": "gd"}, compressor=None,
                         stepsize={"rule": "constant", "value": 0.1})
    config = cfg.validate(table)
    assert config.run.x0 == "model" and '"x0": "model"' in config.to_json()
    assert cfg.validate({**table, "run": {**table["run"], "x0": "zeros"}}).run.x0 == "zeros"
    assert cfg.validate(config_table()).run.x0 == "normal"  # numpy problems keep their default


def test_models_follow_the_papers_sizes():
    """Parameter counts of the papers' models at their input sizes (docs/algorithms.md §10, the codes' layers)."""
    from mpiclip.nn.backend import FlatModel
    from mpiclip.nn.models import InputSpec, build

    def d(name, spec, **keys):
        cls = PROBLEMS.get(name, "")
        return FlatModel(build(name, cls.model, cfg.parse_params(cls.params, keys, "problem"), spec)).d

    assert d("cnn_mnist", InputSpec("image", (1, 28, 28), 47)) == 832 + 51264 + 1024 * 47 + 47
    assert d("lenet5", InputSpec("image", (3, 32, 32), 10)) == 62006
    assert d("resnet18", InputSpec("image", (3, 32, 32), 10)) == 11173962  # kuangliu's ResNet-18
    assert d("resnet20", InputSpec("image", (3, 32, 32), 10)) == 269722  # He et al.'s 0.27 M
    assert d("vgg11", InputSpec("image", (3, 32, 32), 10)) == 9750922  # the B&W code's VGG-11
    assert d("char_lstm", InputSpec("tokens", (80,), 100, 100)) == 100 * 8 + 4 * 100 * (8 + 100 + 2) + \
        4 * 100 * (100 + 100 + 2) + 100 * 100 + 100


def test_shard_layout_and_classes_reach_the_problem_without_copies_of_float32_images():
    data = shard("image", (1, 8, 8), n=4)
    p = problem("cnn_mnist", data, padding=2, normalize=False)
    assert p.X.shape == (4, 1, 8, 8) and p.X.dtype == torch.float32
    assert p.X.data_ptr() == torch.from_numpy(data.X).data_ptr()  # float32 images are shared, not copied
    assert dataclasses.replace(data, layout=None).layout is None


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_every_method_trains_a_cnn_and_resumes_bit_for_bit(tmp_path, monkeypatch, name):
    """Every registered method, with the randomness of its test case (minibatches, random compressors, DP noise,
    sampling, stragglers), on a small CNN over digits: a run stopped by SIGTERM and resumed is the whole run."""
    import signal

    from test_resume import at_round, run, signal_self

    table = config_table(run={"name": name, "n_workers": 5, "rounds": 8, "eval_every": 2, "check_every": 3},
                         **{**METHOD_CASES[name], "problem": {"name": "cnn_mnist", "channels": [2, 4], "padding": 2},
                            "data": {"source": "digits", "split": "label_sorted", "test_fraction": 0.2},
                            "stepsize": {"rule": "constant", "value": 0.05}})
    full = run({**table, "output": {"path": str(tmp_path / "full.h5")}})
    assert full.status.startswith("completed"), full.status
    cut = {**table, "output": {"path": str(tmp_path / "cut.h5")}}
    with at_round(monkeypatch, 3, signal_self(signal.SIGTERM)):
        assert run(cut).status.startswith("interrupted: SIGTERM")
    monkeypatch.undo()
    assert run(cut, "run.resume='yes'").status == full.status
    arrays = trace_arrays(tmp_path / "full.h5")
    assert differences(arrays, trace_arrays(tmp_path / "cut.h5")) == []
    assert np.isfinite(arrays["loss"]).all() and "test_accuracy" in arrays
