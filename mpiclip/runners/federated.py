"""Federated rounds: client sampling, local steps on the clients' ranks, one ordered aggregation, a server
optimizer (docs/algorithms.md §8; the protocol in :mod:`mpiclip.federation`, the methods in
:mod:`mpiclip.methods.gradalign`).

``advance`` runs round t. Every rank draws the same P clients; at a recorded round it first evaluates x^t
exactly over all n clients (f, ∇f, the accuracies and test metrics, the gradient variance
(1/n)Σ‖∇f_i − ∇f‖², and the code's ‖ĝ − g_i‖ for the sampled clients; metric-only traffic, not counted).
Then:

1. aligning methods (FedGA, GradAlign, fresh SCAFFOLD, large-batch SGD): each sampled client's g_i at x^t,
   and ĝ = Σ N_i g_i / Σ N_i by one ordered sum: a communication round (the code's extra all-reduce);
2. local methods: each sampled client's local steps on the rank that holds it, its update x^t − y_i (or
   its model y_i) compressed if a [compressor] is set, and one ordered sum of the weighted payloads: the
   second communication round;
3. the replicated server optimizer steps on the pseudo-gradient D = x^t − x̄ (large-batch SGD: D = η ĝ).

Bits: every sampled client sends 32·d per round it takes part in (its compressed size for a compressed
update; SCAFFOLD-stored twice), and the server sends 32·d to each sampled client per round (/bits/down is
the server's total). Unsampled clients send nothing. Sums run over all n workers in worker order (zeros
for the unsampled), so a run is bit-identical on any number of ranks.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Optional

import numpy as np

from mpiclip.compressors import ENCODINGS
from mpiclip.compressors.message import dense_bits
from mpiclip.errors import InputError
from mpiclip.federation import FederatedParams, ServerOptState, sample_clients, server_optimizer
from mpiclip.methods.base import row_sq_norms
from mpiclip.methods.gradalign import Clients, FedServerState, LocalRound
from mpiclip.rng import COMPRESSOR, WorkerRandomness
from mpiclip.runners.base import RUNNERS, Ledger, Runner, RunState, Table, check_ranks, end_status, exact_row


class FedServer(NamedTuple):
    optimizer: ServerOptState
    method: FedServerState


class ClientView:
    """One local client's gradients, as the methods see them (:class:`~mpiclip.methods.gradalign.ClientData`)."""

    __slots__ = ("problem", "local", "rows")

    def __init__(self, problem: Any, local: int):
        self.problem, self.local, self.rows = problem, local, int(problem.local_sizes[local])

    def grad(self, y: np.ndarray, rows: Optional[np.ndarray] = None, decay: bool = True) -> np.ndarray:
        return self.problem.worker_grad(y, self.local, rows, decay)


CLIENTS = Table("clients", units="client id")  # one row per round: the clients sampled


@RUNNERS.register("federated")
class FederatedRunner(Runner):
    """Rounds with P sampled clients, K local steps each, and a server optimizer on the averaged models."""

    section = "federated"
    params = FederatedParams
    phases = ("alignment", "local", "communication", "update", "evaluation", "trace")
    scalars = ("grad_variance", "comm_rounds")
    tables = (CLIENTS,)

    @classmethod
    def check_section(cls, params, n_workers):
        params.validate(n_workers)

    @classmethod
    def table_width(cls, config, table):
        return config.section("federated").participants(config.run.n_workers)

    @classmethod
    def check(cls, config, method, problem_info):
        fed = config.section("federated")
        compressed = config.compressor.name != "identity"
        if compressed and not method.local:
            raise InputError("compressor.name", config.compressor.name, f"compresses the clients' updates, and method "
                             f"{config.method.name!r} sends only its (dense) gradient round")
        if compressed and fed.uplink == "model":
            raise InputError("federated.uplink", "model", "cannot be compressed; set uplink = 'update' to compress "
                             "the clients' updates")
        if fed.batch_size and not problem_info["samples"]:
            raise InputError("federated.batch_size", fed.batch_size, f"needs a problem made of samples, not "
                             f"{config.problem.name!r} (use 0: full local gradients)")

    def __init__(self, setup):
        super().__init__(setup)
        self.fed = setup.config.section("federated")
        self.optimizer = server_optimizer(self.fed)
        self.views = [ClientView(setup.problem, i) for i in range(len(setup.worker_ids))]
        self.dense = dense_bits(len(setup.x0))

    def start(self, state: Optional[RunState]) -> RunState:
        s = self.setup
        if state is None:
            clients, method_server = s.method.initial_state(s.x0, len(s.worker_ids))
            server = FedServer(self.optimizer.init(s.x0), method_server)
            state = RunState(0, s.x0.copy(), clients, server, Ledger.empty(len(s.worker_ids)), extra={"comm_rounds": 0})
        self.started = time.perf_counter() - state.elapsed
        return state

    def advance(self, state: RunState) -> RunState:
        s, run, fed, method = self.setup, self.setup.config.run, self.fed, self.setup.method
        t, x, n = state.t, state.x, run.n_workers
        clock, spent = time.perf_counter, s.timing
        participants = fed.participants(n)
        chosen = sample_clients(run.seed, t, n, participants)
        local = np.flatnonzero(np.isin(s.worker_ids, chosen))
        metrics: dict = {}
        record = t % run.eval_every == 0 or t == run.rounds
        if record and not self._evaluate(state, local, metrics):
            return state
        if t and t % run.check_every == 0:
            check_ranks(self.setup, state, record)
            if s.control.stop:
                return state
        s.recorder.add("clients", chosen)
        scale = fed.lr_scale(t)
        rnd = LocalRound(t, run.seed, method.gamma * scale, scale, fed.batch_size, fed.clip, s.problem.weight_decay)
        up, down = np.zeros((len(s.worker_ids), len(ENCODINGS))), np.zeros(len(ENCODINGS))
        g_i, g_hat = {}, None
        if method.aligns:
            t0 = clock()
            g_i, g_hat = self._align(x, local)
            up[local] += self.dense
            down += participants * self.dense
            state.extra["comm_rounds"] += 1
            spent["alignment"] += clock() - t0
        extra_mean = None
        if method.local:
            pseudo_grad, extra_mean = self._local_round(state, local, rnd, g_i, g_hat, up, metrics)
            down += participants * self.dense * (2 if method.control_uplink else 1)
            state.extra["comm_rounds"] += 1
        else:
            pseudo_grad = rnd.lr * g_hat
        t0 = clock()
        optimizer, state.x = self.optimizer.step(state.server.optimizer, x, pseudo_grad)
        state.server = FedServer(optimizer, method.server_update(state.server.method, extra_mean))
        finite = bool(np.isfinite(state.x).all())
        t1 = clock()
        spent["update"] += t1 - t0
        state.ledger.count(up, down)
        if metrics:
            s.recorder.set_metrics(metrics)
            if s.recorder.full or s.control.flush:
                s.recorder.flush(state.ledger)
                s.control.flushed()
        spent["trace"] += clock() - t1
        state.t = t + 1
        if not finite:
            state.status = f"failed: diverged at round {state.t} (x is not finite)"
        return state

    def _align(self, x: np.ndarray, local: np.ndarray) -> tuple[dict, np.ndarray]:
        """The sampled local clients' g_i at x^t and ĝ = Σ N_i g_i / Σ N_i over all sampled clients."""
        s, d = self.setup, len(x)
        rows = np.zeros((len(s.worker_ids), d + 1))
        fg_rows = getattr(s.method, "fg_rows", 0)
        g_i = {}
        for i in local:
            view = self.views[i]
            subset = np.arange(fg_rows) if 0 < fg_rows < view.rows else None
            g_i[i] = view.grad(x, subset)
            count = view.rows if subset is None else fg_rows
            rows[i, :d] = count * g_i[i]
            rows[i, d] = count
        total = s.comm.sum_rows(rows, s.config.run.deterministic)
        return g_i, total[:d] / total[d]

    def _local_round(self, state: RunState, local: np.ndarray, rnd: LocalRound, g_i: dict,
                     g_hat: Optional[np.ndarray], up: np.ndarray, metrics: dict) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """The sampled clients' local steps and the aggregation of their payloads: (D, (1/n)Σ extras)."""
        s, fed, method, run = self.setup, self.fed, self.setup.method, self.setup.config.run
        x, d, n = state.x, len(state.x), run.n_workers
        clock = time.perf_counter
        t0 = clock()
        controls = state.workers.control.copy() if method.control_uplink else state.workers.control
        models = np.empty((len(local), d))
        extras = np.empty((len(local), d if method.control_uplink else 0))
        for j, i in enumerate(local):
            result = method.client_update(x, controls[i], state.server.method, self.views[i], int(s.worker_ids[i]),
                                          rnd, g_i.get(i), g_hat)
            models[j] = result.model
            if result.control is not None:
                controls[i] = result.control
                extras[j] = result.extra
        state.workers = Clients(controls)
        updates = x - models
        if fed.update_clip:
            norms = np.sqrt(row_sq_norms(updates))
            over = norms > fed.update_clip
            updates[over] *= (fed.update_clip / norms[over])[:, None]
            models[over] = x - updates[over]
        if "grad_gap" in metrics:
            norms = np.full(len(s.worker_ids), np.nan)
            norms[local] = np.sqrt(row_sq_norms(updates))
            metrics["update_norm"] = norms
        bits = np.broadcast_to(self.dense, (len(local), len(self.dense)))
        if s.config.compressor.name != "identity":
            msg = method.compressor(updates, WorkerRandomness(run.seed, COMPRESSOR, s.worker_ids[local], rnd.t))
            updates, bits = msg.dense(updates.shape), msg.bits
        payload = updates if fed.uplink == "update" else models  # the models themselves, as the code averages them
        weight = s.problem.local_sizes[local].astype(np.float64) if fed.weighting == "samples" else np.ones(len(local))
        rows = np.zeros((len(s.worker_ids), d + 1 + extras.shape[1]))
        rows[local, :d] = payload if fed.weighting == "uniform" else weight[:, None] * payload
        rows[local, d] = weight
        rows[local, d + 1 :] = extras
        up[local] += bits
        if method.control_uplink:
            up[local] += self.dense
        t1 = clock()
        total = s.comm.sum_rows(rows, run.deterministic)
        t2 = clock()
        s.timing["local"] += t1 - t0
        s.timing["communication"] += t2 - t1
        mean = total[:d] / total[d]
        pseudo_grad = mean if fed.uplink == "update" else x - mean
        return pseudo_grad, (total[d + 1 :] / n if method.control_uplink else None)

    def _evaluate(self, state: RunState, local: np.ndarray, metrics: dict) -> bool:
        """Record row t over all clients, its per-client metrics into ``metrics``; False if the loop ends here."""
        s, run, t = self.setup, self.setup.config.run, state.t
        t0 = time.perf_counter()
        losses, grads = s.problem.loss_grads(state.x, with_loss=True)
        weight = np.zeros(len(s.worker_ids))
        weight[local] = s.problem.local_sizes[local]
        row = exact_row(s, state, grads, losses, np.hstack([grads * weight[:, None], weight[:, None]]))
        status = end_status(run, t, row)
        if status == "running" and s.control.stop:
            return False  # round t is recorded when the run resumes
        spread = s.comm.sum_rows(row_sq_norms(grads - row.grad)[:, None], run.deterministic)[0] / run.n_workers
        d = len(state.x)
        g_hat = row.extra[:d] / row.extra[d]
        gap = np.full(len(s.worker_ids), np.nan)
        gap[local] = np.sqrt(row_sq_norms(grads[local] - g_hat))
        s.recorder.add_row(state.ledger, t, t0 - self.started, row.loss, row.grad_norm_sq,
                           {"grad_variance": spread, "comm_rounds": state.extra["comm_rounds"], **row.scores})
        accuracy = row.scores.get("test_accuracy", row.scores.get("train_accuracy"))
        self.recorded(state, row, status, t0, f"  accuracy = {accuracy:.4f}" if accuracy is not None else "")
        metrics.update(grad_gap=gap, grad_gap_rel=gap / np.sqrt(g_hat @ g_hat))
        if status != "running":
            s.recorder.set_metrics(metrics)
            return False
        return True

    def summary(self, state: RunState) -> dict:
        fed = self.fed
        return {"clients_per_round": fed.participants(self.setup.config.run.n_workers),
                "comm_rounds": int(state.extra["comm_rounds"]), "server_optimizer": fed.server_optimizer}
