"""Runs under mpiexec: the [system] clock (sim_time and its breakdown) is the same on 1 rank and on all ranks."""

import os

import numpy as np
import pytest
from helpers import config_table
from mpi4py import MPI
from test_mpi_runs import arrays, collective, run_on

from mpiclip.comm import MPIComm

WORLD = MPI.COMM_WORLD
SYSTEM = {"compute_time": "lognormal", "mean_time": 0.05, "slow_workers": [1], "classes": [0, 1, 0, 1, 0],
          "latency": [1e-5, 0.05], "bandwidth_up": [1.25e9, 1.25e6], "bandwidth_down": [1.25e9, 1.25e7]}
CASES = {
    "ef21-topk": {"system": {**SYSTEM, "max_time": 1.0}},
    "ef21-bc-tree": {"method": {"name": "ef21_bc"}, "system": {**SYSTEM, "collective": "binary_tree"}},
    "fedavg-dropouts": {"method": {"name": "fedavg", "local_steps": 2}, "compressor": {"name": "topk", "k": 3},
                        "federated": {"clients_per_round": 3},
                        "system": {**SYSTEM, "availability": "markov", "p_off": 0.2, "p_on": 0.5, "deadline": 0.3,
                                   "over_selection": 0.4}},
    # compute_unit = 'sample': the samples each worker touched, gathered from the rank that holds it
    "ef21-page-per-sample": {"method": {"name": "ef21_page", "batch": 0.25, "p": 0.5},
                             "system": {**SYSTEM, "compute_unit": "sample", "mean_time": 1e-3}},
    "fedga-per-sample": {"method": {"name": "fedga", "local_steps": 2}, "compressor": {"name": "identity"},
                         "federated": {"clients_per_round": 3, "batch_size": 4},
                         "system": {**SYSTEM, "compute_unit": "sample", "mean_time": 1e-3, "availability": "markov",
                                    "p_off": 0.2, "p_on": 0.5}},
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_simulated_clock_is_the_same_on_1_and_all_ranks(mpi_tmp_path, case):
    table = config_table(run={"name": case, "n_workers": 5, "rounds": 30, "eval_every": 3}, **CASES[case])
    if "federated" in CASES[case]:
        table["federated"]["update_clip"] = 0.0
    world = MPIComm()
    paths = {}
    for label, comm in {"all": world, "one": world.split(world.rank)}.items():
        paths[label] = os.path.join(str(mpi_tmp_path), f"{case}-{label}-g{world.rank // comm.size}.h5")
        run_on(comm, table, paths[label])
    WORLD.Barrier()
    ok = True
    if world.rank == 0:
        (every, attrs), (one, _) = arrays(paths["all"]), arrays(paths["one"])
        assert attrs["status"] == "completed" and attrs["n_ranks"] == world.size
        assert every["sim_time"][-1] > 0
        if "federated" in CASES[case]:  # offline, late and over-selected clients were dropped
            assert every["sim_dropped"][-1] > 0
        if case == "ef21-topk":
            assert attrs["stop_reason"].startswith("completed: time budget 1 s reached")
        for name in every:
            if name != "time" and not np.array_equal(every[name], one[name], equal_nan=True):
                print(f"{case}: {name} differs between {world.size} ranks and 1")
                ok = False
    assert collective(ok)
