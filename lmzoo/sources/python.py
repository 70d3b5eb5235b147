"""A user's own network: a factory function named ``package.module:function`` (called with the
recipe's ``model.kwargs``, returning an ``nn.Module``).

A checkpoint records the factory's name, never its code, and loading never imports a module that a
checkpoint names: the factory must already be imported (or registered with
:func:`register_factory`) when a downloaded checkpoint loads. Building from the user's own recipe,
and loading an entry of the user's own local store (which only ``lmzoo build`` writes), import the
factory's module first (:func:`import_factory`)."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lmzoo.errors import InvalidArgumentError
from lmzoo.sources import Source, load_state, register_source, safetensors_state

if TYPE_CHECKING:
    from torch import nn

#: ``package.module:function`` (a dotted module path, a colon, a dotted attribute path)
FACTORY_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_FACTORIES: dict[str, Callable[..., Any]] = {}


def register_factory(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: make ``function`` a factory checkpoints may name, as ``module:qualname``."""
    _FACTORIES[f"{function.__module__}:{function.__qualname__}"] = function
    return function


def import_factory(name: str) -> None:
    """Import the module of the factory ``name`` (for the user's own recipes and store only)."""
    _check_name(name)
    module = name.partition(":")[0]
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise InvalidArgumentError(
            f"the factory {name} is not importable here ({err}); install or put on PYTHONPATH the package "
            "that provides it"
        ) from None


def _check_name(name: str) -> None:
    if not FACTORY_NAME.fullmatch(name):
        raise InvalidArgumentError(f"model.arch {name!r} must name a factory as package.module:function")


def _resolve(name: str) -> Callable[..., Any]:
    """The factory, registered or in an already imported module (nothing is imported here)."""
    _check_name(name)
    if name in _FACTORIES:
        return _FACTORIES[name]
    module_name, _, attribute = name.partition(":")
    module = sys.modules.get(module_name)
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None) if target is not None else None
    if module is None or not callable(target):
        raise InvalidArgumentError(
            f"the factory {name} is not loaded: import {module_name} (or register the factory with "
            "lmzoo.sources.python.register_factory) before lmzoo.load; lmzoo never imports code that a "
            "checkpoint names"
        )
    return target


@register_source
class PythonSource(Source):
    name = "python"
    description = "a user's factory function package.module:function(**kwargs) returning an nn.Module"

    def check(self, arch: str, kwargs: Mapping[str, Any]) -> None:
        _check_name(arch)

    def import_own_code(self, arch: str) -> None:
        import_factory(arch)

    def build(self, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        from torch import nn

        factory = _resolve(arch)
        try:
            model = factory(**kwargs)
        except Exception as err:  # a user's code raises what it raises
            raise InvalidArgumentError(f"the factory {arch} failed: {type(err).__name__}: {err}") from None
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(
                f"the factory {arch} returned a {type(model).__name__}, not an nn.Module"
            )
        return model

    def load_pretrained(self, reference: str, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        return load_state(self.build(arch, kwargs), safetensors_state(reference), reference)
