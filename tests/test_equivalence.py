"""The exactness contract, run over every registered adapter family on a tiny real model.

- the identity plan computes exactly what the model computes;
- for many random plans, merge(configured) computes what configured computes;
- apply_plan and merge never mutate their input; merged networks have one conv per kept block;
- merged networks export to ONNX and onnxruntime reproduces them.
"""

import copy
import random

import pytest
import torch
from torch import nn

import lmzoo
from lmzoo.adapters import registered_families
from lmzoo.testing import TINY_MODELS, random_plan, randomize_norms

N_RANDOM_PLANS = 12
FLOAT32_TOLERANCE = 1e-4  # relative to max |output|, the bound
FLOAT64_TOLERANCE = 1e-10


def _output(y):
    return y.sample if hasattr(y, "sample") else y


def _setup(name, dtype=torch.float32):
    tiny = TINY_MODELS[name]
    model = randomize_norms(tiny.build()).eval().to(dtype)
    inputs = tiny.inputs(3, dtype)
    spec = lmzoo.trace(model, inputs)
    return model, inputs, spec


def _relative_error(a, b):
    return ((a - b).abs().max() / a.abs().max()).item()


def test_every_registered_family_has_a_tiny_model():
    assert set(registered_families()) <= {t.family for t in TINY_MODELS.values()}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_identity_plan_computes_the_original_function(name):
    model, inputs, spec = _setup(name)
    configured = lmzoo.apply_plan(model, spec, lmzoo.Plan.identity(spec))
    with torch.no_grad():
        expected, got = _output(model(*inputs)), _output(configured(*inputs))
    assert torch.allclose(expected, got, rtol=0, atol=1e-6 * expected.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_merged_equals_configured_for_random_plans(name, dtype):
    model, inputs, spec = _setup(name, dtype)
    cands = lmzoo.candidates(spec)
    rng = random.Random(f"{name}-{dtype}")
    tolerance = FLOAT32_TOLERANCE if dtype == torch.float32 else FLOAT64_TOLERANCE
    worst = 0.0
    multi_unit_blocks = 0
    for _ in range(N_RANDOM_PLANS):
        plan = random_plan(spec, cands, rng)
        multi_unit_blocks += sum(1 for b in plan if b.length > 1)
        configured = lmzoo.apply_plan(model, spec, plan)
        merged = lmzoo.merge(configured)
        with torch.no_grad():
            a, b = _output(configured(*inputs)), _output(merged(*inputs))
        assert a.shape == b.shape
        worst = max(worst, _relative_error(a, b))
    assert multi_unit_blocks > N_RANDOM_PLANS  # the random plans really merge things
    print(f"{name} {dtype}: worst relative error {worst:.2e} over {N_RANDOM_PLANS} plans")
    assert worst <= tolerance, f"worst relative error {worst:.2e}"


def _baseline_plan(spec, method, rng):
    """A random plan of a baseline method; depth plans also run random segments as several convs."""
    plan = random_plan(spec, lmzoo.candidates(spec, method=method), rng)
    if method == "depth":
        plan = lmzoo.Plan(plan.blocks, [b.end for b in plan.blocks[:-1] if rng.random() < 0.5])
    return plan


@pytest.mark.parametrize("method", ["depth", "layer"])
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_merged_equals_configured_for_baseline_plans(name, method):
    model, inputs, spec = _setup(name)
    rng = random.Random(f"{name}-{method}")
    worst, pruned, linear = 0.0, 0, 0
    for _ in range(6):
        plan = _baseline_plan(spec, method, rng)
        pruned += sum(1 for b in plan if not b.kept)
        linear += len(plan.linear)
        configured = lmzoo.apply_plan(model, spec, plan)
        merged = lmzoo.merge(configured)
        with torch.no_grad():
            a, b = _output(configured(*inputs)), _output(merged(*inputs))
        worst = max(worst, _relative_error(a, b))
    assert (pruned if method == "layer" else linear) > 0
    assert worst <= FLOAT32_TOLERANCE, f"worst relative error {worst:.2e}"


def test_linear_block_ends_remove_their_activation():
    """A depth plan of single convs with every inner activation removed equals the ResNet with
    those ReLUs replaced by the identity (activations after residual adds included)."""
    model, inputs, spec = _setup("resnet-basic", torch.float64)
    blocks = lmzoo.Plan.identity(spec).blocks
    plan = lmzoo.Plan(blocks, [b.end for b in blocks[:-1]])
    reference = copy.deepcopy(model)
    stages = [reference.layer1, reference.layer2, reference.layer3, reference.layer4]
    residual_blocks = [block for stage in stages for block in stage]
    for block in residual_blocks:
        block.act1 = nn.Identity()
        if block is not residual_blocks[-1]:
            block.act2 = nn.Identity()
    with torch.no_grad():
        expected = reference(*inputs)
        configured = lmzoo.apply_plan(model, spec, plan)(*inputs)
        merged = lmzoo.merge(lmzoo.apply_plan(model, spec, plan))(*inputs)
    assert _relative_error(expected, configured) <= FLOAT64_TOLERANCE
    assert _relative_error(expected, merged) <= FLOAT64_TOLERANCE
    assert _relative_error(expected, model(*inputs)) > 1e-3  # the activations mattered


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_apply_plan_and_merge_do_not_mutate_their_input(name):
    model, inputs, spec = _setup(name)
    plan = random_plan(spec, lmzoo.candidates(spec), random.Random(1))
    before = copy.deepcopy(model.state_dict())
    types_before = [type(m) for m in model.modules()]
    configured = lmzoo.apply_plan(model, spec, plan)
    configured_state = copy.deepcopy(configured.state_dict())
    lmzoo.merge(configured)
    assert [type(m) for m in model.modules()] == types_before
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    for key, value in configured.state_dict().items():
        assert torch.equal(value, configured_state[key]), key
    assert lmzoo.trace(model, inputs) == spec


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_merged_network_has_one_conv_per_kept_block(name):
    model, _, spec = _setup(name)
    rng = random.Random(2)
    plan = random_plan(spec, lmzoo.candidates(spec), rng)
    merged = lmzoo.merge(lmzoo.apply_plan(model, spec, plan))
    chain_paths = {u.path for u in spec.units}
    outside = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in chain_paths]
    # Shortcut projections fused into a block disappear; those around a block stay as one conv each.
    fused = sum(
        1 for s in spec.spans if s.projection and any(b.start <= s.source and s.target <= b.end for b in plan)
    )
    kept_blocks = sum(1 for b in plan if b.kept)
    n_convs = sum(1 for m in merged.modules() if isinstance(m, nn.Conv2d))
    assert n_convs == kept_blocks + len(outside) - fused


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_configured_network_trains(name):
    model, inputs, spec = _setup(name)
    plan = random_plan(spec, lmzoo.candidates(spec), random.Random(3))
    configured = lmzoo.apply_plan(model, spec, plan).train()
    out = _output(configured(*inputs))
    out.square().mean().backward()
    conv_weights = [m.weight for m in configured.modules() if isinstance(m, nn.Conv2d)]
    assert conv_weights
    for weight in conv_weights:
        assert weight.grad is not None and weight.grad.abs().sum() > 0


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_merged_network_runs_in_onnxruntime(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, inputs, spec = _setup(name)
    plan = random_plan(spec, lmzoo.candidates(spec), random.Random(4))
    merged = lmzoo.merge(lmzoo.apply_plan(model, spec, plan)).eval()

    class Plain(nn.Module):  # ONNX graphs return tensors, not output dataclasses
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return _output(self.inner(*args))

    path = tmp_path / "merged.onnx"
    torch.onnx.export(
        Plain(merged).eval(), inputs, str(path), dynamo=True, external_data=False, verbose=False
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    (result,) = session.run(None, feeds)
    with torch.no_grad():
        expected = _output(merged(*inputs))
    assert _relative_error(expected, torch.from_numpy(result)) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_structure_only_merge_has_the_layout_of_the_computed_merge(name):
    """Checkpoint loading builds the merged network from the plan without merge arithmetic
    (``merged_in_place(..., weights=False)``); loading the computed merge's state dict into it must
    give the same network: same module types, same keys and shapes, same outputs."""
    from lmzoo.engine import merged_in_place

    model, inputs, spec = _setup(name)
    rng = random.Random(f"{name}-structure")
    plans = [random_plan(spec, lmzoo.candidates(spec), rng) for _ in range(8)]
    plans += [_baseline_plan(spec, method, rng) for method in ("depth", "layer") for _ in range(3)]
    for plan in plans:
        merged = lmzoo.merge(lmzoo.apply_plan(model, spec, plan)).eval()
        structure = merged_in_place(copy.deepcopy(model), spec, plan, weights=False).eval()
        # (a GraphModule's class is made per instance: compare by name)
        assert [type(m).__name__ for m in structure.modules()] == [type(m).__name__ for m in merged.modules()]
        expected = merged.state_dict()
        got = structure.state_dict()
        assert list(got) == list(expected)
        assert all(got[k].shape == v.shape and got[k].dtype == v.dtype for k, v in expected.items())
        convs = [
            (m.kernel_size, m.stride, m.padding, m.groups)
            for m in merged.modules()
            if isinstance(m, nn.Conv2d)
        ]
        assert convs == [
            (m.kernel_size, m.stride, m.padding, m.groups)
            for m in structure.modules()
            if isinstance(m, nn.Conv2d)
        ]
        structure.load_state_dict(expected, strict=True)
        with torch.no_grad():
            assert torch.equal(_output(structure(*inputs)), _output(merged(*inputs)))


def test_activation_states_insert_and_remove_relu6_at_linear_bottlenecks():
    """Depth compression's activation states on MobileNetV2: a plan inserting ReLU6 after every
    projection conv (after its skip addition) equals timm's network with those ReLU6 added, and
    random depth plans with random states merge exactly."""
    from lmzoo.core.activations import switchable

    model, inputs, spec = _setup("mobilenetv2", torch.float64)
    linear_ends = [p for p in range(1, spec.length + 1) if switchable(spec, p)]
    assert len(linear_ends) > 3
    plan = lmzoo.Plan(lmzoo.Plan.identity(spec).blocks, activated=linear_ends)
    plan.validate(spec)
    reference = copy.deepcopy(model)
    for p in linear_ends:
        block_path = spec.unit(p).path.rsplit(".", 1)[0]
        parent, name = block_path.rsplit(".", 1)
        holder = reference.get_submodule(parent)
        setattr(holder, name, nn.Sequential(holder.get_submodule(name), nn.ReLU6()))
    with torch.no_grad():
        expected = reference(*inputs)
        configured = lmzoo.apply_plan(model, spec, plan)
        assert _relative_error(expected, configured(*inputs)) <= FLOAT64_TOLERANCE
        assert _relative_error(expected, lmzoo.merge(configured)(*inputs)) <= FLOAT64_TOLERANCE
        assert _relative_error(expected, model(*inputs)) > 1e-3  # the inserted ReLU6 mattered
    rng = random.Random("states")
    inserted = removed = 0
    for _ in range(6):
        base = _baseline_plan(spec, "depth", rng)
        activated, linear = [], list(base.linear)
        for block in base:
            if not switchable(spec, block.end) or block.end in linear or rng.random() < 0.4:
                continue
            if spec.block_activation(block.start, block.end) is None:
                activated.append(block.end)
            else:
                linear.append(block.end)
        plan = lmzoo.Plan(base.blocks, linear, activated)
        plan.validate(spec)
        inserted += len(activated)
        removed += sum(1 for p in linear if switchable(spec, p))
        configured = lmzoo.apply_plan(model, spec, plan)
        with torch.no_grad():
            a, b = configured(*inputs), lmzoo.merge(configured)(*inputs)
        assert _relative_error(a, b) <= FLOAT64_TOLERANCE
    assert inserted and removed


def _same_kept_and_activations(spec, cands, target, limit=64):
    """Plans (up to ``limit``) keeping ``target``'s convs and activations, found by walking from
    position 0 through the candidates that keep exactly the target's convs in their span and
    leave the target's activation (or none) at their end."""
    kept, after, _ = target.configuration(spec)
    kept, after = set(kept), dict(after)
    by_start = {}
    for c in cands:
        by_start.setdefault(c.start, []).append(c)
    found = []

    def walk(position, blocks):
        if len(found) >= limit:
            return
        if position == spec.length:
            found.append(lmzoo.Plan(blocks))
            return
        for c in by_start.get(position, ()):
            inside = {u for u in kept if c.start < u <= c.end}
            interior_active = any(c.start < p < c.end for p in after)
            same_end = spec.block_activation(c.start, c.end) == after.get(c.end)
            if set(c.kept) == inside and not interior_active and same_end:
                walk(c.end, [*blocks, c])

    walk(0, [])
    return found


def test_plans_of_one_configuration_compute_the_same_function():
    """``Plan.configuration`` (what refinement measures once per group): plans that keep the same
    convs and activations and pad at the same blocks differ only in which 1x1 convs are merged,
    so their configured networks compute the same function (float64). Padding belongs in it: a
    block over a 1x1 conv pads before that conv (its bias and norm shift reach the border), so
    moving a block start changes the function (MobileNetV2, whose linear bottlenecks give plans
    alternatives; the other tiny models have none)."""
    model, inputs, spec = _setup("mobilenetv2", torch.float64)
    cands = lmzoo.candidates(spec)
    rng = random.Random("configuration")
    groups = borders = 0
    for _ in range(40):
        plan = random_plan(spec, cands, rng, long_bias=0.0)
        alike = _same_kept_and_activations(spec, cands, plan, limit=3)
        assert plan in alike
        if len(alike) < 2:
            continue
        with torch.no_grad():
            reference = _output(lmzoo.apply_plan(model, spec, plan)(*inputs))
            for other in alike:
                error = _relative_error(reference, _output(lmzoo.apply_plan(model, spec, other)(*inputs)))
                if other.configuration(spec) == plan.configuration(spec):
                    groups += other != plan
                    assert error <= FLOAT64_TOLERANCE
                else:
                    borders += error > 1e-3
    assert groups >= 3 and borders >= 1  # both halves of the claim were exercised
