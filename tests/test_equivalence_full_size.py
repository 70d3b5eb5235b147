"""The exactness contract on the paper's full-size architectures (slow: run with -m slow)."""

import random

import pytest
import torch

import lmzoo
from lmzoo.core.plan import random_plan
from lmzoo.testing import ddpm_cifar10_unet, randomize_norms

pytestmark = pytest.mark.slow


def _timm(name):
    import timm

    return lambda: timm.create_model(name)


@pytest.mark.parametrize(
    "build, inputs",
    [
        (_timm("resnet34"), (torch.randn(2, 3, 97, 111),)),
        (_timm("mobilenetv2_100"), (torch.randn(2, 3, 97, 111),)),
        (_timm("mobilenetv2_140"), (torch.randn(2, 3, 64, 80),)),
        (ddpm_cifar10_unet, (torch.randn(2, 3, 32, 32), torch.tensor([3, 700]))),
    ],
)
def test_full_size_random_plans_merge_exactly(build, inputs):
    model = randomize_norms(build()).eval()
    spec = lmzoo.trace(model, inputs)
    cands = lmzoo.candidates(spec)
    rng = random.Random(0)
    for _ in range(3):
        check = lmzoo.engine.check_merge(model, spec, random_plan(spec, cands, rng, long_bias=1.0), inputs)
        assert check.relative_error <= 1e-4
