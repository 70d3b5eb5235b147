"""timm ResNet family (BasicBlock and Bottleneck): resnet18/34/50/101/152 and relatives.

Chain: the residual blocks of layer1..layer4 (stem and head stay untouched). Each block's convs are
units, its skip is a residual span (identity or 1x1 conv + BN projection), and its activations sit
at the unit outputs, the last one after the addition. Following the paper's ResNet setting, the
position right after every strided conv is a barrier, so a strided conv is always its own block.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lmzoo.adapters.base.chain import ChainAdapter, ChainLayout, LayoutUnit
from lmzoo.adapters.base.modules import activation_kind
from lmzoo.adapters.base.registry import register_adapter
from lmzoo.core.spec import ResidualSpan
from lmzoo.errors import UnsupportedModelError

_BLOCK_LAYERS = {
    "BasicBlock": (("conv1", "bn1", "act1"), ("conv2", "bn2", "act2")),
    "Bottleneck": (("conv1", "bn1", "act1"), ("conv2", "bn2", "act2"), ("conv3", "bn3", "act3")),
}
#: submodules that must be identity (or absent) for the block to be a plain conv chain
_MUST_BE_IDENTITY = ("aa", "se")


@register_adapter
class TimmResNetAdapter(ChainAdapter):
    family = "timm-resnet"
    description = "timm ResNet with BasicBlock/Bottleneck blocks (resnet18, resnet34, resnet50, ...)"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """timm ResNets made of plain blocks; the others (SE, anti-aliasing, ResNet-D's pooled
        shortcuts) belong to the generic family."""
        if not type(model).__module__.startswith("timm."):
            return False
        from timm.models.resnet import ResNet

        return isinstance(model, ResNet) and cls.lays_out(model)

    def layout(self, model: nn.Module) -> ChainLayout:
        from timm.models.resnet import BasicBlock, Bottleneck

        containers = tuple(
            name
            for name, child in model.named_children()
            if isinstance(child, nn.Sequential)
            and len(child) > 0
            and all(isinstance(b, (BasicBlock, Bottleneck)) for b in child)
        )
        if not containers:
            raise UnsupportedModelError("this ResNet has no stages of BasicBlock/Bottleneck blocks")
        units: list[LayoutUnit] = []
        spans: list[ResidualSpan] = []
        barriers: set[int] = set()
        for container in containers:
            stage: Any = model.get_submodule(container)
            for i, block in enumerate(stage):
                path = f"{container}.{i}"
                _check_plain_block(block, path)
                source = len(units)
                for conv, norm, act in _BLOCK_LAYERS[type(block).__name__]:
                    units.append(
                        LayoutUnit(
                            f"{path}.{conv}",
                            f"{path}.{norm}",
                            activation_kind(getattr(block, act), f"{path}.{act}"),
                        )
                    )
                    if getattr(block, conv).stride[0] > 1:
                        barriers.add(len(units))
                spans.append(_residual_span(block, path, source, len(units)))
        return ChainLayout(containers, tuple(units), tuple(spans), frozenset(barriers))


def _check_plain_block(block: nn.Module, path: str) -> None:
    for name in _MUST_BE_IDENTITY:
        sub = getattr(block, name, None)
        if sub is not None and not isinstance(sub, nn.Identity):
            raise UnsupportedModelError(
                f"{path}.{name} is a {type(sub).__name__}; lmzoo merges only plain conv/BN/activation "
                "blocks (no anti-aliasing or attention inside blocks)"
            )


def _residual_span(block: nn.Module, path: str, source: int, target: int) -> ResidualSpan:
    down = block.downsample
    if down is None or isinstance(down, nn.Identity):
        return ResidualSpan(source, target)
    if (
        isinstance(down, nn.Sequential)
        and len(down) == 2
        and type(down[0]) is nn.Conv2d
        and down[0].kernel_size == (1, 1)
        and down[0].padding == (0, 0)
        and isinstance(down[1], nn.BatchNorm2d)
    ):
        return ResidualSpan(source, target, projection=f"{path}.downsample", stride=down[0].stride[0])
    raise UnsupportedModelError(
        f"{path}.downsample must be a 1x1 conv + BatchNorm (avg-pool downsampling, as in the ResNet-D "
        "variants, is not supported)"
    )
