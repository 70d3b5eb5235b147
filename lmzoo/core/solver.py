"""The exact selection DP (DESIGN §7): maximise the summed importance of a tiling plan under a
latency budget, on a time grid, vectorised over the grid with numpy.

    M[j, t] = max over options o = (i, j] of  M[i, t - w_o] + I_o,     M[0, t] = 0 for t >= 0

where w_o = ceil(T_o / δ) is the option's latency rounded *up* to the grid δ = budget / levels, so
sum(T) <= sum(w) δ <= budget: a returned plan never exceeds the budget by its own table. M[j, t]
is "best importance of a plan of positions 0..j taking at most t grid steps", so M[L, ·] is the
whole accuracy-latency frontier from one pass.

The methods (the paper's LayerMerge and its two baselines, and lmzoo's union) are the same DP over
different options, and the objectives (sum or product of I) differ only in each option's term:
``lmzoo.core.problem`` builds that input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from lmzoo.core.activations import ActivationState, Entry, switchable, table_key
from lmzoo.core.candidates import DEFAULT_METHOD, PAPER_RULES, CandidateRules, Method
from lmzoo.core.plan import Plan
from lmzoo.core.problem import (
    Objective,
    Problem,
    build_problem,
    check_objective,
    identity_candidates,
    left_to_right,
    objective_terms,
)
from lmzoo.core.spec import Spec
from lmzoo.core.tables import ImportanceTable, LatencyTable
from lmzoo.errors import InfeasibleBudgetError, InvalidArgumentError, InvalidTableError

#: Default number of grid steps over the budget (or over the frontier's range). A plan loses at
#: most one step per block to rounding, so with ~50 blocks the grid costs < 0.5 % of the budget;
#: the DP still takes only milliseconds at this size (tests/benchmarks/bench_solver.py).
DEFAULT_LEVELS = 10_000
#: The finest grid accepted: the DP holds 2 x positions x levels floats (at this cap 240 MB for a
#: 150-position network), and ten times the default already puts the rounding loss below 0.05 %.
MAX_LEVELS = 100_000

#: what to do with a target beyond the latency table's fastest plan: "error" (say which speed-up is
#: reachable) or "fastest" (take that fastest plan)
UNREACHABLE = ("error", "fastest")
#: stopping is the default: a build or plan that silently misses its target would mislabel an entry
DEFAULT_UNREACHABLE = "error"


class FrontierPoint:
    """One point of the accuracy-latency frontier: the best plan for budgets from ``latency_ms`` up
    to the next point's. ``latency_ms`` is the plan's chain latency by the table (fixed cost
    excluded, as budgets are); ``speedup`` includes the fixed cost. The plan is built on access."""

    __slots__ = ("_chosen", "_plan", "_problem", "importance", "latency_ms", "speedup")

    def __init__(self, problem: Problem, chosen: np.ndarray, importance: float) -> None:
        self._problem = problem
        self._chosen = chosen
        self._plan: Plan | None = None
        self.latency_ms = problem.chain_ms(chosen)
        self.importance = importance
        self.speedup = problem.speedup(self.latency_ms)

    @property
    def predicted_ms(self) -> float:
        """Predicted network latency: the chain latency plus the table's fixed cost."""
        return self.latency_ms + self._problem.fixed_ms

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = self._problem.plan(self._chosen)
        return self._plan

    def __repr__(self) -> str:
        return (
            f"FrontierPoint(latency_ms={self.latency_ms:.4g}, importance={self.importance:.6g}, "
            f"speedup={self.speedup:.3f}, blocks={len(self.plan)})"
        )


# -- public entry points ---------------------------------------------------------------------


def solve(
    latency: LatencyTable,
    importance: ImportanceTable,
    *,
    budget_ms: float | None = None,
    speedup: float | None = None,
    levels: int | None = None,
    method: Method = DEFAULT_METHOD,
    spec: Spec | None = None,
    objective: Objective | None = None,
    rules: CandidateRules = PAPER_RULES,
) -> Plan:
    """The plan of largest summed importance whose table latency fits the budget.

    Give exactly one of ``budget_ms`` (chain latency, fixed cost excluded) or ``speedup``; a
    speed-up s means budget = (identity-plan latency + fixed) / s - fixed, i.e. the whole network
    is predicted to run s times faster than the base by the table. The problem is solved exactly
    on a grid of ``levels`` steps over the budget with latencies rounded up, so the plan's table
    latency never exceeds the budget. Among equally important plans the one with the fewest grid
    steps wins; the result is deterministic. ``spec``, when given, restricts the options to exactly
    ``candidates(spec, method=method)`` (the tables must cover them) and validates the plan; by
    default the spec a table carries is used. ``objective`` is ``"sum"`` (the paper's sum of I)
    or ``"product"`` (the product of I, i.e. the sum of log I; see the module docstring).

    Raises InfeasibleBudgetError (naming the smallest feasible budget) when no plan fits.
    """
    problem, levels, budget = _budgeted(
        build_problem(latency, importance, method, spec, objective, rules), levels, budget_ms, speedup
    )
    table = _dp(problem, _grid_weights(problem, levels / Fraction(budget)), levels)
    best = table.best(problem.length)
    if not math.isfinite(best[levels]):
        raise _infeasible(problem, budget, levels)
    # fewest grid steps among the optimal plans: the first t reaching the optimum (M[L] is sorted)
    t_star = int(np.searchsorted(best, best[levels], side="left"))
    (chosen,) = _backtrack(problem, table, np.array([t_star]))
    return problem.plan(chosen)


def solve_reachable(
    latency: LatencyTable, importance: ImportanceTable, *, unreachable: str = "fastest", **solve_options: Any
) -> tuple[Plan, float | None]:
    """``solve``, except that with ``unreachable="fastest"`` a target beyond the latency table's
    fastest plan gives that fastest plan instead of an error (``"error"`` raises as ``solve`` does).
    Returns the plan and, when the target was out of reach, the largest speed-up the table allows
    (else None)."""
    if unreachable not in UNREACHABLE:
        raise InvalidArgumentError(
            f"unreachable must be one of {', '.join(UNREACHABLE)}, got {unreachable!r}"
        )
    try:
        return solve(latency, importance, **solve_options), None
    except InfeasibleBudgetError as error:
        if unreachable == "error":
            raise
        out_of_reach = error
    if out_of_reach.min_budget_ms > 0:
        try:
            options = {**solve_options, "budget_ms": out_of_reach.min_budget_ms, "speedup": None}
            return solve(latency, importance, **options), out_of_reach.max_speedup
        except InfeasibleBudgetError:
            pass  # a grid too coarse for the fastest plan (levels <= its blocks): no grid needed
    problem = build_problem(
        latency,
        importance,
        solve_options.get("method", DEFAULT_METHOD),
        solve_options.get("spec"),
        solve_options.get("objective"),
        solve_options.get("rules", PAPER_RULES),
    )
    return problem.plan(_extreme_plan(problem, most_important=False)), out_of_reach.max_speedup


#: the most plans ``top_plans`` returns: its DP holds k values per position and grid step
MAX_TOP = 64


def top_plans(
    latency: LatencyTable,
    importance: ImportanceTable,
    *,
    k: int,
    budget_ms: float | None = None,
    speedup: float | None = None,
    levels: int | None = None,
    method: Method = DEFAULT_METHOD,
    spec: Spec | None = None,
    objective: Objective | None = None,
    rules: CandidateRules = PAPER_RULES,
) -> list[FrontierPoint]:
    """The ``k`` most important distinct plans whose table latency fits the budget, best first (the
    first is ``solve``'s optimum value): a K-best variant of the same exact DP, whose every cell
    keeps the k best partial plans rather than one. Fewer are returned when fewer plans fit. For
    re-ranking the surrogate's best plans with a whole-network measure (issue: summed block
    importances mis-rank plans that remove many activations at once). Arguments as ``solve``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP:
        raise InvalidArgumentError(f"k must be an integer from 1 to {MAX_TOP}, got {k!r}")
    problem, levels, budget = _budgeted(
        build_problem(latency, importance, method, spec, objective, rules), levels, budget_ms, speedup
    )
    weights = _grid_weights(problem, levels / Fraction(budget))
    values, option, rank = _dp_top(problem, weights, levels, k)
    found = []
    for r in range(k):
        value = values[problem.length, r, levels]
        if not math.isfinite(value):
            break
        chosen, node, t, at = [], problem.length, levels, r
        while node > 0:
            o = int(option[node, at, t])
            chosen.append(o)
            at, t, node = int(rank[node, at, t]), t - int(weights[o]), problem.options[o].start
        found.append(FrontierPoint(problem, np.array(chosen[::-1], dtype=np.int64), float(value)))
    if not found:
        raise _infeasible(problem, budget, levels)
    return found


def frontier(
    latency: LatencyTable,
    importance: ImportanceTable,
    *,
    levels: int | None = None,
    method: Method = DEFAULT_METHOD,
    spec: Spec | None = None,
    objective: Objective | None = None,
    rules: CandidateRules = PAPER_RULES,
) -> list[FrontierPoint]:
    """The accuracy-latency frontier from one DP pass, sorted by latency; importance strictly
    increases along it (dominated plans are dropped).

    The grid has ``levels`` steps between 0 and the latency of the most important plan (beyond it
    nothing improves). For any budget, the last point whose ``latency_ms`` fits it is the optimal
    plan for that budget on this grid, so one call serves every target speed-up of a model.
    """
    problem = build_problem(latency, importance, method, spec, objective, rules)
    levels = _check_levels(levels)
    top = _extreme_plan(problem, most_important=True)
    top_ms = problem.chain_ms(top)
    if top_ms == 0:
        return [FrontierPoint(problem, np.array(top), left_to_right(problem.importances[top]))]
    # each block may lose one step to rounding up: leave room so the top plan stays on the grid
    table = _dp(problem, _grid_weights(problem, levels / Fraction(top_ms)), levels + problem.length)
    best = table.best(problem.length)
    rising = np.flatnonzero(np.isfinite(best) & (best > np.concatenate(([-np.inf], best[:-1]))))
    plans = _backtrack(problem, table, rising)
    # drop plans that the real (off-grid) latencies show to be dominated
    plan_ms = np.array([problem.latencies[c].sum() for c in plans])
    plan_importance = best[rising]
    order = np.lexsort((-plan_importance, plan_ms))
    record = np.maximum.accumulate(plan_importance[order])
    keep = order[np.concatenate(([True], plan_importance[order][1:] > record[:-1]))]
    return [FrontierPoint(problem, plans[k], float(plan_importance[k])) for k in keep]


def plan_importance(
    importance: ImportanceTable,
    plan: Plan,
    *,
    objective: Objective | None = None,
    method: Method | None = None,
) -> float:
    """The objective's value for ``plan``: one term per activation-free segment (a
    depth-compression segment run as several convs counts once, with its all-convs-kept
    candidate's entry); I itself under ``"sum"``, log I under ``"product"``, 1 / I of removing each
    kept conv under ``"kept"`` (``objective`` None: ``method``'s default). With a table of
    activation states and ``method="depth"``, a segment whose activations differ from its plain
    entry's is scored by its state's entry. The terms are added left to right as the DP adds them,
    so this is bit for bit the value the solver maximised."""
    objective = check_objective(objective, method)
    if importance.states and importance.spec is not None and method == "depth":
        return _state_plan_importance(importance, importance.spec, plan, objective)
    if plan.activated or plan.length in plan.linear:
        raise InvalidArgumentError(
            "this plan chooses activation states: score it with method='depth' and a table holding its states"
        )
    scored = []  # the candidate whose entry scores each activation-free segment, in order
    blocks = list(plan)
    first = 0
    for k, block in enumerate(blocks):
        if block.end in plan.linear:
            continue
        segment = blocks[first : k + 1]
        if len(segment) == 1:
            scored.append(block)
        else:
            start = segment[0].start
            kept = tuple(range(start + 1, block.end + 1))
            matches = [c for c in importance if (c.start, c.end, c.kept) == (start, block.end, kept)]
            if not matches:
                raise InvalidTableError(
                    f"the importance table has no all-kept entry for segment ({start}, {block.end}]"
                )
            scored.append(matches[0])
        first = k + 1
    terms = objective_terms(objective, importance.entries, scored)
    return left_to_right(terms[c] for c in scored)


def _state_plan_importance(
    importance: ImportanceTable, spec: Spec, plan: Plan, objective: Objective
) -> float:
    """``plan_importance`` with activation states. A switchable position left without activation
    may end a segment (state "no activation at the end") or lie inside one run as several convs:
    the same network. The value is the best over the segmentations the plan allows, which is the
    DP's: any of them fits the budget with its stage-1 patterns, so none beats the DP's optimum."""
    ends = plan.block_ends
    active = {0: spec.positions[0].activation is not None}
    active.update({b.end: plan.activation(spec, b) is not None for b in plan})
    may_end = [p for p in ends if p == 0 or active[p] or switchable(spec, p)]
    all_kept = {(c.start, c.end): c for c in importance if c.kept == tuple(range(c.start + 1, c.end + 1))}
    entries: dict[tuple[int, int], Entry] = {}
    for i, s in enumerate(may_end):
        for e in may_end[i + 1 :]:
            cand = all_kept.get((s, e))
            if cand is not None:
                entry = table_key(spec, ActivationState(cand, active[s], active[e]))
                if entry == cand or entry in importance.states:
                    entries[(s, e)] = entry
            if active[e]:
                break  # a segment is activation-free inside
    terms = objective_terms(objective, importance.entries, set(entries.values()), importance.states)
    best: dict[int, float] = {0: 0.0}
    for e in may_end[1:]:
        found = [best[s] + terms[entry] for (s, end), entry in entries.items() if end == e and s in best]
        if found:
            best[e] = max(found)
    if plan.length not in best:
        raise InvalidTableError("the importance table has no entries scoring this plan's segments")
    return best[plan.length]


def identity_latency(latency: LatencyTable) -> float:
    """Chain latency of the identity plan (every unit its own block) by the table, in ms."""
    return math.fsum(latency[c] for c in identity_candidates(latency.entries.keys(), "latency"))


# -- the DP ----------------------------------------------------------------------------------


def _budgeted(
    problem: Problem, levels: object, budget_ms: float | None, speedup: float | None
) -> tuple[Problem, int, float]:
    """The problem with its checked grid size and its chain budget (the target's, checked to be
    reachable at all)."""
    checked = _check_levels(levels)
    budget = _budget(problem, budget_ms, speedup)
    if budget <= 0:
        raise _infeasible(problem, budget, checked)
    return problem, checked, budget


def _check_levels(levels: object) -> int:
    if levels is None:
        return DEFAULT_LEVELS
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= MAX_LEVELS:
        raise InvalidArgumentError(f"levels must be an integer from 1 to {MAX_LEVELS:,}, got {levels!r}")
    return levels


def _budget(problem: Problem, budget_ms: float | None, speedup: float | None) -> float:
    if (budget_ms is None) == (speedup is None):
        raise InvalidArgumentError("give exactly one of budget_ms or speedup")
    if speedup is not None:
        if not _finite_positive(speedup):
            raise InvalidArgumentError(f"speedup must be a finite number > 0, got {speedup!r}")
        return problem.budget_for(float(speedup))
    if not _finite_positive(budget_ms):
        raise InvalidArgumentError(f"budget_ms must be a finite number > 0, got {budget_ms!r}")
    return float(budget_ms)  # type: ignore[arg-type]


def _finite_positive(value: object) -> bool:
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    )


def _grid_weights(problem: Problem, steps_per_ms: Fraction) -> np.ndarray:
    """Grid steps of every option: the sum over its blocks of ceil(T * steps_per_ms), computed
    exactly even when T lies on the grid (so sum(T) <= steps / steps_per_ms holds exactly)."""
    blocks = [b for o in problem.options for b in o.blocks]
    latencies = np.array([problem.latency_of[b] for b in blocks])
    # a budget far below the latencies (budget_ms=1e-300) makes steps beyond any grid: cap them, the
    # DP clips every weight to the grid's width anyway
    scale = float(min(steps_per_ms, Fraction(_MAX_WEIGHT)))
    scaled = np.minimum(latencies * scale, _MAX_WEIGHT)
    weights = np.ceil(scaled)
    # float rounding can push an on-grid value just above or below an integer: redo those exactly
    for k in np.flatnonzero((np.abs(scaled - np.rint(scaled)) < 1e-6) & (scaled < 2**52)):
        weights[k] = math.ceil(Fraction(float(latencies[k])) * steps_per_ms)
    owner = np.repeat(np.arange(len(problem.options)), [len(o.blocks) for o in problem.options])
    total = np.bincount(owner, weights=weights, minlength=len(problem.options))
    return np.minimum(total, _MAX_WEIGHT).astype(np.int64)


#: grid steps beyond any grid (weights are clipped here before becoming integers)
_MAX_WEIGHT = float(2**60)


@dataclass(frozen=True)
class _Table:
    """The filled DP: M[j, t] for t = 0..steps, stored after ``steps + 1`` columns of -inf so that
    M[i, t - w] reads -inf for t < w without a branch."""

    padded: np.ndarray
    steps: int
    weights: np.ndarray  # grid steps per option, clipped to steps + 1

    def best(self, position: int) -> np.ndarray:
        return self.padded[position, self.steps + 1 :]


def _dp(problem: Problem, weights: np.ndarray, steps: int) -> _Table:
    """Fill M over t = 0..steps. Only the maxima are kept; the arg-max is recovered on backtracking."""
    width = steps + 1
    padded = np.full((problem.length + 1, 2 * width), -np.inf)
    padded[0, width:] = 0.0
    shift = np.minimum(weights, width)
    for end, group in enumerate(problem.by_end):
        if group.size == 0:
            continue
        rows = np.stack(
            [padded[problem.options[o].start, width - shift[o] : 2 * width - shift[o]] for o in group]
        )
        rows += problem.importances[group][:, None]
        rows.max(axis=0, out=padded[end, width:])
    return _Table(padded, steps, shift)


def _dp_top(
    problem: Problem, weights: np.ndarray, steps: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The K-best DP: V[j, r, t] is the r-th best value of a partial plan of positions 0..j taking
    at most t grid steps (each partial plan counted once per cell: only V[0, 0, t] = 0 starts one),
    with the option and the source rank it came from. Ties keep the order of the options and ranks."""
    width = steps + 1
    values = np.full((problem.length + 1, k, width), -np.inf)
    values[0, 0, :] = 0.0
    option = np.full((problem.length + 1, k, width), -1, dtype=np.int64)
    rank = np.zeros((problem.length + 1, k, width), dtype=np.int64)
    shift = np.minimum(weights, width)
    for end, group in enumerate(problem.by_end):
        if group.size == 0:
            continue
        offered = np.full((group.size * k, width), -np.inf)
        for g, o in enumerate(group):
            w = int(shift[o])
            if w < width:
                source = values[problem.options[o].start, :, : width - w]
                offered[g * k : (g + 1) * k, w:] = source + problem.importances[o]
        order = np.argsort(-offered, axis=0, kind="stable")[:k]
        values[end] = np.take_along_axis(offered, order, axis=0)
        option[end] = group[order // k]
        rank[end] = order % k
    return values, option, rank


def _backtrack(problem: Problem, table: _Table, targets: np.ndarray) -> list[np.ndarray]:
    """The option sequences of the optimal plans ending at (L, t) for every t in ``targets``.

    Walks positions from L down; all targets standing at position j are handled together: the
    option taken is the first one (cheapest in grid steps, then by index) whose value reproduces
    M[j, t] exactly, which is the one the max in ``_dp`` came from.
    """
    width = table.steps + 1
    count = len(targets)
    position = np.full(count, problem.length)
    t = np.asarray(targets, dtype=np.int64).copy()
    picked = np.full((count, problem.length), -1, dtype=np.int64)
    depth = np.zeros(count, dtype=np.int64)
    while (end := int(position.max())) > 0:
        here = np.flatnonzero(position == end)
        group = problem.by_end[end]
        group = group[np.lexsort((group, table.weights[group]))]  # cheapest first on ties
        source = width + t[here][None, :] - table.weights[group][:, None]
        values = table.padded[problem.starts[group][:, None], source] + problem.importances[group][:, None]
        first = (values == table.padded[end, width + t[here]][None, :]).argmax(axis=0)
        option = group[first]
        picked[here, depth[here]] = option
        depth[here] += 1
        t[here] -= table.weights[option]
        position[here] = problem.starts[option]
    return [row[:n][::-1] for row, n in zip(picked, depth)]


def _extreme_plan(problem: Problem, *, most_important: bool) -> list[int]:
    """Without a budget: the most important plan (ties: fastest), or the fastest (ties: most
    important). A shortest-path DP over positions."""

    def key(importance: float, latency_ms: float) -> tuple[float, float]:
        return (-importance, latency_ms) if most_important else (latency_ms, -importance)

    best: dict[int, tuple[tuple[float, float], float, float, int]] = {0: ((0.0, 0.0), 0.0, 0.0, -1)}
    order = sorted(range(len(problem.options)), key=lambda o: (problem.options[o].end, o))
    for o in order:
        opt = problem.options[o]
        if opt.start not in best:
            continue
        _, imp, lat, _ = best[opt.start]
        imp, lat = imp + opt.importance, lat + opt.latency_ms
        k = key(imp, lat)
        if opt.end not in best or k < best[opt.end][0]:
            best[opt.end] = (k, imp, lat, o)
    chosen = []
    position = problem.length
    while position > 0:
        o = best[position][3]
        chosen.append(o)
        position = problem.options[o].start
    return chosen[::-1]


def _infeasible(problem: Problem, budget: float, levels: int) -> InfeasibleBudgetError:
    fastest = _extreme_plan(problem, most_important=False)
    fastest_ms = math.fsum(problem.options[o].latency_ms for o in fastest)
    # Rounding up costs each block at most one grid step, so this budget always admits the plan.
    blocks = sum(len(problem.options[o].blocks) for o in fastest)
    safe = fastest_ms * levels / (levels - blocks) * (1 + 1e-12) if levels > blocks else fastest_ms
    asked = f"{budget:.4g} ms (speed-up {problem.speedup(budget):.3f}x)" if budget > 0 else "this speed-up"
    cap = problem.rules.max_kernel
    capped = (
        f"; merged kernels are capped at {cap} (solve.max_kernel): a larger cap may reach further"
        if cap
        else ""
    )
    if levels <= blocks:
        capped += (
            f"; levels={levels} is too coarse for the fastest plan's {blocks} blocks: use more than {blocks}"
        )
    if all(len(o.blocks) == 1 and o.blocks[0].is_identity for o in problem.options):
        capped += "; nothing in this network merges or drops (`lmzoo inspect` shows what separates its convs)"
    return InfeasibleBudgetError(
        f"no {problem.method} plan fits a budget of {asked}: the fastest plan takes {fastest_ms:.4g} ms "
        f"by the latency table (speed-up {problem.speedup(fastest_ms):.3f}x); ask for at least "
        f"{safe:.4g} ms (speed-up {problem.speedup(safe):.3f}x) at levels={levels}{capped}",
        min_budget_ms=safe,
        max_speedup=problem.speedup(safe),
    )
