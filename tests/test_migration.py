"""Plans made for an earlier spec of a network load on today's, with the same meaning: the DDPM
UNet's units gained conv_in and the downsampling convs (the official code's 51 units, 98 entries)."""

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lmzoo
from lmzoo.checkpoint import architecture
from lmzoo.core.candidates import candidates
from lmzoo.core.migration import lift_plan
from lmzoo.core.plan import Plan
from lmzoo.engine import earlier_specs
from lmzoo.errors import InvalidPlanError
from lmzoo.rebuild import example_inputs
from lmzoo.testing import TINY_MODELS, ddpm_cifar10_unet, random_checkpoint, random_plan

CIFAR_INPUTS = (torch.randn(1, 3, 32, 32), torch.tensor([3]))


@pytest.fixture(scope="module")
def cifar_specs():
    model = ddpm_cifar10_unet().eval()
    return lmzoo.trace(model, CIFAR_INPUTS), earlier_specs(model, CIFAR_INPUTS)[0]


def test_the_ddpm_units_are_the_official_codes(cifar_specs):
    spec, earlier = cifar_specs
    assert (spec.length, len(candidates(spec))) == (51, 98)  # DP.md: --to_blk 98, lymg_agg -n 98
    assert (earlier.length, len(candidates(earlier))) == (47, 94)
    assert spec.unit(1).path == "conv_in"
    # the official numbering: downsampling convs 6, 11, 16, the mid block at 21-24, upsampling 31, 38, 45
    assert [spec.unit(i).path for i in (6, 11, 16)] == [
        f"down_blocks.{b}.downsamplers.0.conv" for b in range(3)
    ]
    assert [spec.unit(i).path for i in (21, 24)] == ["mid_block.resnets.0.conv1", "mid_block.resnets.1.conv2"]
    assert [spec.unit(i).path for i in (31, 38, 45)] == [f"up_blocks.{b}.upsamplers.0.conv" for b in range(3)]
    for i in (1, 6, 11, 16):
        unit = spec.unit(i)
        assert not unit.removable and spec.positions[i - 1].barrier and spec.positions[i].barrier
        assert [c.kept for c in candidates(spec) if c.end == i] == [(i,)]  # kept as they are
    # a padding-0 Downsample2D pads (0, 1, 0, 1) itself: timed as padding 1 on the unpadded input
    down = spec.unit(6)
    assert (down.stride, down.padding, down.input_shape) == (2, 1, (128, 32, 32))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_lifted_plan_means_what_it_meant(cifar_specs, seed):
    spec, earlier = cifar_specs
    plan = random_plan(earlier, candidates(earlier), random.Random(seed))
    lifted = lift_plan(plan, earlier, spec)
    path = {u.index: u.path for u in earlier.units}
    new_path = {u.index: u.path for u in spec.units}
    blocks = {
        (tuple(path[i] for i in range(b.start + 1, b.end + 1)), b.kernel, tuple(path[k] for k in b.kept))
        for b in plan
    }
    lifted_blocks = {
        (
            tuple(new_path[i] for i in range(b.start + 1, b.end + 1)),
            b.kernel,
            tuple(new_path[k] for k in b.kept),
        )
        for b in lifted
    }
    added = {
        ((p,), 3, (p,)) for p in ("conv_in", *(f"down_blocks.{b}.downsamplers.0.conv" for b in range(3)))
    }
    assert lifted_blocks == blocks | added
    assert lifted.summary().convs_kept == plan.summary().convs_kept + 4
    assert lifted.summary().activations_kept == plan.summary().activations_kept + 4


def test_a_plan_for_another_network_is_not_lifted(cifar_specs):
    spec, earlier = cifar_specs
    tiny = TINY_MODELS["ddpm-unet"]
    other = lmzoo.trace(tiny.build().eval(), tiny.inputs(1, torch.float32))
    with pytest.raises(InvalidPlanError):
        lift_plan(Plan.identity(other), earlier, spec)


def test_a_checkpoint_of_the_earlier_numbering_loads_as_it_was_built(tmp_path):
    directory, merged = random_checkpoint(tmp_path / "old", source="diffusers", seed=3, earlier_spec=True)
    config = json.loads((directory / "config.json").read_text())
    today = lmzoo.trace(architecture(config).build(), example_inputs(config["input_shape"], "denoising"))
    assert config["spec_fingerprint"] != today.fingerprint  # so the load lifts the plan
    assert Plan.from_dict(config["plan"]).length == today.length - 2  # conv_in, one downsampling conv
    loaded = lmzoo.load(f"local-dir:{directory}")
    sample, timestep = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    with torch.no_grad():
        expected = merged(sample, timestep).sample
        got = loaded(sample, timestep).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
