"""The pure core (DESIGN §2): the network spec (``spec``), candidate enumeration (``candidates``),
plans (``plan``), tables (``tables``), the dynamic program's input per method and objective
(``problem``) and the DP itself (``solver``), and the merge maths on tensors (``kernels``). No I/O,
no timm/diffusers imports; ``lmzoo.tables`` adds files to the tables."""

from lmzoo.core.activations import ActivationState
from lmzoo.core.candidates import (
    METHODS,
    PAPER_RULES,
    Candidate,
    CandidateRules,
    Method,
    candidates,
    check_candidate,
)
from lmzoo.core.plan import Plan, PlanSummary
from lmzoo.core.problem import OBJECTIVES, Objective, check_objective
from lmzoo.core.solver import DEFAULT_LEVELS, FrontierPoint, frontier, plan_importance, solve, solve_reachable
from lmzoo.core.spec import Position, ResidualSpan, Spec, Unit
from lmzoo.core.tables import ImportanceTable, LatencyTable

__all__ = [
    "DEFAULT_LEVELS",
    "METHODS",
    "OBJECTIVES",
    "PAPER_RULES",
    "ActivationState",
    "Candidate",
    "CandidateRules",
    "FrontierPoint",
    "ImportanceTable",
    "LatencyTable",
    "Method",
    "Objective",
    "Plan",
    "PlanSummary",
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
