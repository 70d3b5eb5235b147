"""The fine-tune stage: the configured network of a plan, fine-tuned with the recipe's schedule
(resumable; DDP under ``torchrun``), optionally distilled from the base."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import Dataset

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.engine import apply_plan
from lmzoo.pipeline.base import base_key
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key, load_weights, save_weights
from lmzoo.tasks import Task
from lmzoo.training.distributed import is_main_process, world_size
from lmzoo.training.loop import train


def finetune_key(ws: Workspace, plan: Plan, seed: int | None = None) -> str:
    recipe = ws.recipe
    seed = recipe.seed if seed is None else seed
    # DDP splits batches and BatchNorm statistics over the processes: another world, another run
    return content_key(base_key(recipe), plan.to_dict(), recipe.finetune, seed, world_size())


def finetune_stage(
    ws: Workspace,
    model: nn.Module,
    spec: Spec,
    plan: Plan,
    train_set: Dataset[Any],
    task: Task,
    *,
    name: str,
    device: str = "cpu",
    progress: bool = True,
    seed: int | None = None,
) -> nn.Module:
    """The configured network for ``plan``, fine-tuned (cached) from ``seed`` (default: the
    recipe's)."""
    recipe = ws.recipe
    seed = recipe.seed if seed is None else seed
    folder = ws.stage(Stage.FINETUNE, finetune_key(ws, plan, seed))
    with ws.exclusive(folder):
        weights = folder / "configured.safetensors"
        cached = ws.cached(weights, lambda path: load_weights(apply_plan(model, spec, plan), path))
        if cached is not None:
            return cached.eval()
        configured = apply_plan(model, spec, plan)
        settings = recipe.finetune
        teacher = model if settings.distill_weight > 0 else None
        train(
            configured,
            train_set,
            settings,
            task.loss(settings, teacher),
            seed=seed,
            device=device,
            state_path=folder / "train.state",
            progress=progress,
            desc=f"fine-tune {name}",
            ema_decay=settings.ema_decay,
        )
        configured = configured.cpu().eval()
        if is_main_process():
            save_weights(configured, weights)
        return configured
