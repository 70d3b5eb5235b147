"""The adapter registry: one adapter per model family, registered with a decorator.

Built-in adapters are the public modules of this package; they are imported on first use, so adding
a family means adding one file. Third-party packages may register more through the
``lmzoo.adapters`` entry-point group.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from typing import ClassVar, TypeVar

import torch
from torch import nn

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import UnsupportedModelError


class Adapter(ABC):
    """Turns a model of one family into a Spec, and applies a Plan back onto it."""

    #: unique family name, recorded in every Spec
    family: ClassVar[str]
    #: what models the family covers, shown when a model is not supported
    description: ClassVar[str]

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether ``model`` belongs to this family (by module type, never by name or depth)."""

    @abstractmethod
    def trace(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Spec:
        """The model's spec, from its module structure and one forward pass at batch 1."""

    @abstractmethod
    def apply_plan(self, model: nn.Module, spec: Spec, plan: Plan, *, in_place: bool = False) -> nn.Module:
        """A configured copy of ``model`` (the plan is already validated against ``spec``);
        ``in_place``: configure ``model`` itself (loading, where the base is thrown away)."""


_ADAPTERS: dict[str, type[Adapter]] = {}
_loaded = False
A = TypeVar("A", bound=type[Adapter])


def register_adapter(cls: A) -> A:
    """Class decorator adding an adapter to the registry."""
    if cls.family in _ADAPTERS and _ADAPTERS[cls.family] is not cls:
        raise ValueError(f"adapter family {cls.family!r} is registered twice")
    _ADAPTERS[cls.family] = cls
    return cls


def _load_adapters() -> None:
    global _loaded
    if _loaded:
        return
    package = importlib.import_module("lmzoo.adapters")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"lmzoo.adapters.{info.name}")
    for ep in entry_points(group="lmzoo.adapters"):
        ep.load()
    _loaded = True


def registered_families() -> dict[str, str]:
    """Family name -> description of every registered adapter."""
    _load_adapters()
    return {name: cls.description for name, cls in sorted(_ADAPTERS.items())}


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter whose family ``model`` belongs to."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    _load_adapters()
    for cls in _ADAPTERS.values():
        if cls.matches(model):
            return cls()
    supported = "; ".join(f"{name}: {desc}" for name, desc in registered_families().items())
    raise UnsupportedModelError(
        f"{type(model).__module__}.{type(model).__name__} is not a supported model. "
        f"Supported families: {supported}"
    )


def adapter_by_family(family: str) -> Adapter:
    _load_adapters()
    if family not in _ADAPTERS:
        raise UnsupportedModelError(
            f"no adapter for family {family!r}; registered: {', '.join(sorted(_ADAPTERS))}"
        )
    return _ADAPTERS[family]()
