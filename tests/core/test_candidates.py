"""Candidate enumeration against a brute force over every subset, on many random specs."""

import itertools
import random

import pytest

from lmzoo.core.candidates import (
    IDENTITY_KERNEL,
    PAPER_RULES,
    Candidate,
    CandidateRules,
    block_geometry,
    candidates,
    check_candidate,
)
from lmzoo.core.spec import Position, ResidualSpan, Spec, Unit
from lmzoo.errors import InvalidPlanError


def random_spec(rng: random.Random) -> Spec:
    length = rng.randint(1, 8)
    units, channels = [], rng.choice([4, 8])
    for index in range(1, length + 1):
        kind = rng.random()
        stride = 2 if rng.random() < 0.15 else 1
        if kind < 0.3:  # depthwise
            out, kernel, depthwise = channels, rng.choice([3, 5]), True
        else:
            out = channels if rng.random() < 0.6 else rng.choice([4, 8, 16])
            kernel, depthwise = rng.choice([1, 1, 3]), False
        removable = out == channels and stride == 1 and rng.random() < 0.2
        units.append(
            Unit(
                index,
                f"u{index}",
                channels,
                out,
                kernel,
                stride,
                (kernel - 1) // 2,
                depthwise,
                (channels, 9, 9),
                round(rng.uniform(0.5, 5.0), 1),
                removable,
            )
        )
        channels = out
    positions = [
        Position(p, rng.choice([None, "relu"]), barrier=rng.random() < 0.15) for p in range(length + 1)
    ]
    spans = []
    for _ in range(rng.randint(0, 3)):
        s = rng.randint(0, length - 1)
        t = rng.randint(s + 1, length)
        spans.append(ResidualSpan(s, t, projection=rng.choice([None, "proj"])))
    return Spec("synthetic", tuple(units), tuple(positions), tuple(spans))


def brute_force(spec: Spec, rules: CandidateRules) -> set[Candidate]:
    found = set()
    for start in range(spec.length):
        for end in range(start + 1, spec.length + 1):
            if not spec.block_is_valid(start, end):
                continue
            units = spec.units_in(start, end)
            best = {}
            for r in range(len(units) + 1):
                for kept in itertools.combinations([u.index for u in units], r):
                    dropped = [u for u in units if u.index not in kept]
                    if any(not u.reducible for u in dropped):
                        continue
                    if not kept and not all(u.removable for u in units):
                        continue
                    kept_units = [spec.unit(k) for k in kept]
                    seen_stride, ok = False, True
                    for u in kept_units:
                        if rules.pointwise_after_stride and seen_stride and u.kernel > 1:
                            ok = False
                        seen_stride = seen_stride or u.stride > 1
                    g = block_geometry(spec, start, end, kept)
                    if not ok or (kept and rules.max_kernel is not None and g.kernel > rules.max_kernel):
                        continue
                    l1 = sum(u.weight_l1 for u in kept_units)
                    key = (g.kernel, g.depthwise)
                    if key not in best or l1 > best[key][0] or (l1 == best[key][0] and kept < best[key][1]):
                        best[key] = (l1, kept, g)
            for (kernel, depthwise), (_, kept, g) in best.items():
                found.add(Candidate(start, end, kernel, g.stride, depthwise, kept))
    return found


@pytest.mark.parametrize("rules", [PAPER_RULES, CandidateRules(pointwise_after_stride=False, max_kernel=7)])
def test_enumeration_matches_brute_force_on_random_specs(rules):
    rng = random.Random(1234)
    for _ in range(300):
        spec = random_spec(rng)
        got = candidates(spec, rules)
        assert len(got) == len(set(got))
        assert set(got) == brute_force(spec, rules)


def test_every_unit_has_its_single_keep_candidate_and_all_candidates_check():
    rng = random.Random(7)
    for _ in range(100):
        spec = random_spec(rng)
        cands = candidates(spec)
        for unit in spec.units:
            g = block_geometry(spec, unit.index - 1, unit.index, (unit.index,))
            assert (
                Candidate(unit.index - 1, unit.index, g.kernel, g.stride, g.depthwise, (unit.index,)) in cands
            )
        for c in cands:
            check_candidate(spec, c)


def _chain(*units_kernels, spans=(), barriers=()):
    units = tuple(
        Unit(i, f"u{i}", 4, 4, k, 1, (k - 1) // 2, False, (4, 8, 8), float(i))
        for i, k in enumerate(units_kernels, 1)
    )
    positions = tuple(Position(p, "relu", barrier=p in barriers) for p in range(len(units) + 1))
    return Spec("synthetic", units, positions, tuple(spans))


def test_paper_kernel_rule_and_l1_choice():
    spec = _chain(3, 3, 3)
    whole = [c for c in candidates(spec) if (c.start, c.end) == (0, 3)]
    assert sorted(c.kernel for c in whole) == [3, 5, 7]
    # kernel 3 keeps the single conv with the largest L1 norm (unit 3), kernel 5 the best pair
    assert {c.kernel: c.kept for c in whole} == {3: (3,), 5: (2, 3), 7: (1, 2, 3)}


def test_partial_residual_overlap_and_barriers_are_invalid():
    spec = _chain(3, 3, 3, 3, spans=[ResidualSpan(0, 2)], barriers=[3])
    blocks = {(c.start, c.end) for c in candidates(spec)}
    assert (1, 3) not in blocks  # only partly overlaps span (0, 2)
    assert (0, 2) in blocks and (0, 3) in blocks
    assert (2, 4) not in blocks  # crosses the barrier at 3


def test_identity_option_only_on_removable_units():
    units = (
        Unit(1, "up", 4, 4, 3, 1, 1, False, (4, 8, 8), 1.0, removable=True),
        Unit(2, "c", 4, 4, 3, 1, 1, False, (4, 8, 8), 1.0),
    )
    spec = Spec("synthetic", units, tuple(Position(p, None, barrier=True) for p in range(3)))
    kernels = {(c.start, c.kernel) for c in candidates(spec)}
    assert kernels == {(0, 3), (0, IDENTITY_KERNEL), (1, 3)}


def test_check_candidate_rejects_foreign_candidates():
    spec = _chain(3, 3)
    with pytest.raises(InvalidPlanError, match="another spec"):
        check_candidate(spec, Candidate(0, 2, 3, 1, False, (1, 2)))
    with pytest.raises(InvalidPlanError, match="past the last position"):
        check_candidate(spec, Candidate(0, 3, 7, 1, False, (1, 2, 3)))


def _brute_force_method(spec: Spec, method: str) -> set[Candidate]:
    """The baselines' sets from their definitions, over every block and every subset."""
    found = set()
    for start in range(spec.length):
        for end in range(start + 1, spec.length + 1):
            if not spec.block_is_valid(start, end):
                continue
            all_units = tuple(range(start + 1, end + 1))
            for r in range(end - start + 1):
                for kept in itertools.combinations(all_units, r):
                    cand_ok = method == "depth" and kept == all_units
                    cand_ok |= method == "layer" and end - start == 1
                    if not cand_ok:
                        continue
                    g = block_geometry(spec, start, end, kept)
                    cand = Candidate(start, end, g.kernel, g.stride, g.depthwise, kept)
                    try:
                        check_candidate(spec, cand)
                    except InvalidPlanError:
                        continue
                    strided = [spec.unit(k).stride > 1 for k in kept]
                    after_stride = [spec.unit(k).kernel > 1 for i, k in enumerate(kept) if any(strided[:i])]
                    if not any(after_stride):
                        found.add(cand)
    return found


@pytest.mark.parametrize("method", ["depth", "layer"])
def test_baseline_candidate_sets_match_their_definitions(method):
    rng = random.Random(f"methods-{method}")
    for _ in range(300):
        spec = random_spec(rng)
        got = candidates(spec, method=method)
        assert len(got) == len(set(got)) and got == sorted(got)
        assert set(got) == _brute_force_method(spec, method)
        identity = {(c.start, c.kept) for c in got if c.length == 1 and c.kept}
        assert len(identity) == spec.length  # the identity plan is always available


def test_layer_method_adds_identity_options_for_reducible_convs():
    spec = _chain(3, 3)
    layer = candidates(spec, method="layer")
    assert [(c.start, c.kernel) for c in layer] == [(0, 0), (0, 3), (1, 0), (1, 3)]
    assert not any(c.kernel == IDENTITY_KERNEL for c in candidates(spec))
    for c in layer:
        check_candidate(spec, c)  # apply_plan accepts them


def test_unknown_method():
    from lmzoo.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="unknown method 'magic'"):
        candidates(_chain(3), method="magic")  # type: ignore[arg-type]
