"""Registries filled by decorators (timm's pattern): adapter families, sources and importance
estimators. A registry imports its built-in modules on first use, so adding one is adding a file,
and loads what other packages register through its entry-point group."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from lmzoo.errors import LmzooError

T = TypeVar("T")
C = TypeVar("C")


def submodules(package: str, *, packages: bool = False) -> Callable[[], list[str]]:
    """The public modules of ``package`` (and its public subpackages when ``packages``), to import."""

    def names() -> list[str]:
        path = importlib.import_module(package).__path__
        return [
            f"{package}.{info.name}"
            for info in pkgutil.iter_modules(path)
            if not info.name.startswith("_") and (packages or not info.ispkg)
        ]

    return names


class Registry(Generic[T]):
    """Name -> item, in registration order."""

    def __init__(
        self,
        kind: str,
        *,
        builtins: Callable[[], Iterable[str]],
        entry_point_group: str,
        error: type[LmzooError],
    ) -> None:
        self.kind = kind
        self._builtins = builtins
        self._group = entry_point_group
        self._error = error
        self._items: dict[str, T] = {}
        self._loaded = False

    def decorator(self, name_of: Callable[[Any], str]) -> Callable[[C], C]:
        """A class decorator registering its class under ``name_of(cls)``."""

        def register(item: C) -> C:
            self.add(name_of(item), item)  # type: ignore[arg-type]
            return item

        return register

    def add(self, name: str, item: T) -> None:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item

    def load(self) -> None:
        """Import the built-in modules and the entry points (once)."""
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtins():
            importlib.import_module(module)
        for ep in entry_points(group=self._group):
            ep.load()

    def items(self) -> list[tuple[str, T]]:
        self.load()
        return list(self._items.items())

    def names(self) -> tuple[str, ...]:
        self.load()
        return tuple(self._items)

    def get(self, name: str) -> T:
        """The item ``name``; an error listing the registered names otherwise."""
        self.load()
        if name not in self._items:
            raise self._error(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._items)}")
        return self._items[name]
