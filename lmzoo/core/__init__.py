"""The pure core: spec, candidates, plans, tables, the solver and merge maths. No timm/diffusers
imports; the only I/O is the tables' own save/load."""

from lmzoo.core.candidates import (
    METHODS,
    PAPER_RULES,
    Candidate,
    CandidateRules,
    Method,
    candidates,
    check_candidate,
)
from lmzoo.core.plan import Plan
from lmzoo.core.solver import (
    DEFAULT_LEVELS,
    OBJECTIVES,
    FrontierPoint,
    Objective,
    check_objective,
    frontier,
    plan_importance,
    solve,
    solve_reachable,
)
from lmzoo.core.spec import Position, ResidualSpan, Spec, Unit
from lmzoo.core.tables import ImportanceTable, LatencyTable

__all__ = [
    "DEFAULT_LEVELS",
    "METHODS",
    "OBJECTIVES",
    "PAPER_RULES",
    "Candidate",
    "CandidateRules",
    "FrontierPoint",
    "ImportanceTable",
    "LatencyTable",
    "Method",
    "Objective",
    "Plan",
    "Position",
    "ResidualSpan",
    "Spec",
    "Unit",
    "candidates",
    "check_candidate",
    "check_objective",
    "frontier",
    "plan_importance",
    "solve",
    "solve_reachable",
]
