"""A merged network rebuilt from data alone (DESIGN §8): the base architecture from its source, traced
at the recorded input shape (its spec fingerprint must match the one the plan was made for), then
the plan applied and merged in place. This is how a checkpoint becomes a network again before its
weights are loaded, with no pickle and no training code."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lmzoo.core.migration import lift_plan
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.engine import earlier_specs, merged_in_place, trace
from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.sources import Architecture


class RebuildError(LmzooError):
    """The recorded architecture, input shape and plan do not make a network."""


def example_inputs(input_shape: Sequence[int], task: str, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
    """Zero inputs of a network of ``task`` at ``input_shape`` (C, H, W): an image batch, plus a
    timestep per image for denoising networks."""
    x = torch.zeros(batch_size, *input_shape)
    if task == "denoising":
        return (x, torch.zeros(batch_size, dtype=torch.long))
    return (x,)


def merged_structure(
    architecture: Architecture,
    *,
    input_shape: Sequence[int],
    task: str,
    spec_fingerprint: str,
    plan: Mapping[str, Any] | Plan,
    weights: bool = False,
    where: str = "config",
) -> nn.Module:
    """The merged network, to load a state dict into. Its merged modules hold uninitialised memory,
    or with ``weights`` the merge of the randomly initialised base."""
    try:
        model = architecture.build()
    except InvalidArgumentError as err:
        raise RebuildError(f"{where}: {err}") from None
    inputs = example_inputs(input_shape, task)
    try:
        spec = _traced_shapes(model, inputs, spec_fingerprint)
        plan = plan if isinstance(plan, Plan) else Plan.from_dict(plan)
        if spec.fingerprint != spec_fingerprint:
            earlier = next(
                (s for s in earlier_specs(model, inputs) if s.fingerprint == spec_fingerprint), None
            )
            if earlier is None:
                raise RebuildError(
                    f"{where}: the base architecture traces to another network than the one the plan "
                    "was made for (different library version or constructor arguments)"
                )
            plan = lift_plan(plan, earlier, spec)
        return merged_in_place(model, spec, plan, weights=weights)
    except RebuildError:
        raise
    except LmzooError as err:
        raise RebuildError(f"{where}: the plan does not fit the base architecture: {err}") from None
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as err:
        raise RebuildError(
            f"{where}: the base architecture does not run at the recorded input shape ({err})"
        ) from None


def _traced_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...], fingerprint: str) -> Spec:
    """The spec of ``model`` at ``inputs``. Only shapes matter when loading, so the forward first runs
    on an empty batch (no arithmetic; most of a load's trace time otherwise); a model that cannot
    run an empty batch, or whose spec then differs from the checkpoint's, is traced at batch 1."""
    try:
        spec = trace(model, tuple(x[:0] for x in inputs))
        spec = dataclasses.replace(spec, input_shapes=tuple(tuple(x.shape) for x in inputs))
        if spec.fingerprint == fingerprint:
            return spec
    except LmzooError:
        pass
    return trace(model, inputs)
