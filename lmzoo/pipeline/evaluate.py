"""The evaluate stage: test metrics of the base and the merged network, both timed end to end on the
recipe's latency setting (the latency card), and for denoising networks samples and a Fréchet
distance (``lmzoo.pipeline.generation``). The base's figures are the same for every plan, so they
are cached once per base, data and evaluate settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
from lmzoo.pipeline.finetune import finetune_key
from lmzoo.pipeline.generation import feature_weights_digest, frechet, sample_grid
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key
from lmzoo.records import Evaluation, MergeRecord, RecordError, Spread, test_metrics
from lmzoo.tasks import Denoising, Task

log = logging.getLogger(__name__)

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
    digest = feature_weights_digest(recipe)
    features = () if digest is None else (digest,)  # the keys of evaluations without Fréchet features stay
    folder = ws.stage(
        Stage.EVALUATE,
        content_key(
            base_key(recipe), plan.to_dict(), recipe.finetune, recipe.latency, recipe.evaluate, *features
        ),
    )
    with ws.exclusive(folder):
        out = folder / "evaluation.json"
        cached = ws.cached(out, Evaluation.load)
        if cached is not None:
            return cached, out
        dev = torch.device(device)
        metrics = task.evaluate(merged, test_set, device=dev)
        base_file = ws.stage(
            "evaluate-base", content_key(base_key(recipe), recipe.data, recipe.evaluate, *features)
        )
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
        if card.foreign_table:
            log.warning(
                "%s: the latency table was measured on %s, this machine is %s: the plan fits that "
                "machine's timings (build a latency table here for plans fitted to this one)",
                name,
                card.foreign_table,
                card.measurement.device_name,
            )
        samples = scores = None
        if isinstance(task, Denoising):
            shape = tuple(task.example_inputs(test_set)[0].shape[1:])
            samples = sample_grid(task, model, merged, shape, folder / SAMPLES_FILE, recipe.evaluate)
            if recipe.evaluate.feature_model:
                scores = frechet(
                    task, model, merged, test_set, recipe, base_record.get("frechet"), feature_weights=digest
                )
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


def seed_spread(
    ws: Workspace,
    plan: Plan,
    first: Mapping[str, float],
    tuned: Mapping[int, nn.Module],
    test_set: Dataset[Any],
    task: Task,
    *,
    device: str = "cpu",
) -> Spread:
    """The test metrics of ``plan`` fine-tuned from each seed of ``tuned`` (seed -> configured
    network; the first is the checkpoint's, whose metrics are ``first``), each merged as the
    checkpoint is. Cached next to each fine-tune."""
    from lmzoo.engine import merge

    seeds = list(tuned)
    results = [dict(first)]

    def read(path: Path) -> dict[str, float]:
        return test_metrics(read_json(path, what="test metrics", error=RecordError), task.name)

    for seed in seeds[1:]:
        out = ws.stage(Stage.FINETUNE, finetune_key(ws, plan, seed)) / "test.json"
        metrics = ws.cached(out, read)
        if metrics is None:
            merged = merge(tuned[seed]).eval()
            metrics = task.evaluate(merged, test_set, device=torch.device(device))
            write_json(out, metrics)
        results.append(dict(metrics))
    return Spread(tuple(seeds), tuple(results))


def _read_base_record(path: Path) -> dict[str, Any]:
    record = read_json(path, what="base evaluation", error=RecordError)
    if not isinstance(record, dict) or not isinstance(record.get("test"), dict):
        raise RecordError("not a base evaluation record")
    return record
