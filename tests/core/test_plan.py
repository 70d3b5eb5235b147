import json
import random

import pytest

from lmzoo.core.candidates import Candidate, candidates
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Position, Spec, Unit
from lmzoo.errors import InvalidPlanError
from lmzoo.testing import random_plan


def _spec(length=4):
    units = tuple(Unit(i, f"u{i}", 4, 4, 3, 1, 1, False, (4, 8, 8), 1.0) for i in range(1, length + 1))
    return Spec("synthetic", units, tuple(Position(p, "relu") for p in range(length + 1)))


def test_identity_plan_keeps_everything():
    spec = _spec()
    plan = Plan.identity(spec)
    assert plan.length == 4 and len(plan) == 4
    assert plan.boundaries == (0, 1, 2, 3, 4)
    assert plan.kept_units == (1, 2, 3, 4)
    plan.validate(spec)


def test_json_round_trip_is_exact_for_every_candidate_plan():
    spec = _spec(5)
    plan = random_plan(spec, candidates(spec), random.Random(0))
    assert len(plan) < spec.length
    text = json.dumps(plan.to_dict())
    again = Plan.from_dict(json.loads(text))
    assert again == plan and hash(again) == hash(plan)
    again.validate(spec)


@pytest.mark.parametrize(
    "blocks, message",
    [
        ([], "at least one block"),
        ([Candidate(1, 2, 3, 1, False, (2,))], "start at position 0"),
        ([Candidate(0, 1, 3, 1, False, (1,)), Candidate(2, 3, 3, 1, False, (3,))], "does not tile"),
    ],
)
def test_plans_must_tile(blocks, message):
    with pytest.raises(InvalidPlanError, match=message):
        Plan(blocks)


def test_plan_of_another_network_is_rejected():
    plan = Plan.identity(_spec(3))
    with pytest.raises(InvalidPlanError, match="another network"):
        plan.validate(_spec(4))


@pytest.mark.parametrize(
    "data",
    [
        {"blocks": []},
        {"format": "lmzoo.plan/1", "length": 1, "blocks": [{"start": 0, "end": 1}]},
        {
            "format": "lmzoo.plan/1",
            "length": 1,
            "blocks": [{"start": "0", "end": 1, "kernel": 3, "stride": 1, "depthwise": False, "kept": [1]}],
        },
        {
            "format": "lmzoo.plan/1",
            "length": 2,
            "blocks": [{"start": 0, "end": 1, "kernel": 3, "stride": 1, "depthwise": False, "kept": [1]}],
        },
        {
            "format": "lmzoo.plan/1",
            "length": 1,
            "blocks": [{"start": 0, "end": 1, "kernel": 3, "stride": 1, "depthwise": False, "kept": [2]}],
        },
    ],
)
def test_malformed_plan_data_is_rejected(data):
    with pytest.raises(InvalidPlanError):
        Plan.from_dict(data)


def test_candidates_are_hashable_and_immutable():
    c = Candidate(0, 2, 5, 1, False, [1, 2])
    assert c.kept == (1, 2)
    assert {c: 1}[Candidate(0, 2, 5, 1, False, (1, 2))] == 1
    with pytest.raises(AttributeError):
        c.start = 1  # type: ignore[misc]
