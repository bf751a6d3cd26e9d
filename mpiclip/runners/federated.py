"""Federated rounds as a pipeline (docs/algorithms.md §8), and the protocol of the methods it drives.

``advance`` runs round t. Every rank draws the same P clients; at a recorded round it first evaluates x^t
exactly over all n clients (f, ∇f, the accuracies and test metrics, the gradient variance
(1/n)Σ‖∇f_i − ∇f‖², and the code's ‖ĝ − g_i‖ for the sampled clients; metric-only traffic, not counted:
one ordered sum, the gradient variance riding as a column on the round's first sum below).
Then, one step after the other:

1. alignment, for the methods that ask for it (FedGA, GradAlign, fresh SCAFFOLD, large-batch SGD): each
   sampled client's gradient g_i at x^t and ĝ = Σ N_i g_i / Σ N_i by one ordered sum: a communication round
   (the code's extra all-reduce);
2. clients, for the methods with payloads: each sampled client's ``client_update`` on the rank that holds it
   returns named payloads, its model y_i and whatever the method sends beside it (SCAFFOLD II's Δc_i). The
   model goes through the round's per-client steps (:func:`client_steps`: the update x^t − y_i clipped to
   ``update_clip``, compressed by the [compressor], sent as the update or as the model, weighted), the other
   payloads as they are; one ordered sum of everything: the second communication round;
3. the method's ``server_step`` turns the sums into its state and the pseudo-gradient D (x^t − x̄; large-batch
   SGD: η ĝ); the server optimizer steps on D.

So a new federated method (FedDyn, FedNova) is one file: its client update, its payloads and its server step.

Bits: every sampled client sends 32·d per round it takes part in (its compressed size for a compressed
update; one more 32·d per extra payload), and the server sends 32·d per vector it broadcasts to each sampled
client per round (/bits/down is the server's total). Unsampled clients send nothing. Sums run over all n
workers in worker order (zeros for the unsampled), so a run is bit-identical on any number of ranks; only the
sampled clients' rows travel (``Comm.sum_rows_of``: one collective per communication round).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple, Optional, Protocol

import numpy as np

from mpiclip.clipping import clip_rows
from mpiclip.compressors import ENCODINGS
from mpiclip.compressors.message import dense_bits
from mpiclip.errors import InputError
from mpiclip.federation import FederatedParams, ServerOptState, sample_clients, server_optimizer
from mpiclip.rng import COMPRESSOR, WorkerRandomness
from mpiclip.runners.base import RUNNERS, Ledger, Runner, RunState, check_ranks, end_status, exact_row, time_budget
from mpiclip.runners.fedclock import FedClock
from mpiclip.runners.protocol import Method
from mpiclip.runners.tables import CLIENTS
from mpiclip.trace import CLOCK_COLUMNS, DROPPED
from mpiclip.wire import row_sq_norms


# --------------------------------------------------------------------------------------- the protocol
@dataclass(frozen=True)
class LocalRound:
    """What a client's local work needs to know about round t."""

    t: int
    seed: int
    lr: float  # the local learning rate of the round (γ × the schedule's factor)
    scale: float  # the schedule's factor
    batch_size: int  # 0: full local batches
    clip: float  # 0: no clipping of local gradients
    weight_decay: float  # the problem's torch-style λ (added after clipping)


class ClientData(Protocol):
    """One client's gradients (the runner's view of its rows)."""

    rows: int

    def grad(self, y: np.ndarray, rows: Optional[np.ndarray] = None, decay: bool = True) -> np.ndarray: ...


class Alignment(NamedTuple):
    """The alignment step's result for one client: its gradient g_i at x^t and the sampled clients' ĝ."""

    g_i: np.ndarray
    g_hat: np.ndarray


class ClientResult(NamedTuple):
    """One client's local work: its named payloads ("model": y_i, then what it sends beside it) and its new
    state (one row per field of the clients' state; None: unchanged)."""

    payloads: dict
    state: Optional[tuple] = None


class Clients(NamedTuple):
    control: np.ndarray  # (n_local, d) SCAFFOLD's stored c_i; (n_local, 0) for the other methods


class FedServerState(NamedTuple):
    control: np.ndarray  # (d,) SCAFFOLD's c; (0,) for the other methods


class ServerInput(NamedTuple):
    """What a round gives the server step."""

    update: Optional[np.ndarray]  # the mean update x^t − x̄ of the client step (None: the method has none)
    sums: dict  # Σ over the sampled clients of each payload besides the model
    g_hat: Optional[np.ndarray]  # ĝ of the alignment step (None: the method has none)
    n: int  # clients in all


@dataclass(frozen=True)
class FederatedMethod(Method):
    """The federated runner's protocol: what a sampled client does in a round and what the server does with
    the round's sums."""

    runner: ClassVar[str] = "federated"
    default_rule: ClassVar[str] = "inverse_L"
    default_compressor: ClassVar[str] = "identity"
    worker_metrics: ClassVar[tuple[str, ...]] = ("grad_gap", "grad_gap_rel", "update_norm")
    alignment: ClassVar[bool] = False  # the round starts with g_i and ĝ at x^t: one more communication round
    payloads: ClassVar[tuple[str, ...]] = ("model",)  # what a client sends in the client step; () for no such step
    downlink: ClassVar[int] = 1  # d-vectors the server sends each sampled client per round (x; SCAFFOLD II: x, c)

    def initial_state(self, x0: np.ndarray, n_local: int) -> tuple[Any, Any]:
        return Clients(np.zeros((n_local, 0))), FedServerState(np.zeros(0))

    def alignment_gradient(self, x: np.ndarray, data: ClientData) -> tuple[np.ndarray, int]:
        """(the client's g_i at x^t for the alignment step, the rows it took): its full local gradient."""
        return data.grad(x), data.rows

    def client_update(self, x: np.ndarray, state: tuple, server: Any, data: ClientData, worker: int,
                      rnd: LocalRound, aligned: Optional[Alignment]) -> ClientResult:
        """One sampled client's local work at x^t; ``state``: its row of each field of the clients' state."""
        raise NotImplementedError

    def server_step(self, server: Any, x: np.ndarray, got: ServerInput, rnd: LocalRound) -> tuple[Any, np.ndarray]:
        """(the method's new server state, the pseudo-gradient D the server optimizer steps on)."""
        return server, got.update


class FedServer(NamedTuple):
    optimizer: ServerOptState
    method: Any


class ClientView:
    """One local client's gradients, as the methods see them (:class:`ClientData`)."""

    __slots__ = ("problem", "local", "rows", "touched")

    def __init__(self, problem: Any, local: int):
        self.problem, self.local, self.rows = problem, local, int(problem.local_sizes[local])
        self.touched = 0  # samples its gradients touched since the runner last reset it (system.compute_unit)

    def grad(self, y: np.ndarray, rows: Optional[np.ndarray] = None, decay: bool = True) -> np.ndarray:
        self.touched += self.rows if rows is None else len(rows)
        return self.problem.worker_grad(y, self.local, rows, decay)


# --------------------------------------------------------------------------------------- client steps
@dataclass
class Outgoing:
    """The sampled local clients' models on their way to the sum: their updates, what is sent, its bits and
    weights, and the round's per-client metrics."""

    x: np.ndarray
    local: np.ndarray  # local indices of the sampled clients
    models: np.ndarray  # (k, d) y_i
    updates: np.ndarray  # (k, d) x^t − y_i
    bits: np.ndarray  # (k, E)
    metrics: dict
    payload: Optional[np.ndarray] = None  # (k, d) what each sends
    weight: Optional[np.ndarray] = None  # (k,)


def clip_updates(out: Outgoing, runner: "FederatedRunner", rnd: LocalRound) -> None:
    """Each update clipped to update_clip (the model follows it)."""
    out.updates, norms = clip_rows(out.updates, runner.fed.update_clip)
    over = norms > runner.fed.update_clip  # the others keep the model they computed, to the last bit
    out.models[over] = out.x - out.updates[over]


def record_update_norms(out: Outgoing, runner: "FederatedRunner", rnd: LocalRound) -> None:
    if "grad_gap" in out.metrics:  # a recorded round
        norms = np.full(len(runner.setup.worker_ids), np.nan)
        norms[out.local] = np.sqrt(row_sq_norms(out.updates))
        out.metrics["update_norm"] = norms


def compress_updates(out: Outgoing, runner: "FederatedRunner", rnd: LocalRound) -> None:
    s, seed = runner.setup, runner.setup.config.run.seed
    msg = s.method.compressor(out.updates, WorkerRandomness(seed, COMPRESSOR, s.worker_ids[out.local], rnd.t))
    out.updates, out.bits = msg.dense(out.updates.shape), msg.bits


def choose_payload(out: Outgoing, runner: "FederatedRunner", rnd: LocalRound) -> None:
    """The update, or the model itself (uplink = "model"), as the code averages them."""
    out.payload = out.updates if runner.fed.uplink == "update" else out.models


def weigh(out: Outgoing, runner: "FederatedRunner", rnd: LocalRound) -> None:
    """Uniform weights, or each client's number of samples (weighting = "samples")."""
    if runner.fed.weighting == "samples":
        out.weight = runner.setup.problem.local_sizes[out.local].astype(np.float64)
        out.payload = out.weight[:, None] * out.payload
    else:
        out.weight = np.ones(len(out.local))


ClientStep = Callable[[Outgoing, "FederatedRunner", LocalRound], None]


def client_steps(fed: FederatedParams, compressed: bool) -> list[ClientStep]:
    """The per-client steps of this config's rounds, in order."""
    return ([clip_updates] if fed.update_clip else []) + [record_update_norms] + \
        ([compress_updates] if compressed else []) + [choose_payload, weigh]


@RUNNERS.register("federated")
class FederatedRunner(Runner):
    """Rounds with P sampled clients, K local steps each, and a server optimizer on the averaged models."""
    keeps_clock = True

    protocol = FederatedMethod
    section = "federated"
    params = FederatedParams
    phases = ("alignment", "local", "communication", "update", "evaluation", "trace")
    scalars = ("grad_variance", "comm_rounds")
    tables = (CLIENTS,)

    @classmethod
    def check_section(cls, params, n_workers):
        params.validate(n_workers)

    @classmethod
    def row_scalars(cls, config):
        return cls.scalars + (CLOCK_COLUMNS + (DROPPED,) if config.system is not None else ())

    @classmethod
    def table_width(cls, config, table):
        return FedClock.selected(config)

    @classmethod
    def check(cls, config, method, problem_info):
        fed = config.section("federated")
        compressed = config.compressor.name != "identity"
        if compressed and "model" not in method.payloads:
            raise InputError("compressor.name", config.compressor.name, f"compresses the clients' updates, and method "
                             f"{config.method.name!r} sends only its (dense) gradient round")
        if compressed and fed.uplink == "model":
            raise InputError("federated.uplink", "model", "cannot be compressed; set uplink = 'update' to compress "
                             "the clients' updates")
        if fed.update_clip and getattr(method, "clips_updates", False):
            raise InputError("federated.update_clip", fed.update_clip, f"method {config.method.name!r} clips its "
                             "clients' updates itself (method.tau); leave update_clip at 0")
        if fed.batch_size and not problem_info["samples"]:
            raise InputError("federated.batch_size", fed.batch_size, f"needs a problem made of samples, not "
                             f"{config.problem.name!r} (use 0: full local gradients)")
        if config.system is not None:
            FedClock.check(config, method, problem_info["d"])

    def __init__(self, setup):
        super().__init__(setup)
        self.fed = setup.config.section("federated")
        self.optimizer = server_optimizer(self.fed)
        self.views = [ClientView(setup.problem, i) for i in range(len(setup.worker_ids))]
        self.dense = dense_bits(len(setup.x0))
        self.steps = client_steps(self.fed, setup.config.compressor.name != "identity")
        self.clock = FedClock(setup.config, setup.method, self.dense) if setup.config.system is not None else None

    @classmethod
    def initial_states(cls, config: Any, method: Any, x0: np.ndarray, n_local: int) -> tuple[Any, Any]:
        clients, method_server = method.initial_state(x0, n_local)
        return clients, FedServer(server_optimizer(config.section("federated")).init(x0), method_server)

    def start(self, state: Optional[RunState]) -> RunState:
        s = self.setup
        if state is None:
            clients, server = self.initial_states(s.config, s.method, s.x0, len(s.worker_ids))
            state = RunState(0, s.x0.copy(), clients, server, Ledger.empty(len(s.worker_ids)), runner_data={"comm_rounds": 0})
            if self.clock is not None:
                state.runner_data.update(dict.fromkeys(CLOCK_COLUMNS + (DROPPED,), 0.0))
        self.started = time.perf_counter() - state.elapsed
        return state

    def advance(self, state: RunState) -> RunState:
        s, run, fed, method = self.setup, self.setup.config.run, self.fed, self.setup.method
        t, x, n = state.t, state.x, run.n_workers
        clock, spent = time.perf_counter, s.timing
        chosen = sample_clients(run.seed, t, n, FedClock.selected(s.config))
        members = chosen if self.clock is None else self.clock.online(chosen, t)  # offline clients take no part
        participants = len(members)
        local = np.flatnonzero(np.isin(s.worker_ids, members))
        metrics: dict = {}
        record = t % run.eval_every == 0 or t == run.rounds
        if t and t % run.check_every == 0:  # before the evaluation, whose reduction settles a recorded round's requests
            check_ranks(self.setup, state, record)
            if s.control.stop:
                return state
        pending = self._evaluate(state, local, metrics) if record else None
        if record and pending is None:
            return state
        s.recorder.add("clients", chosen)
        scale = fed.lr_scale(t)
        rnd = LocalRound(t, run.seed, method.gamma * scale, scale, fed.batch_size, fed.clip, s.problem.weight_decay)
        up, down = np.zeros((len(s.worker_ids), len(ENCODINGS))), np.zeros(len(ENCODINGS))
        g_i, g_hat = {}, None
        kept = participants
        if method.alignment:
            t0 = clock()
            g_i, rows, touched = self._align(x, local)
            senders, sending = members, local
            if self.clock is not None:  # a client the clock drops sends nothing and is not in ĝ
                keep = self.clock.alignment(state.runner_data, s, members, touched, t, not method.payloads)
                senders = members[keep]
                sent = np.isin(s.worker_ids[local], senders)
                sending, rows = local[sent], rows[sent]
                kept = int(keep.sum())
            total = self._round_sum(state, rows, senders, pending)
            pending = None
            g_hat = total[:-1] / total[-1] if total[-1] else np.zeros(len(x))  # no client online: no ĝ
            up[sending] += self.dense
            down += participants * self.dense
            state.runner_data["comm_rounds"] += 1
            spent["alignment"] += clock() - t0
        update, sums = None, {}
        if method.payloads:
            update, sums, kept = self._clients(state, local, members, rnd, g_i, g_hat, up, metrics, pending)
            pending = None
            down += participants * self.dense * method.downlink
            state.runner_data["comm_rounds"] += 1
        if pending is not None:  # a round without a sum (neither step) carries no row: it takes a sum of its own
            self._add_alone(state, pending)
        if self.clock is not None:
            state.runner_data[DROPPED] += len(chosen) - len(members)
        t0 = clock()
        if kept:  # a round whose every client was dropped leaves the server as it was
            method_server, pseudo_grad = method.server_step(state.server.method, x, ServerInput(update, sums, g_hat, n), rnd)
            optimizer, state.x = self.optimizer.step(state.server.optimizer, x, pseudo_grad)
            state.server = FedServer(optimizer, method_server)
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

    def _align(self, x: np.ndarray, local: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        """The sampled local clients' g_i at x^t, their rows (N_i g_i, N_i) of ĝ = Σ N_i g_i / Σ N_i (one per
        client of ``local``), and the samples each local client's gradient touched."""
        s, d = self.setup, len(x)
        rows = np.empty((len(local), d + 1))
        g_i, touched = {}, np.zeros(len(s.worker_ids))
        for j, i in enumerate(local):
            self.views[i].touched = 0
            g_i[i], count = s.method.alignment_gradient(x, self.views[i])
            rows[j, :d] = count * g_i[i]
            rows[j, d] = count
            touched[i] = self.views[i].touched
        return g_i, rows, touched

    def _clients(self, state: RunState, local: np.ndarray, members: np.ndarray, rnd: LocalRound, g_i: dict,
                 g_hat: Optional[np.ndarray], up: np.ndarray, metrics: dict,
                 pending: Optional["PendingRow"]) -> tuple[np.ndarray, dict, int]:
        """The sampled clients' updates through the client steps, and one ordered sum of every payload:
        (the mean update x^t − x̄, the sums of the other payloads, the clients kept). With [system], the clients
        that miss the deadline or finish after the first P (over-selection) are dropped: they send nothing, their
        state stays as it was, and the weights are those of the kept clients."""
        s, method = self.setup, self.setup.method
        x, d = state.x, len(state.x)
        clock = time.perf_counter
        t0 = clock()
        extras = [name for name in method.payloads if name != "model"]
        models = np.empty((len(local), d))
        sent = np.empty((len(local), d * len(extras)))
        rows_of, touched = {}, np.zeros(len(s.worker_ids))
        for j, i in enumerate(local):
            self.views[i].touched = 0
            aligned = Alignment(g_i[i], g_hat) if method.alignment else None
            result = method.client_update(x, tuple(field[i] for field in state.workers), state.server.method,
                                          self.views[i], int(s.worker_ids[i]), rnd, aligned)
            models[j] = result.payloads["model"]
            for k, name in enumerate(extras):
                sent[j, k * d : (k + 1) * d] = result.payloads[name]
            if result.state is not None:
                rows_of[i] = result.state
            touched[i] = self.views[i].touched
        out = Outgoing(x, local, models, x - models, np.broadcast_to(self.dense, (len(local), len(self.dense))), metrics)
        for step in self.steps:
            step(out, self, rnd)
        bits = out.bits + self.dense * len(extras)
        keep, senders = np.ones(len(local), dtype=bool), members
        if self.clock is not None:
            keep, senders = self.clock.client_step(state.runner_data, s, local, members, bits, touched, rnd.t)
        kept = len(senders)
        state.workers = with_rows(state.workers, {i: row for j, i in enumerate(local) if keep[j] and (row := rows_of.get(i))})
        rows = np.hstack([out.payload[keep], out.weight[keep, None], sent[keep]])  # the kept clients' (payload, weight, extras)
        up[local[keep]] += bits[keep]
        t1 = clock()
        total = self._round_sum(state, rows, senders, pending)
        t2 = clock()
        s.timing["local"] += t1 - t0
        s.timing["communication"] += t2 - t1
        mean = total[:d] / total[d] if kept else np.zeros(d)
        update = mean if self.fed.uplink == "update" else x - mean
        return update, {name: total[d + 1 + k * d : d + 1 + (k + 1) * d] for k, name in enumerate(extras)}, kept

    def _round_sum(self, state: RunState, rows: np.ndarray, senders: np.ndarray,
                   pending: Optional["PendingRow"]) -> np.ndarray:
        """The ordered sum of the senders' rows (this rank's, in worker order); a recorded round's ``pending`` row
        takes its gradient variance from the same collective (metric-only columns, not counted as bits) and is
        added to the trace."""
        s = self.setup
        if pending is None:
            return s.comm.sum_rows_of(rows, np.sort(senders), s.config.run.deterministic)
        total, spread = s.comm.sum_rows_of(rows, np.sort(senders), s.config.run.deterministic, pending.spread)
        pending.add(s.recorder, state.ledger, spread[0] / s.config.run.n_workers)
        return total

    def _evaluate(self, state: RunState, local: np.ndarray, metrics: dict) -> Optional["PendingRow"]:
        """Evaluate x^t over all clients and put its per-client metrics into ``metrics``: row t, waiting for its
        gradient variance from the round's first sum; None if the loop ends here (a last row is added now)."""
        s, run, t = self.setup, self.setup.config.run, state.t
        t0 = time.perf_counter()
        losses, grads = s.problem.loss_grads(state.x, with_loss=True)
        weight = np.zeros(len(s.worker_ids))
        weight[local] = s.problem.local_sizes[local]
        row = exact_row(s, state, grads, losses, np.hstack([grads * weight[:, None], weight[:, None]]))
        status = end_status(run, t, row)
        if status == "running" and s.control.stop:
            return None  # round t is recorded when the run resumes
        d = len(state.x)
        g_hat = row.sums[:d] / row.sums[d]
        gap = np.full(len(s.worker_ids), np.nan)
        gap[local] = np.sqrt(row_sq_norms(grads[local] - g_hat))
        clock = {} if self.clock is None else {k: state.runner_data[k] for k in CLOCK_COLUMNS + (DROPPED,)}
        if status == "running" and clock:
            status = time_budget(s.config.system.max_time, clock["sim_time"], t)
        pending = PendingRow(t, t0 - self.started, row.loss, row.grad_norm_sq,
                             {"comm_rounds": state.runner_data["comm_rounds"], **row.scores, **clock},
                             row_sq_norms(grads - row.grad)[:, None])
        accuracy = row.scores.get("test_accuracy", row.scores.get("train_accuracy"))
        self.recorded(state, row, status, t0, f"  accuracy = {accuracy:.4f}" if accuracy is not None else "")
        metrics.update(grad_gap=gap, grad_gap_rel=gap / np.sqrt(g_hat @ g_hat))
        if status == "running":
            return pending
        self._add_alone(state, pending)  # no round follows to carry it
        s.recorder.set_metrics(metrics)
        return None

    def _add_alone(self, state: RunState, pending: "PendingRow") -> None:
        """Add a row whose gradient variance no round's sum carries, with a sum of its own."""
        s, run = self.setup, self.setup.config.run
        spread = s.comm.sum_rows(pending.spread, run.deterministic)
        pending.add(s.recorder, state.ledger, spread[0] / run.n_workers)

    def summary(self, state: RunState) -> dict:
        fed = self.fed
        clock = {} if self.clock is None else {"sim_time": float(state.runner_data["sim_time"])}
        return {"clients_per_round": fed.participants(self.setup.config.run.n_workers),
                "comm_rounds": int(state.runner_data["comm_rounds"]), "server_optimizer": fed.server_optimizer, **clock}


class PendingRow(NamedTuple):
    """A recorded round's row, waiting for its gradient variance (1/n)Σ‖∇f_i − ∇f‖², whose sum needs ∇f and so
    rides on the round's next collective rather than taking one of its own."""

    t: int
    elapsed: float
    loss: float
    grad_norm_sq: float
    values: dict  # the row's other scalars, as they were at the evaluation
    spread: np.ndarray  # (n_local, 1): each local client's ‖∇f_i − ∇f‖²

    def add(self, recorder: Any, ledger: Ledger, grad_variance: float) -> None:
        recorder.add_row(ledger, self.t, self.elapsed, self.loss, self.grad_norm_sq,
                         {"grad_variance": grad_variance, **self.values})


def with_rows(state: Any, rows_of: dict) -> Any:
    """The clients' state (a NamedTuple of per-client arrays) with the rows of the clients that returned one."""
    if not rows_of:
        return state
    fields = [field.copy() for field in state]
    for i, row in rows_of.items():
        for field, value in zip(fields, row):
            field[i] = value
    return type(state)(*fields)
