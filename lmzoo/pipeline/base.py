"""The base stage: the network the build compresses, pretrained or trained from scratch (resumable)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lmzoo.files import write_json
from lmzoo.pipeline.inputs import BuildInputs
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key, load_weights, save_weights
from lmzoo.recipes import Recipe
from lmzoo.training.loop import train


def base_key(recipe: Recipe) -> str:
    if recipe.model.pretrained:
        return content_key("pretrained", recipe.model)
    return content_key("scratch", recipe.model, recipe.data, recipe.base, recipe.seed)


def base_weights_file(ws: Workspace) -> Path:
    """Where the base stage keeps the base network's weights."""
    return ws.stage(Stage.BASE, base_key(ws.recipe)) / "model.safetensors"


def base_stage(
    ws: Workspace, inputs: BuildInputs, *, device: str = "cpu", progress: bool = True
) -> nn.Module:
    """The base network: pretrained, or trained from scratch (resumable) and cached."""
    weights = base_weights_file(ws)
    with ws.exclusive(weights.parent):
        return _base(ws, inputs, weights, device=device, progress=progress)


def _base(ws: Workspace, inputs: BuildInputs, weights: Path, *, device: str, progress: bool) -> nn.Module:
    recipe = ws.recipe
    folder = weights.parent
    cached = ws.cached(weights, lambda path: load_weights(inputs.random_model(), path))
    if cached is not None:
        return cached.eval()
    if recipe.model.pretrained:
        model = inputs.pretrained_model()
    else:
        torch.manual_seed(recipe.seed)
        model = inputs.random_model()
        summary = train(
            model,
            inputs.train_set,
            recipe.base,
            inputs.task.loss(recipe.base),
            seed=recipe.seed,
            device=device,
            state_path=folder / "train.state",
            progress=progress,
            desc=f"base {recipe.name}",
            ema_decay=recipe.base.ema_decay,
        )
        metrics = inputs.task.evaluate(model, inputs.test_set, device=torch.device(device))
        write_json(folder / "metrics.json", {**summary, **metrics, "split": "test"}, indent=2)
    model = model.cpu().eval()
    save_weights(model, weights)
    return model
