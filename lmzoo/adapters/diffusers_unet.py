"""diffusers UNet2DModel (the DDPM family).

Units, in execution order as the official code numbers them: ``conv_in``, conv1 and conv2 of every
ResnetBlock2D, the conv of every Downsample2D and Upsample2D (``conv_out`` is not a unit: always kept,
never timed). Merges never cross ResNet blocks, attention, resampling or U-Net skips, so every
position is a barrier except the one between conv1 and conv2 of a ResNet block, whose norm2+SiLU may
be removed (paper §DDPM). Removing it adds a GroupNorm after conv2 and, in the merged network, pushes
the time-embedding projection through conv2. An Upsample2D conv may be removed entirely (the paper's
kernel-0 option); ``conv_in`` and the downsampling convs are kept as they are (one candidate each).

Specs traced before ``conv_in`` and the downsampling convs were units (lmzoo 0.1.0.dev0 checkpoints:
94 candidates for the DDPM CIFAR-10 UNet, 98 now) are :meth:`earlier_specs`: a plan made for one is
lifted onto today's spec when it loads (:func:`lmzoo.core.migration.lift_plan`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.adapters.base.modules import (
    MERGE_DTYPE,
    check_mergeable_conv,
    compose_all,
    compose_all_shapes,
    module_map,
    module_shape,
    to_module,
    unit_from_conv,
)
from lmzoo.adapters.base.registry import Adapter, register_adapter
from lmzoo.adapters.base.tracing import run_with_hooks
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Position, Spec, Unit
from lmzoo.errors import InvalidPlanError, UnsupportedModelError

MIDDLE_ACTIVATION = "groupnorm+silu"


@dataclass(frozen=True)
class _Group:
    """A ResnetBlock2D (two units), an Upsample2D conv (one removable unit), or a conv kept as it
    is (``conv_in``, a Downsample2D conv)."""

    path: str
    conv_paths: tuple[str, ...]
    removable: bool = False
    #: the unit's padding when it differs from the conv's own (see :func:`_downsample_group`)
    padding: int | None = None

    @property
    def is_resnet(self) -> bool:
        return len(self.conv_paths) == 2


#: UNet2DModel's parts in the order its forward runs them (the mid block is declared after the up
#: blocks, so declaration order is not execution order)
EXECUTION_ORDER = ("conv_in", "down_blocks", "mid_block", "up_blocks")


def _groups(model: nn.Module, *, numbering: int = 2) -> list[_Group]:
    """The unit groups in execution order. ``numbering=1``: the units lmzoo traced before conv_in and
    the downsampling convs were units, in declaration order (see :meth:`earlier_specs`)."""
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    if numbering == 1:
        modules = list(model.named_modules())
    else:
        parts = [(n, m) for n, m in model.named_children() if n in EXECUTION_ORDER]
        parts.sort(key=lambda part: EXECUTION_ORDER.index(part[0]))
        parts += [(n, m) for n, m in model.named_children() if n not in EXECUTION_ORDER]
        modules = [(f"{n}.{p}" if p else n, m) for n, part in parts for p, m in part.named_modules()]
    groups = []
    for path, module in modules:
        if isinstance(module, ResnetBlock2D):
            _check_resnet_block(module, path)
            groups.append(_Group(path, (f"{path}.conv1", f"{path}.conv2")))
        elif numbering > 1 and path == "conv_in" and isinstance(module, nn.Conv2d):
            groups.append(_Group(path, (path,)))
        elif numbering > 1 and isinstance(module, Downsample2D) and module.use_conv:
            groups.append(_downsample_group(module, path))
        elif isinstance(module, Upsample2D) and module.use_conv and not module.use_conv_transpose:
            if module.norm is not None:
                raise UnsupportedModelError(f"{path}: Upsample2D with a norm layer is not supported")
            attr = "conv" if module.name == "conv" else "Conv2d_0"
            groups.append(_Group(path, (f"{path}.{attr}",), removable=True))
    if not any(g.is_resnet or g.removable for g in groups):
        raise UnsupportedModelError("this UNet2DModel has no ResnetBlock2D or Upsample2D convs to merge")
    return groups


def _downsample_group(module: Any, path: str) -> _Group:
    """A Downsample2D conv, kept as it is. With ``padding=0`` diffusers pads (0, 1, 0, 1) before the
    conv; its unit records the unpadded input and padding 1, the symmetric padding with the same
    output size and cost, which is what the latency table times (the unit is never composed)."""
    if module.padding == 0 and module.conv.kernel_size == (3, 3) and module.conv.stride == (2, 2):
        return _Group(path, (f"{path}.conv",), padding=1)
    return _Group(path, (f"{path}.conv",))


def _checked_conv(model: nn.Module, group: _Group, path: str) -> nn.Conv2d:
    conv = model.get_submodule(path)
    if group.padding is not None and type(conv) is nn.Conv2d:
        return conv  # its padding is the Downsample2D's own pad (see _downsample_group)
    return check_mergeable_conv(conv, path)


def _check_resnet_block(block: nn.Module, path: str) -> None:
    problems = []
    if block.time_embedding_norm != "default":
        problems.append(f"time_embedding_norm={block.time_embedding_norm!r} (only 'default')")
    if block.upsample is not None or block.downsample is not None:
        problems.append("up/down-sampling inside the block")
    if not isinstance(block.norm2, nn.GroupNorm) or not isinstance(block.nonlinearity, nn.SiLU):
        problems.append("norm2 must be GroupNorm and the nonlinearity SiLU")
    shortcut = block.conv_shortcut
    if shortcut is not None and (type(shortcut) is not nn.Conv2d or shortcut.kernel_size != (1, 1)):
        problems.append("conv_shortcut must be a 1x1 conv")
    if problems:
        raise UnsupportedModelError(f"{path}: {'; '.join(problems)}")


@register_adapter
class DiffusersUNet2DAdapter(Adapter):
    family = "diffusers-unet2d"
    description = (
        "diffusers UNet2DModel with ResnetBlock2D and Upsample2D (DDPM, e.g. google/ddpm-cifar10-32)"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        from diffusers import UNet2DModel

        return isinstance(model, UNet2DModel)

    def trace(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Spec:
        return self._spec(model, example_inputs, _groups(model))

    def earlier_specs(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[Spec, ...]:
        """lmzoo 0.1.0.dev0's spec: no conv_in or downsampling units, declaration order."""
        return (self._spec(model, example_inputs, _groups(model, numbering=1), ordered=False),)

    def _spec(
        self,
        model: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        groups: list[_Group],
        ordered: bool = True,
    ) -> Spec:
        convs = {p: _checked_conv(model, g, p) for g in groups for p in g.conv_paths}
        shapes, order = run_with_hooks(model, dict(convs), example_inputs)
        if ordered and order != list(convs):
            raise UnsupportedModelError(
                f"{type(model).__name__} runs its convs in another order than lmzoo numbers them "
                f"(first difference: {next(p for p, q in zip(order, convs) if p != q)})"
            )
        units: list[Unit] = []
        positions = [Position(0, None, barrier=True)]
        for g in groups:
            for k, path in enumerate(g.conv_paths):
                unit = unit_from_conv(len(units) + 1, path, convs[path], shapes[path], removable=g.removable)
                if g.padding is not None:  # the explicit (0, 1, 0, 1) pad, seen as symmetric padding
                    c, h, w = unit.input_shape
                    unit = dataclasses.replace(unit, padding=g.padding, input_shape=(c, h - 1, w - 1))
                units.append(unit)
                middle = g.is_resnet and k == 0
                positions.append(
                    Position(len(units), MIDDLE_ACTIVATION if middle else None, barrier=not middle)
                )
        return Spec(
            family=self.family,
            units=tuple(units),
            positions=tuple(positions),
            input_shapes=tuple(tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)),
        )

    def apply_plan(self, model: nn.Module, spec: Spec, plan: Plan, *, in_place: bool = False) -> nn.Module:
        groups = _groups(model)
        if [p for g in groups for p in g.conv_paths] != [u.path for u in spec.units]:
            raise InvalidPlanError(
                "the spec was traced from a different network than the one given: trace this model "
                "with lmzoo.trace and solve again"
            )
        configured = model if in_place else copy.deepcopy(model)
        by_end = {c.end: c for c in plan}
        first_unit = 1
        for g in groups:
            last_unit = first_unit + len(g.conv_paths) - 1
            last_block = by_end[last_unit]  # every group ends at a barrier, hence at a block end
            middle_removed = last_block.start == first_unit - 1 or first_unit in plan.linear
            if g.is_resnet and middle_removed:
                first_block = by_end.get(first_unit, last_block)
                kept = (first_unit in first_block.kept, last_unit in last_block.kept)
                split = first_unit in plan.linear
                module = configured.get_submodule(g.path)
                configured.set_submodule(g.path, LayerMergeResnetBlock2D.configure(module, kept, split=split))
            else:
                # single-conv blocks: a conv kept nowhere is replaced by the identity (layer pruning,
                # or the paper's kernel-0 option on an upsampling conv)
                for unit, path in enumerate(g.conv_paths, start=first_unit):
                    if not by_end[unit].kept:
                        configured.set_submodule(path, nn.Identity())
            first_unit = last_unit + 1
        return configured


class LayerMergeResnetBlock2D(nn.Module):
    """A ResnetBlock2D whose middle norm2+SiLU is removed (configured), or its merged form.

    Configured: the block input (after norm1+SiLU) is zero-padded by the kept convs' total padding
    and the convs run unpadded, with the time embedding added between them; so conv2 sees a
    constant-per-channel shift everywhere and conv2(h + t) = conv2(h) + sum_spatial(W2) t exactly.
    Merged: one conv, and the time projection pushed through conv2 (W_t' = sum_spatial(W2) W_t).
    A GroupNorm after the convs replaces the removed norm (paper).
    ``split`` (the depth-compression baseline running the segment as two convs): each conv keeps
    its own padding and nothing is composed; merging only drops dropout.
    """

    def __init__(
        self,
        *,
        norm1: nn.Module,
        nonlinearity: nn.Module,
        pad: int,
        before: nn.Module,
        time_emb_proj: nn.Module | None,
        skip_time_act: bool,
        dropout: nn.Module,
        after: nn.Module,
        norm_out: nn.GroupNorm,
        conv_shortcut: nn.Module | None,
        output_scale_factor: float,
        original_paddings: tuple[int, int] = (0, 0),
        split: bool = False,
    ) -> None:
        super().__init__()
        self.split = split
        self.norm1 = norm1
        self.nonlinearity = nonlinearity
        self.pad = pad
        self.before = before
        self.time_emb_proj = time_emb_proj
        self.skip_time_act = skip_time_act
        self.dropout = dropout
        self.after = after
        self.norm_out = norm_out
        self.conv_shortcut = conv_shortcut
        self.output_scale_factor = output_scale_factor
        self.original_paddings = original_paddings

    @classmethod
    def configure(
        cls, block: Any, kept: tuple[bool, bool], *, split: bool = False
    ) -> LayerMergeResnetBlock2D:
        convs = [block.conv1, block.conv2]
        paddings = (block.conv1.padding[0], block.conv2.padding[0])
        pad = 0 if split else sum(p for p, k in zip(paddings, kept) if k)
        if not split:
            for conv in convs:
                conv.padding = (0, 0)
        norm2 = block.norm2
        norm_out = nn.GroupNorm(norm2.num_groups, norm2.num_channels, eps=norm2.eps, affine=True)
        norm_out = norm_out.to(device=block.conv2.weight.device, dtype=block.conv2.weight.dtype)
        return cls(
            norm1=block.norm1,
            nonlinearity=block.nonlinearity,
            pad=pad,
            before=convs[0] if kept[0] else nn.Identity(),
            time_emb_proj=block.time_emb_proj,
            skip_time_act=block.skip_time_act,
            dropout=block.dropout,
            after=convs[1] if kept[1] else nn.Identity(),
            norm_out=norm_out,
            conv_shortcut=block.conv_shortcut,
            output_scale_factor=block.output_scale_factor,
            original_paddings=paddings,
            split=split,
        )

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args: object, **kwargs: object):
        h = self.nonlinearity(self.norm1(input_tensor))
        if self.pad:
            h = F.pad(h, (self.pad,) * 4)
        h = self.before(h)
        if self.time_emb_proj is not None and temb is not None:
            t = temb if self.skip_time_act else self.nonlinearity(temb)
            h = h + self.time_emb_proj(t)[:, :, None, None]
        h = self.dropout(h)
        h = self.after(h)
        h = self.norm_out(h)
        shortcut = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor)
        return (shortcut + h) / self.output_scale_factor

    @property
    def is_merged(self) -> bool:
        return isinstance(self.after, nn.Identity) and self.pad == 0 and isinstance(self.dropout, nn.Identity)

    def lmzoo_merged(self, structure_only: bool = False) -> LayerMergeResnetBlock2D:
        if self.is_merged:
            return copy.deepcopy(self)
        if self.split:
            merged = copy.deepcopy(self)
            merged.dropout = nn.Identity()
            return merged
        kept = [
            (conv, p)
            for conv, p in zip((self.before, self.after), self.original_paddings)
            if isinstance(conv, nn.Conv2d)
        ]
        like = next(iter(self.norm_out.parameters()))
        channels = self.norm_out.num_channels
        merged_conv = to_module(
            None
            if not kept
            else compose_all_shapes([module_shape(c, c.in_channels, padding=p) for c, p in kept], channels)
            if structure_only
            else compose_all([module_map(c, c.in_channels, padding=p) for c, p in kept], channels),
            like=like,
        )
        time_emb_proj = copy.deepcopy(self.time_emb_proj)
        if isinstance(self.after, nn.Conv2d) and isinstance(time_emb_proj, nn.Linear):
            # The time shift t enters before conv2: conv2(h + t) = conv2(h) + sum_spatial(W2) t.
            pushed = torch.nn.utils.skip_init(
                nn.Linear,
                time_emb_proj.in_features,
                self.after.out_channels,
                device=like.device,
                dtype=like.dtype,
            )
            if not structure_only:
                push = self.after.weight.detach().to(MERGE_DTYPE).sum(dim=(2, 3))
                with torch.no_grad():
                    pushed.weight.copy_(push @ time_emb_proj.weight.to(MERGE_DTYPE))
                    pushed.bias.copy_(push @ time_emb_proj.bias.to(MERGE_DTYPE))
            time_emb_proj = pushed
        return LayerMergeResnetBlock2D(
            norm1=copy.deepcopy(self.norm1),
            nonlinearity=copy.deepcopy(self.nonlinearity),
            pad=0,
            before=merged_conv,
            time_emb_proj=time_emb_proj,
            skip_time_act=self.skip_time_act,
            dropout=nn.Identity(),
            after=nn.Identity(),
            norm_out=copy.deepcopy(self.norm_out),
            conv_shortcut=copy.deepcopy(self.conv_shortcut),
            output_scale_factor=self.output_scale_factor,
        )
