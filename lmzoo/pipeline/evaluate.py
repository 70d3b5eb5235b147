"""The evaluate stage: test metrics of the base and the merged network, both timed end to end on the
recipe's latency setting (the latency card), and for denoising networks samples and a Fréchet
distance (``lmzoo.pipeline.generation``). The base's figures are the same for every plan, so they
are cached once per base, data and evaluate settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.core.tables import LatencyTable
from lmzoo.files import read_json, write_json
from lmzoo.latency.card import measure_plan
from lmzoo.pipeline.base import base_key
from lmzoo.pipeline.generation import frechet, sample_grid
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key
from lmzoo.records import Evaluation, MergeRecord, RecordError
from lmzoo.tasks import Denoising, Task

#: the sample grid's file, next to the evaluation record
SAMPLES_FILE = "samples.png"


def evaluate_stage(
    ws: Workspace,
    model: nn.Module,
    spec: Spec,
    plan: Plan,
    merged: nn.Module,
    merge_record: MergeRecord,
    test_set: Dataset[Any],
    task: Task,
    latency: LatencyTable,
    *,
    name: str,
    device: str = "cpu",
) -> tuple[Evaluation, Path]:
    """The evaluation of ``merged`` and its file (cached; a sample grid lies next to it)."""
    recipe = ws.recipe
    folder = ws.stage(
        Stage.EVALUATE,
        content_key(base_key(recipe), plan.to_dict(), recipe.finetune, recipe.latency, recipe.evaluate),
    )
    with ws.exclusive(folder):
        out = folder / "evaluation.json"
        cached = ws.cached(out, Evaluation.load)
        if cached is not None:
            return cached, out
        dev = torch.device(device)
        metrics = task.evaluate(merged, test_set, device=dev)
        base_file = ws.stage("evaluate-base", content_key(base_key(recipe), recipe.data, recipe.evaluate))
        base_file /= "evaluation.json"
        base_record = ws.cached(base_file, _read_base_record) or {}
        if "test" not in base_record:
            base_record["test"] = task.evaluate(model, test_set, device=dev)
            write_json(base_file, base_record)
        card, _ = measure_plan(
            name,
            model.cpu(),
            spec,
            plan,
            task.example_inputs(test_set, batch_size=1),
            recipe.evaluate.latency_setting(recipe.latency),
            table=latency,
            merged=merged.cpu(),
        )
        samples = scores = None
        if isinstance(task, Denoising):
            shape = tuple(task.example_inputs(test_set)[0].shape[1:])
            samples = sample_grid(task, model, merged, shape, folder / SAMPLES_FILE, recipe.evaluate)
            if recipe.evaluate.feature_model:
                scores = frechet(task, model, merged, test_set, recipe, base_record.get("frechet"))
                if "frechet" not in base_record:
                    base_record["frechet"] = scores.base
                    write_json(base_file, base_record)
        record = Evaluation(
            task=task.name,
            test=metrics,
            base_test=base_record["test"],
            merge_relative_error=merge_record.relative_error,
            latency_card=card,
            samples=samples,
            frechet=scores,
        )
        record.save(out)
        return record, out


def _read_base_record(path: Path) -> dict[str, Any]:
    record = read_json(path, what="base evaluation", error=RecordError)
    if not isinstance(record, dict) or not isinstance(record.get("test"), dict):
        raise RecordError("not a base evaluation record")
    return record
