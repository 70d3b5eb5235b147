"""The solver against independent exact solvers, on problems cut from real traced specs.

- brute force over every tiling (and, for the depth baseline, every activation-free segmentation)
  on hundreds of small windows of real specs: with latencies on the grid the optimum, and the
  tie-break toward lower latency, must match exactly;
- a Pareto-set DP without a grid on whole tiny specs: the frontier must be exactly that set;
- on full-size specs with arbitrary float tables: feasibility, monotonicity and a provable lower
  bound relating ``solve`` to ``frontier``.
"""

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmzoo
from lmzoo.core.candidates import IDENTITY_KERNEL, Candidate, candidate_order
from lmzoo.core.solver import identity_latency, plan_importance
from lmzoo.errors import InfeasibleBudgetError, InvalidArgumentError, InvalidTableError
from lmzoo.tables import ImportanceTable, LatencyTable
from lmzoo.testing import TINY_MODELS

N_WINDOW_CASES = 300


@pytest.fixture(scope="module")
def specs():
    import timm
    import torch

    found = {}
    for name, tiny in TINY_MODELS.items():
        torch.manual_seed(0)  # the weights' L1 norms choose candidates: the same specs every run
        model = tiny.build().eval()
        found[name] = lmzoo.trace(model, tiny.inputs(1, torch.float32))
    for name in ("mobilenetv2_100", "resnet34"):
        torch.manual_seed(0)
        found[name] = lmzoo.trace(timm.create_model(name).eval(), torch.randn(1, 3, 64, 64))
    return found


# -- helpers --------------------------------------------------------------------------------------


def _window(cands, first, last):
    """The candidates inside positions [first, last], renumbered so that `first` becomes 0."""
    return [
        Candidate(
            c.start - first, c.end - first, c.kernel, c.stride, c.depthwise, [k - first for k in c.kept]
        )
        for c in cands
        if first <= c.start and c.end <= last
    ]


def _random_window(specs, rng, method, longest):
    """The method's candidates of a random window of 2..``longest`` units of a random spec."""
    spec = specs[rng.choice(sorted(specs))]
    first = rng.randrange(0, spec.length - 1)
    last = min(spec.length, first + rng.randint(2, longest))
    return _window(lmzoo.candidates(spec, method=method), first, last), last - first


def _integer_tables(cands, rng, *, importance_steps=64):
    """Integer latencies (ms) and dyadic importances: every sum is exact in floating point.
    Few importance steps make many plans equally important (exercising the tie-break)."""
    lat = {c: 0 if c.kernel == IDENTITY_KERNEL else rng.randint(1, 9) for c in cands}
    imp = {c: rng.randint(importance_steps // 2, 3 * importance_steps // 2) / importance_steps for c in cands}
    return LatencyTable(lat), ImportanceTable(imp)


def _all_plans(cands, length, method):
    """Every plan as (latency, importance, blocks, linear): tilings, and for the depth baseline
    also every way to join consecutive blocks into an activation-free segment."""
    by_start = {}
    for c in cands:
        by_start.setdefault(c.start, []).append(c)
    all_kept = {(c.start, c.end): c for c in cands if c.kept == tuple(range(c.start + 1, c.end + 1))}

    def walk(position, segment_start, blocks, linear):
        if position == length:
            yield blocks, linear
            return
        for c in by_start.get(position, []):
            closing = (segment_start, c.end)
            if method != "depth" or closing in all_kept:
                yield from walk(c.end, c.end, [*blocks, c], linear)
            if method == "depth" and c.end < length:
                yield from walk(c.end, segment_start, [*blocks, c], [*linear, c.end])

    return list(walk(0, 0, [], []))


def _score(plan_blocks, linear, lat, imp, objective="sum"):
    latency = sum(lat.entries[b] for b in plan_blocks)
    plan = lmzoo.Plan(plan_blocks, linear)
    return latency, plan_importance(imp, plan, objective=objective)


# -- brute force on windows of real specs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "objective"),
    [
        *((m, o) for o in ("sum", "product") for m in ("layermerge", "depth", "layer", "layermerge-union")),
        ("layer", "kept"),
        ("depth", "normalized"),
        ("depth", "normalized:1.6"),
    ],
)
def test_solve_matches_brute_force_on_windows_of_real_specs(specs, method, objective):
    # plan_importance adds the terms left to right as the DP does, and rounded addition is
    # monotone, so the DP's optimum is exactly the largest brute-force value even for log I
    rng = random.Random(f"windows-{method}-{objective}")
    checked = infeasible = 0
    for _ in range(N_WINDOW_CASES // 3):
        cands, length = _random_window(specs, rng, method, 7)
        lat, imp = _integer_tables(cands, rng, importance_steps=rng.choice([4, 64]))
        plans = [
            (*_score(b, lin, lat, imp, objective), b, lin) for b, lin in _all_plans(cands, length, method)
        ]
        fastest = int(min(p[0] for p in plans))
        slowest = int(max(p[0] for p in plans))
        budget = rng.randint(max(1, fastest - 2), slowest + 1)
        feasible = [p for p in plans if p[0] <= budget]
        if not feasible:
            with pytest.raises(InfeasibleBudgetError) as err:
                lmzoo.solve(lat, imp, budget_ms=budget, levels=budget, method=method, objective=objective)
            assert err.value.min_budget_ms >= fastest
            infeasible += 1
            continue
        best_value = max(p[1] for p in feasible)
        best_latency = min(p[0] for p in feasible if p[1] == best_value)
        plan = lmzoo.solve(lat, imp, budget_ms=budget, levels=budget, method=method, objective=objective)
        latency, value = _score(list(plan), plan.linear, lat, imp, objective)
        assert value == best_value
        assert latency == best_latency <= budget
        checked += 1
    assert checked > 0.7 * (N_WINDOW_CASES // 3) and infeasible > 0


@pytest.mark.parametrize(
    ("method", "objective"),
    [("layermerge", "sum"), ("layermerge", "product"), ("layer", "sum"), ("layermerge-union", "sum")],
)
def test_top_plans_are_the_k_best_plans_by_brute_force(specs, method, objective):
    """The K-best DP returns, best first, exactly the k largest objective values among the plans
    that fit (distinct plans, each scored and timed as returned), or all of them when fewer fit."""
    rng = random.Random(f"top-{method}-{objective}")
    checked = short = 0
    for _ in range(N_WINDOW_CASES // 5):
        cands, length = _random_window(specs, rng, method, 6)
        lat, imp = _integer_tables(cands, rng, importance_steps=rng.choice([4, 64]))
        plans = [_score(b, lin, lat, imp, objective) for b, lin in _all_plans(cands, length, method)]
        budget = rng.randint(max(1, int(min(p[0] for p in plans))), int(max(p[0] for p in plans)) + 1)
        k = rng.randint(1, 8)
        top = lmzoo.top_plans(
            lat, imp, k=k, budget_ms=budget, levels=budget, method=method, objective=objective
        )
        feasible = sorted((p[1] for p in plans if p[0] <= budget), reverse=True)
        assert [p.importance for p in top] == feasible[:k]
        assert len({p.plan for p in top}) == len(top)
        for p in top:
            assert p.latency_ms == lat.chain_ms(p.plan) <= budget
            assert plan_importance(imp, p.plan, objective=objective) == p.importance
        assert top[0].importance == plan_importance(
            imp,
            lmzoo.solve(lat, imp, budget_ms=budget, levels=budget, method=method, objective=objective),
            objective=objective,
        )
        checked += 1
        short += len(top) < k
    assert checked == N_WINDOW_CASES // 5 and 0 < short < checked


def test_top_plans_checks_k():
    lat, imp = _two_unit_tables()
    with pytest.raises(InvalidArgumentError, match="k must be an integer from 1 to 64"):
        lmzoo.top_plans(lat, imp, k=0, speedup=1.1)


# -- the frontier against an exact Pareto-set DP ---------------------------------------------------


def _pareto(cands, length, lat, imp, score):
    """Exact frontier without a grid: for each position, best objective per exact latency."""
    best = {0: {0: 0.0}}
    for end in range(1, length + 1):
        here = {}
        for c in cands:
            if c.end != end:
                continue
            for t, v in best[c.start].items():
                key, value = t + lat.entries[c], v + score(imp.entries[c])
                if value > here.get(key, -math.inf):
                    here[key] = value
        best[end] = here
    points, record = [], -math.inf
    for t in sorted(best[length]):
        if best[length][t] > record:
            record = best[length][t]
            points.append((t, record))
    return points


@pytest.mark.parametrize(
    ("method", "objective"), [("layermerge", "sum"), ("layer", "sum"), ("layermerge", "product")]
)
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_frontier_is_the_exact_pareto_set(specs, name, method, objective):
    spec = specs[name]
    cands = lmzoo.candidates(spec, method=method)
    score = math.log if objective == "product" else float
    for seed in range(3):
        lat, imp = _integer_tables(cands, random.Random(f"{name}-{method}-{seed}"))
        exact = _pareto(cands, spec.length, lat, imp, score)
        top_ms = exact[-1][0]  # the most important plan, fastest among equals: grid step 1 ms
        points = lmzoo.frontier(lat, imp, levels=int(top_ms), method=method, spec=spec, objective=objective)
        assert [(p.latency_ms, p.importance) for p in points] == exact
        for p in points[:: max(1, len(points) // 10)]:
            assert lat.chain_ms(p.plan) == p.latency_ms
            assert plan_importance(imp, p.plan, objective=objective) == p.importance


# -- arbitrary float tables on full-size specs ----------------------------------------------------


def _float_tables(spec, rng, *, method="layermerge", fixed_ms=2.5):
    # drawn in candidate order, not set order: the same tables for the same spec every run
    cands = sorted(
        set(lmzoo.candidates(spec, method=method)) | set(lmzoo.candidates(spec)), key=candidate_order
    )
    lat = {c: 0.0 if c.kernel == 0 else rng.uniform(0.05, 1.0) * c.kernel for c in cands}
    imp = {c: math.exp(rng.uniform(-5, 0.5) / 100) for c in cands}
    fp = spec.fingerprint
    return (
        LatencyTable(lat, fixed_ms=fixed_ms, spec_fingerprint=fp),
        ImportanceTable(imp, spec_fingerprint=fp),
    )


@pytest.mark.parametrize("method", ["layermerge", "depth", "layer", "layermerge-union"])
@pytest.mark.parametrize("name", ["mobilenetv2_100", "resnet34", "ddpm-unet"])
def test_frontier_and_solve_on_full_size_specs(specs, name, method):
    spec = specs[name]
    rng = random.Random(f"full-{name}-{method}")
    lat, imp = _float_tables(spec, rng, method=method)
    levels = 3000
    # depth's own objective on these random singles (mean Δ about -2 points) keeps every activation
    # of the DDPM UNet, a frontier of one plan: the frontier's machinery is checked under sum
    objective = "sum" if method == "depth" else None
    points = lmzoo.frontier(lat, imp, levels=levels, method=method, spec=spec, objective=objective)
    assert len(points) > 3
    for a, b in itertools.pairwise(points):
        assert a.latency_ms < b.latency_ms and a.importance < b.importance
    for p in points:
        p.plan.validate(spec)
        assert math.isclose(lat.chain_ms(p.plan), p.latency_ms, rel_tol=1e-12)
        value = plan_importance(imp, p.plan, method=method, objective=objective)
        assert math.isclose(value, p.importance, rel_tol=1e-12)
    if method == "layer":
        assert all(b.length == 1 for p in points for b in p.plan)
    if method == "depth":
        assert all(b.kept == tuple(range(b.start + 1, b.end + 1)) for p in points for b in p.plan)
    identity_ms = identity_latency(lat)
    for _ in range(8):
        budget = rng.uniform(points[0].latency_ms * 1.05, identity_ms)
        plan = lmzoo.solve(
            lat, imp, budget_ms=budget, levels=levels, method=method, spec=spec, objective=objective
        )
        assert lat.chain_ms(plan) <= budget
        value = plan_importance(imp, plan, method=method, objective=objective)
        # any frontier plan this much under the budget survives solve's rounding, so cannot beat it
        for p in points:
            if p.latency_ms <= budget * (1 - len(p.plan) / levels):
                assert value >= p.importance * (1 - 1e-12)


def test_speedup_is_a_budget_including_the_fixed_cost(specs):
    spec = specs["mobilenetv2_100"]
    lat, imp = _float_tables(spec, random.Random(1), fixed_ms=4.0)
    base = identity_latency(lat) + lat.fixed_ms
    for s in (1.2, 1.6, 2.0):
        by_speedup = lmzoo.solve(lat, imp, speedup=s)
        by_budget = lmzoo.solve(lat, imp, budget_ms=base / s - lat.fixed_ms)
        assert by_speedup == by_budget
        assert base / lat.predict(by_speedup) >= s


def test_solve_is_deterministic_and_prefers_the_faster_of_equal_plans():
    # two units; merging them is as important as keeping both apart but faster, or slower
    keep1, keep2 = Candidate(0, 1, 3, 1, False, (1,)), Candidate(1, 2, 3, 1, False, (2,))
    merged = Candidate(0, 2, 5, 1, False, (1, 2))
    imp = ImportanceTable({keep1: 0.5, keep2: 0.5, merged: 1.0})
    for merged_ms, expected in ((1.5, [merged]), (2.5, [keep1, keep2])):
        lat = LatencyTable({keep1: 1.0, keep2: 1.0, merged: merged_ms})
        plans = {lmzoo.solve(lat, imp, budget_ms=10.0) for _ in range(3)}
        assert plans == {lmzoo.Plan(expected)}


def test_sum_objective_rewards_blocks_and_product_does_not():
    # three units at equal cost: merge units 1-2 and keep 3 (one block fewer, -0.5 points), or keep
    # 1 and 2 apart and prune 3 (-5 points). I = exp(delta / 100) as the importance estimators give.
    keep = [Candidate(u - 1, u, 3, 1, False, (u,)) for u in (1, 2, 3)]
    merged = Candidate(0, 2, 5, 1, False, (1, 2))
    pruned = Candidate(2, 3, 0, 1, False, ())
    lat = LatencyTable({keep[0]: 1.0, keep[1]: 1.0, keep[2]: 1.0, merged: 1.0, pruned: 0.0})
    delta = {keep[0]: 0.0, keep[1]: 0.0, keep[2]: 0.0, merged: -0.5, pruned: -5.0}
    imp = ImportanceTable({c: math.exp(d / 100) for c, d in delta.items()})
    more_blocks = lmzoo.Plan([keep[0], keep[1], pruned])
    better_accuracy = lmzoo.Plan([merged, keep[2]])
    assert lmzoo.solve(lat, imp, budget_ms=2.0) == more_blocks
    assert lmzoo.solve(lat, imp, budget_ms=2.0, objective="product") == better_accuracy
    # the product objective is the summed accuracy change / 100, whatever the block count
    for plan in (more_blocks, better_accuracy):
        expected = sum(delta[b] for b in plan) / 100
        assert plan_importance(imp, plan, objective="product") == pytest.approx(expected, abs=1e-15)


def test_layer_pruning_maximises_the_kept_convs_as_its_official_code_does():
    """kim24layer's knapsack: the sum over kept removable convs of exp(drop / 100); removed convs and
    convs that cannot be removed add nothing. Its worked example (convs A, B, C removable with
    drops 5, 0.5 and 0.2 points and 2, 1 and 1 ms; two irreducible convs of 0.53 and 0.47 ms): at a
    3 ms budget it keeps B and C (2.007) rather than A (1.051), although removing A costs 5 points.
    (3.01 ms here: lmzoo rounds latencies up to its grid and so never exceeds the budget, where the
    official code truncates them to 0.1 ms and may.)"""
    times = {1: 0.53, 2: 2.0, 3: 1.0, 4: 1.0, 5: 0.47}
    drops = {2: 5.0, 3: 0.5, 4: 0.2}
    keep = {u: Candidate(u - 1, u, 3, 1, False, (u,)) for u in times}
    remove = {u: Candidate(u - 1, u, 0, 1, False, ()) for u in drops}
    lat = LatencyTable({**{keep[u]: t for u, t in times.items()}, **dict.fromkeys(remove.values(), 0.0)})
    imp = ImportanceTable(
        {**dict.fromkeys(keep.values(), 1.0), **{remove[u]: math.exp(-d / 100) for u, d in drops.items()}}
    )
    official = lmzoo.solve(lat, imp, budget_ms=3.01, method="layer")  # the method's default objective
    assert official == lmzoo.Plan([keep[1], remove[2], keep[3], keep[4], keep[5]])
    assert plan_importance(imp, official, method="layer") == pytest.approx(math.exp(0.005) + math.exp(0.002))
    # lmzoo's product objective keeps the conv whose removal costs most instead
    assert lmzoo.solve(lat, imp, budget_ms=3.01, method="layer", objective="product") == lmzoo.Plan(
        [keep[1], keep[2], remove[3], remove[4], keep[5]]
    )
    assert lmzoo.solve(lat, imp, budget_ms=4.01, method="layer") == lmzoo.Plan(
        [keep[1], keep[2], keep[3], remove[4], keep[5]]
    )
    with pytest.raises(lmzoo.InvalidArgumentError, match="objective 'kept' is layer pruning's"):
        lmzoo.solve(lat, imp, budget_ms=3.0, method="layermerge", objective="kept")


def _kim23_example():
    """The worked example of Kim et al. 2023's stage 2 (three 3x3 convs with ReLUs, VGG-like: every
    position carries an activation): the latency and raw Δtop-1 of every segment."""
    times = {(0, 1): 1.0, (1, 2): 1.0, (2, 3): 1.0, (0, 2): 1.5, (1, 3): 1.5, (0, 3): 2.2}
    deltas = {(0, 1): -2.0, (1, 2): -1.0, (2, 3): -3.0, (0, 2): -1.5, (1, 3): -2.2, (0, 3): -4.0}
    segment = {
        (s, e): Candidate(s, e, 2 * (e - s) + 1, 1, False, tuple(range(s + 1, e + 1))) for s, e in times
    }
    lat = LatencyTable({segment[k]: t for k, t in times.items()})
    imp = ImportanceTable({segment[k]: math.exp(d / 100) for k, d in deltas.items()})
    return times, deltas, segment, lat, imp


KIM23_PATHS = [[(0, 3)], [(0, 1), (1, 3)], [(0, 2), (2, 3)], [(0, 1), (1, 2), (2, 3)]]


def _kim23_official(times, deltas, budget, alpha):
    """The official stage 2 written from its code (utils/dp.py optimal_patterns with
    generate_ext_imp_table, norm 'single'), independently of lmzoo: h = Δ - alpha * mean(single Δ),
    the best path 0 -> 3 whose latency fits, ties (to 7 decimals) to the faster. Returns the path,
    its value and its latency."""
    singles = [d for (s, e), d in deltas.items() if e - s == 1]
    h = {k: d - alpha * sum(singles) / len(singles) for k, d in deltas.items()}
    feasible = [p for p in KIM23_PATHS if sum(times[k] for k in p) <= budget]
    best = max(feasible, key=lambda p: (round(sum(h[k] for k in p), 7), -sum(times[k] for k in p)))
    return tuple(e for _, e in best), sum(h[k] for k in best), sum(times[k] for k in best)


@pytest.mark.parametrize(
    ("budget", "alpha", "ends"),
    [(2.5, 1.6, (1, 3)), (2.5, 1.0, (1, 3)), (3.0, 1.6, (1, 2, 3)), (3.0, 1.0, (1, 2, 3)), (2.5, 0.0, (3,))],
)
def test_depth_compression_solves_kim23s_worked_example_as_its_official_code(budget, alpha, ends):
    """Run through the official optimal_patterns by hand: at 2.5 ms and alpha 1.6 it keeps the ReLU at
    position 1 only ((0,1) then (1,3): h = 1.2 + 1.0 against 1.7 + 0.2 for (0,2), (2,3)); with
    alpha 0 the raw deltas penalise every extra segment and it merges all three convs."""
    times, deltas, _, lat, imp = _kim23_example()
    assert _kim23_official(times, deltas, budget, alpha)[0] == ends
    objective = f"normalized:{alpha}"
    # 1 % over the budget: lmzoo rounds latencies up to its grid, so an exact fit may not fit
    plan = lmzoo.solve(lat, imp, budget_ms=budget * 1.01, method="depth", objective=objective)
    assert plan.boundaries[1:] == ends
    expected = sum(deltas[(b.start, b.end)] + alpha * 2.0 for b in plan) / 100  # mean single Δ: -2
    assert plan_importance(imp, plan, method="depth", objective=objective) == pytest.approx(expected)
    # ALPHA 1 is the official default, and normalized the method's default objective
    assert lmzoo.solve(lat, imp, budget_ms=budget * 1.01, method="depth") == lmzoo.solve(
        lat, imp, budget_ms=budget * 1.01, method="depth", objective="normalized:1"
    )


@settings(max_examples=200, deadline=None)
@given(
    deltas=st.lists(st.integers(-800, 0), min_size=6, max_size=6),
    times=st.lists(st.integers(1, 9), min_size=6, max_size=6),
    budget=st.integers(2, 30),
    alpha=st.sampled_from([0.0, 1.0, 1.2, 1.6, 3.0]),
)
def test_depth_compression_agrees_with_the_official_stage_2_on_random_instances(deltas, times, budget, alpha):
    keys = [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3)]
    time_of = dict(zip(keys, (float(t) for t in times)))
    delta_of = dict(zip(keys, (d / 100 for d in deltas)))
    segment = {
        (s, e): Candidate(s, e, 2 * (e - s) + 1, 1, False, tuple(range(s + 1, e + 1))) for s, e in keys
    }
    lat = LatencyTable({segment[k]: t for k, t in time_of.items()})
    imp = ImportanceTable({segment[k]: math.exp(d / 100) for k, d in delta_of.items()})
    # the official stage 1: a segment runs as its fastest split (T_opt) when that beats one conv
    t_opt = dict(time_of)
    t_opt[(0, 2)] = min(t_opt[(0, 2)], t_opt[(0, 1)] + t_opt[(1, 2)])
    t_opt[(1, 3)] = min(t_opt[(1, 3)], t_opt[(1, 2)] + t_opt[(2, 3)])
    t_opt[(0, 3)] = min(t_opt[(0, 3)], t_opt[(0, 1)] + t_opt[(1, 3)], t_opt[(0, 2)] + t_opt[(2, 3)])
    objective = f"normalized:{alpha}"
    if min(sum(t_opt[k] for k in p) for p in KIM23_PATHS) > budget:
        with pytest.raises(InfeasibleBudgetError):
            lmzoo.solve(lat, imp, budget_ms=budget, levels=budget, method="depth", objective=objective)
        return
    _, official_value, official_ms = _kim23_official(t_opt, delta_of, budget, alpha)
    plan = lmzoo.solve(lat, imp, budget_ms=budget, levels=budget, method="depth", objective=objective)
    value = plan_importance(imp, plan, method="depth", objective=objective)
    assert value * 100 == pytest.approx(official_value, abs=1e-7)
    assert sum(lat.entries[b] for b in plan) == official_ms


def test_product_objective_needs_positive_importances():
    lat, imp = _two_unit_tables()
    keep1, merged, keep2 = sorted(imp.entries)
    zero = ImportanceTable({keep1: 0.5, keep2: 0.5, merged: 0.0})
    assert lmzoo.solve(lat, zero, budget_ms=3.0) == lmzoo.Plan([keep1, keep2])
    with pytest.raises(InvalidTableError, match="objective 'product' needs importances > 0"):
        lmzoo.solve(lat, zero, budget_ms=3.0, objective="product")


# -- bad input ------------------------------------------------------------------------------------


def _two_unit_tables():
    keep1, keep2 = Candidate(0, 1, 3, 1, False, (1,)), Candidate(1, 2, 3, 1, False, (2,))
    merged = Candidate(0, 2, 5, 1, False, (1, 2))
    return (
        LatencyTable({keep1: 1.0, keep2: 1.0, merged: 1.5}, fixed_ms=1.0),
        ImportanceTable({keep1: 0.5, keep2: 0.5, merged: 0.9}),
    )


def test_infeasible_budget_names_the_smallest_feasible_one():
    lat, imp = _two_unit_tables()
    with pytest.raises(InfeasibleBudgetError, match=r"fastest plan takes 1\.5 ms") as err:
        lmzoo.solve(lat, imp, budget_ms=1.0)
    assert err.value.min_budget_ms >= 1.5
    assert err.value.max_speedup == pytest.approx(3.0 / (1.0 + err.value.min_budget_ms))
    plan = lmzoo.solve(lat, imp, budget_ms=err.value.min_budget_ms)
    assert lat.chain_ms(plan) == 1.5
    with pytest.raises(InfeasibleBudgetError, match="speed-up"):
        lmzoo.solve(lat, imp, speedup=5.0)  # the budget would be negative


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of budget_ms or speedup"),
        ({"budget_ms": 2.0, "speedup": 1.5}, "exactly one of budget_ms or speedup"),
        ({"budget_ms": float("nan")}, "budget_ms must be a finite number"),
        ({"speedup": -1.0}, "speedup must be a finite number"),
        ({"budget_ms": 2.0, "levels": 0}, "levels must be an integer from 1 to 100,000"),
        ({"budget_ms": 2.0, "method": "prune"}, "unknown method 'prune'"),
        ({"budget_ms": 2.0, "objective": "max"}, "objective must be one of sum, product"),
    ],
)
def test_bad_arguments(kwargs, message):
    lat, imp = _two_unit_tables()
    with pytest.raises(InvalidArgumentError, match=message):
        lmzoo.solve(lat, imp, **kwargs)


def test_tables_must_cover_the_identity_plan_and_each_other():
    lat, imp = _two_unit_tables()
    keep1, merged, _ = sorted(lat.entries)
    partial = ImportanceTable({keep1: 0.5, merged: 0.9})
    with pytest.raises(InvalidTableError, match="different candidates"):
        lmzoo.solve(lat, partial, budget_ms=3.0)
    no_identity = LatencyTable({keep1: 1.0, merged: 1.5})
    with pytest.raises(InvalidTableError, match="identity plan: no entry keeping unit 2 alone"):
        lmzoo.solve(no_identity, partial, budget_ms=3.0)
    with pytest.raises(InvalidArgumentError, match="LatencyTable and an ImportanceTable"):
        lmzoo.solve(imp, lat, budget_ms=3.0)


def test_tables_from_different_networks_are_rejected(specs):
    a, b = specs["mobilenetv2"], specs["resnet-basic"]
    lat, _ = _float_tables(a, random.Random(0))
    _, imp = _float_tables(b, random.Random(0))
    with pytest.raises(InvalidTableError, match="different networks"):
        lmzoo.solve(lat, imp, speedup=1.2)
    lat, imp = _float_tables(a, random.Random(0))
    with pytest.raises(InvalidTableError, match="different networks"):
        lmzoo.solve(lat, imp, speedup=1.2, spec=b)


def test_spec_restricts_layermerge_to_the_papers_candidates(specs):
    spec = specs["resnet-basic"]
    lat, imp = _float_tables(spec, random.Random(0), method="layer")  # tables hold both sets
    paper = set(lmzoo.candidates(spec))
    extra = set(lat.entries) - paper
    assert extra and all(c.kernel == 0 for c in extra)
    cheap_pruning = {c: 0.0 for c in extra}
    lat = LatencyTable({**lat.entries, **cheap_pruning}, spec_fingerprint=spec.fingerprint)
    restricted = lmzoo.frontier(lat, imp, spec=spec)
    assert all(b in paper for p in restricted for b in p.plan)
    unrestricted = lmzoo.frontier(lat, imp)
    assert any(b in extra for p in unrestricted for b in p.plan)
    lacking = LatencyTable({c: v for c, v in lat.entries.items() if c.length == 1}, spec_fingerprint=None)
    with pytest.raises(InvalidTableError, match=r"lacks .* layermerge candidates"):
        lmzoo.solve(lacking, imp, speedup=1.2, spec=spec)


@pytest.mark.parametrize("name", ["mobilenetv2_100", "resnet34", "ddpm-unet", "resnet-basic"])
def test_the_union_is_both_sets_and_never_worse_than_either(specs, name):
    """layermerge-union's candidates are LayerMerge's and layer pruning's together, so at every
    budget its optimum is at least the better of the two (same tables, same grid)."""
    spec = specs[name]
    paper, layer = set(lmzoo.candidates(spec)), set(lmzoo.candidates(spec, method="layer"))
    union = lmzoo.candidates(spec, method="layermerge-union")
    assert set(union) == paper | layer and len(union) == len(set(union)) and union == sorted(union)
    rng = random.Random(f"union-{name}")
    lat, imp = _float_tables(spec, rng, method="layer")  # tables over both sets
    levels, methods = 2000, ("layermerge", "layer", "layermerge-union")
    fastest = min(lmzoo.frontier(lat, imp, levels=levels, method=m, spec=spec)[0].latency_ms for m in methods)
    identity_ms = identity_latency(lat)
    compared = 0
    for objective in ("sum", "product"):
        for _ in range(12):
            budget = rng.uniform(fastest * 0.95, identity_ms)
            values = {}
            for method in methods:
                try:
                    plan = lmzoo.solve(
                        lat,
                        imp,
                        budget_ms=budget,
                        levels=levels,
                        method=method,
                        spec=spec,
                        objective=objective,
                    )
                except InfeasibleBudgetError:
                    continue
                plan.validate(spec)
                values[method] = plan_importance(imp, plan, objective=objective)
            others = [v for m, v in values.items() if m != "layermerge-union"]
            if others:
                # same budget and grid: each rival's plan is feasible for the union's program too
                assert "layermerge-union" in values
                assert all(values["layermerge-union"] >= v - 1e-12 * abs(v) for v in others)
                compared += 1
    assert compared > 16
