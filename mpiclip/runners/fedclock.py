"""The [system] clock of federated rounds (docs/algorithms.md §12), as FedScale simulates a fleet.

A round's sampled clients that are offline take no part. Each online client i receives the server's vectors
over its downlink, runs its K local steps and uploads its payload: it finishes after
down_i + K·c_i(t) + up_i seconds (compute_unit = 'sample': c_i(t) times the samples its K steps touched;
links in parallel, α + m/β each, m the bytes of its message in the chosen
encoding). A client later than ``deadline`` is dropped; with ``over_selection`` the server samples that fraction
more clients and keeps the first P that finish. The round ends when the last kept client has finished, or at the
deadline when the clients it waits for do not all make it. A method's alignment round (FedGA, GradAlign) comes
first and waits for every online client. The trace's clock is cumulative: sim_time; of it, the kept clients'
mean compute (sim_compute), mean link time (sim_comm) and the rest, waiting (sim_wait); and the clients dropped.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from mpiclip.compressors.message import dense_bits
from mpiclip.errors import InputError
from mpiclip.system import SystemModel
from mpiclip.trace import DROPPED


def local_steps(method: Any) -> int:
    """Local steps K a client computes per round (1 for a method without local steps: one gradient)."""
    return int(getattr(method, "local_steps", 1))


class FedClock:
    def __init__(self, config: Any, method: Any, dense: np.ndarray):
        run, p = config.run, config.system
        self.p, self.n = p, run.n_workers
        self.model = SystemModel(p, run.n_workers, run.seed)
        self.steps = local_steps(method)
        self.vector_bytes = float(dense[self.model.encoding]) / 8
        self.down_bytes = method.downlink * self.vector_bytes
        self.wanted = config.section("federated").participants(run.n_workers)

    @staticmethod
    def selected(config: Any) -> int:
        """Clients sampled per round: P, or ⌈P(1 + over_selection)⌉ (at most n)."""
        n = config.run.n_workers
        wanted = config.section("federated").participants(n)
        extra = config.system.over_selection if config.system is not None else 0.0
        return min(n, math.ceil(wanted * (1 + extra))) if extra else wanted

    @staticmethod
    def check(config: Any, method: Any, d: int) -> None:
        """A deadline that even the fastest client cannot meet (its fastest compute and links, its message no
        smaller than the dense payload an uncompressed client sends) leaves every round empty: refused."""
        p = config.system
        if not p.deadline or not method.payloads:
            return
        model = SystemModel(p, config.run.n_workers, config.run.seed)
        vector = float(dense_bits(d)[model.encoding]) / 8
        upload = vector * len(method.payloads) if config.compressor.name == "identity" else 0.0
        links = model.links
        # per sample, a step touches at least one sample: the bound stays below every client's real finish
        fastest = (2 * links.latency + method.downlink * vector / links.down + local_steps(method) * model.fastest_compute()
                   + upload / links.up)
        if fastest.min() > p.deadline:
            w = int(fastest.argmin())
            raise InputError("system.deadline", p.deadline, f"no client can meet it: the fastest, client {w}, needs "
                             f"{fastest[w]:.6g} s to download, compute {local_steps(method)} local steps and upload")

    def online(self, chosen: np.ndarray, t: int) -> np.ndarray:
        return chosen[self.model.availability.online(chosen, t)]

    def alignment(self, clock: dict, setup: Any, members: np.ndarray, touched: np.ndarray, t: int,
                  whole_round: bool) -> np.ndarray:
        """The alignment round: every online client downloads x, computes its gradient and uploads it
        (``touched``: the samples each local client's gradient took, zero elsewhere). Its clients, as a mask over
        ``members``: all of them before a client step (FedGA waits for every ĝ term), but where the alignment step
        is the whole round (large-batch SGD) the deadline and over-selection keep clients as in a client step."""
        links = self.model.links
        comm = 2 * links.latency[members] + self.vector_bytes / links.down[members] + self.vector_bytes / links.up[members]
        samples = setup.comm.allgather_rows(touched[:, None])[:, 0][members] if self.model.per_sample else None
        compute = self.model.compute_seconds(members, t, samples)
        if whole_round:
            return self._keep(clock, members, compute, comm)
        self._advance(clock, compute, comm)
        return np.ones(len(members), dtype=bool)

    def client_step(self, clock: dict, setup: Any, local: np.ndarray, members: np.ndarray, bits: np.ndarray,
                    touched: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The client step's clock, and which of the local sampled clients are kept: (mask over ``local``, the ids
        of the clients kept in all). ``touched``: the samples each local client's K steps took, zero elsewhere.
        Every rank learns every client's upload size (and, per sample, its samples) by one small all-gather."""
        columns = np.zeros((len(setup.worker_ids), 2 if self.model.per_sample else 1))
        columns[local, 0] = bits[:, self.model.encoding] / 8
        if self.model.per_sample:
            columns[:, 1] = touched
        gathered = setup.comm.allgather_rows(columns)[members]
        uploads = gathered[:, 0]
        links = self.model.links
        if self.model.per_sample:  # per-sample time × the samples of all K steps
            compute = self.model.compute_seconds(members, t, gathered[:, 1])
        else:
            compute = self.steps * self.model.compute_seconds(members, t)
        comm = (2 * links.latency[members] + self.down_bytes / links.down[members] + uploads / links.up[members])
        kept = self._keep(clock, members, compute, comm)
        return np.isin(setup.worker_ids[local], members[kept]), members[kept]

    def _keep(self, clock: dict, members: np.ndarray, compute: np.ndarray, comm: np.ndarray) -> np.ndarray:
        """The clients kept (a mask over ``members``): those in time for the deadline, and of them the first P to
        finish under over-selection; the clock advances to the last kept one (or the deadline) and counts the rest."""
        finish = compute + comm
        kept = finish <= self.p.deadline if self.p.deadline else np.ones(len(members), dtype=bool)
        target = min(self.wanted, len(members)) if self.p.over_selection else len(members)
        order = np.argsort(finish, kind="stable")  # ties: in the order drawn
        kept[order[np.cumsum(kept[order]) > target]] = False  # only the first ``target`` that finish in time
        count = int(kept.sum())
        end = float(finish[kept].max()) if count == target and count else float(self.p.deadline)
        self._advance(clock, compute[kept], comm[kept], end)
        clock[DROPPED] += len(members) - count
        return kept

    @staticmethod
    def _advance(clock: dict, compute: np.ndarray, comm: np.ndarray, end: Optional[float] = None) -> None:
        """One phase of ``end`` seconds (default: when the last client finishes): the mean client computes, talks,
        and waits for the rest."""
        if end is None:
            end = float((compute + comm).max()) if len(compute) else 0.0
        spent = [float(compute.mean()), float(comm.mean())] if len(compute) else [0.0, 0.0]
        clock["sim_compute"] += spent[0]
        clock["sim_comm"] += spent[1]
        clock["sim_wait"] += max(0.0, end - spent[0] - spent[1])  # (rounding aside, the slowest kept client waits 0)
        clock["sim_time"] += end
