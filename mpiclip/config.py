"""Run configurations: TOML files or packaged presets, ``--set`` overrides, strict validation.

A config has the sections below; each key is documented by ``mpiclip options``. The registry
sections ([problem], [method], [compressor], and the source and split of [data]) take the keys of
the component they name. A config may also hold ``[variants.<label>]`` tables: each is a set of
section tables applied to the base config, giving one run per label (the quick start compares GD,
EF and EF21 this way).

Overrides and variants merge into a section key by key, except that naming a different component
(``name``, or ``source`` for [data]) replaces the section: the old component's keys are dropped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Optional

from mpiclip import grid
from mpiclip.compressors import COMPRESSORS
from mpiclip.data import SOURCES, DataParams, DataSpec
from mpiclip.data.partition import SPLITS
from mpiclip.errors import InputError, did_you_mean
from mpiclip.methods import METHODS
from mpiclip.params import at_least, nonnegative, param, parse_params, positive, to_table
from mpiclip.paths import check_printable, printable
from mpiclip.problems import PROBLEMS
from mpiclip.runners import RUNNERS, runner_facts
from mpiclip.stepsize import StepsizeParams

if TYPE_CHECKING:  # [system]'s model is imported only by a config that has one (start-up)
    from mpiclip.system import SystemParams

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

UNHASHED_RUN_KEYS = ("name", "check_every", "checkpoint_every", "checkpoint_seconds", "resume")


def sections() -> tuple[str, ...]:
    """The config's sections: the runners' own ([async], [federated], and those of runners registered from
    outside the package) sit between [stepsize] and [system] (shared by every runner), in the registry's order."""
    runners = dict.fromkeys(r.section for r in runner_facts().values() if r.section)
    return ("run", "data", "problem", "method", "compressor", "stepsize", *runners, "system", "output")


SELECTORS = {"problem": "name", "method": "name", "compressor": "name", "data": "source"}


@dataclass(frozen=True)
class RunParams:
    name: str = param("run", "label of the run: trace attribute and the {name} in output.path", check=printable)
    n_workers: int = param(4, "number n of logical workers, spread over the MPI ranks in contiguous blocks",
                           check=at_least(1))
    rounds: int = param(1000, "round budget T: the run evaluates x^0 .. x^T", check=at_least(0))
    max_bits: float = param(0.0, "bit budget: stop at the first recorded round where the mean bits per worker "
                            "(paper encoding, initial round excluded) reach it (0: none)", check=nonnegative)
    tol: float = param(0.0, "stop once ‖∇f(x^t)‖² < tol at an evaluated round (0: never)", check=nonnegative)
    eval_every: int = param(1, "evaluate and record f and ‖∇f‖² every this many rounds (and at the end)",
                            check=at_least(1))
    seed: int = param(0, "seed of x^0 and of all randomness of the method", check=nonnegative)
    deterministic: bool = param(True, "sum in worker order so the trajectory is bit-identical on any number of "
                                "ranks; false uses Allreduce (faster for large dense messages)")
    check_every: int = param(200, "compare a checksum of x across ranks every this many rounds", check=at_least(1))
    x0: str = param("normal", "x^0: 'normal' (N(0, x0_scale² I) from run.seed), 'zeros', 'model' (the network's "
                    "own initialisation from run.seed; softmax, mlp and the torch networks, whose default it is), or a "
                    ".npy file")
    x0_scale: float = param(1.0, "standard deviation of x^0 for x0 = 'normal'", check=positive)
    checkpoint_every: int = param(0, "write a checkpoint beside the trace every this many rounds (0: only when "
                                  "SIGTERM/SIGINT stop the run or SIGUSR1 asks for one)", check=at_least(0))
    checkpoint_seconds: float = param(0.0, "also write one when this many seconds of wall time have passed since the "
                                      "last (0: off); agreed at the next recorded or checked round", check=nonnegative)
    resume: str = param("no", "continue from the checkpoint beside the trace: 'yes' (it must exist; `run --resume`), "
                        "'auto' (if there is one, else start; for batch jobs that may be requeued), 'no'",
                        choices=("no", "auto", "yes"))


@dataclass(frozen=True)
class OutputParams:
    path: str = param("results/{name}.h5", "trace file; {name} is run.name", check=printable)
    exists: str = param("error", "what to do if the trace exists: 'error', 'overwrite', or 'skip' the run if its "
                        "trace completed (a failed, interrupted or unreadable trace is run again)",
                        choices=("error", "overwrite", "skip"))
    flush_rows: int = param(1000, "write buffered rows to the trace every this many rows", check=at_least(1))
    flush_seconds: float = param(30.0, "... or once this many seconds have passed", check=positive)


@dataclass(frozen=True)
class Choice:
    """A component chosen from a registry, with its validated parameters."""

    name: str
    params: Any


@dataclass(frozen=True)
class Config:
    run: RunParams
    data: Optional[DataSpec]  # None for problems that make their own data
    problem: Choice
    method: Choice
    compressor: Choice
    stepsize: StepsizeParams
    output: OutputParams
    sections: tuple = ()  # ((name, params), ...): the section of the runner that drives the method, if it has one
    system: Optional[SystemParams] = None  # [system], shared by every runner; None: no simulated clock (as before it)

    def section(self, name: str) -> Any:
        """The parameters of a runner's section ([async], [federated]), or None if the config has none."""
        return dict(self.sections).get(name)

    def as_table(self) -> dict:
        """The complete config (every default filled in) as nested tables."""
        table = {"run": to_table(self.run)}
        if self.data is not None:
            table["data"] = {**to_table(self.data.common), **to_table(self.data.source), **to_table(self.data.split)}
        for section in ("problem", "method", "compressor"):
            choice = getattr(self, section)
            table[section] = {"name": choice.name, **to_table(choice.params)}
        table["stepsize"] = to_table(self.stepsize)
        for name, params in self.sections:
            table[name] = to_table(params)
        if self.system is not None:  # absent, the table (and the config's hash) is what it was before [system]
            table["system"] = to_table(self.system)
        table["output"] = to_table(self.output)
        return table

    def to_json(self) -> str:
        return json.dumps(self.as_table(), sort_keys=True)

    def to_toml(self) -> str:
        """The complete config as a TOML file (``mpiclip run`` reads it back to the same config)."""
        lines = []
        for section, values in self.as_table().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)

    @property
    def hash(self) -> str:
        """sha256 of everything that shapes the trajectory and the trace's rows: the config without the run's
        name, where its files go and how often it checks, flushes or checkpoints (a resumed run may change those)."""
        table = self.as_table()
        table.pop("output")
        for key in UNHASHED_RUN_KEYS:
            table["run"].pop(key, None)
        if self.data is not None and not self.data.common.test_fraction:  # traces made before the test set keep their hash
            for key in DataParams.UNSET_UNHASHED:
                table["data"].pop(key, None)
        if "system" in table:
            from mpiclip.system import SystemParams

            for key, default in SystemParams.UNHASHED_DEFAULTS.items():
                if table["system"].get(key, None) == default:
                    table["system"].pop(key)
        # a method's keys added after traces were made, at the value those traces ran with
        for key, default in getattr(self.method.params, "UNHASHED_DEFAULTS", {}).items():
            if table["method"].get(key, None) == default:
                table["method"].pop(key)
        return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()

    @property
    def checkpoint_path(self) -> str:
        """The checkpoint file beside the trace."""
        base = self.trace_path[:-3] if self.trace_path.endswith(".h5") else self.trace_path
        return base + ".ckpt.h5"

    @property
    def trace_path(self) -> str:
        return self.output.path.replace("{name}", self.run.name)


# ---------------------------------------------------------------------------------- loading
def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("mpiclip.presets").iterdir() if p.name.endswith(".toml"))


def read_source(ref: str) -> tuple[dict, str]:
    """(raw table, description) of a config file path or a preset name."""
    if ref.endswith(".toml") or os.sep in ref or os.path.exists(ref):
        if not os.path.isfile(ref):
            raise InputError("config", ref, "no such file (presets: " + ", ".join(preset_names()) + ")")
        try:
            with open(ref, "rb") as f:
                return tomllib.load(f), ref
        except tomllib.TOMLDecodeError as e:
            raise InputError("config", ref, f"is not valid TOML: {e}") from None
        except OSError as e:
            raise InputError("config", ref, f"cannot be read: {e.strerror}") from None
    if ref not in preset_names():
        raise InputError("config", ref, "is neither a .toml file nor a preset (presets: " + ", ".join(preset_names()) + ")"
                         + did_you_mean(ref, preset_names()))
    text = resources.files("mpiclip.presets").joinpath(ref + ".toml").read_text()
    return tomllib.loads(text), f"preset:{ref}"


def toml_value(v: Any) -> str:
    """A TOML literal for a config value (tables inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def parse_override(text: str) -> tuple[str, Any]:
    """'section.key=value' (value in TOML syntax; a bare word is a string) -> (dotted key, value)."""
    if "=" not in text:
        raise InputError("--set", text, "expected section.key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key:
        raise InputError("--set", text, "expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(table: dict, overrides: list[tuple[str, Any]]) -> dict:
    """A new table with the overrides applied. A key reaches any depth (``compressor.inner.k``); naming
    another component (a section's selector, or ``name`` in a nested table) drops the old one's keys, and
    such changes go first, so that the keys set beside them survive."""
    table = copy.deepcopy(table)
    order = lambda kv: (len(kv[0].split(".")) != 1, not _is_selector(kv[0].split(".")), len(kv[0].split(".")))
    for key, value in sorted(overrides, key=order):  # whole sections, then components from the top down, then keys
        path = key.split(".")
        section = path[0]
        if section not in sections():
            raise InputError(f"--set {key}", value, f"unknown section (valid: {', '.join(sections())})"
                             + did_you_mean(section, sections()))
        if len(path) == 1:
            if not isinstance(value, dict):
                raise InputError(f"--set {key}", value, "a whole section needs an inline table, e.g. {name = \"topk\", k = 2}")
            table[section] = value
            continue
        if not all(path):
            raise InputError(f"--set {key}", value, "expected section.key or section.table.key (no empty parts)")
        node = table.setdefault(section, {})
        if not isinstance(node, dict):
            raise InputError(f"--set {key}", value, f"{section} = {node!r} is not a table")
        for depth, part in enumerate(path[1:-1], start=1):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError(f"--set {key}", value, f"{'.'.join(path[: depth + 1])} = {child!r} is not a table")
            node = child
        leaf = path[-1]
        if _is_selector(path) and value != node.get(leaf):
            node.clear()
        node[leaf] = value
    return table


def _is_selector(path: list[str]) -> bool:
    """Does this key name a component (so that changing it replaces the table that holds it)?"""
    if len(path) == 2:
        return path[1] == SELECTORS.get(path[0])
    return len(path) > 2 and path[-1] == "name"


def expand_variants(table: dict, description: str) -> list[tuple[str, dict]]:
    """[(label, table)]: one entry per [variants.<label>], or the config itself if it has none."""
    variants = table.get("variants")
    base = {k: v for k, v in table.items() if k != "variants"}
    if variants is None:
        return [("", base)]
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        raise InputError("variants", description, "must hold one or more [variants.<label>] tables")
    out = []
    base_name = base.get("run", {}).get("name", RunParams.name)
    for label, changed in variants.items():
        check_printable("variants", label)
        entry = copy.deepcopy(base)
        entry.setdefault("run", {})["name"] = f"{base_name}-{label}"
        for section, changes in changed.items():
            if section not in sections() or not isinstance(changes, dict):
                raise InputError(f"variants.{label}.{section}", changes,
                                 f"expected a table of one of: {', '.join(sections())}"
                                 + ("" if section in sections() else did_you_mean(section, sections())))
            entry = apply_overrides(entry, [(f"{section}.{key}", value) for key, value in changes.items()])
        out.append((label, entry))
    return out


def load(ref: str, overrides: list[str] = (), multirun: bool = False) -> list[Config]:
    """Every run a config reference describes, validated. With ``multirun``, an override whose value is a
    comma list (``compressor.k=1,2,4``), ``range(start, stop[, step])`` or ``choice(a, b)`` is one axis of a
    grid: one run per point of the product, named ``<name>-<key>=<value>,...``."""
    return list(ConfigRuns(ref, overrides, multirun))


class ConfigRuns(grid.Indexed):
    """The configs of :func:`load`, made and validated one at a time when asked for: a grid of 10^6 points
    is counted at once, and a task of a Slurm array makes only its own (point after point, each point's
    variants in turn)."""

    def __init__(self, ref: str, overrides: list[str] = (), multirun: bool = False):
        raw, self.description = read_source(ref)
        if not multirun:
            for text in overrides:
                key, value = parse_override(text)
                if isinstance(value, str) and _sweep_function(value):
                    raise InputError(f"--set {key}", value, "range(...) and choice(...) are sweeps: add --multirun")
        self.axes = grid_axes(overrides) if multirun else [[parse_override(o)] for o in overrides]
        self.points = grid.Product(self.axes)
        self.variants = expand_variants(raw, self.description)

    def __len__(self) -> int:
        return len(self.points) * len(self.variants)

    def _item(self, i: int) -> Config:
        point, variant = divmod(i, len(self.variants))
        combo = self.points[point]
        varied = tuple(kv for kv, axis in zip(combo, self.axes) if len(axis) > 1)
        label, table = self.variants[variant]
        try:
            table = apply_overrides(table, list(combo))
            if varied:
                run = table.setdefault("run", {})
                run["name"] = f"{run.get('name', RunParams.name)}-{label_of(varied)}"
            return validate(table)
        except InputError as e:
            if not label:
                raise
            raise InputError(e.field, e.value, f"{e.reason} (in variant {label!r} of {self.description})") from None


def grid_axes(overrides: list[str]) -> list[Sequence]:
    """One axis of (key, value) pairs per override: its comma list, range(...) or choice(...) (lazy for a range)."""
    axes = []
    for text in overrides:
        key, _ = parse_override(text)
        raw = text.split("=", 1)[1].strip()
        function = _sweep_function(raw)
        values = SWEEP_FUNCTIONS[function[0]](key, raw, function[1]) if function else \
            [parse_override(f"{key}={part}")[1] for part in _top_level_split(key, raw)]
        axes.append(_Paired(key, values))
    return axes


class _Paired(grid.Indexed):
    """(key, value) for each value of an axis."""

    def __init__(self, key: str, values: Sequence):
        self.key, self.values = key, values

    def __len__(self) -> int:
        return len(self.values)

    def _item(self, i: int) -> tuple:
        return (self.key, self.values[i])


def _sweep_function(raw: str) -> Optional[tuple[str, str]]:
    """('range', '1, 4') for 'range(1, 4)': a Hydra-style sweep over an axis; None for any other value."""
    match = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", raw, re.S)
    return (match[1], match[2]) if match and match[1] in SWEEP_FUNCTIONS else None


def _choice_axis(key: str, raw: str, args: str) -> list:
    """choice(a, b, ...): the values, as a comma list gives them."""
    if not args.strip():
        raise InputError(f"--set {key}", raw, "choice(...) needs one or more values")
    return [parse_override(f"{key}={part}")[1] for part in _top_level_split(key, args)]


def _range_axis(key: str, raw: str, args: str) -> Sequence:
    """range(start, stop[, step]) as Hydra reads it: start, start + step, ... while below stop (above it for a
    negative step), stop excluded; step 1 by default, also given as step=; integers if all three are, else
    floats computed in decimal (range(0, 1, 0.1) gives 0.1, 0.2, 0.3, ... as written)."""
    usage = "expected range(start, stop[, step]) with finite numbers (stop excluded)"
    names, given = ("start", "stop", "step"), {}
    for position, part in enumerate(_top_level_split(key, args) if args.strip() else []):
        name, eq, text = part.partition("=")
        name, text = (name.strip(), text.strip()) if eq else (names[position] if position < 3 else "", part)
        value = parse_override(f"{key}={text}")[1]
        if name not in names or name in given or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise InputError(f"--set {key}", raw, usage)
        given[name] = value
    if "start" not in given or "stop" not in given:
        raise InputError(f"--set {key}", raw, usage)
    start, stop, step = given["start"], given["stop"], given.get("step", 1)
    if step == 0:
        raise InputError(f"--set {key}", raw, "the step of a range must not be 0")
    values = range(start, stop, step) if all(isinstance(v, int) for v in (start, stop, step)) else \
        _DecimalRange(start, stop, step)
    if not len(values):
        raise InputError(f"--set {key}", raw, "is an empty range (stop is excluded)")
    return values


class _DecimalRange(grid.Indexed):
    """start + i·step (as floats) while before stop, the arithmetic in decimal on the numbers as written."""

    def __init__(self, start: float, stop: float, step: float):
        from decimal import Decimal  # here: only a --multirun range of floats needs it (start-up)

        self.start, self.step = Decimal(repr(start)), Decimal(repr(step))
        self._len = max(0, math.ceil((Decimal(repr(stop)) - self.start) / self.step))

    def __len__(self) -> int:
        return self._len

    def _item(self, i: int) -> float:
        return float(self.start + i * self.step)


SWEEP_FUNCTIONS = {"range": _range_axis, "choice": _choice_axis}


def _top_level_split(key: str, raw: str) -> list[str]:
    """'1,2,4' -> ['1', '2', '4']; commas inside [...], {...} or quotes do not split."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(raw):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(raw[start:i].strip())
            start = i + 1
    parts.append(raw[start:].strip())
    if any(not p for p in parts):
        raise InputError(f"--set {key}", raw, "an empty value in a comma list")
    return parts


def label_of(values) -> str:
    """'compressor.k=1,stepsize.factor=64': a grid point as a run's name (sweeps and multiruns)."""
    return ",".join(f"{key}={value_text(v)}" for key, v in values)


def value_text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dict):
        return "+".join(f"{k}{value_text(x)}" for k, x in v.items())
    return str(v)


# ------------------------------------------------------------------------------- validation
def validate(table: dict) -> Config:
    for section, value in table.items():
        if section not in sections():
            raise InputError(section, value, f"unknown section (valid: {', '.join(sections())})"
                             + did_you_mean(section, sections()))
        if not isinstance(value, dict):
            raise InputError(section, value, "must be a table ([section])")
    problem = _choice(table, "problem", PROBLEMS, "logreg")
    run_table = dict(table.get("run", {}))
    default_x0 = PROBLEMS.get(problem.name, "problem.name").default_x0
    if default_x0 is not None:  # e.g. a network starts from its own initialisation; the config says so
        run_table.setdefault("x0", default_x0)
    run = parse_params(RunParams, run_table, "run")
    method = _choice(table, "method", METHODS, "ef21")
    method_cls = METHODS.get(method.name, "method.name")
    uses_compressor = method_cls.uses_compressor
    compressor = _choice(table, "compressor", COMPRESSORS, method_cls.default_compressor if uses_compressor else "identity")
    if not uses_compressor and compressor.name != "identity":
        raise InputError("compressor.name", compressor.name, f"method {method.name!r} sends uncompressed messages; "
                         "use 'identity' or drop [compressor]")
    data = _data(table.get("data"), PROBLEMS.get(problem.name, "problem.name").labels is not None, problem.name)
    stepsize = parse_params(StepsizeParams, table.get("stepsize", {}), "stepsize")
    output = parse_params(OutputParams, table.get("output", {}), "output")
    runner = RUNNERS.get(method_cls.runner, "method.name")
    if "system" in table and not runner.keeps_clock:
        clocks = ", ".join(name for name, r in RUNNERS.items() if r.keeps_clock)
        raise InputError("system", table["system"], f"method {method.name!r} runs on the {runner.name} runner, which keeps "
                         f"its own clock ([{runner.section}]); [system] drives the clocks of the {clocks} runners")
    for key in table.get("system", {}) if isinstance(table.get("system"), dict) else ():
        if key in runner.unused_system_keys:
            raise InputError(f"system.{key}", table["system"][key], f"does not apply to method {method.name!r}: "
                             f"{runner.unused_system_keys[key]}")
    return Config(run, data, problem, method, compressor, stepsize, output, _runner_sections(table, method.name, run),
                  _system(table.get("system"), run))


def _system(values: Optional[dict], run: RunParams) -> Optional[SystemParams]:
    """[system], checked against the workers (its files read and validated), or None if the config has none."""
    if values is None:
        return None
    from mpiclip.system import SystemModel
    from mpiclip.system import parse as parse_system

    params = parse_system(values)
    SystemModel(params, run.n_workers, run.seed)
    return params


def _runner_sections(table: dict, method: str, run: RunParams) -> tuple:
    """((name, params),) of the section of the runner that drives ``method``, if it has one; a section of
    another runner is an error naming that runner's methods."""
    mine = RUNNERS.get(METHODS.get(method, "method.name").runner, "method.name")
    for name, runner in runner_facts().items():
        if runner.section and runner.section != mine.section and runner.section in table:
            methods = ", ".join(n for n, c in METHODS.items() if c.runner == name)
            raise InputError(runner.section, table[runner.section], f"method {method!r} runs on the {mine.name} runner; "
                             f"[{runner.section}] is for the {name} methods ({methods})")
    if not mine.section:
        return ()
    values = parse_params(mine.params, table.get(mine.section, {}), mine.section)
    mine.check_section(values, run.n_workers)
    return ((mine.section, values),)


def _choice(table: dict, section: str, registry, default: str) -> Choice:
    values = dict(table.get(section, {}))
    name = values.get("name", default)
    if not isinstance(name, str):
        raise InputError(f"{section}.name", name, "expected a string")
    spec = registry.get(name, f"{section}.name")
    return Choice(name, parse_params(spec.params, values, section, skip=("name",), owner=f"{section} {name!r}"))


def _data(values: Optional[dict], needs_data: bool, problem: str) -> Optional[DataSpec]:
    if not needs_data:
        if values:
            raise InputError("data", values, f"problem {problem!r} generates its own data; remove [data]")
        return None
    values = values or {}
    source = SOURCES.get(values.get("source", DataParams.source), "data.source")
    split = SPLITS.get(values.get("split", DataParams.split), "data.split")
    common_keys = set(DataParams.__dataclass_fields__)
    source_keys = set(source.params.__dataclass_fields__)
    split_keys = set(split.params.__dataclass_fields__)
    owner = f"source {values.get('source', DataParams.source)!r} and split {values.get('split', DataParams.split)!r}"
    common = parse_params(DataParams, values, "data", skip=source_keys | split_keys, owner=owner)
    source_params = parse_params(source.params, values, "data", skip=common_keys | split_keys)
    split_params = parse_params(split.params, values, "data", skip=common_keys | source_keys)
    return DataSpec(common, source_params, split_params)
