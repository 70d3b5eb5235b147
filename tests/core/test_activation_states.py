"""Depth compression's activation states (Kim et al. 2023's extended entries and (t, m, a) DP):
the states offered per segment as their construct_ext_blks offers them, the DP against an
independent brute force over every segmentation and state assignment, plans and tables that carry
states through JSON."""

import itertools
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lmzoo
from lmzoo.core.activations import ActivationState, allowed_states, default_state, extra_states
from lmzoo.core.candidates import Candidate
from lmzoo.core.plan import PLAN_FORMAT_ACTIVATED
from lmzoo.core.solver import plan_importance
from lmzoo.core.spec import Position, ResidualSpan, Spec, Unit
from lmzoo.errors import InvalidPlanError, InvalidTableError
from lmzoo.tables import ImportanceTable, LatencyTable

#: a MobileNetV2-like chain of 6 units: ReLU6 after every conv but the projections (3 and 6),
#: where the architecture can insert one; a residual span over the second block
LENGTH = 6
LINEAR = {3, 6}
ACTIVE = {1, 2, 4, 5}


def _spec() -> Spec:
    units = tuple(
        Unit(i, f"u{i}", 8, 8, 3 if i % 3 == 2 else 1, 1, 1 if i % 3 == 2 else 0, i % 3 == 2, (8, 4, 4), 1.0)
        for i in range(1, LENGTH + 1)
    )
    positions = tuple(
        Position(p, "relu6" if p in ACTIVE else None, False, "relu6" if p in LINEAR else None)
        for p in range(LENGTH + 1)
    )
    return Spec("test", units, positions, (ResidualSpan(3, 6),), ((1, 8, 4, 4),))


def _official_states(s: int, e: int) -> list[tuple[bool, bool]]:
    """construct_ext_blks, written from the official code: (activation at start, at end)."""
    if s == 0:
        return [(False, True)]  # the chain's input here has no activation
    if s in LINEAR:
        return [(False, True), (True, True)]
    if e in LINEAR:
        return [(True, False), (True, True)]
    return [(True, True)]


def _lmzoo_default(s: int, e: int) -> tuple[bool, bool]:
    """The state of a plain entry: the network's activation at the start, at the end the network's
    or, at a linear position, ReLU6 after a merge of two or more convs."""
    return (s in ACTIVE, e in ACTIVE or e - s >= 2)


def test_the_states_offered_are_the_official_codes():
    spec = _spec()
    segments = lmzoo.candidates(spec, method="depth")
    for seg in segments:
        offered = [(s.start_active, s.end_active) for s in allowed_states(spec, seg)]
        assert sorted(offered) == sorted(_official_states(seg.start, seg.end))
        assert offered[0] == _lmzoo_default(seg.start, seg.end)
        d = default_state(spec, seg)
        assert (d.start_active, d.end_active) == offered[0]


def test_mobilenetv2_has_the_official_315_states():
    import timm

    for name in ("mobilenetv2_100", "mobilenetv2_140"):
        spec = lmzoo.trace(timm.create_model(name).eval(), torch.randn(1, 3, 64, 64))
        segments = lmzoo.candidates(spec, method="depth")
        assert (len(segments), len(segments) + len(extra_states(spec, segments))) == (171, 315)


def _tables(spec, rng, deltas_of):
    segments = lmzoo.candidates(spec, method="depth")
    lat = {c: float(rng.randint(1, 9)) for c in segments}
    entries, states = {}, {}
    for seg in segments:
        for flags in _official_states(seg.start, seg.end):
            value = math.exp(deltas_of(seg, flags) / 100)
            if flags == _lmzoo_default(seg.start, seg.end):
                entries[seg] = value
            else:
                states[ActivationState(seg, *flags)] = value
    return LatencyTable(lat, spec=spec), ImportanceTable(entries, states=states, spec=spec)


def _fastest(lat, s, e):
    """The official stage 1 (T_opt): the fastest way to run (s, e] as consecutive merged convs."""
    by_span = {(c.start, c.end): t for c, t in lat.entries.items()}
    best = {s: 0.0}
    for p in range(s + 1, e + 1):
        best[p] = min(best[q] + by_span[(q, p)] for q in range(s, p) if (q, p) in by_span and q in best)
    return best[e]


def _brute_force(lat, imp, alpha, budget):
    """The best value and latency over every segmentation and every official state assignment,
    h = Δ - alpha * mean(Δ of all single-conv rows), independently of lmzoo's DP."""
    spec = imp.spec
    rows = {**{(c, _lmzoo_default(c.start, c.end)): v for c, v in imp.entries.items()}}
    rows.update({(s.candidate, (s.start_active, s.end_active)): v for s, v in imp.states.items()})
    singles = [math.log(v) for (c, _), v in rows.items() if c.length == 1]
    bonus = alpha * sum(singles) / len(singles)
    by_span = {(c.start, c.end): c for c in imp.entries}
    best = None
    for cut in itertools.product([False, True], repeat=spec.length - 1):
        ends = [p for p, on in zip(range(1, spec.length), cut) if on] + [spec.length]
        segments, start = [], 0
        for e in ends:
            segments.append((start, e))
            start = e
        if any(seg not in by_span for seg in segments):
            continue
        ms = sum(_fastest(lat, s, e) for s, e in segments)
        if ms > budget:
            continue
        for flags in itertools.product(*(_official_states(s, e) for s, e in segments)):
            if any(flags[k][0] != flags[k - 1][1] for k in range(1, len(flags))):
                continue  # a segment starts with the activation the previous one ends with
            value = sum(math.log(rows[(by_span[seg], f)]) - bonus for seg, f in zip(segments, flags))
            if best is None or value > best[0] + 1e-12:
                best = (value, ms)
    return best


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), alpha=st.sampled_from([0.0, 1.0, 1.6]), budget=st.integers(4, 30))
def test_the_state_dp_matches_brute_force(seed, alpha, budget):
    spec = _spec()
    rng = random.Random(seed)
    drawn = {}

    def deltas_of(seg, flags):
        return drawn.setdefault((seg, flags), rng.randint(-800, 0))

    lat, imp = _tables(spec, rng, deltas_of)
    objective = f"normalized:{alpha}"
    best = _brute_force(lat, imp, alpha, budget)
    if best is None:
        with pytest.raises(lmzoo.InfeasibleBudgetError):
            lmzoo.solve(lat, imp, budget_ms=budget, levels=budget, method="depth", objective=objective)
        return
    plan = lmzoo.solve(lat, imp, budget_ms=budget, levels=budget, method="depth", objective=objective)
    plan.validate(spec)
    assert plan_importance(imp, plan, objective=objective, method="depth") == pytest.approx(best[0], abs=1e-9)
    assert lat.chain_ms(plan) <= budget


def test_the_dp_inserts_and_removes_activations_where_the_states_say():
    """A table whose only lossless plan keeps conv 3 with a ReLU6 after it (which the network lacks)
    and ends with (4, 6] merged without the ReLU6 lmzoo's rule would add at position 6."""
    spec = _spec()
    free = {((0, 1), (False, True)), ((1, 2), (True, True))}
    free |= {((2, 3), (True, True)), ((3, 4), (True, True)), ((4, 6), (True, False))}

    def deltas_of(seg, flags):
        if ((seg.start, seg.end), flags) in free:
            return 0
        return -50 if seg.length == 1 else -400

    lat, imp = _tables(spec, random.Random(0), deltas_of)
    budget = lat.chain_ms(lmzoo.Plan.identity(spec))
    plan = lmzoo.solve(lat, imp, budget_ms=budget, method="depth", objective="normalized:0")
    assert plan.block_ends[:5] == (0, 1, 2, 3, 4) and plan.activated == (3,)
    assert [plan.activation(spec, b) for b in plan] == ["relu6"] * 4 + [None] * (len(plan) - 4)
    assert plan_importance(imp, plan, objective="normalized:0", method="depth") == 0
    configured = lmzoo.Plan(plan.blocks, plan.linear)  # the same blocks in lmzoo's default states
    assert plan_importance(imp, configured, objective="normalized:0", method="depth") < -0.4


def test_plans_with_inserted_activations_round_trip_and_are_checked():
    spec = _spec()
    identity = lmzoo.Plan.identity(spec)
    plan = lmzoo.Plan(identity.blocks, activated=[3])
    data = plan.to_dict()
    assert data["format"] == PLAN_FORMAT_ACTIVATED and data["activated"] == [3]
    assert lmzoo.Plan.from_dict(data) == plan != identity
    assert identity.to_dict()["format"] == "lmzoo.plan/1" and "activated" not in identity.to_dict()
    plan.validate(spec)
    with pytest.raises(InvalidPlanError, match="has one already or none to insert"):
        lmzoo.Plan(identity.blocks, activated=[2]).validate(spec)
    merged = [*identity.blocks[:3], Candidate(3, 5, 3, 1, False, (4, 5)), identity.blocks[5]]
    with pytest.raises(InvalidPlanError, match="not the end of a block"):
        lmzoo.Plan(merged, activated=[4])
    with pytest.raises(InvalidPlanError, match="both linear and activated"):
        lmzoo.Plan(identity.blocks, linear=[3], activated=[3])


def test_tables_with_states_round_trip_and_refuse_strays():
    spec = _spec()
    lat, imp = _tables(spec, random.Random(1), lambda seg, flags: -100)
    assert imp.states and ImportanceTable.from_dict(imp.to_dict()) == imp
    plain = ImportanceTable(dict(imp.entries), spec=spec)
    assert "states" not in plain.to_dict()  # tables without states keep their files
    stray = ActivationState(Candidate(0, 1, 1, 1, False, (1,)), True, True)
    with pytest.raises(InvalidTableError, match=r"has a state of .* but no entry"):
        ImportanceTable({Candidate(1, 2, 3, 1, True, (2,)): 1.0}, states={stray: 1.0})
    missing = dict(imp.states)
    missing.pop(next(iter(missing)))
    partial = ImportanceTable(dict(imp.entries), states=missing, spec=spec)
    with pytest.raises(InvalidTableError, match="activation states lack"):
        lmzoo.solve(lat, partial, speedup=1.1, method="depth")


def test_only_depth_scores_by_states():
    """A table with states scores other methods' plans by their plain entries, and refuses to score
    a plan that chooses states without method='depth'."""
    spec = _spec()
    _, imp = _tables(spec, random.Random(2), lambda seg, flags: -100 * seg.length - 10 * sum(flags))
    plain = ImportanceTable(dict(imp.entries), spec=spec)
    by_span = {(c.start, c.end): c for c in imp.entries}
    layermerge = lmzoo.Plan([by_span[(0, 2)], by_span[(2, 3)], by_span[(3, 4)], by_span[(4, 6)]])
    for objective in ("product", "sum"):
        assert plan_importance(imp, layermerge, objective=objective) == plan_importance(
            plain, layermerge, objective=objective
        )
    inserted = lmzoo.Plan(lmzoo.Plan.identity(spec).blocks, activated=[3])
    with pytest.raises(lmzoo.InvalidArgumentError, match="chooses activation states"):
        plan_importance(imp, inserted, objective="product")
    assert plan_importance(imp, inserted, objective="product", method="depth") < 0
