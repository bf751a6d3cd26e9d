"""Shared test helpers: small data files, in-process runs, CLI subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

import numpy as np
import pytest

from mpiclip.paths import DATA_DIR_VARIABLE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def libsvm_file(name: str) -> Optional[str]:
    """A LibSVM data set (``name`` such as "a9a.txt") in the directories of $MPICLIP_DATA_DIR, where mpiclip
    looks for data files (:mod:`mpiclip.paths`), or None: the LibSVM files are not part of the repository, a
    user downloads them."""
    for directory in filter(None, os.environ.get(DATA_DIR_VARIABLE, "").split(os.pathsep)):
        path = os.path.join(os.path.expanduser(directory), name)
        if os.path.isfile(path):
            return path
    return None


def write_libsvm(path: str, X: np.ndarray, y: np.ndarray) -> str:
    """Write a dense matrix as LibSVM (zeros omitted), 1-based indices."""
    with open(path, "w") as f:
        for row, label in zip(X, y):
            feats = " ".join(f"{j + 1}:{v:.17g}" for j, v in enumerate(row) if v != 0)
            f.write(f"{label:g} {feats}\n")
    return path


def random_classification(n: int = 60, d: int = 7, density: float = 0.5, seed: int = 0, labels=(0, 1)):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < density)
    X[:, 0] += 0.5  # no empty rows: keeps feature 1 present everywhere
    y = np.where(rng.random(n) < 0.5, labels[0], labels[1])
    return X, y


def config_table(**sections) -> dict:
    """A small complete config as a table, with section overrides."""
    table = {
        "run": {"name": "t", "n_workers": 4, "rounds": 30},
        "data": {"source": "synthetic", "n_samples": 200, "n_features": 12, "density": 0.3},
        "problem": {"name": "logreg"},
        "method": {"name": "ef21"},
        "compressor": {"name": "topk", "k": 2},
        "stepsize": {"factor": 4.0},
    }
    for name, values in sections.items():
        if values is None:
            table.pop(name, None)
        else:
            table[name] = values
    return table


def write_toml(path: str, table: dict) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines = []
    for section, values in table.items():
        if section == "variants":
            for label, sections in values.items():
                lines.append(f"[variants.{label}]")
                lines += [f"{k} = {value(v)}" for k, v in sections.items()]
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in values.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def mpiclip(args: list[str], ranks: Optional[int] = None, cwd: Optional[str] = None, timeout: float = 120,
            env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would: plain, or under mpiexec with ``ranks`` ranks."""
    cmd = [sys.executable, "-m", "mpiclip", *args]
    if ranks is not None:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec if os.path.exists(mpiexec) else "mpiexec", "-n", str(ranks), sys.executable, "-m", "mpi4py",
               "-m", "mpiclip", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("PMI_RANK", None)
    full_env.pop("PMI_SIZE", None)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


# One small config per registered method (tests check that every method has one), with its randomness
# switched on where it has any: minibatches, random compressors, DP noise, partial participation.
METHOD_CASES = {
    "gd": {"method": {"name": "gd"}, "compressor": {"name": "identity"}},
    "cgd": {"method": {"name": "cgd"}, "compressor": {"name": "randk", "k": 3}},
    "ef14": {"method": {"name": "ef14"}},
    "ef21": {"method": {"name": "ef21"}},
    "ef21_plus": {"method": {"name": "ef21_plus"}, "stepsize": {"rule": "ef21_pl", "factor": 4.0}},
    "ef21_sgd": {"method": {"name": "ef21_sgd", "batch": 0.3}},
    "ef14_sgd": {"method": {"name": "ef14_sgd", "batch": 0.3}, "compressor": {"name": "randk", "k": 3}},
    "ef21_sgd_hb": {"method": {"name": "ef21_sgd_hb", "batch": 0.3, "eta": 0.5}},
    "ef21_page": {"method": {"name": "ef21_page", "batch": 0.2}},
    "ef21_pp": {"method": {"name": "ef21_pp", "participation": 0.6}},
    "ef21_bc": {"method": {"name": "ef21_bc", "downlink": {"name": "randk", "k": 3}}},
    "ef21_hb": {"method": {"name": "ef21_hb", "eta": 0.5}, "compressor": {"name": "randk_shared", "k": 2}},
    "ef21_prox": {"method": {"name": "ef21_prox", "prox": "l1", "l1": 0.01}},
    "diana": {"method": {"name": "diana"}, "compressor": {"name": "dithering", "s": 2}},
    "clip_gd": {"method": {"name": "clip_gd", "tau": 0.3, "sigma": 0.05}, "compressor": {"name": "identity"}},
    "clip_sgd": {"method": {"name": "clip_sgd", "tau": 0.3, "sigma": 0.05, "batch": 0.3}, "compressor": {"name": "identity"}},
    "clip21_gd": {"method": {"name": "clip21_gd", "tau": 0.1, "order": "compress_first"}},
    "clip21_sgd": {"method": {"name": "clip21_sgd", "tau": 0.3, "sigma": 0.02, "batch": 0.3},
                   "compressor": {"name": "identity"}},
    "clip21_avg": {"method": {"name": "clip21_avg", "tau": 0.05}, "compressor": {"name": "identity"}},
    "clip_sgdm": {"method": {"name": "clip_sgdm", "tau": 0.3, "sigma": 0.05, "batch": 0.3, "beta": 0.3},
                  "compressor": {"name": "identity"}},
    "clip21_sgd2m": {"method": {"name": "clip21_sgd2m", "tau": 0.3, "target_epsilon": 8.0, "batch": 0.3, "beta1": 0.3,
                                "beta2": 0.5}, "compressor": None},
    "dp_sgd": {"method": {"name": "dp_sgd", "tau": 0.3, "sigma": 0.5, "batch": 0.3}, "compressor": None},
    # asynchronous: every compute-time model, oracle, assignment and data setting somewhere
    "asgd": {"method": {"name": "asgd"}, "compressor": {"name": "identity"},
             "async": {"oracle": "minibatch", "batch_size": 5, "slow_workers": [3], "slow_factor": 5.0}},
    "clipped_asgd": {"method": {"name": "clipped_asgd", "tau": 0.3}, "compressor": {"name": "identity"},
                     "async": {"oracle": "noise", "noise_theta": 2.0, "noise_sigma": 0.5, "assignment": "random"}},
    "delay_adaptive_asgd": {"method": {"name": "delay_adaptive_asgd"}, "compressor": {"name": "randk", "k": 3},
                            "async": {"compute_time": "lognormal", "concurrency": 3}},
    "minibatch_sgd": {"method": {"name": "minibatch_sgd"}, "compressor": {"name": "identity"},
                      "async": {"data": "homogeneous", "oracle": "minibatch", "batch_size": 4}},
    "rennala_sgd": {"method": {"name": "rennala_sgd", "batch": 3, "tau": 0.5}, "compressor": {"name": "topk", "k": 2},
                    "async": {"outages": [[1, 2.0, 6.0]], "data": "homogeneous", "oracle": "noise"}},
    "ringmaster_asgd": {"method": {"name": "ringmaster_asgd", "max_delay": 3, "stops": True},
                        "compressor": {"name": "identity"},
                        "async": {"compute_time": "list", "times": [[1.0, 2.0, 0.5]], "slow_workers": [0], "slow_factor": 7.0}},
    "fedbuff": {"method": {"name": "fedbuff", "client_lr": 0.5, "local_steps": 2, "buffer": 3, "staleness": "polynomial",
                           "staleness_exponent": 0.5}, "compressor": {"name": "randk", "k": 3},
                "async": {"oracle": "minibatch", "batch_size": 4, "assignment": "random", "compute_time": "lognormal"}},
    # federated: sampling, minibatches, schedules, clipping, compression and every server optimizer somewhere
    "fedavg": {"method": {"name": "fedavg", "local_steps": 3}, "compressor": {"name": "identity"},
               "federated": {"clients_per_round": 3, "batch_size": 8}, "stepsize": {"factor": 1.0}},
    "ce_fedavg": {"method": {"name": "ce_fedavg", "local_steps": 2, "tau": 0.2, "sigma": 0.01, "feedback": True},
                  "compressor": {"name": "identity"}, "federated": {"clients_per_round": 3, "batch_size": 8},
                  "stepsize": {"factor": 1.0}},
    "fedga": {"method": {"name": "fedga", "local_steps": 2, "beta": 0.5, "beta_decay": True},
              "compressor": {"name": "identity"}, "stepsize": {"factor": 1.0},
              "federated": {"clients_per_round": 2, "batch_size": 6, "lr_milestones": [10], "server_optimizer": "fedadam",
                            "server_lr": 0.1}},
    "gradalign": {"method": {"name": "gradalign", "beta": 0.3, "fg_rows": 10}, "compressor": {"name": "identity"},
                  "stepsize": {"factor": 1.0},
                  "federated": {"weighting": "samples", "uplink": "model", "server_momentum": 0.9, "nesterov": True}},
    "scaffold": {"method": {"name": "scaffold", "local_steps": 2}, "compressor": {"name": "topk", "k": 3},
                 "stepsize": {"factor": 1.0}, "federated": {"clients_per_round": 3, "batch_size": 5, "clip": 0.5}},
    "scaffold_stored": {"method": {"name": "scaffold_stored", "local_steps": 2}, "compressor": {"name": "identity"},
                        "stepsize": {"factor": 1.0},
                        "federated": {"clients_per_round": 2, "server_optimizer": "fedyogi", "server_lr": 0.05}},
    "fedprox": {"method": {"name": "fedprox", "mu": 0.1, "local_steps": 2}, "compressor": {"name": "randk", "k": 3},
                "stepsize": {"factor": 1.0},
                "federated": {"batch_size": 7, "update_clip": 0.5, "server_optimizer": "fedavgm", "server_momentum": 0.5}},
    "lbsgd": {"method": {"name": "lbsgd"}, "compressor": {"name": "identity"}, "stepsize": {"factor": 1.0},
              "federated": {"clients_per_round": 3, "server_optimizer": "fedadagrad", "server_lr": 0.1}},
}
FEDERATED = ("fedavg", "fedga", "gradalign", "scaffold", "scaffold_stored", "fedprox", "lbsgd")


def stop_round(name: str, rounds: int) -> int:
    """A round in [1, rounds) to stop a method at, arbitrary but fixed per method (reproducible failures)."""
    return 1 + int(np.random.default_rng(list(name.encode())).integers(rounds - 1))


def trace_arrays(path: str) -> dict:
    """Every dataset of a trace but the wall-time column, by name."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    out.pop("time", None)
    return out


def run_completed(table: dict, path) -> dict:
    """Run ``table`` in this process with its trace at ``path`` (overwritten), check that it completed, and return
    the trace's arrays."""
    from mpiclip import config as cfg
    from mpiclip import session
    from mpiclip.comm import SerialComm

    table["output"] = {"path": str(path), "exists": "overwrite"}
    (prepared,) = session.prepare_all([cfg.validate(table)], SerialComm(), "test", log=lambda *a: None)
    result = session.execute(prepared)
    assert result.status.startswith("completed"), result.status
    return trace_arrays(str(path))


def differences(a: dict, b: dict) -> list:
    """Names of the datasets that are not bit-identical (or exist in one only)."""
    return sorted(set(a) ^ set(b)) + [k for k in sorted(set(a) & set(b))
                                      if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")]


DAMAGE = ("truncated", "header", "garbage", "empty")


def damage(path, how: str) -> None:
    """Spoil an HDF5 file as a cut-short copy, an overwritten object header, random bytes or an empty file do."""
    data = bytearray(open(path, "rb").read())
    if how == "truncated":
        data = data[: len(data) // 3]
    elif how == "header":  # the bytes just after the 48-byte superblock: the root group's object header
        data[48:560] = b"\xa5" * 512
    elif how == "garbage":
        data = bytearray(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    else:
        data = bytearray()
    open(path, "wb").write(bytes(data))


def markdown_tables(page: str) -> dict:
    """{table name: its cells}, read back from a `mpiclip reproduce` page's pipe tables (each followed by the
    link to its CSV file, <name>.csv)."""
    tables, rows = {}, []
    for line in page.splitlines():
        if line.startswith("|"):
            rows.append([c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")])
        elif line.startswith("[") and line.endswith(".csv)") and rows:
            tables[line[1:line.index("]")][:-4]] = [rows[0]] + rows[2:]
            rows = []
    return tables


def checked_tables(folder, page: str) -> dict:
    """The page's tables (markdown_tables), after checking that each equals its CSV file in ``folder``."""
    import csv

    tables = markdown_tables(page)
    for name, cells in tables.items():
        with open(os.path.join(folder, name + ".csv"), newline="") as f:
            rows = list(csv.reader(f))
        spreads = [i for i, h in enumerate(rows[0]) if i and h == f"{rows[0][i - 1]} mean"]
        numbers = {j for i in spreads for j in (i, i + 1, i + 2)}
        assert [[c for j, c in enumerate(r) if j not in numbers] for r in rows] == cells, name
        for i in spreads:  # the numbers of a spread beside its text: mean, low, high; low <= mean <= high
            assert rows[0][i + 1:i + 3] == [f"{rows[0][i - 1]} low", f"{rows[0][i - 1]} high"], name
            for r in rows[1:]:
                mean, low, high = (float(c) if c else None for c in r[i:i + 3])
                shown = r[i - 1].split()[0]
                assert (mean is None) == (shown == "-"), (name, r)
                if mean is not None:
                    assert float(shown) == pytest.approx(mean, rel=0.01, abs=0.051), (name, r)
                    assert (low is None) == (high is None) and (low is None or low <= mean <= high), (name, r)
    return tables


def run_sweep_here(root, sweep_text: str, data: dict) -> None:
    """Run every point of the sweep ``sweep_text`` in this process, its file at <root>/misses.toml and its traces in
    <root>/<sweep name>/, on small LibSVM stand-ins of the data files ``data`` (file name -> seed) in <root>/data."""
    from mpiclip import session
    from mpiclip.comm import SerialComm
    from mpiclip.sweep import load_sweep

    (root / "data").mkdir()
    for name, seed in data.items():
        write_libsvm(str(root / "data" / name), *random_classification(n=240, d=9, seed=seed))
    (root / "misses.toml").write_text(sweep_text.replace('"{name}"', f'"{root}/{{name}}"'))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_DIR_VARIABLE, str(root / "data"))
        for run in load_sweep(str(root / "misses.toml")).runs:
            (prepared,) = session.prepare_all([run.config], SerialComm(), "test", log=lambda *a: None)
            assert session.execute(prepared).status.startswith("completed")
