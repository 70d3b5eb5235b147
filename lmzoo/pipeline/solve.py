"""The solve stage: the plan of one target speed-up, with what the tables say of it."""

from __future__ import annotations

from pathlib import Path

from lmzoo.core.candidates import check_method
from lmzoo.core.plan import Plan
from lmzoo.core.problem import check_objective
from lmzoo.core.solver import plan_importance, solve_reachable
from lmzoo.core.tables import ImportanceTable, LatencyTable
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key
from lmzoo.records import SolveRecord


def solve_stage(
    ws: Workspace, latency: LatencyTable, importance: ImportanceTable, speedup: float
) -> SolveRecord:
    """The solve record of ``speedup`` (cached)."""
    s = ws.recipe.solve
    key = content_key(
        latency.to_dict(), importance.to_dict(), s.method, s.levels, s.objective, speedup, s.rules
    )
    folder = ws.stage(Stage.SOLVE, key)
    with ws.exclusive(folder):
        return _solve(ws, latency, importance, speedup, folder / "plan.json")


def _solve(
    ws: Workspace, latency: LatencyTable, importance: ImportanceTable, speedup: float, out: Path
) -> SolveRecord:
    s = ws.recipe.solve
    cached = ws.cached(out, SolveRecord.load)
    if cached is not None:
        return cached
    method = check_method(s.method)
    objective = check_objective(s.objective, method)
    # A feasible target gives the same plan under either `unreachable` setting, so it is not keyed.
    plan, max_speedup = solve_reachable(
        latency, importance, unreachable=s.unreachable, speedup=speedup, method=method, levels=s.levels,
        objective=objective, rules=s.rules,
    )  # fmt: skip
    record = SolveRecord(
        target_speedup=speedup,
        method=s.method,
        levels=s.levels,
        objective=s.objective,
        predicted_ms=latency.predict(plan),
        predicted_base_ms=latency.predict(Plan.identity(latency.spec)) if latency.spec is not None else None,
        importance=plan_importance(importance, plan, objective=objective, method=method),
        plan=plan,
        unreachable_max_speedup=max_speedup,
    )
    record.save(out)
    return record
