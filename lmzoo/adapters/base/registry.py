"""The adapter registry: one adapter per model family, registered with a decorator.

Built-in families are the modules directly in ``lmzoo/adapters`` (this ``base`` package holds what
they are built from); they are imported on first use, so adding a family means adding one file.
Third-party packages may register more through the ``lmzoo.adapters`` entry-point group.

Modules that an adapter puts into a configured network and that turn into something else when the
network is merged implement :class:`Mergeable`; ``lmzoo.merge`` replaces each of them by its
``lmzoo_merged()`` result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import UnsupportedModelError
from lmzoo.registry import Registry, submodules


@runtime_checkable
class Mergeable(Protocol):
    """A module of a configured network that merges into its deploy form.

    ``structure_only``: build the deploy module's structure without computing its weights (its
    parameters then hold uninitialised memory, to be filled by loading a state dict)."""

    def lmzoo_merged(self, structure_only: bool = False) -> nn.Module: ...


class Adapter(ABC):
    """Turns a model of one family into a Spec, and applies a Plan back onto it."""

    #: unique family name, recorded in every Spec (and so in every spec fingerprint: never rename)
    family: ClassVar[str]
    #: what models the family covers, shown when a model is not supported
    description: ClassVar[str]
    #: a fallback family takes the models no other family accepts (the generic graph adapter)
    fallback: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether ``model`` belongs to this family (by module type, never by name or depth). At most
        one registered family may accept a model."""

    @abstractmethod
    def trace(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Spec:
        """The model's spec, from its module structure and one forward pass at batch 1."""

    @abstractmethod
    def apply_plan(self, model: nn.Module, spec: Spec, plan: Plan, *, in_place: bool = False) -> nn.Module:
        """A configured copy of ``model`` (the plan is already validated against ``spec``);
        ``in_place``: configure ``model`` itself (loading, where the base is thrown away)."""

    def earlier_specs(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[Spec, ...]:
        """The specs earlier lmzoo versions traced from ``model``, newest first, where they differ
        from today's: checkpoints made for one still load, their plan lifted onto today's spec
        (:func:`lmzoo.core.migration.lift_plan`). A family whose numbering never changed has none."""
        return ()


ADAPTERS: Registry[type[Adapter]] = Registry(
    "adapter family",
    builtins=submodules("lmzoo.adapters"),
    entry_point_group="lmzoo.adapters",
    error=UnsupportedModelError,
)
#: class decorator adding an adapter to the registry, under its family name
register_adapter = ADAPTERS.decorator(lambda cls: cls.family)


def registered_families() -> dict[str, str]:
    """Family name -> description of every registered adapter."""
    return {name: cls.description for name, cls in sorted(ADAPTERS.items())}


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter whose family ``model`` belongs to; an error when none or several accept it."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    kind = f"{type(model).__module__}.{type(model).__name__}"
    families = ADAPTERS.items()
    accepting = [cls for _, cls in families if not cls.fallback and cls.matches(model)]
    if not accepting:
        accepting = [cls for _, cls in families if cls.fallback and cls.matches(model)][:1]
    if len(accepting) > 1:
        raise UnsupportedModelError(
            f"{kind} is accepted by several adapter families ({', '.join(c.family for c in accepting)}); "
            "each model must belong to one: make their matches() exclusive"
        )
    if accepting:
        return accepting[0]()
    supported = "; ".join(f"{name}: {desc}" for name, desc in registered_families().items())
    raise UnsupportedModelError(f"{kind} is not a supported model. Supported families: {supported}")


def adapter_by_family(family: str) -> Adapter:
    return ADAPTERS.get(family)()
