"""The official EF21 script, unmodified, against mpiclip on the same run: EF21 Top-1 logistic regression on a9a.

    python benchmarks/peers/peer_ef21.py [--source URL|PATH] [--data a9a.txt] [--rounds 2000] [--repeat 3]
                                         [--venv-root ~/.cache/mpiclip-peers] [--json results/peers.json]

The peer: `Logistic regression/bdfg_distributed_stable.py` of IgorSokoloff/ef21_experiments_source_code at
commit 805c9d7 (the code of the EF21 paper), got by ``git clone`` of ``--source`` (the GitHub address by default,
or a local clone) and checked out at that commit; none of its code is changed. It runs in a virtual environment
of its own with the numpy it needs (< 1.24: it calls ``np.float``) and the packages it imports (numpy 1.23.5
has wheels up to Python 3.11: ``--python`` names such an interpreter where this one is newer). Its data
folder is made once, untimed, by the repository's own ``generate_data.py`` (a9a, n = 20, file-order blocks, the
remainder on the last worker), and its x^0 file (``w_init_log-reg.npy``, which the script reads when present)
is mpiclip's x^0 for ``run.seed = 0``.

Ours: ``mpiclip run ef21-libsvm`` (n = 20, Top-1, λ = 0.1, γ = factor/(L + L̃√(β/θ)), g_i^0 = ∇f_i(x^0)) on 1 and
2 ranks, whole processes, every round recorded, the parsed-data cache warm. Timed alternately: official, ours on
1 rank, ours on 2 ranks, ... ``--repeat`` times. Two rows: the official script against each.

Agreement: the official script saves ‖∇f(x^t)‖² of every round (``norms_*.npy``) and the last iterate
(``solution_*.npy``), not f(x^t), so those two are compared: mpiclip records ‖∇f(x^t)‖² in its trace and x^T as
``/x_final``. The official loop runs while it ≤ max_it, so max_it = rounds − 1 gives rounds steps and the norms of
x^0 … x^rounds, as mpiclip's rounds = rounds. Early rounds must agree to machine precision (relative 1e-12, the
arithmetic is the same up to the order of sums: dense matrix products there, sparse ones here); late rounds at
a large factor drift apart chaotically (docs/algorithms.md §9, item 11), so the whole trajectory is held to a
looser tolerance (relative 1e-6 of the largest norm), and so is x^T (‖Δx^T‖/‖x^T‖ ≤ 1e-6), stated in the row.

Not like for like: the official script is one process simulating the 20 workers with dense (rows × 123)
arrays; it loads its data from .npy files that ``generate_data.py`` made (untimed), computes L and the L_i with
``np.linalg.eigvals`` of dense Hessians, prints every 1000 rounds and saves the norms at the end; mpiclip reads
the LibSVM file through its parsed-data cache (warm), computes the same constants, keeps the data sparse, and
writes an HDF5 trace with f, ‖∇f‖², the bits under four encodings and per-worker diagnostics every round.
Loop-only times: mpiclip's is its trace's ``wall_seconds``; the unmodified official script does not time its
loop, so none is given for either side.

Reference (issue 31, measured on this 2-core machine): the official script 23x slower than mpiclip on 2 ranks
whole process, 34x than mpiclip on one process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import _peer
import numpy as np

REPOSITORY = "https://github.com/IgorSokoloff/ef21_experiments_source_code"
COMMIT = "805c9d77de73fe211712ce21e865c1bdbc7c032a"
SCRIPT = os.path.join("Logistic regression", "bdfg_distributed_stable.py")
REQUIREMENTS = [["numpy==1.23.5", "scipy==1.10.1", "scikit-learn==1.2.2", "pandas==1.5.3", "matplotlib==3.7.1",
                 "ipython==8.12.3"]]
WORKERS, K, TOLERANCE_EARLY, EARLY, TOLERANCE_ALL = 20, 1, 1e-12, 200, 1e-6


def x0_of_mpiclip(data: str) -> np.ndarray:
    """x^0 as `mpiclip run` draws it for run.seed = 0 (N(0, I), the official scripts' distribution)."""
    from mpiclip import rng
    from mpiclip.data import libsvm

    d = libsvm.summarize(data, "data.path").n_features
    return rng.generator(0, rng.X0, 0, 0).standard_normal(d)


def agreement(official: np.ndarray, ours: np.ndarray, official_x: np.ndarray, ours_x: np.ndarray) -> dict:
    """The two ‖∇f(x^t)‖² sequences and the two final iterates x^T (the official ``solution_*.npy``, the trace's
    ``x_final``), each against its tolerance."""
    k = min(len(official), len(ours))
    rel = np.abs(official[:k] - ours[:k]) / np.abs(official[:k])
    scale_all = np.abs(official[:k] - ours[:k]).max() / np.abs(official[:k]).max()
    early = float(rel[:EARLY].max())
    x_rel = float(np.linalg.norm(official_x - ours_x) / np.linalg.norm(ours_x))
    ok = bool(len(official) == len(ours) and early <= TOLERANCE_EARLY and scale_all <= TOLERANCE_ALL
              and x_rel <= TOLERANCE_ALL)
    verdict = (f"{'agrees' if ok else 'DIFFERS'}: ‖∇f(x^t)‖², t = 0..{k - 1}: max relative difference "
               f"{early:.2e} over t < {EARLY} (tolerance {TOLERANCE_EARLY:g}: machine precision), largest difference "
               f"{scale_all:.2e} of the largest norm over all rounds (tolerance {TOLERANCE_ALL:g}); lengths "
               f"{len(official)} and {len(ours)}; final iterates ‖Δx^T‖/‖x^T‖ = {x_rel:.2e} (tolerance {TOLERANCE_ALL:g})")
    return {"verdict": verdict, "ok": ok, "quantity": "grad_norm_sq", "max_rel_early": early,
            "max_rel_all": float(rel.max()), "max_diff_over_largest": float(scale_all), "x_final_rel": x_rel,
            "final": [float(official[k - 1]), float(ours[k - 1])]}


def main() -> int:
    ap = _peer.parser(__doc__)
    ap.add_argument("--source", default=REPOSITORY, help="where to `git clone` the official code from: its address "
                    "(default: %(default)s) or a local clone; checked out at " + COMMIT[:7])
    ap.add_argument("--data", default="a9a.txt", help="found as `mpiclip run` finds it (default: %(default)s)")
    ap.add_argument("--data-dir", default=None, help="a directory to look for --data in (then $MPICLIP_DATA_DIR)")
    ap.add_argument("--rounds", type=int, default=500, help="rounds of both (default: %(default)s; the official script "
                    "takes about 0.1 s a round here)")
    ap.add_argument("--factor", type=int, default=64, help="the step-size factor (an integer: the official option)")
    args = _peer.parse(ap, "rounds", "factor")
    data = _peer.data_file(args.data, "--data", args.data_dir, "--data-dir")
    venv = _peer.Venv(args.venv_root, "ef21", REQUIREMENTS, args.python)
    python = venv.ensure()
    tree = _peer.source_tree(args.source, args.venv_root, "ef21_experiments_source_code", COMMIT)
    work = _peer.work_folder("ef21", args.keep)
    env = _peer.environment(MPICLIP_CACHE=os.path.join(work, "cache"))
    # the official data folder, made by its own generate_data.py from data/a9a.txt (untimed, as mpiclip's cache)
    os.makedirs(os.path.join(work, "data"))
    os.symlink(data, os.path.join(work, "data", "a9a.txt"))
    subprocess.run([python, os.path.join(tree, "generate_data.py"), "--dataset", "a9a", "--num_workers", str(WORKERS),
                    "--loss_func", "log-reg"], cwd=work, env=env, check=True, capture_output=True)
    np.save(os.path.join(work, "data_a9a", "w_init_log-reg.npy"), x0_of_mpiclip(data))
    experiment = f"biased-diana-full-grad_nw-{WORKERS}_{args.factor}x_{K}"
    logs = os.path.join(work, "logs", f"logs_a9a_{experiment}")
    official = _peer.Side("official EF21 script", [python, os.path.join(tree, SCRIPT), "--max_it", str(args.rounds - 1),
                          "--k", str(K), "--num_workers", str(WORKERS), "--factor", str(args.factor), "--tol", "0",
                          "--dataset", "a9a"], work, env, prepare=lambda: shutil.rmtree(os.path.join(work, "logs"),
                                                                                       ignore_errors=True))

    def ours(ranks: int) -> _peer.Side:
        trace = os.path.join(work, f"ours-{ranks}.h5")
        cmd = _peer.mpiclip_cmd(ranks) + ["run", "ef21-libsvm", "-q", "--set", f"data.path={data!r}", "--set",
                                          f"run.rounds={args.rounds}", "--set", f"stepsize.factor={args.factor}",
                                          "--set", f"output.path={trace!r}", "--set", "output.exists='overwrite'"]
        return _peer.Side(f"mpiclip, {ranks} rank{'s' * (ranks > 1)}", cmd, work, env)

    sides = [official, ours(1), ours(2)]
    subprocess.run(sides[1].cmd, cwd=work, env=env, check=True, capture_output=True)  # fills the parsed-data cache
    loads = [_peer.load()]
    _peer.alternate(sides, args.repeat)
    loads.append(_peer.load())
    from mpiclip.trace import load_trace

    norms, solution = (np.load(os.path.join(logs, f"{what}_{experiment}.npy")) for what in ("norms", "solution"))
    versions = {"peer": {**venv.versions(["numpy", "scipy", "scikit-learn"]), "commit": COMMIT},
                "ours": _peer.ours_versions()}
    not_like = _peer.section(__doc__, "Not like for like")
    for side, ranks in ((sides[1], 1), (sides[2], 2)):
        path = os.path.join(work, f"ours-{ranks}.h5")
        trace = load_trace(path)
        r = _peer.row(f"ef21-a9a: official script vs mpiclip on {ranks} rank{'s' * (ranks > 1)}", official, side,
                      agreement(norms, np.asarray(trace.grad_norm_sq), solution, _x_final(path)), not_like, versions,
                      args.repeat, loads)
        _peer.write_row(args.json, r)
        _peer.print_row(r)
    return 0


def _x_final(path: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return f["x_final"][()]


if __name__ == "__main__":
    sys.exit(_peer.main_of(main))
