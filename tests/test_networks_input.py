"""Bad input to a network run is one line before anything runs or is written, and torch stays out of runs
that do not use it."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, config_table, mpiclip, write_toml

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import SerialComm
from mpiclip.errors import InputError

torch = pytest.importorskip("torch", reason="the network tests need the torch extra (tests/run.sh installs it)")

CNN = {"problem": {"name": "cnn_mnist", "padding": 2}, "data": {"source": "digits"},
       "stepsize": {"rule": "constant", "value": 0.1}, "method": {"name": "ef21"}, "compressor": {"name": "topk", "k": 5}}


def network_table(**sections) -> dict:
    return config_table(run={"name": "net", "n_workers": 3, "rounds": 2}, **{**CNN, **sections})


def prepare(table):
    return session.prepare_all([cfg.validate(table)], SerialComm(), log=lambda *a: None)


BAD = {
    "cnn on rows of features": (
        {"data": {"source": "synthetic", "n_samples": 60, "n_features": 12}},
        "problem.name = 'cnn_mnist': needs images, and the data set gives rows of features (of 12 features)"),
    "lstm on images": (
        {"problem": {"name": "char_lstm"}},
        "problem.name = 'char_lstm': needs token sequences, and the data set gives images"),
    "outputs for other classes": (
        {"problem": {"name": "cnn_mnist", "padding": 2, "classes": 47}},
        "problem.classes = 47: does not match the 10 classes of the data"),
    "maps shrink to nothing": (
        {"problem": {"name": "cnn_mnist"}},
        "problem.padding = 0: is too small for cnn_mnist on images of 1×8×8: its feature maps shrink to nothing "
        "(try padding = 2)"),
    "vgg on small images": (
        {"problem": {"name": "vgg11"}},
        "problem.name = 'vgg11': needs images of at least 32×32 (five 2×2 poolings), not 1×8×8"),
    "per-example gradients through batchnorm": (
        {"problem": {"name": "resnet20"}, "method": {"name": "dp_sgd", "tau": 1.0, "sigma": 1.0, "batch": 0.1},
         "compressor": None},
        "method.name = 'dp_sgd': clips per-example gradients, and resnet20 with problem.norm = 'batch' has no "
        "per-example gradients (BatchNorm mixes the examples of a batch); use norm = 'group'"),
    "batchnorm state away from its worker": (
        {"problem": {"name": "resnet20"}, "method": {"name": "asgd"}, "compressor": {"name": "identity"},
         "async": {"data": "homogeneous"}},
        "problem.name = 'resnet20': keeps per-worker state (BatchNorm statistics), and this runner computes workers' "
        "gradients away from their rank (async.data = 'homogeneous'); use problem.norm = 'group' or 'none'"),
    "a step size from a smoothness constant": (
        {"stepsize": {"factor": 1.0}},
        "stepsize.rule = 'auto': problem 'cnn_mnist' has no smoothness constant to derive γ from; set rule = "
        "'constant' and value"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_network_settings_are_one_line(case):
    sections, message = BAD[case]
    with pytest.raises(InputError) as e:
        prepare(network_table(**sections))
    assert str(e.value) == message


def test_cuda_without_a_gpu_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error cannot be provoked")
    with pytest.raises(InputError, match=r"^problem.device = 'cuda': torch sees no GPU here \(torch .*\); use device = 'cpu'$"):
        prepare(network_table(problem={"name": "cnn_mnist", "padding": 2, "device": "cuda"}))


def test_tokens_are_not_features_of_an_mlp(tmp_path):
    path = tmp_path / "shakespeare.json"
    path.write_text('{"users": ["a"], "num_samples": [3], "user_data": {"a": {"x": ["abcd", "bcde", "cdef"], '
                    '"y": ["e", "f", "g"]}}}')
    with pytest.raises(InputError, match=r"^problem.name = 'torch_mlp': needs vectors or images, and the data set gives "
                                         r"token sequences$"):
        prepare(network_table(problem={"name": "torch_mlp"}, data={"source": "leaf", "path": str(path), "test": False}))


@pytest.mark.parametrize("ranks", [None, 2])
def test_a_bad_input_ends_every_rank_with_one_line_and_no_trace(tmp_path, ranks):
    table = network_table(data={"source": "synthetic", "n_samples": 60, "n_features": 12})
    table["output"] = {"path": str(tmp_path / "out" / "{name}.h5")}
    proc = mpiclip(["run", write_toml(str(tmp_path / "c.toml"), table)], ranks=ranks, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["mpiclip: error: " + BAD["cnn on rows of features"][1]]
    assert not (tmp_path / "out").exists()


def test_a_damaged_image_file_is_one_line_and_no_trace(tmp_path):
    import gzip
    import struct

    images = struct.pack(">4B3i", 0, 0, 8, 3, 10, 28, 28) + bytes(10 * 28 * 28)
    labels = struct.pack(">4Bi", 0, 0, 8, 1, 10) + bytes(range(10))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(images)[:-40])  # cut short
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    table = network_table(data={"source": "idx", "path": str(tmp_path), "test": False})
    table["output"] = {"path": str(tmp_path / "out" / "{name}.h5")}
    proc = mpiclip(["run", write_toml(str(tmp_path / "c.toml"), table)], cwd=str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"mpiclip: error: data.path = '{tmp_path}/train-images-idx3-ubyte.gz': ")
    assert not (tmp_path / "out").exists()


def test_without_torch_a_network_is_one_line_naming_the_extra(tmp_path):
    """torch hidden from the interpreter (as on a machine without the extra)."""
    table = network_table()
    table["output"] = {"path": str(tmp_path / "out" / "{name}.h5")}
    config = write_toml(str(tmp_path / "c.toml"), table)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from mpiclip.cli import main\n"
            f"sys.exit(main(['run', {config!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert re.fullmatch(r"mpiclip: error: problem.name = 'cnn_mnist': is a network and needs torch \(.*\): "
                        r"pip install 'mpiclip\[torch\]'", lines[0]), lines
    assert not (tmp_path / "out").exists()


def test_only_the_backend_imports_torch_and_other_runs_never_load_it(tmp_path):
    importers = []
    for folder, _, files in os.walk(os.path.join(REPO, "mpiclip")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                text = open(path).read()
                if re.search(r"^\s*(import torch|from torch)", text, re.M):
                    importers.append(os.path.relpath(path, REPO))
    assert importers and all(p.startswith(os.path.join("mpiclip", "nn") + os.sep) for p in importers), importers
    config = write_toml(str(tmp_path / "c.toml"), {**config_table(), "output": {"path": str(tmp_path / "t.h5")}})
    code = ("import sys\nfrom mpiclip.cli import main\n"
            f"assert main(['run', {config!r}, '-q']) == 0\n"
            "assert main(['options', 'problem']) == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr


def test_options_document_every_network_key():
    out = mpiclip(["options", "problem"])
    assert out.returncode == 0, out.stderr
    for key in ("cnn_mnist", "resnet20", "char_lstm", "augment", "norm", "dtype", "device", "example_chunk"):
        assert key in out.stdout


def test_networks_are_rejected_as_numpy_shapes_nowhere():
    """The numpy classifiers still take the same data as before (the layout is the networks' business)."""
    table = config_table(run={"name": "s", "n_workers": 3, "rounds": 2}, data={"source": "digits"},
                         problem={"name": "softmax"}, method={"name": "gd"}, compressor=None)
    (s,) = prepare(table)
    assert s.d == 65 * 10 and np.isfinite(s.x0).all()


def test_lenet_on_cifar_found_through_the_data_dir_with_its_test_split(tmp_path):
    """The whole way from the files: a CIFAR-10 directory named relative to $MPICLIP_DATA_DIR, LeNet-5 with
    augmentation, the official test batch as the test set, the files' checksum in the trace."""
    import h5py
    from test_data_images import cifar10_dir

    folder, _ = cifar10_dir(tmp_path / "data")
    table = network_table(problem={"name": "lenet5", "augment": "crop_flip"},
                          data={"source": "cifar10", "path": "cifar-10-batches-py", "split": "iid"},
                          method={"name": "ef21_sgd", "batch": 0.5}, compressor={"name": "topk_ratio", "ratio": 0.01, "per_layer": True})
    table["run"] = {"name": "cifar", "n_workers": 2, "rounds": 2}
    table["output"] = {"path": str(tmp_path / "out" / "{name}.h5")}
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    proc = mpiclip(["run", write_toml(str(run_dir / "c.toml"), table), "-q"], cwd=str(run_dir),
                   env={"MPICLIP_DATA_DIR": str(folder.parent)})
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "out" / "cifar.h5") as f:
        assert f.attrs["status"] == "completed"
        assert f.attrs["dataset"] == f"cifar10:{folder}" and f.attrs["dataset_checksum"].startswith("sha256:")
        np.testing.assert_array_equal(f["partition/test_indices"][()], np.arange(20, 25))  # the test batch's 5 images
        assert f["test_accuracy"].shape == (3,) and np.isfinite(f["test_loss"][()]).all()
