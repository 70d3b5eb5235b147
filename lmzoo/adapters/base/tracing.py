"""One forward pass at batch 1 with hooks: input shapes and execution order of given modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lmzoo.errors import InvalidInputError, UnsupportedModelError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode and give every module its own training flag back afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def batch_of_one(example_inputs: Sequence[Any]) -> tuple[Any, ...]:
    """The first sample of each batched tensor input (scalars and non-tensors pass through)."""
    batch = None
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            batch = x.shape[0] if batch is None else batch
    return tuple(
        x[:1] if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == batch else x
        for x in example_inputs
    )


def run_with_hooks(
    model: nn.Module,
    modules: dict[str, nn.Module],
    example_inputs: Sequence[Any],
    call: Callable[[nn.Module, tuple[Any, ...]], object] | None = None,
) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Input shape (batch dim dropped) and first-call order of each named module, from one forward
    pass at batch 1 in eval mode without gradients. The model is left as it was."""
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if name not in shapes:
                shapes[name] = tuple(args[0].shape[1:])
                order.append(name)

        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in modules.items()]
    inputs = batch_of_one(example_inputs)
    try:
        with eval_mode(model), torch.no_grad():
            if call is None:
                model(*inputs)
            else:
                call(model, inputs)
    except Exception as err:
        described = ", ".join(
            f"{tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__ for x in example_inputs
        )
        raise InvalidInputError(
            f"example input {described} does not fit {type(model).__name__}: {type(err).__name__}: {err}"
        ) from err
    finally:
        for h in handles:
            h.remove()
    missing = [name for name in modules if name not in shapes]
    if missing:
        raise UnsupportedModelError(
            f"{type(model).__name__}.forward never calls {', '.join(missing[:3])}: the module structure "
            "does not describe what the model computes"
        )
    return shapes, order
