"""Bad input to apply_plan / merge: one lmzoo error naming the problem, nothing mutated."""

import copy

import pytest
import torch

import lmzoo
from lmzoo.core.candidates import Candidate
from lmzoo.errors import InvalidPlanError, LmzooError, NotConfiguredError
from lmzoo.testing import TINY_MODELS


@pytest.fixture(scope="module")
def resnet():
    tiny = TINY_MODELS["resnet-basic"]
    model = tiny.build().eval()
    return model, lmzoo.trace(model, tiny.inputs(1, torch.float32))


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_merge_requires_a_configured_model(resnet):
    model, _ = resnet
    with pytest.raises(NotConfiguredError, match="apply_plan"):
        lmzoo.merge(model)


def test_plan_with_candidates_of_another_spec(resnet):
    model, spec = resnet
    before = copy.deepcopy(model.state_dict())
    blocks = list(lmzoo.Plan.identity(spec).blocks)
    blocks[0] = Candidate(0, 1, 5, 1, False, (1,))  # wrong kernel for unit 1
    with pytest.raises(InvalidPlanError, match="another spec"):
        lmzoo.apply_plan(model, spec, lmzoo.Plan(blocks))
    assert _unchanged(model, before)


def test_plan_for_a_network_of_another_length(resnet):
    model, spec = resnet
    short = lmzoo.Plan(lmzoo.Plan.identity(spec).blocks[:-1])
    with pytest.raises(InvalidPlanError, match="another network"):
        lmzoo.apply_plan(model, spec, short)


def test_spec_of_another_model(resnet):
    _, spec = resnet
    other = TINY_MODELS["resnet-bottleneck"].build()
    with pytest.raises(InvalidPlanError):
        lmzoo.apply_plan(other, spec, lmzoo.Plan.identity(spec))
    mobilenet = TINY_MODELS["mobilenetv2"].build()
    with pytest.raises(InvalidPlanError, match="timm-resnet"):
        lmzoo.apply_plan(mobilenet, spec, lmzoo.Plan.identity(spec))


def test_configured_models_cannot_be_configured_or_traced_again(resnet):
    model, spec = resnet
    configured = lmzoo.apply_plan(model, spec, lmzoo.Plan.identity(spec))
    with pytest.raises(InvalidPlanError, match="already"):
        lmzoo.apply_plan(configured, spec, lmzoo.Plan.identity(spec))
    with pytest.raises(InvalidPlanError, match="already"):
        lmzoo.trace(configured, torch.randn(1, 3, 32, 32))


def test_not_a_plan(resnet):
    model, spec = resnet
    with pytest.raises(InvalidPlanError, match=r"lmzoo\.Plan"):
        lmzoo.apply_plan(model, spec, [c.to_dict() for c in lmzoo.Plan.identity(spec)])  # type: ignore[arg-type]


def test_every_error_is_an_lmzoo_error():
    for cls in (InvalidPlanError, NotConfiguredError, lmzoo.UnsupportedModelError, lmzoo.InvalidInputError):
        assert issubclass(cls, LmzooError)
