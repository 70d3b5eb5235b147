"""Re-ranking the tables' best plans (``solve.refine_top``): the K most important distinct networks
among the tables' 2K best plans (``lmzoo.top_plans``, at most 64; fewer when they hold fewer).
Plans that differ only in which 1x1 convs are merged compute one function, so each configuration
is measured once, as its fastest plan. Each gets a short recovery of the whole configured network
(the importance table's schedule on importance-train at a tenth of its learning rate, then
BatchNorm statistics re-estimated there; measured on the held-out subset), and the best by that
measure is built. Summed block importances assume the blocks' effects add up; this measures them
together. Each candidate's score is cached as it finishes, so an interrupted refinement resumes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmzoo.core.candidates import check_method
from lmzoo.core.problem import check_objective
from lmzoo.core.solver import MAX_TOP, FrontierPoint, plan_importance, top_plans
from lmzoo.core.spec import Spec
from lmzoo.core.tables import ImportanceTable, LatencyTable
from lmzoo.files import read_json, write_json
from lmzoo.pipeline.base import base_key
from lmzoo.pipeline.inputs import BuildInputs
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key
from lmzoo.records import RecordError, Refinement, SolveRecord

#: The recovery's learning rate relative to the importance table's. A whole plan changes many blocks
#: at once: after ten SGD steps at the importance lr (0.1) MobileNetV2's best 1.6x plans scattered by
#: 10-20 points of held-out accuracy between two seeds; at a tenth, with BatchNorm statistics
#: re-estimated after it, by about 1.5 points, ranking them alike (README, "Re-ranking").
REFINE_LR_SCALE = 0.1


def refine_stage(
    ws: Workspace,
    inputs: BuildInputs,
    base: nn.Module,
    spec: Spec,
    latency: LatencyTable,
    importance: ImportanceTable,
    solve: SolveRecord,
    *,
    device: str = "cpu",
) -> SolveRecord:
    """``solve`` with its plan replaced by the best of the tables' ``solve.refine_top`` best plans
    by a short whole-network recovery (cached per candidate; resumable). A target beyond the
    latency table (its fastest plan built) is left as it is: there is nothing to choose from."""
    from lmzoo.importance.context import EstimatorContext

    if solve.unreachable_max_speedup is not None:
        return solve

    s, imp = ws.recipe.solve, ws.recipe.importance
    k = s.refine_top
    settings = imp.settings()
    settings = dataclasses.replace(
        settings,
        lr=settings.lr * REFINE_LR_SCALE,
        epochs=settings.epochs if s.refine_epochs is None else s.refine_epochs,
    )
    key = content_key(
        "refine/distinct-networks/bn-recalibrated",
        latency.to_dict(),
        importance.to_dict(),
        s.method,
        s.levels,
        s.objective,
        solve.target_speedup,
        s.rules,
        k,
        base_key(ws.recipe),
        settings.cache_key(),
        imp.train_fraction,
        imp.heldout_fraction,
        imp.seed,
    )
    folder = ws.stage(Stage.SOLVE, key)
    with ws.exclusive(folder):
        out = folder / "plan.json"
        cached = ws.cached(out, SolveRecord.load)
        if cached is not None:
            return cached
        method = check_method(s.method)
        objective = check_objective(s.objective, method)
        ranked = top_plans(
            latency, importance, k=min(MAX_TOP, 2 * k), speedup=solve.target_speedup, method=method,
            levels=s.levels, objective=objective, rules=s.rules,
        )  # fmt: skip
        distinct = distinct_networks(ranked, spec, latency)[:k]
        context = EstimatorContext(
            base, spec, inputs.importance_data(), settings, inputs.task, torch.device(device)
        )
        base_metrics = _cached(ws, folder / "base.json", lambda: context.evaluate(context.model_identity()))
        rows = []
        for rank, point in distinct:

            def measure(plan: Any = point.plan) -> dict[str, Any]:
                net = context.configured(plan)
                summary = context.recover(net, imp.seed)
                if context.can_recalibrate_batch_norms(net):
                    summary["calibration_batches"] = context.recalibrate_batch_norms(net, imp.seed)
                return {**context.evaluate(net), **summary}

            metrics = _cached(ws, folder / f"candidate-{rank}.json", measure)
            rows.append(
                {
                    "rank": float(rank),
                    "surrogate": point.importance,
                    "predicted_ms": latency.predict(point.plan),
                    "score": inputs.task.importance(metrics, base_metrics),
                }
            )
        best = max(rows, key=lambda r: (r["score"], -r["rank"]))  # ties: the tables' order
        chosen = ranked[int(best["rank"]) - 1].plan
        record = dataclasses.replace(
            solve,
            plan=chosen,
            predicted_ms=latency.predict(chosen),
            importance=plan_importance(importance, chosen, objective=objective, method=method),
            refinement=Refinement(k=k, chosen_rank=int(best["rank"]), candidates=tuple(rows)),
        )
        record.save(out)
        return record


def distinct_networks(
    ranked: list[FrontierPoint], spec: Spec, latency: LatencyTable
) -> list[tuple[int, FrontierPoint]]:
    """The distinct configured networks among ``ranked`` (best first), each as its fastest plan
    with that plan's rank (1-based): plans of one configuration compute the same function
    (``Plan.configuration``), so one measurement serves them all and only the fastest is worth
    building."""
    groups: dict[Any, list[tuple[int, FrontierPoint]]] = {}
    for rank, point in enumerate(ranked, 1):
        groups.setdefault(point.plan.configuration(spec), []).append((rank, point))
    return [min(members, key=lambda m: (latency.predict(m[1].plan), m[0])) for members in groups.values()]


def _cached(ws: Workspace, path: Path, compute: Any) -> dict[str, Any]:
    """The metrics in ``path`` (the workspace's cache rule), or computed and written there."""
    cached = ws.cached(path, lambda p: dict(read_json(p, what="refinement score", error=RecordError)))
    if cached is not None:
        return cached
    metrics = dict(compute())
    write_json(path, metrics, indent=None)
    return metrics
