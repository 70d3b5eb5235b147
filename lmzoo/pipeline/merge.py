"""The merge stage: the deploy network of a fine-tuned configured one, checked against it on test
images (the record keeps the largest relative output difference)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from lmzoo.core.plan import Plan
from lmzoo.engine import merge, tensor_output
from lmzoo.pipeline.finetune import finetune_key
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace
from lmzoo.records import MergeRecord
from lmzoo.tasks import Task

#: test images the merge is checked on
CHECK_IMAGES = 8


def merge_stage(
    ws: Workspace, configured: nn.Module, plan: Plan, test_set: Dataset[Any], task: Task
) -> tuple[nn.Module, MergeRecord]:
    """The merged network (merging is deterministic and fast, so it is recomputed) and its record."""
    merged = merge(configured).eval()
    folder = ws.stage(Stage.MERGE, finetune_key(ws, plan))
    out = folder / "merge.json"
    with ws.exclusive(folder):
        cached = ws.cached(out, MergeRecord.load)
        if cached is not None:
            return merged, cached
        probe = task.example_inputs(test_set, batch_size=min(CHECK_IMAGES, len(test_set)))  # type: ignore[arg-type]
        with torch.no_grad():
            a, b = tensor_output(configured(*probe)), tensor_output(merged(*probe))
        record = MergeRecord(
            blocks=len(plan),
            convolutions=sum(isinstance(m, nn.Conv2d) for m in merged.modules()),
            relative_error=float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)),
        )
        record.save(out)
        return merged, record
