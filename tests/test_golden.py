"""Pinned output slices of every tiny model of lmzoo.testing, as timm and diffusers pin theirs: the
base network and its merge under a fixed random plan, from fixed seeds. A silent numerical change of
tracing, candidates, planning or the merge maths fails here. (Values recorded with torch 2.14 on
CPU; they are identical before and after the architecture change that introduced this test.)"""

import random

import pytest
import torch

import lmzoo
from lmzoo.core.migration import lift_plan
from lmzoo.engine import earlier_specs, tensor_output
from lmzoo.testing import TINY_MODELS, random_plan, randomize_norms

#: tiny model -> (blocks of the plan, first 4 base outputs, first 6 merged outputs)
GOLDEN = {
    "resnet-basic": (
        9,
        [-2.23247, 0.40214, -2.50614, 0.14332],
        [-12.35591, -7.71567, -7.0491, -0.99313, 2.80086, -8.39254],
    ),
    "resnet-bottleneck": (
        8,
        [1.57995, -1.13066, -0.69016, 0.45808],
        [2.18162, -7.73167, -9.36061, -3.56012, -4.94576, -3.82249],
    ),
    "mobilenetv2": (
        7,
        [-0.23351, 2.9652, -2.55778, 1.07889],
        [9.80751, -9.96514, -10.59733, 5.95517, -7.28688, 9.60081],
    ),
    "graph": (
        3,
        [0.10907, -0.20487, 0.07616, -0.04875],
        [0.25072, -0.29624, 0.12018, -0.03433, 0.04113, -0.06154],
    ),
    "ddpm-unet": (  # drawn on the spec before conv_in and the downsampling conv were units, lifted
        11,
        [-0.09761, 0.02177, -0.03614, 0.12942],
        [0.11451, 0.01168, 0.0637, 0.21205, -0.07785, -0.65211],
    ),
}


def test_every_tiny_model_is_pinned():
    assert set(GOLDEN) == set(TINY_MODELS)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_output_slices_are_pinned(name):
    tiny = TINY_MODELS[name]
    blocks, base_slice, merged_slice = GOLDEN[name]
    torch.manual_seed(0)
    model = randomize_norms(tiny.build(), torch.Generator().manual_seed(0)).eval()
    torch.manual_seed(1)
    inputs = tiny.inputs(2, torch.float32)
    spec = lmzoo.trace(model, inputs)
    drawn_on = next(iter(earlier_specs(model, inputs)), spec)  # the spec the values were pinned with
    plan = random_plan(drawn_on, lmzoo.candidates(drawn_on), random.Random(0))
    plan = lift_plan(plan, drawn_on, spec) if drawn_on is not spec else plan
    assert len(plan) == blocks
    merged = lmzoo.merge(lmzoo.apply_plan(model, spec, plan)).eval()
    with torch.no_grad():
        base = tensor_output(model(*inputs)).flatten()
        out = tensor_output(merged(*inputs)).flatten()
    torch.testing.assert_close(base[:4], torch.tensor(base_slice), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[:6], torch.tensor(merged_slice), atol=1e-4, rtol=1e-4)
