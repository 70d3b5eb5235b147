"""The latency stage: the latency table of the base network's candidates (cached, resumable)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from lmzoo.core.candidates import all_candidates
from lmzoo.core.spec import Spec
from lmzoo.errors import LmzooError
from lmzoo.latency.backends import target_of
from lmzoo.latency.setting import LatencySetting
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
            _warn_if_measured_elsewhere(cached, setting, out)
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


def _warn_if_measured_elsewhere(table: LatencyTable, setting: LatencySetting, path: Path) -> None:
    """A cached table timed on another CPU or GPU fits plans to that machine: say so before any
    fine-tuning is spent on them (the cache is keyed by architecture and setting, not by machine)."""
    there = table.metadata.get("device_name")
    try:
        here = target_of(setting).device_name()
    except LmzooError:
        return  # the backend is not usable here; the stage that needs it says why
    if there and here and there != here:
        log.warning(
            "%s was measured on %s, this machine is %s: plans will fit that machine's timings "
            "(move the folder away to measure a table here, ~1-2 min for the zoo's networks)",
            path,
            there,
            here,
        )
