"""The latency stage: the latency table of the base network's candidates (cached, resumable)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from lmzoo.core.candidates import all_candidates
from lmzoo.core.spec import Spec
from lmzoo.latency.table import covering, latency_table
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key
from lmzoo.tables import LatencyTable

log = logging.getLogger(__name__)


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
        wanted = all_candidates(spec, rules)
        if cached is not None:
            table = covering(cached, spec, wanted)
            if table is cached:
                return cached, out
            if table is not None:
                log.info("%s: keyed anew by the kept convs of this base (same convs, nothing timed)", out)
                table.save(out)
                return table, out
            log.warning(
                "%s does not cover this base's candidates; measuring it again (timed convs are reused)", out
            )
        table = latency_table(
            spec,
            setting,
            model=model,
            example_inputs=example,
            cands=wanted,
            cache=out.parent / "measurements.jsonl",
            progress=progress,
        )
        table.save(out)
        return table, out
