"""What the four peer comparisons share: the peer's virtual environment, timing alternated with mpiclip, and the
JSON row each comparison writes into the results file that ``benchmarks/suite.py --only peers`` gathers.

A peer runs in a virtual environment of its own, made by the script under ``--venv-root`` (default
~/.cache/mpiclip-peers) from pinned requirements and reused when present (a file in it records the
requirements it was made with; other requirements make it anew). Timing alternates the sides (peer, ours,
peer, ours, ...) ``--repeat`` times and takes medians of whole processes, launch to exit; where a side can
say how long its loop took, that is kept beside it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCHMARKS)
sys.path.insert(0, BENCHMARKS)  # the suite's helpers (_shared) and mpiclip of this checkout
sys.path.insert(1, ROOT)

from _shared import data_file, main_of  # noqa: E402  (re-exported for the scripts)

__all__ = ["data_file", "main_of", "parser", "Venv", "Side", "alternate", "row", "write_row", "validate_row",
           "ROW_KEYS", "parse", "ours_versions", "mpiclip_cmd", "load", "DEFAULT_RESULTS", "source_tree", "section",
           "trace_wall", "read_rows", "print_row", "work_folder", "environment", "PEERS", "gather", "suite_row"]

DEFAULT_VENV_ROOT = os.path.join("~", ".cache", "mpiclip-peers")
DEFAULT_RESULTS = os.path.join(ROOT, "results", "peers.json")
MARKER = "mpiclip-peer-requirements.json"  # in a venv: what it was made with

# a row: what the suite prints and checks (types: a number, None where a side cannot give it)
ROW_KEYS = {"name": str, "peer": str, "peer_seconds": float, "ours_seconds": float, "ratio": float,
            "peer_loop_seconds": (float, type(None)), "ours_loop_seconds": (float, type(None)),
            "loop_ratio": (float, type(None)), "agreement": dict, "not_like_for_like": str, "versions": dict,
            "repeat": int, "load": list}


def parser(doc: str, repeat: int = 3) -> argparse.ArgumentParser:
    """The options every peer script has."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv-root", default=DEFAULT_VENV_ROOT,
                    help="where the peer's virtual environment is made and kept (default: %(default)s)")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter the peer's virtual environment is made from (default: this one)")
    ap.add_argument("--repeat", type=int, default=repeat, help="alternated runs of each side (default: %(default)s)")
    ap.add_argument("--json", default=DEFAULT_RESULTS,
                    help="the results file the rows go to, replacing rows of the same name (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (the peer's outputs, the traces)")
    return ap


def parse(ap: argparse.ArgumentParser, *counts: str, positive: tuple = ()) -> argparse.Namespace:
    """The options, with ``--repeat`` and the options named in ``counts`` (their dest) at least 1 and those in
    ``positive`` finite and above 0: bad input is one line naming the option (an InputError), before anything runs."""
    import math

    from mpiclip.errors import InputError

    args = ap.parse_args()
    for dest in ("repeat", *counts):
        if getattr(args, dest) < 1:
            raise InputError("--" + dest.replace("_", "-"), getattr(args, dest), "must be at least 1")
    for dest in positive:
        value = getattr(args, dest)
        if not (math.isfinite(value) and value > 0):
            raise InputError("--" + dest.replace("_", "-"), value, "must be a finite number above 0")
    return args


@dataclass
class Venv:
    """The peer's virtual environment: ``root/name`` with ``requirements`` installed by pip, in that order (one pip
    call per group, for a package that must come before another: torch before opacus)."""

    root: str
    name: str
    requirements: list[list[str]]
    python: str = sys.executable
    path: str = field(init=False)

    def __post_init__(self):
        self.path = os.path.join(os.path.expanduser(self.root), self.name)

    @property
    def bin(self) -> str:
        return os.path.join(self.path, "bin", "python")

    def ensure(self, log: Callable[[str], None] = print) -> str:
        """The venv's python, made first if missing or made from other requirements."""
        marker = os.path.join(self.path, MARKER)
        wanted = {"python": self.python_version(), "requirements": self.requirements}
        if os.path.exists(marker):
            with open(marker) as f:
                if json.load(f) == wanted:
                    return self.bin
            log(f"{self.path}: made from other requirements, making it anew")
        shutil.rmtree(self.path, ignore_errors=True)
        log(f"making {self.path} ({'; '.join(' '.join(g) for g in self.requirements)})")
        steps = [[self.python, "-m", "venv", self.path]] + [
            [self.bin, "-m", "pip", "install", "-q", "--disable-pip-version-check", *group] for group in self.requirements]
        for cmd in steps:
            if subprocess.run(cmd).returncode != 0:  # pip's own lines above say why; the last line says what failed
                raise SystemExit(f"{self.path}: the peer cannot be installed here: `{' '.join(cmd)}` failed")
        with open(marker, "w") as f:
            json.dump(wanted, f)
        return self.bin

    def python_version(self) -> str:
        try:
            out = subprocess.run([self.python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True)
        except OSError as e:
            raise SystemExit(f"--python {self.python}: cannot be run ({e.strerror})") from None
        if out.returncode != 0:
            raise SystemExit(f"--python {self.python}: cannot be run (exit {out.returncode})")
        return out.stdout.strip()

    def versions(self, packages: list[str]) -> dict:
        """The installed versions of ``packages`` in the venv, and its python."""
        code = ("import importlib.metadata as m, json, platform, sys\n"
                "v = {'python': platform.python_version()}\n"
                "for p in sys.argv[1:]:\n"
                "    try: v[p] = m.version(p)\n"
                "    except m.PackageNotFoundError: v[p] = None\n"
                "print(json.dumps(v))")
        out = subprocess.run([self.bin, "-c", code, *packages], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)


def ours_versions() -> dict:
    import importlib.metadata as m

    v = {"python": platform.python_version(), "mpiclip": m.version("mpiclip")}
    for p in ("numpy", "scipy", "h5py", "mpi4py"):
        v[p] = m.version(p)
    return v


def mpiclip_cmd(ranks: int) -> list[str]:
    """``mpiexec -n ranks python -m mpi4py -m mpiclip`` with this interpreter (its venv's mpiexec if it has one)."""
    bindir = os.path.dirname(sys.executable)
    launcher = os.path.join(bindir, "mpiexec") if os.path.exists(os.path.join(bindir, "mpiexec")) else "mpiexec"
    return [launcher, "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "mpiclip"]


def environment(**extra: str) -> dict:
    """The environment of every timed process: one thread per process (2 ranks on 2 cores), this checkout first."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra})
    return env


@dataclass
class Side:
    """One side of a comparison: its command (or, for a command that differs between repeats, a function of the
    repeat's index: the seed of a noisy run), folder and environment, and how to read its loop's seconds after
    repeat i (None: it cannot say). ``prepare`` runs before every timed run, untimed (removing the last output)."""

    label: str
    cmd: Union[list, Callable[[int], list]]
    cwd: str
    env: dict
    loop_seconds: Optional[Callable[[int], Optional[float]]] = None
    prepare: Optional[Callable[[], None]] = None
    whole: list = field(default_factory=list)
    loops: list = field(default_factory=list)

    def command(self, i: int) -> list:
        return self.cmd(i) if callable(self.cmd) else self.cmd

    def run(self, i: int) -> None:
        if self.prepare:
            self.prepare()
        cmd = self.command(i)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=self.cwd, env=self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{self.label}: failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-1500:]}\n"
                             f"{proc.stderr[-3000:]}")
        self.whole.append(seconds)
        self.loops.append(self.loop_seconds(i) if self.loop_seconds else None)

    @property
    def median(self) -> float:
        return statistics.median(self.whole)

    @property
    def loop_median(self) -> Optional[float]:
        return statistics.median(self.loops) if self.loops and None not in self.loops else None


def alternate(sides: list[Side], repeat: int, log: Callable[[str], None] = print) -> None:
    """Run the sides in turn (A B C A B C ...) ``repeat`` times; each keeps its whole-process and loop seconds."""
    for i in range(repeat):
        for side in sides:
            side.run(i)
            loop = f", loop {side.loops[-1]:.3f} s" if side.loops[-1] is not None else ""
            log(f"  [{i + 1}/{repeat}] {side.label}: {side.whole[-1]:.3f} s{loop}")


def load() -> float:
    """The 1-minute load average (the machine is shared: it goes beside every number)."""
    return round(os.getloadavg()[0], 2)


def row(name: str, peer: Side, ours: Side, agreement: dict, not_like_for_like: str, versions: dict, repeat: int,
        loads: list) -> dict:
    """One comparison's JSON row: medians, the ratio peer / ours (> 1: ours faster), the loop-only times where both
    sides give them, whether the numbers agree, what is not like for like, the versions and the load."""
    peer_loop, ours_loop = peer.loop_median, ours.loop_median
    both = peer_loop is not None and ours_loop is not None
    return {"name": name, "peer": peer.label, "peer_seconds": peer.median, "ours_seconds": ours.median,
            "ratio": peer.median / ours.median, "peer_loop_seconds": peer_loop if both else None,
            "ours_loop_seconds": ours_loop if both else None, "loop_ratio": peer_loop / ours_loop if both else None,
            "agreement": agreement, "not_like_for_like": not_like_for_like, "versions": versions, "repeat": repeat,
            "load": loads}


def validate_row(r: dict) -> dict:
    """``r`` if it is a well-formed row; a ValueError naming the first key that is missing or of the wrong type."""
    if not isinstance(r, dict):
        raise ValueError(f"a row must be an object, not {type(r).__name__}")
    for key, kind in ROW_KEYS.items():
        if key not in r:
            raise ValueError(f"row {r.get('name', '?')!r}: {key} is missing")
        value = r[key]
        if float in (kind if isinstance(kind, tuple) else (kind,)) and type(value) is int:
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"row {r.get('name', '?')!r}: {key} = {value!r}: must be {_kind_name(kind)}")
    for key in ("peer_seconds", "ours_seconds", "ratio"):
        if not r[key] > 0:
            raise ValueError(f"row {r['name']!r}: {key} = {r[key]!r}: must be > 0")
    if "verdict" not in r["agreement"]:
        raise ValueError(f"row {r['name']!r}: agreement has no verdict")
    return r


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else {float: "a number"}.get(k, k.__name__) for k in kinds)


def read_rows(path: str) -> list[dict]:
    """The rows of a results file, each validated (none when the file does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: not a peers results file (an object with a list 'rows')")
    return [validate_row(r) for r in data["rows"]]


def write_row(path: str, new: dict) -> None:
    """Put the row ``new`` into the results file ``path`` (replacing a row of the same name), atomically."""
    validate_row(new)
    rows = [r for r in read_rows(path) if r["name"] != new["name"]] + [new]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"rows": rows}, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def print_row(r: dict) -> None:
    loop = f"; loop {r['peer_loop_seconds']:.3f} s vs {r['ours_loop_seconds']:.3f} s ({r['loop_ratio']:.2f}x)" \
        if r["loop_ratio"] is not None else ""
    print(f"{r['name']}: {r['peer']} {r['peer_seconds']:.3f} s, mpiclip {r['ours_seconds']:.3f} s, "
          f"ratio {r['ratio']:.2f}x (median of {r['repeat']}, load {r['load']}){loop}")
    print(f"  agreement: {r['agreement']['verdict']}")


def work_folder(prefix: str, keep: bool = False) -> str:
    """A new folder for a comparison's files (the peer's data and outputs, the traces), removed when the script
    ends, failed or not, unless ``keep`` (``--keep``)."""
    path = tempfile.mkdtemp(prefix=f"mpiclip-peer-{prefix}-")
    if not keep:
        atexit.register(shutil.rmtree, path, True)
    return path


def source_tree(source: str, venv_root: str, name: str, commit: str) -> str:
    """A checkout of a peer's repository at ``commit``, cloned by ``git clone`` from ``source`` (its address, or a
    local clone) into the cache folder once and reused after; local changes to it are refused (the peer runs as
    published)."""
    tree = os.path.join(os.path.expanduser(venv_root), "src", name)
    if not os.path.isdir(os.path.join(tree, ".git")):
        shutil.rmtree(tree, ignore_errors=True)
        if subprocess.run(["git", "clone", "-q", source, tree]).returncode != 0:
            shutil.rmtree(tree, ignore_errors=True)
            raise SystemExit(f"git clone {source} failed: name a local clone of it with --source PATH")
    head = subprocess.run(["git", "-C", tree, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head != commit and subprocess.run(["git", "-C", tree, "checkout", "-q", commit]).returncode != 0:
        raise SystemExit(f"{tree}: commit {commit} is not in {source}; remove the folder to clone it afresh")
    changed = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True).stdout
    if changed:
        raise SystemExit(f"{tree}: the peer's code has local changes; remove the folder to clone it afresh")
    return tree


def section(doc: str, heading: str) -> str:
    """The paragraph of a script's docstring that starts with ``heading:`` (what goes into a row as text)."""
    return " ".join(doc.split(f"{heading}: ", 1)[1].split("\n\n", 1)[0].split())


def trace_wall(path: str) -> float:
    """The round loop's wall seconds that an mpiclip run wrote into its trace (``wall_seconds``)."""
    import h5py

    with h5py.File(path, "r") as f:
        return float(f.attrs["wall_seconds"])


@dataclass(frozen=True)
class Peer:
    """A comparison script as the suite runs it: its file, whether it reads a LibSVM file (``--data``), whether it
    clones its peer's code (``--source``), and the issue's figure measured earlier on this machine (the reference)."""

    script: str
    reads_data: bool
    has_source: bool
    reference: str


PEERS = {
    "ef21": Peer("peer_ef21.py", True, True, "official script 23x slower (mpiclip on 2 ranks), 34x (1 rank)"),
    "flower": Peer("peer_flower.py", False, False, "Flower's simulation 10-17x slower"),
    "asgd": Peer("peer_asgd.py", False, True, "the notebook's loop 2x slower"),
    "opacus": Peer("peer_opacus.py", True, False, "Opacus 2.5-3x slower"),
}


def gather(folder: str, repeat: int, venv_root: str, data_dir: Optional[str], sources: dict,
           log: Callable[[str], None] = print) -> list[tuple[str, Optional[dict], str]]:
    """Run every peer script (one at a time) into one results file in ``folder``: (peer, row, why) for each row
    it wrote, or (peer, None, why not) for a script that failed (a peer that cannot be installed here, say), so
    that one missing peer does not cost the others' rows."""
    results = os.path.join(folder, "peers.json")
    out = []
    for name, peer in PEERS.items():
        cmd = [sys.executable, os.path.join(HERE, peer.script), "--repeat", str(repeat), "--venv-root", venv_root,
               "--json", results]
        if peer.reads_data and data_dir:
            cmd += ["--data-dir", data_dir]
        if peer.has_source and sources.get(name):
            cmd += ["--source", sources[name]]
        before = {r["name"] for r in read_rows(results)}
        script = os.path.basename(peer.script)
        log(f"peers: {script} ...")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=environment(), cwd=folder)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            out.append((name, None, f"not measured: {script} failed ({proc.returncode}): {last}"))
            continue
        out += [(name, r, peer.reference) for r in read_rows(results) if r["name"] not in before]
    return out


def suite_row(name: str, r: Optional[dict], note: str) -> dict:
    """A peer's row as the suite prints it: the peer's seconds against ours (ratio peer / ours, target >= 1)."""
    target = ">= 1 (ours faster)"
    if r is None:
        return {"name": f"peer {name}", "value": None, "unit": "s", "ratio": None, "target": target, "note": note}
    loop = f"; loop {r['loop_ratio']:.2f}x" if r["loop_ratio"] is not None else ""
    return {"name": r["name"], "value": r["peer_seconds"], "unit": "s", "ratio": r["ratio"], "target": target,
            "note": f"mpiclip {r['ours_seconds']:.3f} s{loop}; {'agrees' if r['agreement'].get('ok') else 'see agreement'}; "
                    f"issue: {note}; load {r['load']}", "peer_row": r}
