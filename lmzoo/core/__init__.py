"""The pure core: spec, candidates, plans and merge maths. No I/O, no timm/diffusers imports."""

from lmzoo.core.candidates import PAPER_RULES, Candidate, CandidateRules, candidates, check_candidate
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Position, ResidualSpan, Spec, Unit

__all__ = [
    "PAPER_RULES",
    "Candidate",
    "CandidateRules",
    "Plan",
    "Position",
    "ResidualSpan",
    "Spec",
    "Unit",
    "candidates",
    "check_candidate",
]
