"""lmzoo: a model zoo of depth-compressed CNNs built with LayerMerge (Kim et al., ICML 2024).

The engine::

    spec = lmzoo.trace(model, example_input)
    cands = lmzoo.candidates(spec)
    plan = lmzoo.Plan(blocks)                      # or lmzoo.Plan.identity(spec)
    configured = lmzoo.apply_plan(model, spec, plan)  # fine-tune this
    deployed = lmzoo.merge(configured)              # same function, fewer convs

The solver::

    plan = lmzoo.solve(latency_table, importance_table, speedup=1.6)   # objective="sum" | "product"
    points = lmzoo.frontier(latency_table, importance_table)   # every budget at once
"""

from lmzoo.adapters import registered_families
from lmzoo.core import (
    METHODS,
    OBJECTIVES,
    PAPER_RULES,
    Candidate,
    CandidateRules,
    FrontierPoint,
    ImportanceTable,
    LatencyTable,
    Plan,
    Spec,
    candidates,
    frontier,
    solve,
    solve_reachable,
)
from lmzoo.engine import apply_plan, merge, trace
from lmzoo.errors import (
    DataNotFoundError,
    InfeasibleBudgetError,
    InvalidArgumentError,
    InvalidInputError,
    InvalidPlanError,
    InvalidSpecError,
    InvalidTableError,
    LatencyBackendUnavailable,
    LmzooError,
    NotConfiguredError,
    UnsupportedModelError,
)
from lmzoo.importance import importance_table
from lmzoo.latency import LatencyStats, benchmark, latency_table
from lmzoo.zoo import list_models, load

__version__ = "0.1.0.dev0"

__all__ = [
    "METHODS",
    "OBJECTIVES",
    "PAPER_RULES",
    "Candidate",
    "CandidateRules",
    "DataNotFoundError",
    "FrontierPoint",
    "ImportanceTable",
    "InfeasibleBudgetError",
    "InvalidArgumentError",
    "InvalidInputError",
    "InvalidPlanError",
    "InvalidSpecError",
    "InvalidTableError",
    "LatencyBackendUnavailable",
    "LatencyStats",
    "LatencyTable",
    "LmzooError",
    "NotConfiguredError",
    "Plan",
    "Spec",
    "UnsupportedModelError",
    "__version__",
    "apply_plan",
    "benchmark",
    "candidates",
    "frontier",
    "importance_table",
    "latency_table",
    "list_models",
    "load",
    "merge",
    "registered_families",
    "solve",
    "solve_reachable",
    "trace",
]
