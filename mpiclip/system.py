"""A system model ([system]): how many seconds a run would take on a described cluster or fleet
(docs/algorithms.md §12).

The pieces, all pure and replicated on every rank (no MPI):

* **links** (Hockney's α–β model): a message of m bytes over a link of latency α seconds and bandwidth β
  bytes/s takes α + m/β; every worker has an uplink and a downlink, given once for all, per worker, or per
  class of worker (``classes``); the asynchronous runner prices each job's download of x and upload of its message
  on its worker's link (:func:`job_transfers`), and takes nothing else from [system];
* **collectives** of the synchronous runners (Thakur, Rabenseifner & Gropp 2005), each affine in the round's
  total bytes M = Σ_i m_i over P workers: ``latency_terms(P)·α + bandwidth_share(P)·M/β`` (ring all-gather,
  recursive doubling, ring all-reduce, binary tree, a parameter server on its own link);
* **compute**: seconds of worker w in round t, drawn by the asynchronous runner's compute-time models
  (:class:`mpiclip.asynchrony.ComputeTimes`, keyed by (seed, w, t)), optionally scaled by measured speeds;
* **availability** of federated clients: always online, a two-state on/off Markov chain, or a 0/1 trace file.

Every draw is keyed by (seed, worker, round), so the clock depends on the config alone, never on the ranks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from mpiclip.asynchrony import BLOCK, AsyncParams, ComputeTimes
from mpiclip.compressors import ENCODINGS
from mpiclip.errors import InputError
from mpiclip.params import finite_nonnegative, finite_positive, param, parse_params
from mpiclip.rng import TIMES, generator

LINK_KEYS = ("latency", "bandwidth_up", "bandwidth_down")
COMPUTE_KEYS = ("compute_time", "mean_time", "lognormal_sigma", "times", "slow_workers", "slow_factor", "factors")
AVAILABILITY_TAG = 1  # availability draws: generator(seed, TIMES, w, block, AVAILABILITY_TAG), apart from compute draws


def link_time(nbytes, latency, bandwidth):
    """Hockney's α–β cost of one message: α + m/β seconds."""
    return latency + nbytes / bandwidth


# ---------------------------------------------------------------------------------------------- collectives
class Collective(NamedTuple):
    """A collective's cost over P participants: ``latency_terms(P)`` latencies and ``bandwidth_share(P)`` times the
    round's total bytes M over the bandwidth; ``server``: it runs on the parameter server's own link."""

    latency_terms: Callable[[int], float]
    bandwidth_share: Callable[[int], float]
    doc: str
    server: bool = False

    def seconds(self, p: int, total_bytes: float, latency: float, bandwidth: float) -> float:
        return self.latency_terms(p) * latency + self.bandwidth_share(p) * total_bytes / bandwidth


def _log2(p: int) -> int:
    return math.ceil(math.log2(p)) if p > 1 else 0


# m = M/P bytes per worker; the forms of Thakur, Rabenseifner & Gropp (2005) with M written out
COLLECTIVES = {
    "ring_allgather": Collective(lambda p: p - 1, lambda p: (p - 1) / p,
                                 "(P−1)α + (P−1)·m/β: each worker's message passes P−1 links of a ring"),
    "recursive_doubling": Collective(_log2, lambda p: (p - 1) / p,
                                     "⌈log2 P⌉α + (P−1)·m/β: an all-gather in log2 P exchanges of doubling size"),
    "ring_allreduce": Collective(lambda p: 2 * (p - 1), lambda p: 2 * (p - 1) / p**2,
                                 "2(P−1)α + 2(P−1)/P·m/β: reduce-scatter then all-gather of an m-byte vector"),
    "binary_tree": Collective(lambda p: 2 * _log2(p), lambda p: 2 * _log2(p) / p,
                              "2⌈log2 P⌉(α + m/β): reduce up a binary tree, broadcast down"),
    "parameter_server": Collective(lambda p: p, lambda p: 1.0,
                                   "Pα_s + Σ m_i/β_s: the server receives the P messages one after the other on its "
                                   "own link", server=True),
}


def broadcast_seconds(collective: str, p: int, nbytes: float, latency: float, bandwidth: float) -> float:
    """A server message of ``nbytes`` to all P workers: a binomial tree ⌈log2 P⌉(α + m/β), or the parameter
    server's P sends one after the other on its link."""
    if COLLECTIVES[collective].server:
        return p * link_time(nbytes, latency, bandwidth)
    return _log2(p) * link_time(nbytes, latency, bandwidth)


# ---------------------------------------------------------------------------------------------- the section
def _async_key(name: str, **changes):
    """A [system] key that means what the [async] key of the same name means (one compute-time model for both)."""
    f = AsyncParams.__dataclass_fields__[name]
    meta = {"doc": f.metadata["doc"], "check": f.metadata["check"], "choices": f.metadata["choices"], **changes}
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return param(meta.pop("default", default), meta["doc"], check=meta["check"], choices=meta["choices"])


def _probability(v: float):
    return None if 0 <= v <= 1 else "must be in [0, 1]"


@dataclass(frozen=True)
class SystemParams:
    compute_time: str = _async_key("compute_time", default="constant",
                                   doc="compute-time model of a worker's round (synchronous) or local step (federated), "
                                       "as in [async]: 'constant', 'exponential', 'lognormal' (mean mean_time) or 'list'")
    mean_time: float = _async_key("mean_time", default=0.01, doc="mean seconds of compute per round or local step (per sample: "
                                  "compute_unit = 'sample')")
    lognormal_sigma: float = _async_key("lognormal_sigma")
    times: tuple[tuple[float, ...], ...] = _async_key("times")
    slow_workers: tuple[int, ...] = _async_key("slow_workers")
    slow_factor: float = _async_key("slow_factor")
    factors: tuple[float, ...] = _async_key("factors")
    compute_unit: str = param("step", "what mean_time (and times, speeds_file) measure: 'step': seconds per round "
                              "(synchronous) or local step (federated), whatever its batch; 'sample': seconds per "
                              "gradient of one sample, times the samples the worker's gradients touched in that round "
                              "or step (a problem made of samples only)", choices=("step", "sample"))
    speeds_file: str = param("", "a text file of n measured seconds per round or local step (or sample), one per worker (one "
                             "number a line): the workers' compute-time factors (instead of factors and slow_workers)")
    classes: tuple[int, ...] = param((), "class id (0, 1, ...) of every worker (n numbers): then latency and "
                                     "bandwidths give one value per class")
    latency: tuple[float, ...] = param((1e-5,), "link latency α in seconds: one value, one per worker, or one per class")
    bandwidth_up: tuple[float, ...] = param((1.25e9,), "uplink bandwidth β in bytes/s (1.25e9: 10 Gbit/s): one value, "
                                            "one per worker, or one per class")
    bandwidth_down: tuple[float, ...] = param((1.25e9,), "downlink bandwidth in bytes/s: one value, one per worker, or "
                                              "one per class")
    collective: str = param("ring_allgather", "how a synchronous round's messages travel: " + "; ".join(
        f"'{name}': {c.doc}" for name, c in COLLECTIVES.items()), choices=tuple(COLLECTIVES))
    server_latency: float = param(1e-5, "the parameter server's link latency (collective = 'parameter_server')",
                                  check=finite_nonnegative)
    server_bandwidth: float = param(1.25e9, "the parameter server's link bandwidth in bytes/s", check=finite_positive)
    encoding: str = param("paper", "the encoding whose bits are a message's size (the trace's bits/up/<encoding>); "
                          "'paper' by default: the size the bits axis and the papers use", choices=ENCODINGS)
    availability: str = param("always", "federated clients online: 'always', a two-state on/off 'markov' chain per "
                              "client, or a 0/1 'file' (availability_file)", choices=("always", "markov", "file"))
    p_off: float = param(0.0, "markov: probability that an online client goes offline from one round to the next",
                         check=_probability)
    p_on: float = param(1.0, "markov: probability that an offline client comes back online", check=_probability)
    availability_file: str = param("", "a text file of n lines of 0/1 (one line per client, one column per round, "
                                   "cycled): availability = 'file'")
    deadline: float = param(0.0, "federated: seconds after which a client's update is dropped (0: none)",
                            check=finite_nonnegative)
    over_selection: float = param(0.0, "federated: sample this fraction more clients and keep the first that finish "
                                  "(0.3: FedScale's 1.3×)", check=finite_nonnegative)
    max_time: float = param(0.0, "simulated-time budget in seconds: stop at the first recorded round past it (0: none; "
                            "the asynchronous runner has async.max_time)", check=finite_nonnegative)

    UNHASHED_DEFAULTS = {"compute_unit": "step"}  # left out of the config hash at these values (traces made before them)

    def check(self) -> None:
        for key in LINK_KEYS:
            if not getattr(self, key):
                raise InputError(f"system.{key}", [], "needs one value, one per worker, or one per class")
        if self.availability == "markov" and self.p_on == 0:
            raise InputError("system.p_on", 0.0, "clients offline at the start would never come online; must be > 0")
        if (self.availability == "file") != bool(self.availability_file):
            raise InputError("system.availability_file", self.availability_file,
                             "is needed exactly when availability = 'file'")

    def compute_params(self, n: int, speeds: np.ndarray | None) -> AsyncParams:
        """The [async] record of this compute-time model, checked as [async] checks it (fields named system.*)."""
        values = {k: getattr(self, k) for k in COMPUTE_KEYS}
        if speeds is not None:
            if self.factors or self.slow_workers:
                raise InputError("system.speeds_file", self.speeds_file, "and factors or slow_workers both set; give one")
            values["factors"] = tuple(speeds.tolist())
        params = AsyncParams(**values)
        try:
            params.validate(n)
        except InputError as e:
            raise InputError(e.field.replace("async.", "system.", 1), e.value, e.reason) from None
        return params


def parse(table: dict) -> SystemParams:
    """[system] from its table; a number for a link key stands for that value for every worker. A link's latency
    and bandwidths are checked value by value, so that the message names the bad one."""
    table = dict(table)
    for key in LINK_KEYS:
        values = table.get(key)
        if isinstance(values, (int, float)) and not isinstance(values, bool):
            table[key] = values = [values]
        check = finite_nonnegative if key == "latency" else finite_positive
        for v in values if isinstance(values, list) else ():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and check(v):
                raise InputError(f"system.{key}", v, check(v))
    return parse_params(SystemParams, table, "system")


# ---------------------------------------------------------------------------------------------- files
def read_numbers(field: str, path: str) -> list[list[float]]:
    """The numbers of a text file, line by line (blank lines and # comments skipped); an InputError naming the
    field otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise InputError(field, path, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(field, path, f"cannot be read as text: {getattr(e, 'strerror', None) or e}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        try:
            rows.append([float(v) for v in line])
        except ValueError:
            raise InputError(field, path, f"line {number}: {' '.join(line)[:40]!r} is not a list of numbers") from None
    return rows


def read_speeds(path: str, n: int) -> np.ndarray:
    rows = read_numbers("system.speeds_file", path)
    values = np.array([v for row in rows for v in row])
    if len(values) != n:
        raise InputError("system.speeds_file", path, f"holds {len(values)} numbers, need one per worker (n = {n})")
    bad = next((i for i, v in enumerate(values) if not 0 < v < math.inf), None)
    if bad is not None:
        raise InputError("system.speeds_file", path, f"worker {bad}'s speed {values[bad]:g} is not a finite number > 0")
    return values


def read_availability(path: str, n: int) -> np.ndarray:
    rows = read_numbers("system.availability_file", path)
    if len(rows) != n:
        raise InputError("system.availability_file", path, f"holds {len(rows)} lines, need one per client (n = {n})")
    if len({len(r) for r in rows}) != 1:
        raise InputError("system.availability_file", path, "its lines have different lengths (one column per round)")
    table = np.array(rows)
    if not np.isin(table, (0.0, 1.0)).all():
        raise InputError("system.availability_file", path, "holds values other than 0 (offline) and 1 (online)")
    never = np.flatnonzero(~table.any(axis=1))
    if len(never):
        raise InputError("system.availability_file", path, f"client {never[0]} is never online")
    return table.astype(bool)


# ---------------------------------------------------------------------------------------------- the model
class Links(NamedTuple):
    latency: np.ndarray  # (n,) seconds
    up: np.ndarray  # (n,) bytes/s
    down: np.ndarray  # (n,) bytes/s


def worker_links(p: SystemParams, n: int) -> Links:
    """Each worker's link, from one value, one per worker, or one per class."""
    if p.classes:
        if len(p.classes) != n:
            raise InputError("system.classes", len(p.classes), f"class ids given for n = {n} workers")
        if min(p.classes) < 0:
            raise InputError("system.classes", min(p.classes), "a class id must be >= 0")
        count = max(p.classes) + 1
        index, what = np.array(p.classes), f"1 or one per class ({count})"
    else:
        count, index, what = n, np.arange(n), f"1 or one per worker (n = {n})"
    out = []
    for key in LINK_KEYS:
        values = np.array(getattr(p, key), dtype=np.float64)
        if len(values) == 1:
            out.append(np.full(n, values[0]))
        elif len(values) == count:
            out.append(values[index])
        else:
            raise InputError(f"system.{key}", len(values), f"values given: need {what}")
    return Links(*out)


def job_transfers(p: SystemParams, n: int, down_bytes: float, up_bytes: float) -> tuple[np.ndarray, np.ndarray]:
    """(n,) seconds of each worker's download of the model and (n,) of its upload of the message: the asynchronous
    runner's per-job network time, α_w + bytes/β each way over the worker's own link."""
    links = worker_links(p, n)
    return link_time(down_bytes, links.latency, links.down), link_time(up_bytes, links.latency, links.up)


class Availability:
    """Which clients are online in round t: always, a 0/1 table (cycled over its columns), or per client a
    two-state Markov chain (online → offline with p_off, offline → online with p_on; round 0 drawn from the
    stationary law), its draws keyed by (seed, client, block of rounds)."""

    def __init__(self, p: SystemParams, n: int, seed: int):
        self.p, self.seed = p, seed
        self.table = read_availability(p.availability_file, n) if p.availability == "file" else None
        self.chains: dict[int, list[bool]] = {}

    def online(self, workers: np.ndarray, t: int) -> np.ndarray:
        if self.p.availability == "always":
            return np.ones(len(workers), dtype=bool)
        if self.table is not None:
            return self.table[workers, t % self.table.shape[1]]
        return np.array([self._chain(int(w), t) for w in workers], dtype=bool)

    def _chain(self, w: int, t: int) -> bool:
        chain = self.chains.setdefault(w, [])
        p_off, p_on = self.p.p_off, self.p.p_on
        draws = None
        while len(chain) <= t:
            k = len(chain)
            if draws is None or k % BLOCK == 0:
                draws = generator(self.seed, TIMES, w, k // BLOCK, AVAILABILITY_TAG).random(BLOCK)
            u = draws[k % BLOCK]
            if k == 0:
                chain.append(bool(u < p_on / (p_on + p_off)))
            else:
                chain.append(bool(u >= p_off) if chain[-1] else bool(u < p_on))
        return chain[t]


class SystemModel:
    """The system of a run: links, compute times and availability of its n workers."""

    def __init__(self, p: SystemParams, n: int, seed: int):
        self.p, self.n = p, n
        self.links = worker_links(p, n)
        speeds = read_speeds(p.speeds_file, n) if p.speeds_file else None
        self.compute = ComputeTimes(p.compute_params(n, speeds), n, seed)
        self.availability = Availability(p, n, seed)
        self.encoding = ENCODINGS.index(p.encoding)

    @property
    def per_sample(self) -> bool:
        return self.p.compute_unit == "sample"

    def compute_seconds(self, workers, t: int, samples=None) -> np.ndarray:
        """(len(workers),) seconds of compute of each worker in round t: its drawn time, per round or step, or
        (compute_unit = 'sample') per sample times ``samples``, the samples its gradients touched."""
        seconds = np.array([self.compute.duration(int(w), t) for w in workers])
        return seconds * samples if self.per_sample else seconds

    def fastest_compute(self) -> np.ndarray:
        """(n,) the least seconds each worker's round or step can take (0 under the exponential model)."""
        p = self.compute.p
        if p.compute_time == "list":
            base = np.array([min(p.times[w if len(p.times) > 1 else 0]) for w in range(self.n)])
        elif p.compute_time == "lognormal":
            base = np.full(self.n, p.mean_time * p.lognormal_range()[0])
        else:
            base = np.full(self.n, p.mean_time if p.compute_time == "constant" else 0.0)
        return np.array(self.compute.factors) * base

    # the synchronous runners' collectives run at their slowest link (the ring or tree moves in lock step)
    def collective_seconds(self, total_bytes: float) -> float:
        return self.collective.seconds(self.n, total_bytes, *self._collective_link())

    def collective_latency(self) -> float:
        """The part of one round's collective that does not depend on the bytes."""
        return self.collective_seconds(0.0)

    def collective_per_byte(self) -> float:
        return self.collective.bandwidth_share(self.n) / self._collective_link()[1]

    def broadcast(self, nbytes: float) -> float:
        if self.collective.server:
            latency, bandwidth = self.p.server_latency, self.p.server_bandwidth
        else:
            latency, bandwidth = float(self.links.latency.max()), float(self.links.down.min())
        return broadcast_seconds(self.p.collective, self.n, nbytes, latency, bandwidth)

    @property
    def collective(self) -> Collective:
        return COLLECTIVES[self.p.collective]

    def _collective_link(self) -> tuple[float, float]:
        if self.collective.server:
            return self.p.server_latency, self.p.server_bandwidth
        return float(self.links.latency.max()), float(self.links.up.min())
