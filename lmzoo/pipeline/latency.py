"""The latency stage: the latency table of the base network's candidates (cached, resumable)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lmzoo.core.candidates import all_candidates
from lmzoo.core.spec import Spec
from lmzoo.latency.table import latency_table
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key
from lmzoo.tables import LatencyTable


def latency_stage(
    ws: Workspace, model: nn.Module, spec: Spec, example: tuple[torch.Tensor, ...], *, progress: bool = True
) -> tuple[LatencyTable, Path]:
    """The latency table and its file."""
    setting, rules = ws.recipe.latency, ws.recipe.solve.rules
    key = content_key(spec.fingerprint, setting, rules)
    with ws.exclusive(ws.stage(Stage.LATENCY, key)):  # two processes would also disturb each other's timings
        out, cached = ws.output(
            Stage.LATENCY, key, "latency.json", lambda path: LatencyTable.load(path).for_network(spec)
        )
        if cached is not None:
            return cached, out
        table = latency_table(
            spec,
            setting,
            model=model,
            example_inputs=example,
            cands=all_candidates(spec, rules),
            cache=out.parent / "measurements.jsonl",
            progress=progress,
        )
        table.save(out)
        return table, out
