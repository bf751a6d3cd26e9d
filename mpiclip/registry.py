"""Name -> component registries (docs/design.md §2 rule 7): an unknown name lists the valid ones.

One style for every kind of component (runners, methods, compressors, problems, data sources,
splits): a class registered with ``@REGISTRY.register("name")``, which declares its parameters once,
as the frozen dataclass in its ``params`` attribute (see :mod:`mpiclip.params`), and documents itself
in the first line of its docstring. Registration sets the class's ``name``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Generic, Iterator, TypeVar

from mpiclip.errors import InputError, did_you_mean

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if not dataclasses.is_dataclass(getattr(cls, "params", None)):
                raise TypeError(f"{self.kind} {name!r} must declare its parameters as a dataclass in `params`")
            cls.name = name
            self._entries[name] = cls
            return cls

        return add

    def get(self, name: str, field: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise InputError(field, name, f"unknown {self.kind} (valid: {', '.join(sorted(self))})"
                             + did_you_mean(name, self)) from None

    def doc(self, name: str) -> str:
        """The first line of the entry's docstring."""
        return (self._entries[name].__doc__ or "").strip().split("\n")[0]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A component without parameters."""
