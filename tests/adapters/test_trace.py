"""Tracing real timm and diffusers models: structure from module types and names."""

import pytest
import torch
from torch import nn

import lmzoo
from lmzoo.errors import InvalidInputError, UnsupportedModelError
from lmzoo.testing import ddpm_cifar10_unet

timm = pytest.importorskip("timm")


@pytest.mark.parametrize(
    "name, units, spans, projections",
    [("resnet18", 16, 8, 3), ("resnet34", 32, 16, 3), ("resnet50", 48, 16, 4)],
)
def test_timm_resnets(name, units, spans, projections):
    model = timm.create_model(name)
    spec = lmzoo.trace(model, torch.randn(1, 3, 64, 64))
    assert spec.family == "timm-resnet"
    assert spec.length == units
    assert len(spec.spans) == spans
    assert sum(1 for s in spec.spans if s.projection) == projections
    assert all(p.activation == "relu" for p in spec.positions[1:])
    # a strided conv is always its own block: a barrier right after it
    strided = [u.index for u in spec.units if u.stride > 1]
    assert strided and all(spec.positions[i].barrier for i in strided)
    assert spec.unit(1).input_shape == (64, 16, 16)
    cands = lmzoo.candidates(spec)
    assert {(c.start, c.end) for c in cands if c.length == 1} == {(i - 1, i) for i in range(1, units + 1)}


@pytest.mark.parametrize(
    "name, width", [("mobilenetv2_050", 16), ("mobilenetv2_100", 32), ("mobilenetv2_140", 48)]
)
def test_timm_mobilenetv2(name, width):
    model = timm.create_model(name)
    spec = lmzoo.trace(model, torch.randn(1, 3, 96, 96))
    assert spec.family == "timm-mobilenetv2"
    assert spec.length == 2 + 16 * 3  # one depthwise-separable block, sixteen inverted residuals
    assert len(spec.spans) == 10
    assert all(s.projection is None for s in spec.spans)
    assert spec.unit(1).depthwise and spec.unit(1).in_channels == width
    linear = [p.index for p in spec.positions[1:] if p.activation is None]
    assert len(linear) == 17
    assert all(spec.positions[i].inserted_activation == "relu6" for i in linear)
    # barriers at the output of every strided block: four stride-2 stages after the stem
    strided_blocks_end = [u.index + 1 for u in spec.units if u.stride > 1]
    assert [p.index for p in spec.positions if p.barrier] == strided_blocks_end
    assert len(strided_blocks_end) == 4
    # the final 1x1 conv (conv_head) is outside the chain: never merged
    assert "conv_head" not in {u.path for u in spec.units}


def test_ddpm_cifar10_unet():
    model = ddpm_cifar10_unet()
    spec = lmzoo.trace(model, (torch.randn(1, 3, 32, 32), torch.tensor([10])))
    assert spec.family == "diffusers-unet2d"
    resnet_blocks, upsamplers, kept_as_is = 4 * 2 + 2 + 4 * 3, 3, 1 + 3  # conv_in, downsamplers
    assert spec.length == 2 * resnet_blocks + upsamplers + kept_as_is
    assert sum(u.removable for u in spec.units) == upsamplers
    middles = [p for p in spec.positions if not p.barrier]
    assert len(middles) == resnet_blocks and all(p.activation == "groupnorm+silu" for p in middles)
    cands = lmzoo.candidates(spec)
    assert sum(1 for c in cands if c.kernel == 0) == upsamplers
    assert len(cands) == 4 * resnet_blocks + 2 * upsamplers + kept_as_is == 98  # the official count


class NotANetwork(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize(
    "build, match",
    [
        (NotANetwork, "NotANetwork has no convolution lmzoo can merge"),
        (lambda: timm.create_model("vit_tiny_patch16_224"), r"no convolution lmzoo can merge \(patch_embed"),
    ],
)
def test_unsupported_models_raise_clear_errors(build, match):
    with pytest.raises(UnsupportedModelError, match=match):
        lmzoo.trace(build(), torch.randn(1, 3, 224, 224))


def test_wrong_example_input_raises_and_leaves_the_model_alone():
    model = timm.create_model("resnet18").train()
    with pytest.raises(InvalidInputError, match=r"\(1, 5, 32, 32\)"):
        lmzoo.trace(model, torch.randn(1, 5, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    with pytest.raises(InvalidInputError):
        lmzoo.trace(model, "not a tensor")


def test_fingerprint_identifies_the_structure_not_the_weights():
    x = torch.randn(1, 3, 64, 64)
    a = lmzoo.trace(timm.create_model("resnet18"), x)
    b = lmzoo.trace(timm.create_model("resnet18"), x)
    assert a.fingerprint == b.fingerprint
    assert a.unit(1).weight_l1 != b.unit(1).weight_l1
    assert a.fingerprint != lmzoo.trace(timm.create_model("resnet34"), x).fingerprint
    assert a.fingerprint != lmzoo.trace(timm.create_model("resnet18"), torch.randn(1, 3, 96, 96)).fingerprint


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mnasnet_100", "fbnetc_100"])
def test_other_efficientnet_class_networks_without_squeeze_excite_merge_exactly(name):
    """The MobileNetV2 family covers timm's EfficientNet class built from the same blocks."""
    import random

    from lmzoo.engine import check_merge
    from lmzoo.testing import random_plan, randomize_norms

    model = randomize_norms(timm.create_model(name, num_classes=10)).eval()
    x = torch.randn(1, 3, 32, 32)
    spec = lmzoo.trace(model, x)
    assert spec.family == "timm-mobilenetv2"
    plan = random_plan(spec, lmzoo.candidates(spec), random.Random(0), long_bias=0.0)
    assert check_merge(model, spec, plan, x).relative_error < 1e-4
    # with squeeze-excite, a network of the class belongs to the generic family
    assert lmzoo.trace(timm.create_model("mnasnet_small"), x).family == "generic"


def test_a_model_two_families_accept_is_an_error(monkeypatch):
    from lmzoo.adapters.base import registry

    class Greedy(registry.Adapter):
        family = "test-greedy"
        description = "accepts every module"

        @classmethod
        def matches(cls, model):
            return True

        def trace(self, model, example_inputs):
            raise NotImplementedError

        def apply_plan(self, model, spec, plan, *, in_place=False):
            raise NotImplementedError

    registry.registered_families()  # the built-in families first
    monkeypatch.setitem(registry.ADAPTERS._items, Greedy.family, Greedy)
    with pytest.raises(UnsupportedModelError, match=r"several adapter families .*timm-resnet.*test-greedy"):
        lmzoo.trace(timm.create_model("resnet18"), torch.randn(1, 3, 32, 32))


def test_configured_modules_declare_the_merge_hook():
    import random

    from lmzoo.adapters import Mergeable
    from lmzoo.testing import TINY_MODELS, random_plan

    for tiny in TINY_MODELS.values():
        model = tiny.build().eval()
        inputs = tiny.inputs(1, torch.float32)
        spec = lmzoo.trace(model, inputs)
        plan = random_plan(spec, lmzoo.candidates(spec), random.Random(0), long_bias=8.0)
        configured = lmzoo.apply_plan(model, spec, plan)
        assert any(isinstance(m, Mergeable) for m in configured.modules()), tiny.family
