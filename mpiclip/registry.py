"""Name -> component registries (DESIGN §2 rule 6): an unknown name lists the valid ones."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from mpiclip.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str, field: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise InputError(field, name, f"unknown {self.kind} (valid: {', '.join(sorted(self))})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()
