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

The zoo::

    model = lmzoo.load("mobilenetv2-fmnist-layermerge-1.6x")
    lmzoo.build("mobilenetv2-fmnist-layermerge", speedups=[1.7])   # any target of a recipe

The names below are imported on first use, so ``import lmzoo`` (and the ``lmzoo`` command) start
without importing torch.
"""

from typing import TYPE_CHECKING

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
    MergeTooLargeError,
    NotConfiguredError,
    ProfileBuildWarning,
    UnsupportedModelError,
)
from lmzoo.lazy import lazy_exports
from lmzoo.version import __version__

_EXPORTS = {
    "lmzoo.adapters": ("registered_families",),
    "lmzoo.sources": ("registered_sources",),
    "lmzoo.core.candidates": ("METHODS", "PAPER_RULES", "Candidate", "CandidateRules", "candidates"),
    "lmzoo.core.problem": ("OBJECTIVES",),
    "lmzoo.core.solver": ("FrontierPoint", "frontier", "solve", "solve_reachable", "top_plans"),
    "lmzoo.core.plan": ("Plan", "PlanSummary"),
    "lmzoo.core.spec": ("Spec",),
    "lmzoo.tables": ("ImportanceTable", "LatencyTable"),
    "lmzoo.engine": ("apply_plan", "merge", "trace"),
    "lmzoo.importance.table": ("importance_table",),
    "lmzoo.latency.setting": ("LatencySetting",),
    "lmzoo.latency.stats": ("LatencyStats",),
    "lmzoo.latency.endtoend": ("benchmark",),
    "lmzoo.latency.table": ("latency_table",),
    "lmzoo.zoo": ("list_models", "load"),
    "lmzoo.devices": ("DeviceUnavailableError",),
    "lmzoo.export": ("export_onnx",),
    "lmzoo.pipeline.builder": ("build",),
    "lmzoo.preprocessing": ("Preprocessing",),
    # a DDPM checkpoint's model_index.json names this class ("lmzoo", "LayerMergeUNet2DModel")
    "lmzoo.sources.diffusers.unet": ("LayerMergeUNet2DModel",),
}
#: diffusers' pipeline loader finds a component's load method by looking the library (here "lmzoo")
#: up for its base classes; ModelMixin is reachable for that, not part of lmzoo's API (__all__)
_FOR_DIFFUSERS = {"lmzoo.sources.diffusers.unet": ("LayerMergeUNet2DModel", "ModelMixin")}
__getattr__, __dir__ = lazy_exports(__name__, {**_EXPORTS, **_FOR_DIFFUSERS})

__all__ = [
    "DataNotFoundError",
    "InfeasibleBudgetError",
    "InvalidArgumentError",
    "InvalidInputError",
    "InvalidPlanError",
    "InvalidSpecError",
    "InvalidTableError",
    "LatencyBackendUnavailable",
    "LmzooError",
    "MergeTooLargeError",
    "NotConfiguredError",
    "ProfileBuildWarning",
    "UnsupportedModelError",
    "__version__",
    *sorted(name for names in _EXPORTS.values() for name in names),
]

if TYPE_CHECKING:
    from lmzoo.adapters import registered_families
    from lmzoo.core.candidates import METHODS, PAPER_RULES, Candidate, CandidateRules, candidates
    from lmzoo.core.plan import Plan, PlanSummary
    from lmzoo.core.problem import OBJECTIVES
    from lmzoo.core.solver import FrontierPoint, frontier, solve, solve_reachable, top_plans
    from lmzoo.core.spec import Spec
    from lmzoo.devices import DeviceUnavailableError
    from lmzoo.engine import apply_plan, merge, trace
    from lmzoo.export import export_onnx
    from lmzoo.importance.table import importance_table
    from lmzoo.latency.endtoend import benchmark
    from lmzoo.latency.setting import LatencySetting
    from lmzoo.latency.stats import LatencyStats
    from lmzoo.latency.table import latency_table
    from lmzoo.pipeline.builder import build
    from lmzoo.preprocessing import Preprocessing
    from lmzoo.sources import registered_sources
    from lmzoo.sources.diffusers.unet import LayerMergeUNet2DModel
    from lmzoo.tables import ImportanceTable, LatencyTable
    from lmzoo.zoo import list_models, load
