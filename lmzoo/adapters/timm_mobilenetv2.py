"""timm MobileNetV2 family: timm's EfficientNet class built from DepthwiseSeparableConv and
InvertedResidual blocks without squeeze-excite. That is MobileNetV2 (mobilenetv2_035 ...
mobilenetv2_140) and the networks of the same class and blocks: efficientnet_lite0-4, mnasnet_100,
fbnetc_100, spnasnet_100 (checked exact in tests/adapters/test_trace.py). Networks of the class with
squeeze-excite (EfficientNet-B*, MnasNet-A1) belong to the generic family (``lmzoo.adapters.graph``).

Chain: every block of ``model.blocks`` (DepthwiseSeparableConv and InvertedResidual); the stem conv
and the final 1x1 conv before the head stay untouched, so the latter is never merged (paper).
Linear-bottleneck positions carry no activation; a block of >= 2 units ending on one gets the
architecture's activation (ReLU6), applied after the skip addition as in the paper's code. As in
the paper's MobileNetV2 setting, the output of every strided block is a barrier, so the 1x1
projection after a stride-2 depthwise conv may still merge into it.
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
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


@register_adapter
class TimmMobileNetV2Adapter(ChainAdapter):
    family = "timm-mobilenetv2"
    description = (
        "timm EfficientNet-class networks of DepthwiseSeparableConv/InvertedResidual blocks without "
        "squeeze-excite: MobileNetV2 (mobilenetv2_050, _100, _140, ...), also efficientnet_lite0-4, "
        "mnasnet_100, fbnetc_100, spnasnet_100"
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """timm EfficientNet-class networks of plain blocks; those with squeeze-excite (EfficientNet-B*,
        MnasNet-A1) belong to the generic family, where each squeeze-excite is a barrier."""
        if not type(model).__module__.startswith("timm."):
            return False
        from timm.models.efficientnet import EfficientNet

        return isinstance(model, EfficientNet) and cls.lays_out(model)

    def layout(self, model: nn.Module) -> ChainLayout:
        units: list[LayoutUnit] = []
        spans: list[ResidualSpan] = []
        barriers: set[int] = set()
        inserted: dict[int, str] = {}
        stages: Any = model.blocks
        for si, stage in enumerate(stages):
            for bi, block in enumerate(stage):
                path = f"blocks.{si}.{bi}"
                kind = type(block).__name__
                if kind not in _BLOCK_LAYERS:
                    raise UnsupportedModelError(
                        f"{path} is a {kind}; the MobileNetV2 family supports only "
                        f"{' and '.join(_BLOCK_LAYERS)} blocks"
                    )
                _check_plain_block(block, path)
                source = len(units)
                hidden_act = None
                strided = False
                for conv, norm in _BLOCK_LAYERS[kind]:
                    bn = getattr(block, norm)
                    act = activation_kind(bn.act, f"{path}.{norm}.act")
                    hidden_act = hidden_act or act
                    units.append(LayoutUnit(f"{path}.{conv}", f"{path}.{norm}", act))
                    strided = strided or getattr(block, conv).stride[0] > 1
                if units[-1].activation is None and hidden_act is not None:
                    inserted[len(units)] = hidden_act
                if block.has_skip:
                    spans.append(ResidualSpan(source, len(units)))
                if strided:
                    barriers.add(len(units))
        if not units:
            raise UnsupportedModelError("this EfficientNet-class model has no blocks")
        return ChainLayout(("blocks",), tuple(units), tuple(spans), frozenset(barriers), inserted)


def _check_plain_block(block: nn.Module, path: str) -> None:
    for name in ("aa", "se"):
        sub = getattr(block, name, None)
        if sub is not None and not isinstance(sub, nn.Identity):
            raise UnsupportedModelError(
                f"{path}.{name} is a {type(sub).__name__}: squeeze-excite and anti-aliasing layers "
                "cannot be merged (EfficientNet-B* and other squeeze-excite networks are not supported; "
                "MobileNetV2, efficientnet_lite and mnasnet_100 are)"
            )
    if getattr(block, "conv_s2d", None) is not None:
        raise UnsupportedModelError(f"{path} uses a space-to-depth conv, which is not supported")
    for name, sub in block.named_modules():
        if name.endswith(".drop") and not isinstance(sub, nn.Identity):
            raise UnsupportedModelError(f"{path}.{name}: dropout inside a norm layer is not supported")
