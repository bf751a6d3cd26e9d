"""Opacus DP-SGD against mpiclip's ``dp_sgd`` on the same logistic regression: a9a, Poisson lots, per-example
clipping, the same noise multiplier, step and number of steps; ε from both accountants, final losses compared
statistically.

    python benchmarks/peers/peer_opacus.py [--data a9a.txt] [--steps 300] [--sample-rate 0.01] [--repeat 3]
                                           [--venv-root ~/.cache/mpiclip-peers] [--json results/peers.json]

The peer: Opacus (``PrivacyEngine(accountant="rdp").make_private`` with ``poisson_sampling=True``) on CPU torch
2.13.0 in a virtual environment of its own, training ``nn.Linear(123, 1, bias=False)`` (float64, from zeros) with
plain SGD on the per-example loss log(1 + exp(−y aᵀx)), y ∈ {−1, +1}: lots drawn with probability q per record
(the data loader's batch size N·q, so Opacus's sample rate is q), each example's gradient clipped to norm C,
N(0, (zC)² I) added to the sum, divided by the expected lot size, x ← x − γ·that. A small Python program in that
environment runs it; the rows and labels are mpiclip's own (its LibSVM reader, labels ±1), handed over as .npy
files made once, untimed. Its loop-only time is the training loop's (the ``make_private`` set-up and the final
evaluation left out).

Ours: ``mpiclip run`` with ``method = {name = "dp_sgd", sampling = "poisson", relation = "add_remove_record"}``,
``batch = q``, ``tau = C``, ``sigma = z·C`` (σ is on the sum), one worker (central DP, as Opacus), x^0 = 0,
``problem.regularizer = "none"`` (a regulariser outside the model's layers would get no per-example gradient
in Opacus), a constant step γ, ``run.eval_every = steps`` (f at x^0 and x^T only, as the peer evaluates once),
one process. Loop-only time: the trace's ``wall_seconds``.

Agreement: ε after T steps from Opacus's RDP accountant and from mpiclip's (``method.accountant = "rdp"``) must
agree to a relative ``EPS_TOLERANCE`` (both compute the RDP of the Poisson-subsampled Gaussian, on different
grids of orders). The noise differs (other generators), so the final full-data losses are compared
statistically: run i of each side uses seed i, and the mean final losses must differ by at most 3 standard
errors of the difference plus ``LOSS_TOLERANCE`` relative (Opacus divides by int(q·N) = 325, mpiclip by q·N = 325.61).

Not like for like: Opacus computes per-sample gradients by torch hooks on the layer and draws its lots and
noise from torch's generators; mpiclip computes them in closed form with numpy on a CSR matrix and draws from
its seeded streams; Opacus divides the noisy sum by int(q·N), mpiclip by q·N; mpiclip also records the
clipped share, the mean norm before clipping and ε in an HDF5 trace. Whole processes include importing torch
and Opacus on one side and mpiclip, numpy and h5py on the other, and reading the data (.npy on the peer's side,
the parsed-data cache on ours).

Reference (issue 31, measured on this 2-core machine): Opacus 2.5–3x slower than mpiclip.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import _peer
import numpy as np

from mpiclip.errors import InputError

REQUIREMENTS = [["torch==2.13.0"], ["opacus==1.6.0", "numpy"]]
EPS_TOLERANCE, LOSS_TOLERANCE = 0.02, 0.01

DRIVER = r'''
import json, sys, time, warnings
import numpy as np
import torch
from opacus import PrivacyEngine

warnings.filterwarnings("ignore")
spec = json.load(open(sys.argv[1]))
torch.set_num_threads(1)
torch.manual_seed(spec["seed"])
X = torch.from_numpy(np.load(spec["X"]))
y = torch.from_numpy(np.load(spec["y"]))
N, d = X.shape
model = torch.nn.Linear(d, 1, bias=False, dtype=torch.float64)
torch.nn.init.zeros_(model.weight)
optimizer = torch.optim.SGD(model.parameters(), lr=spec["lr"])
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=spec["batch_size"])
engine = PrivacyEngine(accountant="rdp")
model, optimizer, loader = engine.make_private(module=model, optimizer=optimizer, data_loader=loader,
                                               noise_multiplier=spec["z"], max_grad_norm=spec["C"], poisson_sampling=True)
start, steps = time.perf_counter(), 0
while steps < spec["steps"]:
    for xb, yb in loader:
        if steps == spec["steps"]:
            break
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-yb * model(xb).squeeze(-1)).mean()
        loss.backward()
        optimizer.step()
        steps += 1
loop = time.perf_counter() - start
w = model._module.weight.detach()[0]
with torch.no_grad():
    f = float(torch.nn.functional.softplus(-y * (X @ w)).mean())
json.dump({"loop": loop, "loss": f, "epsilon": engine.get_epsilon(spec["delta"]), "steps": steps,
           "sample_rate": optimizer.expected_batch_size / N, "expected_batch_size": optimizer.expected_batch_size},
          open(spec["out"], "w"))
'''


def export_data(data: str, work: str) -> tuple[str, str]:
    """a9a's rows (dense float64) and ±1 labels as mpiclip reads them, as .npy files."""
    from mpiclip.data import libsvm

    summary = libsvm.summarize(data, "data.path")
    X, y = libsvm.read_rows(data, "data.path", np.arange(summary.n_rows), summary.n_features)
    paths = os.path.join(work, "X.npy"), os.path.join(work, "y.npy")
    np.save(paths[0], X.toarray())
    np.save(paths[1], np.where(y == y.max(), 1.0, -1.0))
    return paths


def main() -> int:
    ap = _peer.parser(__doc__)
    ap.add_argument("--data", default="a9a.txt", help="found as `mpiclip run` finds it (default: %(default)s)")
    ap.add_argument("--data-dir", default=None, help="a directory to look for --data in (then $MPICLIP_DATA_DIR)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--sample-rate", type=float, default=0.01, help="q: N·q must be close to a whole number of "
                    "records per lot, so that Opacus's 1/ceil(N/batch) is q (default: %(default)s)")
    ap.add_argument("--noise-multiplier", type=float, default=1.0)
    ap.add_argument("--clip", type=float, default=1.0, help="C, the per-example clipping norm")
    ap.add_argument("--lr", type=float, default=0.5)
    args = _peer.parse(ap, "steps", positive=("sample_rate", "noise_multiplier", "clip", "lr"))
    if args.sample_rate > 1:
        raise InputError("--sample-rate", args.sample_rate, "must be in (0, 1]")
    data = _peer.data_file(args.data, "--data", args.data_dir, "--data-dir")
    from mpiclip.data import libsvm

    N = libsvm.summarize(data, "data.path").n_rows
    batch_size = int(np.ceil(N * args.sample_rate))
    if not np.isclose(1 / np.ceil(N / batch_size), args.sample_rate, rtol=1e-9):
        raise InputError("--sample-rate", args.sample_rate, f"Opacus's sample rate would be 1/{int(np.ceil(N / batch_size))}"
                         f" with N = {N} (1/ceil(N/batch)); pick q with N·q just below a whole number")
    venv = _peer.Venv(args.venv_root, "opacus", REQUIREMENTS, args.python)
    python = venv.ensure()
    work = _peer.work_folder("opacus", args.keep)
    env = _peer.environment(MPICLIP_CACHE=os.path.join(work, "cache"))
    X, y = export_data(data, work)
    delta = 1 / N
    driver = os.path.join(work, "opacus_dp_sgd.py")
    with open(driver, "w") as f:
        f.write(DRIVER)
    spec = lambda seed: os.path.join(work, f"spec-{seed}.json")  # noqa: E731
    peer_out = lambda seed: os.path.join(work, f"opacus-{seed}.json")  # noqa: E731
    trace = lambda seed: os.path.join(work, f"ours-{seed}.h5")  # noqa: E731
    for seed in range(args.repeat):  # repeat i runs seed i on both sides
        with open(spec(seed), "w") as f:
            json.dump({"X": X, "y": y, "seed": seed, "lr": args.lr, "batch_size": batch_size, "z": args.noise_multiplier,
                       "C": args.clip, "steps": args.steps, "delta": delta, "out": peer_out(seed)}, f)
    method = (f"{{name='dp_sgd', sampling='poisson', relation='add_remove_record', batch={args.sample_rate}, "
              f"tau={args.clip}, sigma={args.noise_multiplier * args.clip}, delta={delta}, accountant='rdp'}}")

    def ours_cmd(seed: int) -> list:
        sets = {"data.path": repr(data), "run.n_workers": 1, "run.rounds": args.steps, "run.eval_every": args.steps,
                "run.x0": "'zeros'", "run.seed": seed, "problem.regularizer": "'none'", "compressor": "{name='identity'}",
                "method": method, "stepsize": f"{{rule='constant', value={args.lr}}}", "output.path": repr(trace(seed)),
                "output.exists": "'overwrite'"}
        return _peer.mpiclip_cmd(1) + ["run", "ef21-libsvm", "-q"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]

    peer = _peer.Side("Opacus DP-SGD", lambda seed: [python, driver, spec(seed)], work, env,
                      loop_seconds=lambda seed: _json(peer_out(seed))["loop"])
    ours = _peer.Side("mpiclip dp_sgd, 1 rank", ours_cmd, work, env, loop_seconds=lambda seed: _peer.trace_wall(trace(seed)))
    subprocess.run(ours_cmd(0), cwd=work, env=env, check=True, capture_output=True)  # fills the parsed-data cache
    loads = [_peer.load()]
    _peer.alternate([peer, ours], args.repeat)
    loads.append(_peer.load())
    outcome = agreement([_json(peer_out(i)) for i in range(args.repeat)], [trace(i) for i in range(args.repeat)])
    r = _peer.row(f"dp-sgd-a9a: Opacus vs mpiclip, {args.steps} steps, q = {args.sample_rate}, z = {args.noise_multiplier}",
                  peer, ours, outcome, _peer.section(__doc__, "Not like for like"),
                  {"peer": venv.versions(["torch", "opacus", "numpy"]), "ours": _peer.ours_versions()}, args.repeat, loads)
    _peer.write_row(args.json, r)
    _peer.print_row(r)
    return 0


def agreement(peers: list[dict], traces: list[str]) -> dict:
    from mpiclip.trace import load_trace

    ours = [load_trace(t) for t in traces]
    ours_loss = [float(tr.loss[-1]) for tr in ours]
    ours_eps = float(np.asarray(ours[0].metrics["epsilon"])[-1])
    peer_loss, peer_eps = [p["loss"] for p in peers], float(peers[0]["epsilon"])
    eps_rel = abs(peer_eps - ours_eps) / ours_eps
    mean_p, mean_o = statistics.fmean(peer_loss), statistics.fmean(ours_loss)
    spread = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    stderr = (spread(peer_loss) ** 2 / len(peer_loss) + spread(ours_loss) ** 2 / len(ours_loss)) ** 0.5
    allowed = 3 * stderr + LOSS_TOLERANCE * abs(mean_o)
    ok = bool(eps_rel <= EPS_TOLERANCE and abs(mean_p - mean_o) <= allowed)
    verdict = (f"{'agrees' if ok else 'DIFFERS'}: ε = {peer_eps:.4f} (Opacus RDP) and {ours_eps:.4f} (mpiclip RDP), "
               f"relative difference {eps_rel:.2e} (tolerance {EPS_TOLERANCE:g}); final loss {mean_p:.5f} ± "
               f"{spread(peer_loss):.5f} (Opacus) and {mean_o:.5f} ± {spread(ours_loss):.5f} (mpiclip) over "
               f"{len(peer_loss)} seeds, difference {abs(mean_p - mean_o):.2e} (allowed {allowed:.2e}: 3 standard "
               f"errors + {LOSS_TOLERANCE:g} relative; noise and lots are drawn differently)")
    return {"verdict": verdict, "ok": ok, "epsilon": [peer_eps, ours_eps], "epsilon_rel_diff": eps_rel,
            "loss_peer": peer_loss, "loss_ours": ours_loss, "allowed": allowed}


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    sys.exit(_peer.main_of(main))
