"""Elementwise activations by kind: the names a spec records at its positions, the modules and
functions they come from, and fresh modules to put back. The merge maths never depends on which
activation a position has; only configured networks apply them, so any elementwise activation is a
removable one. A kind is a name, with its parameter after a colon where it has one
(``leaky_relu:0.2``, ``elu:1.0``)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: kind name -> a fresh, out-of-place module (the parameter, where the kind has one, as a float)
_FACTORIES: dict[str, Callable[[float | None], nn.Module]] = {
    "relu": lambda p: nn.ReLU(),
    "relu6": lambda p: nn.ReLU6(),
    "silu": lambda p: nn.SiLU(),
    "gelu": lambda p: nn.GELU(),
    "gelu-tanh": lambda p: nn.GELU(approximate="tanh"),
    "hardswish": lambda p: nn.Hardswish(),
    "hardsigmoid": lambda p: nn.Hardsigmoid(),
    "sigmoid": lambda p: nn.Sigmoid(),
    "tanh": lambda p: nn.Tanh(),
    "mish": lambda p: nn.Mish(),
    "selu": lambda p: nn.SELU(),
    "leaky_relu": lambda p: nn.LeakyReLU(0.01 if p is None else p),
    "elu": lambda p: nn.ELU(1.0 if p is None else p),
}
#: kinds with act(act(x)) == act(x): re-applying one after an identity block changes nothing
IDEMPOTENT = frozenset({"relu", "relu6"})


def _parameterised(name: str, value: float, default: float) -> str:
    return name if value == default else f"{name}:{value!r}"


def module_kind(module: nn.Module) -> str | None:
    """The kind of an activation module, or None when ``module`` is not one lmzoo knows."""
    simple = {
        nn.ReLU: "relu",
        nn.ReLU6: "relu6",
        nn.SiLU: "silu",
        nn.Hardswish: "hardswish",
        nn.Hardsigmoid: "hardsigmoid",
        nn.Sigmoid: "sigmoid",
        nn.Tanh: "tanh",
        nn.Mish: "mish",
        nn.SELU: "selu",
    }
    kind = simple.get(type(module))
    if kind is not None:
        return kind
    if type(module) is nn.GELU:
        return "gelu-tanh" if module.approximate == "tanh" else "gelu"
    if type(module) is nn.LeakyReLU:
        return _parameterised("leaky_relu", float(module.negative_slope), 0.01)
    if type(module) is nn.ELU:
        return _parameterised("elu", float(module.alpha), 1.0)
    return None


def _argument(node: Any, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def function_kind(node: Any) -> str | None:
    """The kind of a ``call_function`` / ``call_method`` graph node applying an activation to its
    first argument, or None."""
    if node.op == "call_method":
        methods = {
            "relu": "relu",
            "relu_": "relu",
            "sigmoid": "sigmoid",
            "sigmoid_": "sigmoid",
            "tanh": "tanh",
        }
        return methods.get(node.target)
    if node.op != "call_function":
        return None
    target = node.target
    simple: dict[Any, str] = {
        torch.relu: "relu",
        torch.relu_: "relu",
        F.relu: "relu",
        F.relu6: "relu6",
        F.silu: "silu",
        F.hardswish: "hardswish",
        F.hardsigmoid: "hardsigmoid",
        torch.sigmoid: "sigmoid",
        F.sigmoid: "sigmoid",
        torch.tanh: "tanh",
        F.tanh: "tanh",
        F.mish: "mish",
        F.selu: "selu",
    }
    if target in simple:
        return simple[target]
    if target is F.gelu:
        return "gelu-tanh" if _argument(node, 1, "approximate", "none") == "tanh" else "gelu"
    if target is F.leaky_relu:
        return _parameterised("leaky_relu", float(_argument(node, 1, "negative_slope", 0.01)), 0.01)
    if target is F.elu:
        return _parameterised("elu", float(_argument(node, 1, "alpha", 1.0)), 1.0)
    if target is F.hardtanh and (_argument(node, 1, "min_val", -1.0), _argument(node, 2, "max_val", 1.0)) == (
        0.0,
        6.0,
    ):
        return "relu6"
    return None


def kind_name(kind: str) -> str:
    """The kind without its parameter."""
    return kind.split(":", 1)[0]


def known_kind(kind: str) -> bool:
    name, _, parameter = kind.partition(":")
    if name not in _FACTORIES:
        return False
    try:
        float(parameter or 0)
    except ValueError:
        return False
    return True


def make_activation(kind: str | None) -> nn.Module:
    """A fresh, out-of-place activation module of the given kind (nn.Identity for None)."""
    if kind is None:
        return nn.Identity()
    if not known_kind(kind):
        raise ValueError(f"no module for activation kind {kind!r}")
    name, _, parameter = kind.partition(":")
    return _FACTORIES[name](float(parameter) if parameter else None)


#: graph functions that add two maps (a residual addition)
ADDITIONS = (operator.add, operator.iadd, torch.add)
