"""Runs under mpiexec: the same trace on 1, 2 and P ranks; failures reach every rank."""

import os

import h5py
import numpy as np
import pytest
from helpers import FEDERATED, METHOD_CASES, config_table
from mpi4py import MPI

from mpiclip import config as cfg
from mpiclip import session
from mpiclip.comm import MPIComm
from mpiclip.errors import InputError, RunFailed
from mpiclip.runners import synchronous

WORLD = MPI.COMM_WORLD
ASYNCHRONOUS = ("asgd", "clipped_asgd", "delay_adaptive_asgd", "minibatch_sgd", "rennala_sgd", "ringmaster_asgd",
                "fedbuff")


def collective(ok: bool) -> bool:
    """Assert on every rank together, so that ranks stay in step after a failure."""
    return WORLD.allreduce(bool(ok), op=MPI.LAND)


def run_on(comm, table, path):
    table = {**table, "output": {"path": path, "exists": "overwrite"}}
    config = cfg.validate(table)
    (prepared,) = session.prepare_all([config], comm, "mpi-test", log=lambda *a: None)
    return session.execute(prepared)


def arrays(path):
    with h5py.File(path) as f:
        out = {}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out, dict(f.attrs)


CASES = {
    "ef21-topk-full-init": {},
    "ef21-randk-dense-storage": {"compressor": {"name": "randk", "k": 3},
                                 "data": {"source": "synthetic", "n_samples": 150, "n_features": 9, "density": 0.9,
                                          "storage": "dense", "split": "iid"}},
    "gd-dense-messages": {"method": {"name": "gd"}, "compressor": None},
    # d > GRAM_MAX_D: the workers' constants from their row Grams, the data's from Lanczos on the used columns
    "ef21-wide-sparse": {"compressor": {"name": "topk", "k": 5},
                         "data": {"source": "synthetic", "n_samples": 300, "n_features": 50000, "density": 0.0005,
                                  "split": "iid"}},
    # rows longer than numpy's einsum buffer: the clipping norms must not depend on the rows stacked on a rank
    "clip21-wide": {"method": {"name": "clip21_gd", "tau": 0.05}, "compressor": {"name": "identity"},
                    "data": {"source": "synthetic", "n_samples": 300, "n_features": 20000, "density": 0.001,
                             "split": "iid"}},
    "ef21-plus": {"method": {"name": "ef21_plus"}, "stepsize": {"rule": "ef21_pl", "factor": 4.0}},
    "ef14-dirichlet": {"method": {"name": "ef14"}, "data": {"source": "synthetic", "n_samples": 300,
                                                           "n_features": 10, "split": "dirichlet", "alpha": 0.3}},
    "cgd-quadratic": {"method": {"name": "cgd"}, "problem": {"name": "quadratic", "d": 7}, "data": None},
    "ef21-sgd": {"method": {"name": "ef21_sgd", "batch": 0.3}},
    "ef21-page": {"method": {"name": "ef21_page", "batch": 0.2}},
    "ef21-pp": {"method": {"name": "ef21_pp", "participation": 0.6}},
    "ef21-bc": {"method": {"name": "ef21_bc", "downlink": {"name": "randk", "k": 3}}},
    "ef21-hb-shared-randk": {"method": {"name": "ef21_hb", "eta": 0.5}, "compressor": {"name": "randk_shared", "k": 2}},
    "ef21-prox-box": {"method": {"name": "ef21_prox", "prox": "box", "lower": -0.3, "upper": 0.3}},
    "diana-natural": {"method": {"name": "diana"}, "compressor": {"name": "compose", "inner": {"name": "randk_unbiased", "k": 4},
                                                                  "outer": {"name": "natural"}, "scale": False}},
    "diana-dithering": {"method": {"name": "diana"}, "compressor": {"name": "dithering", "s": 2}},
    "clip21-dp": {"method": {"name": "clip21_gd", "tau": 0.3, "sigma": 0.05}, "compressor": {"name": "identity"}},
    "clip-sgd-dp": {"method": {"name": "clip_sgd", "tau": 0.3, "sigma": 0.05, "batch": 0.3}, "compressor": {"name": "identity"}},
    "clip21-topk": {"method": {"name": "clip21_gd", "tau": 0.1, "order": "compress_first"}},
    "clip21-sgd2m-dp-clean": {"method": {"name": "clip21_sgd2m", "tau": 0.3, "sigma": 0.05, "batch": 0.3,
                                         "feedback": "clean"}, "compressor": None},
    "dp-sgd": {"method": {"name": "dp_sgd", "tau": 0.3, "sigma": 0.5, "batch": 0.3}, "compressor": None},
    "clip21-avg": {"method": {"name": "clip21_avg", "tau": 0.05}, "compressor": {"name": "identity"}},
    # issue 30: partial participation, the draw keyed by round (Poisson: some rounds draw nobody on a rank)
    "clip21-sgd2m-pp-poisson": {"method": {"name": "clip21_sgd2m", "tau": 0.3, "batch": 0.3, "participation": 0.4,
                                           "participation_sampling": "poisson"}, "compressor": None},
    "dp-sgd-pp-fixed": {"method": {"name": "dp_sgd", "tau": 0.3, "sigma": 0.5, "batch": 0.3, "participation": 0.5},
                        "compressor": None},
    "softmax-leaf-synthetic": {"problem": {"name": "softmax"}, "data": {"source": "leaf_synthetic", "users": 5,
                                                                        "n_features": 6, "classes": 3, "split": "iid"}},
    # asynchronous runs in simulated time: the schedule and every job's gradient do not depend on the ranks
    **{f"async-{name}": case for name, case in METHOD_CASES.items() if name in ASYNCHRONOUS},
    # federated rounds: sampled clients' local steps on their own ranks, summed in worker order
    **{f"fed-{name}": case for name, case in METHOD_CASES.items() if name in FEDERATED},
    "fed-fedga-mlp-digits-test-set": {
        "problem": {"name": "mlp", "hidden": [8]}, "method": {"name": "fedga", "local_steps": 2, "beta": 0.5},
        "compressor": {"name": "identity"}, "stepsize": {"rule": "constant", "value": 0.3},
        "data": {"source": "digits", "split": "dirichlet", "alpha": 0.5, "test_fraction": 0.25},
        "federated": {"clients_per_round": 3, "batch_size": 10}},
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("n_workers", [4, 5])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_trace_on_1_2_and_all_ranks(mpi_tmp_path, case, n_workers):
    table = config_table(run={"name": case, "n_workers": n_workers, "rounds": 40, "eval_every": 3, "check_every": 7},
                         **CASES[case])
    world = MPIComm()
    groups = {"all": world, "one": world.split(world.rank)}
    if world.size >= 4 and world.size % 2 == 0:
        groups["two"] = world.split(world.rank // 2)
    paths = {}
    for label, comm in groups.items():
        path = os.path.join(str(mpi_tmp_path), f"{case}-{n_workers}-{label}-g{world.rank // comm.size}.h5")
        run_on(comm, table, path)
        paths[label] = path
    WORLD.Barrier()
    ok = True
    if world.rank == 0:
        reference, ref_attrs = arrays(paths["all"])
        assert ref_attrs["status"] == "completed" and ref_attrs["n_ranks"] == world.size
        for label in groups:
            data, attrs = arrays(paths[label])
            for name in reference:
                if name == "time":
                    continue
                same = np.array_equal(reference[name], data[name], equal_nan=True)
                if not same:
                    print(f"{case}: {name} differs between {world.size} ranks and group {label!r}")
                ok &= same
    assert collective(ok)


@pytest.mark.mpi(min_size=2)
def test_ranks_out_of_step_fail_on_every_rank(mpi_tmp_path, monkeypatch):
    original = synchronous.exchange

    def skewed(comm, msg, n, ordered, per_worker, ids):
        agg = original(comm, msg, n, ordered, per_worker, ids)
        if WORLD.rank == 1 and agg.total is not None:
            agg = type(agg)(agg.n_workers, total=agg.total + 1e-12)
        return agg

    monkeypatch.setattr(synchronous, "exchange", skewed)
    table = config_table(run={"name": "skew", "n_workers": WORLD.size, "rounds": 50, "check_every": 10},
                         method={"name": "gd"}, compressor=None)
    path = os.path.join(str(mpi_tmp_path), "skew.h5")
    with pytest.raises(RunFailed, match="ranks hold different x at round 10"):
        run_on(MPIComm(), table, path)
    WORLD.Barrier()
    if WORLD.rank == 0:
        with h5py.File(path) as f:
            assert f.attrs["status"].startswith("failed: ranks hold different x at round 10")


@pytest.mark.mpi(min_size=2)
def test_bad_input_found_on_one_rank_stops_all(mpi_tmp_path, monkeypatch):
    """An error seen by one rank only (here: a file only rank 1 cannot read) reaches every rank."""
    from mpiclip import data

    original = data.plan

    def plan(spec, n, labels):
        if WORLD.rank == WORLD.size - 1:
            raise InputError("data.path", "x.txt", "cannot be read: Permission denied")
        return original(spec, n, labels)

    monkeypatch.setattr(data, "plan", plan)
    table = config_table(run={"name": "one", "n_workers": WORLD.size, "rounds": 3})
    path = os.path.join(str(mpi_tmp_path), "one.h5")
    with pytest.raises(Exception, match=r"^data.path = 'x.txt': cannot be read: Permission denied$"):
        run_on(MPIComm(), table, path)
    assert collective(not os.path.exists(path))


CHUNKED = {  # runners/chunks.py: a round a chunk of local workers at a time
    "ef21-topk": {},
    "ef21-randk-shared": {"compressor": {"name": "randk_shared", "k": 2}},
    "ef21-sgd-unordered": {"method": {"name": "ef21_sgd", "batch": 0.3}},
    "diana-randk": {"method": {"name": "diana"}, "compressor": {"name": "randk_unbiased", "k": 3}},
    "clip21-dp-dense": {"method": {"name": "clip21_gd", "tau": 0.3, "sigma": 0.05}, "compressor": {"name": "identity"}},
    "clip21-sgd2m-pp-unordered": {"method": {"name": "clip21_sgd2m", "tau": 0.3, "batch": 0.3, "participation": 0.4,
                                             "participation_sampling": "poisson"}, "compressor": None},
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", sorted(CHUNKED))
def test_a_round_in_chunks_gives_the_stacked_trace_on_every_rank_count(mpi_tmp_path, monkeypatch, case):
    """Chunks of two workers against the stacked round, on all ranks and on one; ordered sums, and the unordered
    ones (whose local sums must add the rows onto 0.0 as numpy's sum does)."""
    from mpiclip import limits

    ordered = not case.endswith("unordered")
    table = config_table(run={"name": case, "n_workers": 7, "rounds": 16, "eval_every": 3, "deterministic": ordered},
                         **CHUNKED[case])
    world = MPIComm()
    groups = {"all": world, "one": world.split(world.rank)}
    paths = {}
    for label, comm in groups.items():
        for chunked in (False, True):
            monkeypatch.setattr(limits, "CHUNK_BYTES", 2 * 8 * 12 if chunked else 2**40)
            path = os.path.join(str(mpi_tmp_path), f"chunks-{case}-{label}-{chunked}-g{world.rank // comm.size}.h5")
            run_on(comm, table, path)
            paths[label, chunked] = path
    WORLD.Barrier()
    ok = True
    if world.rank == 0:
        for label in groups:
            stacked, chunked = arrays(paths[label, False])[0], arrays(paths[label, True])[0]
            for name in stacked:
                same = name == "time" or np.array_equal(stacked[name], chunked[name], equal_nan=True)
                if not same:
                    print(f"{case} on {label}: {name} differs between the stacked and the chunked round")
                ok &= same
            if not ordered:  # unordered sums differ between rank counts; ordered ones are compared by the test above
                continue
            ok &= all(name == "time" or np.array_equal(arrays(paths["all", True])[0][name], data, equal_nan=True)
                      for name, data in chunked.items())
    assert collective(ok)
