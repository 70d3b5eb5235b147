"""The importance stage: the importance table of the base network's candidates (cached; its entries
resumable and shardable across processes or a Ray cluster)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lmzoo.core.activations import extra_states
from lmzoo.core.candidates import all_candidates, candidates
from lmzoo.core.spec import Spec
from lmzoo.importance.table import importance_table
from lmzoo.pipeline.base import base_key
from lmzoo.pipeline.inputs import BuildInputs
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key
from lmzoo.tables import ImportanceTable


def importance_stage(
    ws: Workspace,
    inputs: BuildInputs,
    model: nn.Module,
    spec: Spec,
    *,
    estimator: str | None = None,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    device: str = "cpu",
    progress: bool = True,
    states: bool = False,
) -> tuple[ImportanceTable, Path]:
    """The importance table and its file (``estimator`` overrides the recipe's). With ``states``,
    the table also holds depth compression's activation states (``importance-states.json``, the
    same entry records as the plain table's plus the states'); a network without linear positions
    has none, and gets the plain table."""
    imp = ws.recipe.importance
    estimator = estimator or imp.estimator
    settings = imp.settings()
    key = content_key(
        base_key(ws.recipe),
        spec.fingerprint,
        estimator,
        settings.cache_key(),
        imp.train_fraction,
        imp.heldout_fraction,
        imp.seed,
        ws.recipe.solve.rules,
    )
    rules = ws.recipe.solve.rules
    extended = extra_states(spec, candidates(spec, rules, method="depth")) if states else []
    name = "importance-states.json" if extended else "importance.json"
    out, cached = ws.output(
        Stage.IMPORTANCE, key, name, lambda path: ImportanceTable.load(path).for_network(spec)
    )
    if cached is not None:
        return cached, out
    table = importance_table(
        model,
        spec,
        inputs.importance_data(),
        cands=all_candidates(spec, rules),
        states=extended,
        estimator=estimator,
        settings=settings,
        task=inputs.task,
        workdir=out.parent,
        shard=shard,
        executor=executor,
        seed=imp.seed,
        device=device,
        progress=progress,
    )
    table.save(out)
    return table, out
