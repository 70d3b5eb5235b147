"""lmzoo: a model zoo of depth-compressed CNNs built with LayerMerge (Kim et al., ICML 2024).

The engine::

    spec = lmzoo.trace(model, example_input)
    cands = lmzoo.candidates(spec)
    plan = lmzoo.Plan(blocks)                      # or lmzoo.Plan.identity(spec)
    configured = lmzoo.apply_plan(model, spec, plan)  # fine-tune this
    deployed = lmzoo.merge(configured)              # same function, fewer convs
"""

from lmzoo.adapters import registered_families
from lmzoo.core import PAPER_RULES, Candidate, CandidateRules, Plan, Spec, candidates
from lmzoo.engine import apply_plan, merge, trace
from lmzoo.errors import (
    InvalidInputError,
    InvalidPlanError,
    InvalidSpecError,
    LmzooError,
    NotConfiguredError,
    UnsupportedModelError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "PAPER_RULES",
    "Candidate",
    "CandidateRules",
    "InvalidInputError",
    "InvalidPlanError",
    "InvalidSpecError",
    "LmzooError",
    "NotConfiguredError",
    "Plan",
    "Spec",
    "UnsupportedModelError",
    "__version__",
    "apply_plan",
    "candidates",
    "merge",
    "registered_families",
    "trace",
]
