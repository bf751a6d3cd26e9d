"""Declarative, validated parameter records.

Every configurable component (problem, compressor, method, data source, split, and the fixed config
sections) declares its parameters as a frozen dataclass whose fields are made with :func:`param`.
:func:`parse_params` turns a TOML table into such a record: unknown keys, wrong types, and values
outside their range are :class:`~mpiclip.errors.InputError` naming ``section.key`` and the value.
A record may define ``check(self)`` for rules that tie several keys together; it runs after parsing
(not in ``__post_init__``, because method classes inherit their parameter records and are rebuilt
with resolved values, e.g. a σ computed from a privacy target).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import typing
from typing import Any, Callable, Iterable, Optional

from mpiclip.errors import InputError, did_you_mean

Check = Callable[[Any], Optional[str]]


def param(default: Any, doc: str, *, check: Check | None = None, choices: Iterable[str] | None = None) -> Any:
    """A dataclass field carrying its documentation, a range check and (for strings) the choices."""
    meta = {"doc": doc, "check": check, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def at_least(lo: float) -> Check:
    return lambda v: None if v >= lo else f"must be >= {lo:g}"


def positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def nonnegative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def finite_positive(v: float) -> str | None:
    return None if 0 < v < math.inf else "must be a finite number > 0"


def finite_nonnegative(v: float) -> str | None:
    return None if 0 <= v < math.inf else "must be a finite number >= 0"


def parse_params(cls: type, table: dict[str, Any], section: str, skip: Iterable[str] = (), owner: str = "") -> Any:
    """Build ``cls`` from ``table``; keys in ``skip`` belong to someone else and are ignored; ``owner``
    names the component in the message about an unknown key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls) if table else {}
    skip = set(skip)
    unknown = sorted(set(table) - set(fields) - skip)
    if unknown:
        valid = ", ".join(sorted(set(fields) | skip)) or "none"
        where = f" for {owner}" if owner else ""
        raise InputError(f"{section}.{unknown[0]}", table[unknown[0]], f"unknown key{where} (valid keys: {valid})"
                         + did_you_mean(unknown[0], set(fields) | skip))
    values = {}
    for name, f in fields.items():
        if name not in table:
            continue
        where = f"{section}.{name}"
        value = _coerce(table[name], hints[name], where)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise InputError(where, value, f"must be one of {', '.join(choices)}" + did_you_mean(value, choices))
        check = f.metadata.get("check")
        reason = check(value) if check is not None and value is not None else None
        if reason:
            raise InputError(where, value, reason)
        if not _finite(value):  # no setting means anything at infinity (and inf makes runs that look fine)
            raise InputError(where, value, "must be finite")
        values[name] = value
    record = cls(**values)
    if hasattr(record, "check"):
        record.check()
    return record


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    """The evaluated annotations of a parameter class (``typing.get_type_hints`` compiles each one: a sweep parses the
    same classes for every point)."""
    return typing.get_type_hints(cls)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, doc) of each parameter, for help texts."""
    hints = _hints(cls)
    return [(f.name, _type_name(hints[f.name]), _default(f), _doc(f)) for f in dataclasses.fields(cls)]


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def to_table(record: Any) -> dict[str, Any]:
    """The record as a TOML/JSON-ready table (tuples become lists, None entries are dropped)."""
    out = {}
    for f in dataclasses.fields(record):
        v = getattr(record, f.name)
        if v is None:
            continue
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _doc(f: dataclasses.Field) -> str:
    doc = f.metadata.get("doc", "")
    choices = f.metadata.get("choices")
    return f"{doc} (one of: {', '.join(choices)})" if choices else doc


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union:
        return _type_name(next(a for a in args if a is not type(None)))
    if typing.get_origin(tp) is tuple:
        return f"list of {_type_name(args[0])}"
    return {int: "integer", float: "number", str: "string", bool: "boolean", dict: "table"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(where, value, f"expected {_a(_type_name(tp))}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                raise InputError(where, value, "must be a number, not nan")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    else:  # pragma: no cover - a declaration error, not user input
        raise TypeError(f"unsupported parameter type {tp!r} for {where}")
    raise InputError(where, value, f"expected {_a(_type_name(tp))}")


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun
