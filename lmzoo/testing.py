"""Helpers for testing adapters: tiny models of every family, norm randomisation, random plans.

The tiny models are real library classes at small sizes, so the exactness contract runs on a CPU in
seconds (like timm's test models). Adapter authors add their family's tiny model here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmzoo.core.plan import random_plan


@dataclass(frozen=True)
class TinyModel:
    family: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, torch.dtype], tuple[torch.Tensor, ...]]


def _tiny_resnet_basic() -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, (2, 2, 2, 1), channels=(8, 16, 24, 32), stem_width=8, num_classes=10)  # type: ignore[arg-type]


def _tiny_resnet_bottleneck() -> nn.Module:
    from timm.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, (2, 1, 2, 1), channels=(4, 8, 8, 16), stem_width=8, num_classes=10)  # type: ignore[arg-type]


class TinyGraphNet(nn.Module):
    """What the generic family reads, in one small network: a stem; a residual pair whose projection is
    a separate conv and BatchNorm; functional activations (GELU, Hardswish, leaky ReLU, SiLU); a
    grouped conv; dropout inside a chain; a squeeze-excite product, a mean and a concatenation, which
    are barriers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups)

        self.stem, self.stem_bn = conv(3, 8, 3), nn.BatchNorm2d(8)
        self.a1, self.a1_bn = conv(8, 8, 3), nn.BatchNorm2d(8)
        self.a2, self.a2_bn = conv(8, 16, 3, stride=2), nn.BatchNorm2d(16)
        self.proj, self.proj_bn = conv(8, 16, 1, stride=2), nn.BatchNorm2d(16)
        self.grouped, self.grouped_bn = conv(16, 16, 3, groups=4), nn.BatchNorm2d(16)
        self.drop = nn.Dropout(0.1)
        self.pw, self.pw_bn = conv(16, 16, 1), nn.BatchNorm2d(16)
        self.se_reduce, self.se_expand = conv(16, 4, 1), conv(4, 16, 1)
        self.dw, self.dw_bn = conv(16, 16, 5, groups=16), nn.BatchNorm2d(16)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        x = F.relu(self.stem_bn(self.stem(x)))
        y = F.gelu(self.a1_bn(self.a1(x)))
        y = F.hardswish(self.a2_bn(self.a2(y)) + self.proj_bn(self.proj(x)))
        z = F.leaky_relu(self.grouped_bn(self.grouped(y)), 0.2)
        z = torch.relu(self.pw_bn(self.pw(self.drop(z))) + y)
        squeeze = z.mean((2, 3), keepdim=True)
        z = z * torch.sigmoid(self.se_expand(F.relu(self.se_reduce(squeeze))))
        w = F.silu(self.dw_bn(self.dw(z)))
        return self.head(torch.cat([w, z], 1).mean((2, 3)))


def _tiny_mobilenetv2() -> nn.Module:
    import timm

    return timm.create_model("mobilenetv2_035", num_classes=10)


def _tiny_unet() -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(  # type: ignore[return-value]
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=None,
    )


def ddpm_cifar10_unet() -> nn.Module:
    """The DDPM CIFAR-10 UNet architecture of the paper (google/ddpm-cifar10-32), randomly initialised."""
    from diffusers import UNet2DModel

    return UNet2DModel(  # type: ignore[return-value]
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_eps=1e-6,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
        attention_head_dim=None,  # one attention head, as in the original checkpoint
    )


def _image(channels: int, height: int, width: int) -> Callable[[int, torch.dtype], tuple[torch.Tensor, ...]]:
    def make(batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, channels, height, width, dtype=dtype),)

    return make


def _unet_inputs(batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return torch.randn(batch, 3, 16, 16, dtype=dtype), torch.randint(0, 1000, (batch,))


#: name -> tiny model; odd, non-square inputs on purpose (border handling)
TINY_MODELS: dict[str, TinyModel] = {
    "resnet-basic": TinyModel("timm-resnet", _tiny_resnet_basic, _image(3, 37, 43)),
    "resnet-bottleneck": TinyModel("timm-resnet", _tiny_resnet_bottleneck, _image(3, 33, 29)),
    "mobilenetv2": TinyModel("timm-mobilenetv2", _tiny_mobilenetv2, _image(3, 35, 41)),
    "ddpm-unet": TinyModel("diffusers-unet2d", _tiny_unet, _unet_inputs),
    "graph": TinyModel("generic", TinyGraphNet, _image(3, 27, 31)),
}


def randomize_norms(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every norm random affine parameters and (for BN) running statistics, in place.

    timm zero-initialises the last BN of each ResNet block, which would make equivalence tests pass
    trivially; random statistics also exercise the BN folding.
    """
    g = generator or torch.Generator().manual_seed(0)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.empty(t.shape).uniform_(low, high, generator=g).to(t))

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                if m.weight is not None:
                    uniform(m.weight, 0.5, 1.5)
                    uniform(m.bias, -0.5, 0.5)
                if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                    uniform(m.running_mean, -0.5, 0.5)
                    uniform(m.running_var, 0.5, 2.0)  # type: ignore[arg-type]
    return model


#: small architectures for checkpoints made from random weights: source -> (arch, kwargs, input shape);
#: the timm one takes Fashion-MNIST padded to 32 (the preprocessing its checkpoints record)
CHECKPOINT_BASES: dict[str, tuple[str, dict[str, Any], tuple[int, int, int]]] = {
    "timm": ("mobilenetv2_035", {"num_classes": 10, "in_chans": 1}, (1, 32, 32)),
    "diffusers": (
        "UNet2DModel",
        {
            "sample_size": 16,
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": [16, 32],
            "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
            "norm_num_groups": 8,
            "attention_head_dim": None,
        },
        (3, 16, 16),
    ),
}


def random_checkpoint(
    directory: str | os.PathLike[str],
    *,
    source: str = "timm",
    name: str = "test-entry",
    seed: int = 0,
    profile: str = "default",
    earlier_spec: bool = False,
) -> tuple[Path, nn.Module]:
    """A checkpoint directory of a small network merged with a random plan from random weights (norms
    randomised too), as ``lmzoo build`` writes one minus the cards (``profile``: the recipe profile it
    says it was built with). ``earlier_spec``: as an earlier lmzoo wrote it, with the plan and
    fingerprint of the family's oldest spec (``Adapter.earlier_specs``). Returns it and the merged
    network."""
    import random

    from lmzoo.checkpoint import checkpoint_config, write_merged_checkpoint
    from lmzoo.core.candidates import candidates
    from lmzoo.core.migration import lift_plan
    from lmzoo.data import small_preprocessing
    from lmzoo.engine import apply_plan, earlier_specs, merge, trace
    from lmzoo.preprocessing import Preprocessing
    from lmzoo.rebuild import example_inputs
    from lmzoo.sources import Architecture

    arch, kwargs, shape = CHECKPOINT_BASES[source]
    architecture = Architecture(source, arch, kwargs)
    torch.manual_seed(seed)
    model = randomize_norms(architecture.build(), torch.Generator().manual_seed(seed)).eval()
    task = architecture.task
    spec = trace(model, example_inputs(shape, task))
    made_for = earlier_specs(model, example_inputs(shape, task))[-1] if earlier_spec else spec
    plan = random_plan(made_for, candidates(made_for), random.Random(seed))
    merged = merge(apply_plan(model, spec, lift_plan(plan, made_for, spec))).eval()
    if task == "classification":
        preprocessing = small_preprocessing("fashion-mnist", pad_to=shape[-1])
    else:  # a DDPM's [-1, 1] images
        preprocessing = Preprocessing(shape, (0.5,) * shape[0], (0.5,) * shape[0], crop_pct=1.0)
    config = checkpoint_config(
        name=name,
        architecture=architecture,
        input_shape=shape,
        task=task,
        spec_fingerprint=made_for.fingerprint,
        plan=plan,
        preprocessing=preprocessing,
        extra={"target_speedup": 1.5, "profile": profile},
    )
    return write_merged_checkpoint(directory, merged, config), merged


__all__ = [
    "CHECKPOINT_BASES",
    "TINY_MODELS",
    "TinyGraphNet",
    "TinyModel",
    "ddpm_cifar10_unet",
    "random_checkpoint",
    "random_plan",
    "randomize_norms",
]
