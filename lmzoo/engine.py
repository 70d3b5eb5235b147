"""trace -> apply_plan -> merge: the public entry points of the LayerMerge engine."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from lmzoo.adapters.base.registry import Mergeable, adapter_for
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import (
    InvalidArgumentError,
    InvalidInputError,
    InvalidPlanError,
    InvalidSpecError,
    MergeTooLargeError,
    NotConfiguredError,
)
from lmzoo.preprocessing import MAX_INPUT_SIDE

#: attribute set on configured and merged models: the plan that produced them
PLAN_ATTRIBUTE = "lmzoo_plan"
#: attribute set on configured and merged models: the adapter family
FAMILY_ATTRIBUTE = "lmzoo_family"


def _as_tuple(example_inputs: torch.Tensor | Sequence[object]) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs:
        return tuple(cast(Sequence[torch.Tensor], example_inputs))
    raise InvalidInputError(
        f"example_inputs must be a tensor or a non-empty tuple of inputs, got {type(example_inputs).__name__}"
    )


def trace(model: nn.Module, example_inputs: torch.Tensor | Sequence[object]) -> Spec:
    """The network spec of ``model`` (DESIGN §3), from its modules and one forward at batch 1.

    ``example_inputs`` is a tensor, or a tuple of the forward's positional arguments (a UNet takes
    ``(sample, timestep)``). The model is not modified.
    """
    if hasattr(model, PLAN_ATTRIBUTE):
        raise InvalidPlanError("this model already had a plan applied; trace the original model instead")
    inputs = _as_tuple(example_inputs)
    for tensor in inputs:
        if isinstance(tensor, torch.Tensor) and tensor.dim() >= 3 and max(tensor.shape[-2:]) > MAX_INPUT_SIDE:
            raise InvalidInputError(
                f"example input {tuple(tensor.shape)} is larger than {MAX_INPUT_SIDE} per side; "
                f"trace at the size the network is used at (at most {MAX_INPUT_SIDE})"
            )
    return adapter_for(model).trace(model, inputs)


def earlier_specs(model: nn.Module, example_inputs: torch.Tensor | Sequence[object]) -> tuple[Spec, ...]:
    """The specs earlier lmzoo versions traced from ``model`` where they differ from :func:`trace`'s,
    newest first (plans made for them are lifted with :func:`lmzoo.core.migration.lift_plan`)."""
    return adapter_for(model).earlier_specs(model, _as_tuple(example_inputs))


def apply_plan(model: nn.Module, spec: Spec, plan: Plan) -> nn.Module:
    """The configured network (DESIGN §5): a trainable copy of ``model`` computing exactly the
    function of ``merge`` of it. ``model`` is not modified."""
    if hasattr(model, PLAN_ATTRIBUTE):
        raise InvalidPlanError("this model already had a plan applied; apply plans to the original model")
    return _configure(model, spec, plan, in_place=False)


def merged_in_place(model: nn.Module, spec: Spec, plan: Plan, *, weights: bool = True) -> nn.Module:
    """``merge(apply_plan(model, spec, plan))`` without the two copies: ``model`` itself becomes the
    deploy network (checkpoint loading, where the randomly initialised base is thrown away).

    ``weights=False`` builds only the merged structure, to load a state dict into: the merge computes
    geometry, no weights, and the merged modules hold uninitialised memory."""
    configured = _configure(model, spec, plan, in_place=True)
    check_merge_memory(configured, bytes_per_weight=MERGE_BYTES if weights else 4)
    _replace_mergeable(configured, structure_only=not weights)
    return configured


def _configure(model: nn.Module, spec: Spec, plan: Plan, *, in_place: bool) -> nn.Module:
    if not isinstance(plan, Plan):
        raise InvalidPlanError(f"expected an lmzoo.Plan, got {type(plan).__name__}")
    if not isinstance(spec, Spec):
        raise InvalidSpecError(f"expected the lmzoo.Spec that trace() returned, got {type(spec).__name__}")
    adapter = adapter_for(model)
    if spec.family != adapter.family:
        raise InvalidPlanError(f"the spec is for a {spec.family} model but this is a {adapter.family} model")
    plan.validate(spec)
    configured = adapter.apply_plan(model, spec, plan, in_place=in_place)
    setattr(configured, PLAN_ATTRIBUTE, plan)
    setattr(configured, FAMILY_ATTRIBUTE, adapter.family)
    return configured


def merge(model: nn.Module) -> nn.Module:
    """The deploy network: every plan block of a configured network as one nn.Conv2d (BN folded,
    convs composed, shortcuts fused), same forward signature and output. ``model`` is not modified.
    A block whose merged kernel would not fit in memory raises MergeTooLargeError first
    (:func:`merge_memory_limit`)."""
    if not isinstance(model, nn.Module) or not hasattr(model, PLAN_ATTRIBUTE):
        raise NotConfiguredError(
            "merge() takes a configured network: call lmzoo.apply_plan(model, spec, plan) first"
        )
    check_merge_memory(model, bytes_per_weight=MERGE_BYTES)
    merged = copy.deepcopy(model)
    _replace_mergeable(merged)
    return merged


#: bytes of one merged weight while merging: float64 composition (lmzoo.adapters.base.modules)
MERGE_BYTES = 8
#: the share of the machine's memory one merged kernel may take: a merge holds a few copies of the
#: largest block's kernel at once (the composition, the result, its float32 cast)
MERGE_MEMORY_SHARE = 1 / 8


def merge_memory_limit() -> int:
    """The largest merged kernel, in bytes: ``$LMZOO_MERGE_LIMIT_GB``, else an eighth of this
    machine's memory (8 GiB where it cannot be read)."""
    import os

    if os.environ.get("LMZOO_MERGE_LIMIT_GB"):
        try:
            return int(float(os.environ["LMZOO_MERGE_LIMIT_GB"]) * 2**30)
        except ValueError:
            raise InvalidArgumentError("LMZOO_MERGE_LIMIT_GB must be a number of GiB") from None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 64 * 2**30
    return int(total * MERGE_MEMORY_SHARE)


def check_merge_memory(configured: nn.Module, *, bytes_per_weight: int, limit: int | None = None) -> None:
    """Raise MergeTooLargeError naming the first block whose merged kernel exceeds the limit."""
    from lmzoo.adapters.base.chain import ConfiguredBlock

    limit = merge_memory_limit() if limit is None else limit
    for block in configured.modules():
        if not isinstance(block, ConfiguredBlock):
            continue
        shape = block.merged_shape()
        size = (
            shape.out_channels
            * (1 if shape.depthwise else shape.in_channels)
            * shape.kernel**2
            * bytes_per_weight
        )
        if size > limit:
            k, gib = shape.kernel, 2**30
            raise MergeTooLargeError(
                f"block ({block.start}, {block.end}] would merge into a {k}x{k} conv from "
                f"{shape.in_channels} to {shape.out_channels} channels: {size / gib:.1f} GiB of weights, "
                f"above the merge limit of {limit / gib:.1f} GiB; cap merged kernels (solve.max_kernel in a "
                "recipe, CandidateRules(max_kernel=...) in the API) or raise LMZOO_MERGE_LIMIT_GB"
            )


def _replace_mergeable(module: nn.Module, *, structure_only: bool = False) -> None:
    for name, child in list(module.named_children()):
        if not isinstance(child, Mergeable):
            _replace_mergeable(child, structure_only=structure_only)
            continue
        with torch.no_grad():
            merged = child.lmzoo_merged(structure_only)
        if structure_only:
            _check_no_hidden_buffers(merged)
        setattr(module, name, merged)


def _check_no_hidden_buffers(module: nn.Module) -> None:
    """A merged structure is filled by loading a state dict; a non-persistent buffer would never be
    loaded and would keep uninitialised memory."""
    hidden = {name for name, _ in module.named_buffers()} - set(module.state_dict())
    if hidden:
        raise RuntimeError(f"merged module has non-persistent buffers {sorted(hidden)}; merge with weights")


@dataclass(frozen=True)
class MergeCheck:
    """How one plan merged: the merge time and the largest output difference, relative to max |output|."""

    blocks: int
    largest_kernel: int
    merge_s: float
    relative_error: float


def check_merge(
    model: nn.Module, spec: Spec, plan: Plan, example_inputs: torch.Tensor | Sequence[object]
) -> MergeCheck:
    """Apply ``plan``, merge, and compare the merged network with the configured one on the inputs."""
    inputs = _as_tuple(example_inputs)
    configured = apply_plan(model, spec, plan).eval()
    started = time.perf_counter()
    merged = merge(configured)
    merge_s = time.perf_counter() - started
    with torch.no_grad():
        a, b = tensor_output(configured(*inputs)), tensor_output(merged(*inputs))
    return MergeCheck(
        blocks=len(plan),
        largest_kernel=max(c.kernel for c in plan),
        merge_s=merge_s,
        relative_error=float((a - b).abs().max() / a.abs().max()),
    )


def tensor_output(output: object) -> torch.Tensor:
    """The tensor a model returns: diffusers' output dataclass ``.sample``, or a tuple's first item."""
    sample = getattr(output, "sample", output)
    if isinstance(sample, (tuple, list)):
        sample = sample[0]
    assert isinstance(sample, torch.Tensor)
    return sample
