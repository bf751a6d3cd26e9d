"""Name -> component registries (docs/design.md §2 rule 7): an unknown name lists the valid ones.

One style for every kind of component (runners, methods, compressors, problems, data sources,
splits): a class registered with ``@REGISTRY.register("name")``, which declares its parameters once,
as the frozen dataclass in its ``params`` attribute (see :mod:`mpiclip.params`), and documents itself
in the first line of its docstring. Registration sets the class's ``name``.

A package whose modules are costly to import declares which names each module registers
(``declare``); the module is then imported when one of its names is first looked up, so listing and
validating names imports nothing, and a run imports only the components it uses (start-up time).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from mpiclip.errors import InputError, did_you_mean

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._declared: dict[str, str] = {}  # name -> the module whose import registers it

    def declare(self, module: str, names: Iterable[str]) -> None:
        """``module`` registers ``names`` when imported: they are listed now, and it is imported on first use."""
        for name in names:
            if name in self._declared:
                raise ValueError(f"{self.kind} {name!r} declared twice")
            self._declared[name] = module

    def _load(self, name: str) -> None:
        module = self._declared.get(name)
        if module is not None and name not in self._entries:
            importlib.import_module(module)
            if name not in self._entries:
                raise RuntimeError(f"{module} was declared to register {self.kind} {name!r} and did not")

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
        self._load(name)
        try:
            return self._entries[name]
        except KeyError:
            raise InputError(field, name, f"unknown {self.kind} (valid: {', '.join(sorted(self))})"
                             + did_you_mean(name, self)) from None

    def doc(self, name: str) -> str:
        """The first line of the entry's docstring."""
        self._load(name)
        return (self._entries[name].__doc__ or "").strip().split("\n")[0]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._declared

    def __iter__(self) -> Iterator[str]:
        """The declared names in their order, then those registered without a declaration."""
        return iter([*self._declared, *(name for name in self._entries if name not in self._declared)])

    def items(self) -> list[tuple[str, T]]:
        """(name, class) of every entry, in the order of ``iter``: imports every declared module."""
        for name in self._declared:
            self._load(name)
        return [(name, self._entries[name]) for name in self]


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A package's module ``__getattr__`` (PEP 562): each name of ``exports`` (name -> submodule) is imported from its
    submodule when first used, so that importing the package does not import them."""
    def __getattr__(name: str) -> object:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A component without parameters."""
