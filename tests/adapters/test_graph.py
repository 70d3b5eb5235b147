"""The generic family: any network torch.fx captures. Its policies reproduce the hand-written
families' candidate sets exactly; the exactness contract holds over networks no hand-written family
covers; refusals name the module and the reason."""

import random

import pytest
import timm
import torch
import torchvision
from torch import nn

import lmzoo
from lmzoo.adapters.graph import TIMM_MOBILENETV2, TIMM_RESNET, GraphAdapter
from lmzoo.engine import tensor_output
from lmzoo.errors import UnsupportedModelError
from lmzoo.testing import random_plan, randomize_norms

POLICIES = [("resnet34", TIMM_RESNET), ("resnet50", TIMM_RESNET), ("mobilenetv2_100", TIMM_MOBILENETV2)]


@pytest.mark.parametrize("name, policy", POLICIES)
def test_policies_reproduce_the_hand_written_families_exactly(name, policy):
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    hand = lmzoo.trace(model, x)
    generic = GraphAdapter(policy).trace(model, (x,))
    assert hand.family == generic.family == policy.family
    assert [u.path for u in hand.units] == [u.path for u in generic.units]
    assert hand.positions == generic.positions
    assert [(s.source, s.target, s.stride, s.projection is None) for s in hand.spans] == [
        (s.source, s.target, s.stride, s.projection is None) for s in generic.spans
    ]
    assert lmzoo.candidates(hand) == lmzoo.candidates(generic)  # blocks, kernels, kept convs


def _small(name):
    """(network, input) at a small size, widths cut where the architecture allows."""
    torch.manual_seed(0)
    builders = {
        "tv-resnet18": lambda: torchvision.models.resnet18(num_classes=10),
        "tv-mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.35),
        "tv-mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(
            num_classes=10, width_mult=0.5
        ),
        "tv-vgg11_bn": lambda: torchvision.models.vgg11_bn(num_classes=10),
        "timm-efficientnet_b0": lambda: timm.create_model("efficientnet_b0", num_classes=10),
        "timm-regnetx_002": lambda: timm.create_model("regnetx_002", num_classes=10),
        "timm-resnet18d": lambda: timm.create_model("resnet18d", num_classes=10),
    }
    return randomize_norms(builders[name]()).eval(), torch.randn(2, 3, 32, 32)


GENERIC = ["tv-resnet18", "tv-mobilenet_v2", "tv-mobilenet_v3_small", "tv-vgg11_bn", "timm-efficientnet_b0",
           "timm-regnetx_002", "timm-resnet18d"]  # fmt: skip


@pytest.mark.parametrize("name", GENERIC)
def test_the_exactness_contract_over_generic_networks(name):
    model, x = _small(name)
    before = x.clone()
    spec = lmzoo.trace(model, x)
    assert spec.family == "generic"
    cands = lmzoo.candidates(spec)
    assert any(c.length > 1 and c.kept for c in cands), "no merge shortens the network"
    with torch.no_grad():
        identity = lmzoo.apply_plan(model, spec, lmzoo.Plan.identity(spec)).eval()
        torch.testing.assert_close(tensor_output(identity(x)), tensor_output(model(x)), rtol=1e-5, atol=1e-5)
    wide = model.double()
    for seed in range(2):
        plan = random_plan(spec, cands, random.Random(seed), long_bias=1.0)
        configured = lmzoo.apply_plan(wide, spec, plan).eval()
        merged = lmzoo.merge(configured)
        with torch.no_grad():
            a, b = tensor_output(configured(x.double())), tensor_output(merged(x.double()))
        assert float((a - b).abs().max() / a.abs().max()) < 1e-10
        convs = sum(isinstance(m, nn.Conv2d) for m in merged.modules())
        assert convs <= sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert torch.equal(x, before)


def test_squeeze_excite_is_a_barrier_and_the_rest_merges():
    model, x = _small("timm-efficientnet_b0")
    spec = lmzoo.trace(model, x)
    rows = dict(GraphAdapter().explain(model))
    reduce = [u.index for u in spec.units if u.path.endswith("se.conv_reduce")]
    expand = [u.index for u in spec.units if u.path.endswith("se.conv_expand")]
    assert reduce and [i + 1 for i in reduce] == expand  # each squeeze-excite is a chain of its own
    assert all(spec.positions[i - 1].barrier for i in reduce)
    assert all(spec.positions[i].barrier for i in expand)
    assert any("conv_pwl" in why for key, why in rows.items() if key.startswith("chain"))


def test_refusals_name_the_module_and_the_reason():
    class Dilated(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=2, dilation=2)
            self.b = nn.Conv2d(8, 8, 3, padding=1)
            self.c = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.c(torch.relu(self.b(self.a(x))))

    rows = dict(GraphAdapter().explain(Dilated()))
    assert "dilation" in rows["a"] and "units 1-2: b, c" in rows["chain 0"]

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(UnsupportedModelError, match=r"cannot be captured as a graph by torch\.fx"):
        lmzoo.trace(Branchy(), torch.randn(1, 3, 8, 8))
    with pytest.raises(UnsupportedModelError, match="Linear has no convolution lmzoo can merge"):
        lmzoo.trace(nn.Linear(4, 2), torch.randn(1, 4))


def test_projection_shortcuts_are_found_in_any_order():
    """The shortcut may be computed before the branch (and a 1x1 branch beside a 3x3 one, as in
    RepVGG, fuses into it); the merge is exact either way."""

    class ShortcutFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.proj_bn = nn.Conv2d(4, 8, 1, stride=2), nn.BatchNorm2d(8)
            self.a, self.a_bn = nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
            self.b, self.b_bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.one, self.one_bn = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
            self.three, self.three_bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

        def forward(self, x):
            shortcut = self.proj_bn(self.proj(x))
            y = torch.relu(self.a_bn(self.a(x)))
            y = torch.relu(self.b_bn(self.b(y)) + shortcut)
            return torch.relu(self.one_bn(self.one(y)) + self.three_bn(self.three(y)))

    model = randomize_norms(ShortcutFirst()).eval().double()
    x = torch.randn(2, 4, 15, 15, dtype=torch.float64)
    spec = lmzoo.trace(model, x)
    assert [u.path for u in spec.units] == ["a", "b", "three"]
    assert [(s.source, s.target, s.projection, s.projection_norm) for s in spec.spans] == [
        (0, 2, "proj", "proj_bn"),
        (2, 3, "one", "one_bn"),
    ]
    for cand in lmzoo.candidates(spec):
        blocks = [b for b in lmzoo.Plan.identity(spec) if not cand.start < b.end <= cand.end]
        blocks.insert(cand.start, cand)
        configured = lmzoo.apply_plan(model, spec, lmzoo.Plan(blocks)).eval()
        with torch.no_grad():
            a, b = configured(x), lmzoo.merge(configured)(x)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-12


COVERAGE = [
    "timm:resnet101",
    "timm:seresnet50",
    "timm:resnext50_32x4d",
    "timm:regnety_002",
    "timm:mobilenetv3_large_100",
    "timm:efficientnet_b0",
    "timm:vgg11_bn",
    "timm:repvgg_a0",
    "timm:convnext_atto",
    "timm:densenet121",
    "torchvision:resnet50",
    "torchvision:mobilenet_v3_small",
    "torchvision:efficientnet_b0",
    "torchvision:regnet_x_400mf",
]


@pytest.mark.integration
@pytest.mark.parametrize("name", COVERAGE)
def test_full_size_networks_merge_exactly(name):
    """The issue's coverage list at full width (32 px inputs): traced, merged exactly in float64."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "coverage.py"
    spec = importlib.util.spec_from_file_location("coverage_script", path)
    assert spec is not None and spec.loader is not None
    coverage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coverage)
    row = coverage.row(name, size=32, plans=1)
    assert "refused" not in row, row
    assert row["error float64"] < 1e-10 and row["units"] > 0
    assert row["shortens"] or name == "timm:repvgg_a0"  # RepVGG: a chain per block (its identity BN)


def test_a_configured_generic_network_trains_and_stays_exact():
    from lmzoo.testing import TinyGraphNet

    torch.manual_seed(0)
    model = randomize_norms(TinyGraphNet()).eval()
    x, y = torch.randn(8, 3, 20, 20), torch.randint(0, 10, (8,))
    spec = lmzoo.trace(model, x)
    plan = random_plan(spec, lmzoo.candidates(spec), random.Random(1), long_bias=3.0)
    configured = lmzoo.apply_plan(model, spec, plan).train()
    optimizer = torch.optim.SGD(configured.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(configured(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]  # gradients reach every chain's parameters
    configured.eval()
    with torch.no_grad():
        a, b = configured(x), lmzoo.merge(configured)(x)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-5
