"""The card stage: the entry's checkpoint directory written into the local store, atomically: merged
weights and config, the model card, the latency card and its plot, the solve and evaluation records,
the recipe and both tables (and a DDPM entry's sample grid)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lmzoo.cards import model_card
from lmzoo.checkpoint import checkpoint_config, write_merged_checkpoint
from lmzoo.core.spec import Spec
from lmzoo.latency.card import plot_block_latency
from lmzoo.pipeline.workspace import Workspace
from lmzoo.preprocessing import Preprocessing
from lmzoo.records import Evaluation, SolveRecord
from lmzoo.store import entry_dir
from lmzoo.tables import ImportanceTable, LatencyTable


def card_stage(
    ws: Workspace,
    *,
    name: str,
    spec: Spec,
    merged: nn.Module,
    evaluation: Evaluation,
    evaluation_file: Path,
    solve: SolveRecord,
    latency: LatencyTable,
    importance: ImportanceTable,
    example: tuple[torch.Tensor, ...],
    preprocessing: Preprocessing,
    base_weights_sha256: str,
) -> Path:
    """The entry's directory in the local store; its config names the base weights it was compressed
    from (``base_weights_sha256``)."""
    recipe = ws.recipe
    config = checkpoint_config(
        name=name,
        architecture=recipe.model.architecture,
        input_shape=tuple(example[0].shape[1:]),
        task=evaluation.task,
        spec_fingerprint=spec.fingerprint,
        plan=solve.plan,
        preprocessing=preprocessing,
        extra={
            "recipe": recipe.name,
            "profile": recipe.profile,
            "method": recipe.solve.method,
            "target_speedup": solve.target_speedup,
            "base_weights_sha256": base_weights_sha256,
        },
    )
    card = model_card(
        name=name, recipe=recipe, evaluation=evaluation, solve=solve, preprocessing=preprocessing
    )
    files: dict[str, Callable[[Path], object]] = {
        "README.md": lambda p: p.write_text(card),
        "latency.json": evaluation.latency_card.save,
        "latency.png": lambda p: plot_block_latency(latency, spec, solve.plan, p, title=name),
        "plan.json": solve.save,
        "evaluation.json": evaluation.save,
        "recipe.yaml": lambda p: shutil.copyfile(recipe.path, p),
        "tables/latency.json": latency.save,
        "tables/importance.json": importance.save,
    }
    if evaluation.samples is not None:  # the evaluate stage's grid, next to its record
        grid = evaluation_file.parent / evaluation.samples.file
        files[evaluation.samples.file] = lambda p: shutil.copyfile(grid, p)
    return write_merged_checkpoint(entry_dir(name), merged, config, files)
