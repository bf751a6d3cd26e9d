"""The asynchronous-SGD notebook's loop (Ray actors) against mpiclip's simulated asynchronous runner: ASGD on the
notebook's least-squares problem, the same workers, minibatches, step size and number of gradients.

    python benchmarks/peers/peer_asgd.py [--source URL|PATH] [--workers 40] [--iterations 50] [--repeat 3]
                                         [--venv-root ~/.cache/mpiclip-peers] [--json results/peers.json]

The peer: konstmish/asynchronous_sgd, ``code.ipynb`` at commit 98ef4aa (the code of Mishchenko, Bach, Even and
Woodworth, NeurIPS 2022), got by ``git clone`` of ``--source`` (its GitHub address by default, or a local
clone). The loop is **extracted from the notebook at run time**, not rewritten: the cells that import (cell 0:
numpy, Ray, seaborn ...), define ``ParameterServer`` (cell 1), ``DataWorker`` and its gradients (cell 2),
``evaluate`` (cell 3) and ``run`` (cell 4), and the "Parameters" cell (cell 7: N = 10,000, d = 400, batch 256,
40 workers, the data A, b from ``default_rng(42)``) are found by what they define and run in order, unchanged,
in a Python program in the peer's virtual environment (Ray, numpy, seaborn, matplotlib, psutil); then it calls
``run(..., asynchronous=True, delay_adaptive=False)`` as the notebook's ASGD cell (cell 11) does, with
``--iterations`` in place of the notebook's 800 (``iterations × workers`` gradients in all) and ``--workers``,
``--lr`` (the notebook's tuned 0.43) and ``--it-check`` set the same way. Ray is started before ``run`` (whose own
``ray.init(ignore_reinit_error=True)`` then does nothing), so the loop's seconds (the peer's loop-only time) are
those of ``run``: its actors' start, the loop, the final evaluations and ``ray.shutdown``.

Ours: ``mpiclip run`` with ``method.name = "asgd"`` on the same A and b (written by the same cell to an .npz file,
``data.source = "npz"``, ``problem.name = "least_squares"``: the notebook's 0.5·mean((Ax − b)²) with equal
shards), x^0 = 0 (the notebook's server starts at zeros), ``async.data = "homogeneous"`` with the
``minibatch`` oracle of 256 rows, the constant step, ``iterations × workers`` updates, one process (the
simulated runner gives the same trace on any number of ranks). Loop-only time: the trace's ``wall_seconds``.

Agreement: not comparable to machine precision (the notebook's minibatches come from its workers' own
generators and its delays from real scheduling of Ray actors on this machine; mpiclip draws its minibatches
from its seeded streams and its delays from a simulated clock with exponential compute times of mean 1 per
worker): statistically, f − f* at the notebook's last kept iterate (after its[-1] + 1 updates) and at mpiclip's
row its[-1] (f* from ``np.linalg.lstsq`` of the notebook's cell 8) must lie within a factor of ``TOLERANCE`` of
each other; both mean delays are reported.

Not like for like: the notebook runs every worker as a Ray actor process (real asynchrony: 40 processes on
2 cores, the gradients sent through Ray's object store), evaluates nothing during the loop but keeps an
iterate every ``it_check`` updates and evaluates them after; mpiclip simulates the workers in one process
(the arithmetic of the same gradients and steps, no waiting), records f and ‖∇f‖² exactly every ``it_check``
updates, the events table of every arrival, and writes an HDF5 trace. Whole-process times include Ray's
start-up on the peer's side and mpiclip's imports and data reading on ours.

Reference (issue 31, measured on this 2-core machine): the notebook's loop 2x slower than mpiclip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _peer
import numpy as np

REPOSITORY = "https://github.com/konstmish/asynchronous_sgd"
COMMIT = "98ef4aa395ac58c0b5976b39daf6e864ddc55de8"
REQUIREMENTS = [["ray==2.60.0", "numpy==2.4.6", "psutil", "seaborn==0.13.2", "matplotlib"]]
TOLERANCE = 3.0
BATCH = 256  # the notebook's minibatch (its parameters cell, checked at run time), given to mpiclip's side
# the notebook's cells the loop needs, each found by what it defines (in this order)
CELLS = {"imports": "import ray", "server": "class ParameterServer", "worker": "class DataWorker",
         "evaluate": "def evaluate(", "run": "def run(", "parameters": "n_data = 10000"}

DRIVER = r'''
import json, sys, time
spec = json.load(open(sys.argv[1]))
for name in ("imports", "parameters"):
    exec(spec["cells"][name], globals())
if spec["data"]:  # the data only, for mpiclip's side
    np.savez(spec["data"], X=A, y=b)
    sys.exit(0)
num_workers, iterations, it_check = spec["workers"], spec["iterations"], spec["it_check"]
for name in ("server", "worker", "evaluate", "run"):
    exec(spec["cells"][name], globals())
ray.init(include_dashboard=False, log_to_driver=False)
start = time.perf_counter()
its, ts, losses, delays = run(seeds, num_workers, lr=spec["lr"], lr_decay=0, iterations=iterations, asynchronous=True,
                              delay_adaptive=False, it_check=it_check, batch_size=batch_size, one_bad_worker=False)
loop = time.perf_counter() - start
x_opt, _, _, _ = np.linalg.lstsq(A, b, rcond=None)
json.dump({"loop": loop, "its": its.tolist(), "losses": losses.tolist(), "f_min": float(evaluate(x_opt)),
           "mean_delay": float(np.mean(delays)), "gradients": int(len(delays))}, open(spec["out"], "w"))
'''


def notebook_cells(tree: str) -> dict:
    """The notebook's cells that the loop needs, by name, as they are in the file."""
    with open(os.path.join(tree, "code.ipynb")) as f:
        cells = ["".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    found = {}
    for name, marker in {**CELLS, "batch": f"batch_size = {BATCH}"}.items():
        hits = [c for c in cells if marker in c]
        if len(hits) != 1:
            raise SystemExit(f"code.ipynb: {len(hits)} cells hold {marker!r} (expected one): not the notebook of {COMMIT[:7]}")
        found[name] = hits[0]
    del found["batch"]  # only checked: mpiclip's side takes the same minibatch size
    return found


def main() -> int:
    ap = _peer.parser(__doc__)
    ap.add_argument("--source", default=REPOSITORY, help="where to `git clone` the notebook's repository from: its "
                    "address (default: %(default)s) or a local clone; checked out at " + COMMIT[:7])
    ap.add_argument("--workers", type=int, default=40, help="workers (Ray actors; mpiclip's n) (default: %(default)s)")
    ap.add_argument("--iterations", type=int, default=50,
                    help="the notebook's `iterations`: iterations × workers gradients (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=0.43, help="the constant step (the notebook's tuned ASGD lr)")
    ap.add_argument("--it-check", type=int, default=40, help="updates between kept iterates (default: %(default)s)")
    args = _peer.parse(ap, "workers", "iterations", "it_check", positive=("lr",))
    venv = _peer.Venv(args.venv_root, "asgd", REQUIREMENTS, args.python)
    python = venv.ensure()
    tree = _peer.source_tree(args.source, args.venv_root, "asynchronous_sgd", COMMIT)
    cells = notebook_cells(tree)
    work = _peer.work_folder("asgd", args.keep)
    env = _peer.environment(MPICLIP_CACHE=os.path.join(work, "cache"))
    driver = os.path.join(work, "notebook_loop.py")
    with open(driver, "w") as f:
        f.write(DRIVER)
    peer_out, data = os.path.join(work, "peer.json"), os.path.join(work, "notebook-lsq.npz")

    def spec(path: str, npz: str) -> str:
        with open(path, "w") as f:
            json.dump({"cells": cells, "workers": args.workers, "iterations": args.iterations, "lr": args.lr,
                       "it_check": args.it_check, "out": peer_out, "data": npz}, f)
        return path

    # the data, once, by the notebook's own parameters cell (the timed runs make it again, as the notebook does)
    subprocess.run([python, driver, spec(os.path.join(work, "data.json"), data)], cwd=work, env=env, check=True)
    peer = _peer.Side("asynchronous-SGD notebook (Ray)", [python, driver, spec(os.path.join(work, "spec.json"), "")],
                      work, env, loop_seconds=lambda i: _json(peer_out)["loop"])
    trace = os.path.join(work, "ours.h5")
    updates = args.iterations * args.workers
    sets = {"data": f"{{source='npz', path={data!r}, labels='raw'}}", "problem": "{name='least_squares'}",
            "compressor": "{name='identity'}", "method": "{name='asgd'}", "run.n_workers": args.workers,
            "run.rounds": updates, "run.eval_every": args.it_check, "run.x0": "'zeros'",
            "stepsize": f"{{rule='constant', value={args.lr}}}", "async.data": "'homogeneous'",
            "async.oracle": "'minibatch'", "async.batch_size": BATCH, "async.compute_time": "'exponential'",
            "output.path": repr(trace), "output.exists": "'overwrite'"}
    cmd = _peer.mpiclip_cmd(1) + ["run", "ef21-libsvm", "-q"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    ours = _peer.Side("mpiclip simulated ASGD, 1 rank", cmd, work, env, loop_seconds=lambda i: _peer.trace_wall(trace))
    loads = [_peer.load()]
    _peer.alternate([peer, ours], args.repeat)
    loads.append(_peer.load())
    r = _peer.row(f"asgd-lsq: notebook loop vs mpiclip, {args.workers} workers, {updates} gradients", peer, ours,
                  agreement(_json(peer_out), trace), _peer.section(__doc__, "Not like for like"),
                  {"peer": {**venv.versions(["ray", "numpy"]), "commit": COMMIT}, "ours": _peer.ours_versions()},
                  args.repeat, loads)
    _peer.write_row(args.json, r)
    _peer.print_row(r)
    return 0


def agreement(peer: dict, trace_path: str) -> dict:
    import h5py

    from mpiclip.trace import load_trace

    tr = load_trace(trace_path)
    # the notebook keeps x after update it at it = 0, it_check, ...: its last is after its[-1] + 1 updates; mpiclip's
    # row t is x^t after t updates: the row at its[-1] (one update apart, nothing next to the noise)
    last = peer["its"][-1]
    at = np.flatnonzero(np.asarray(tr.rounds) == last)
    if not len(at):
        raise SystemExit(f"{trace_path}: no row at update {last} to compare with the notebook's last iterate")
    ours_gap = float(tr.loss[at[0]]) - peer["f_min"]
    peer_gap = peer["losses"][-1] - peer["f_min"]
    with h5py.File(trace_path, "r") as f:
        delays = f["events"]["delay"][()] if "events" in f else None
    factor = max(peer_gap / ours_gap, ours_gap / peer_gap) if peer_gap > 0 and ours_gap > 0 else float("inf")
    ok = bool(factor <= TOLERANCE)
    ours_delay = float(np.mean(delays)) if delays is not None else None
    verdict = (f"{'agrees' if ok else 'DIFFERS'} statistically (not comparable to machine precision: other minibatch "
               f"streams and delays): f(x^T) − f* = {peer_gap:.3e} (notebook) and {ours_gap:.3e} (mpiclip) after "
               f"{last + 1} and {last} updates, a factor {factor:.2f} apart (tolerance {TOLERANCE:g}); mean delay "
               f"{peer['mean_delay']:.1f} (notebook, real Ray scheduling) and "
               f"{'?' if ours_delay is None else f'{ours_delay:.1f}'} (mpiclip, simulated)")
    return {"verdict": verdict, "ok": ok, "quantity": "f - f*", "peer_gap": peer_gap, "ours_gap": ours_gap,
            "factor": factor, "tolerance": TOLERANCE, "peer_mean_delay": peer["mean_delay"], "ours_mean_delay": ours_delay}


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    sys.exit(_peer.main_of(main))
