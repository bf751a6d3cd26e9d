"""Flower's simulation of FedAvg against mpiclip's federated runner: NumPy clients training softmax regression on
scikit-learn's digits, the same clients sampled each round, the same local steps on the same minibatches.

    python benchmarks/peers/peer_flower.py [--rounds 50] [--repeat 3]
                                           [--venv-root ~/.cache/mpiclip-peers] [--json results/peers.json]

The setting is mpiclip's ``fed-digits`` preset with ``method.name = "fedavg"``: 10 clients holding one class
each (a fifth of the samples held out), multinomial logistic regression (d = 650, weight decay λ = 1e-3), 5 of
10 clients per round, K = 5 local SGD steps on minibatches of 50 drawn without replacement, local step 0.5, the
server taking the uniform mean of the clients' models; every round evaluated.

Ours: ``mpiclip run fed-digits`` on one process, whole, with ``run.eval_every = 1``. Its trace says which clients
were sampled in each round (the ``/clients`` table), its x^0 (``/x0``, torch's ``nn.Linear`` initialisation) and
f(x^t) of every round (``/loss``: the mean over the 10 clients of their mean cross-entropy, plus (λ/2)‖x‖²).

The peer: ``flwr[simulation]`` 1.12 (its Ray simulation engine, ``flwr.simulation.start_simulation``) in a
virtual environment of its own, with a ``NumPyClient`` doing the same local steps in plain numpy and a
``FedAvg`` strategy whose ``configure_fit`` hands the round's sampled clients of mpiclip's trace to the
simulated nodes (node j of the round trains client ``clients[t, j]``'s data: the node's own cid does not choose
the data, so Flower's scheduling of the nodes cannot change what is computed), ``fit`` returns one example
each (a uniform mean, as mpiclip's default ``weighting``), and ``evaluate_fn`` computes f(x^t) as mpiclip
defines it. The clients' data (mpiclip's own split), the minibatches' rows (mpiclip's own draws,
``gradalign.local_batch``), the sampled clients and x^0 are handed over in one .npz file made once, untimed.
Loop-only times: the peer's from the first round's ``configure_fit`` to the last evaluation (Ray's start and
stop and the simulation's set-up left out); ours, the trace's ``wall_seconds``.

Agreement: the arithmetic is the same up to the order of the sum over the round's clients (Flower adds the
models in the order they arrive from Ray, mpiclip in client order) and the server step (Flower's weighted
average against mpiclip's x − (x − x̄)), so f(x^t) must agree to a relative ``TOLERANCE`` in every round.

Not like for like: Flower runs the simulation through Ray (the nodes' ``fit`` calls on a pool of Ray actor
processes, as many as the CPUs allow at ``client_resources = {"num_cpus": 1}``, the models serialised between
them and the server's process), mpiclip runs the 10 clients in one
process with exact evaluation of every round, test loss and accuracy, per-client diagnostics (the alignment
gap, update norms) and bits under four encodings, written to an HDF5 trace; Flower keeps the losses in memory.
Whole processes include Ray's start and stop on the peer's side.

Reference (issue 31, measured on this 2-core machine): Flower's simulation 10–17x slower than mpiclip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _peer
import numpy as np

REQUIREMENTS = [["flwr[simulation]==1.12.0"]]
TOLERANCE = 1e-10
PRESET_SETS = {"method": "{name='fedavg'}", "run.eval_every": 1}

DRIVER = r'''
import json, sys, time, warnings, logging
import numpy as np
import flwr as fl
from flwr.common import FitIns, ndarrays_to_parameters

warnings.filterwarnings("ignore")
spec = json.load(open(sys.argv[1]))
D = np.load(spec["data"])
offsets, X, Y, clients, batches, x0 = D["offsets"], D["X"], D["y"], D["clients"], D["batches"], D["x0"]
n, (R, P) = len(offsets) - 1, clients.shape
K, lr, lam, classes = spec["local_steps"], spec["lr"], spec["lam"], spec["classes"]
features = X.shape[1]


def loss_grad(x, A, y):
    """Mean cross-entropy of softmax(A W + b) and its gradient, plus (lam/2)|x|^2 (W row-major, then b)."""
    W, b = x[: features * classes].reshape(features, classes), x[features * classes:]
    z = A @ W + b
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(len(y)), y]))
    delta = e / s
    delta[np.arange(len(y)), y] -= 1.0
    delta /= len(y)
    g = np.concatenate([(A.T @ delta).ravel(), delta.sum(axis=0)])
    return loss + 0.5 * lam * float(x @ x), g + lam * x


def rows(i):
    return X[offsets[i]:offsets[i + 1]], Y[offsets[i]:offsets[i + 1]]


class DigitsClient(fl.client.NumPyClient):
    def fit(self, parameters, config):
        t, j = int(config["round"]), int(config["slot"])
        A, y = rows(int(config["client"]))
        x = parameters[0]
        for k in range(K):
            picked = batches[t, j, k]
            x = x - lr * loss_grad(x, A[picked], y[picked])[1]
        return [x], 1, {}


losses, marks = {}, {}


def evaluate(server_round, parameters, config):
    x = parameters[0]
    losses[server_round] = float(np.mean([loss_grad(x, *rows(i))[0] for i in range(n)]))
    marks["end"] = time.perf_counter()
    return losses[server_round], {}


class SampledFedAvg(fl.server.strategy.FedAvg):
    """FedAvg whose round t trains the clients mpiclip sampled in round t, one per simulated node."""

    def configure_fit(self, server_round, parameters, client_manager):
        marks.setdefault("start", time.perf_counter())
        t = server_round - 1
        nodes = sorted(client_manager.all().values(), key=lambda c: c.cid)[:P]
        return [(node, FitIns(parameters, {"round": t, "slot": j, "client": int(clients[t, j])}))
                for j, node in enumerate(nodes)]


strategy = SampledFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=P, min_available_clients=n,
                         evaluate_fn=evaluate, initial_parameters=ndarrays_to_parameters([x0]))
logging.getLogger("flwr").setLevel(logging.WARNING)
fl.simulation.start_simulation(client_fn=lambda cid: DigitsClient().to_client(), num_clients=n,
                               config=fl.server.ServerConfig(num_rounds=R), strategy=strategy,
                               client_resources={"num_cpus": 1},
                               ray_init_args={"include_dashboard": False, "log_to_driver": False})
json.dump({"losses": [losses[t] for t in range(R + 1)], "loop": marks["end"] - marks["start"]}, open(spec["out"], "w"))
'''


def export(trace: str, out: str, rounds: int) -> dict:
    """The clients' data as mpiclip splits it, the rows of every local minibatch, the sampled clients and x^0 of
    ``trace``, into ``out`` (.npz); the settings the peer needs."""
    import h5py

    from mpiclip import config as cfg
    from mpiclip import session
    from mpiclip.comm import make_comm
    from mpiclip.methods.gradalign import local_batch
    from mpiclip.runners.federated import LocalRound

    sets = {**PRESET_SETS, "run.rounds": rounds, "output.path": repr(out + ".h5")}
    (config,) = cfg.load("fed-digits", [f"{k}={v}" for k, v in sets.items()])
    (prepared,) = session.prepare_all([config], make_comm(), log=lambda *a: None)
    prepared.build(with_trace=False)  # the problem (the clients' rows) and γ, no trace
    problem, fed = prepared.problem, config.section("federated")
    with h5py.File(trace, "r") as f:
        clients, x0 = f["clients"][()], f["x0"][()]
    sizes = np.diff(problem.offsets)
    K, B = prepared.method.local_steps, fed.batch_size
    batches = np.empty((*clients.shape, K, B), dtype=np.int64)
    for t, chosen in enumerate(clients):
        rnd = LocalRound(t, config.run.seed, prepared.method.gamma, 1.0, B, 0.0, problem.weight_decay)
        for j, i in enumerate(chosen):
            for k in range(K):
                picked = local_batch(rnd, int(i), k, int(sizes[i]))
                if picked is None or len(picked) != B:
                    raise SystemExit(f"client {i} has {sizes[i]} rows: a minibatch of {B} is not a strict subset")
                batches[t, j, k] = picked
    X = problem.X.toarray() if hasattr(problem.X, "toarray") else np.asarray(problem.X)
    np.savez(out, offsets=problem.offsets, X=X, y=problem.y, clients=clients, batches=batches, x0=x0)
    return {"local_steps": K, "lr": prepared.method.gamma, "lam": problem.lam, "classes": problem.net.classes}


def main() -> int:
    ap = _peer.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=50)
    args = _peer.parse(ap, "rounds")
    venv = _peer.Venv(args.venv_root, "flower", REQUIREMENTS, args.python)
    python = venv.ensure()
    work = _peer.work_folder("flower", args.keep)
    env = _peer.environment(MPICLIP_CACHE=os.path.join(work, "cache"), RAY_DEDUP_LOGS="0")
    trace = os.path.join(work, "ours.h5")
    sets = {**PRESET_SETS, "run.rounds": args.rounds, "output.path": repr(trace), "output.exists": "'overwrite'"}
    ours = _peer.Side("mpiclip FedAvg, 1 rank", _peer.mpiclip_cmd(1) + ["run", "fed-digits", "-q"] +
                      [a for k, v in sets.items() for a in ("--set", f"{k}={v}")], work, env,
                      loop_seconds=lambda i: _peer.trace_wall(trace))
    subprocess.run(ours.command(0), cwd=work, env=env, check=True, capture_output=True)  # the clients to sample
    settings = export(trace, os.path.join(work, "clients.npz"), args.rounds)
    spec, peer_out, driver = (os.path.join(work, f) for f in ("spec.json", "flower.json", "flower_fedavg.py"))
    with open(spec, "w") as f:
        json.dump({**settings, "data": os.path.join(work, "clients.npz"), "out": peer_out}, f)
    with open(driver, "w") as f:
        f.write(DRIVER)
    peer = _peer.Side("Flower simulation (Ray)", [python, driver, spec], work, env,
                      loop_seconds=lambda i: _json(peer_out)["loop"])
    loads = [_peer.load()]
    _peer.alternate([peer, ours], args.repeat)
    loads.append(_peer.load())
    r = _peer.row(f"fedavg-digits: Flower simulation vs mpiclip, {args.rounds} rounds, 5 of 10 clients", peer, ours,
                  agreement(_json(peer_out)["losses"], trace), _peer.section(__doc__, "Not like for like"),
                  {"peer": venv.versions(["flwr", "ray", "numpy"]), "ours": _peer.ours_versions()}, args.repeat, loads)
    _peer.write_row(args.json, r)
    _peer.print_row(r)
    return 0


def agreement(peer_losses: list, trace: str) -> dict:
    from mpiclip.trace import load_trace

    ours = np.asarray(load_trace(trace).loss)
    peer = np.asarray(peer_losses)
    k = min(len(ours), len(peer))
    rel = float(np.max(np.abs(ours[:k] - peer[:k]) / np.abs(ours[:k])))
    ok = bool(len(ours) == len(peer) and rel <= TOLERANCE)
    verdict = (f"{'agrees' if ok else 'DIFFERS'}: f(x^t), t = 0..{k - 1}: max relative difference {rel:.2e} "
               f"(tolerance {TOLERANCE:g}: machine precision, the sums' order aside); final {peer[k - 1]:.10g} (Flower) "
               f"and {ours[k - 1]:.10g} (mpiclip); lengths {len(peer)} and {len(ours)}")
    return {"verdict": verdict, "ok": ok, "quantity": "loss", "max_rel": rel, "final": [float(peer[k - 1]), float(ours[k - 1])]}


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    sys.exit(_peer.main_of(main))
