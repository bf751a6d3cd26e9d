"""The GPU path (problem.device = "cuda"): run where torch sees a GPU, skipped with the reason elsewhere.

The model, the rows and the BatchNorm statistics live on the GPU of the rank's node-local rank; x and the
gradients cross to the host as float64 numpy vectors. The same run twice gives the same trace (deterministic
kernels), and the GPU's gradients equal the CPU's to float32 rounding."""

import numpy as np
import pytest
from helpers import config_table, differences, trace_arrays
from test_networks import initial, problem, shard

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import SerialComm
from mpiclip.rng import drawn

torch = pytest.importorskip("torch", reason="the network tests need the torch extra (tests/run.sh installs it)")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no GPU here (torch.cuda.is_available() is False): the CUDA path is not tested")


@pytest.mark.parametrize("name, kind, shape, keys", [
    ("cnn_mnist", "image", (1, 8, 8), {"padding": 2}),
    ("resnet20", "image", (3, 8, 8), {"norm": "batch", "augment": "crop_flip", "pad": 1}),
    ("char_lstm", "tokens", (6,), {}),
])
def test_gpu_gradients_are_the_cpu_ones_to_rounding_and_repeat_exactly(name, kind, shape, keys):
    data = shard(kind, shape, n=12, vocab=9)
    cpu, gpu = problem(name, data, **keys), problem(name, data, device="cuda", **keys)
    gpu.place(0)
    assert gpu.X.is_cuda
    x = initial(name, data, **keys)
    rows = [drawn(np.array([0, 2, 5]), 1, 2, 0, 3), drawn(np.array([1, 4]), 1, 2, 1, 3)]
    for call in (lambda p: p.loss_grads(x, True)[1], lambda p: p.minibatch_grads(x, rows)):
        a, b = call(cpu), call(gpu)
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5 * np.abs(a).max())
        np.testing.assert_array_equal(call(gpu), b)  # deterministic kernels
    if name != "resnet20":
        a, b = cpu.clipped_example_sums(x, rows, 0.5)[0], gpu.clipped_example_sums(x, rows, 0.5)[0]
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5 * np.abs(a).max())
    state = gpu.worker_state()
    assert state is None or isinstance(state, np.ndarray)


def test_a_gpu_run_gives_the_same_trace_twice(tmp_path):
    table = config_table(run={"name": "gpu", "n_workers": 3, "rounds": 6, "eval_every": 2},
                         data={"source": "digits", "split": "iid", "test_fraction": 0.2},
                         problem={"name": "resnet20", "device": "cuda", "augment": "flip"},
                         method={"name": "ef21_sgd", "batch": 0.1}, compressor={"name": "topk_ratio", "ratio": 0.05, "per_layer": True},
                         stepsize={"rule": "constant", "value": 0.1})
    paths = []
    for k in range(2):
        path = str(tmp_path / f"gpu{k}.h5")
        config = cfg.validate({**table, "output": {"path": path}})
        (s,) = session.prepare_all([config], SerialComm(), log=lambda *a: None)
        assert session.execute(s).status.startswith("completed")
        paths.append(path)
    assert differences(trace_arrays(paths[0]), trace_arrays(paths[1])) == []
