"""End-to-end latency of whole networks: one network (``benchmark``) or several timed interleaved
(``compare``: base against merged), and the base network's deploy form that speed-ups are measured
against."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import InvalidArgumentError, InvalidInputError
from lmzoo.latency.backends import get_backend, measure_interleaved, target_of
from lmzoo.latency.setting import LatencySetting
from lmzoo.latency.stats import LatencyStats


def benchmark(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    setting: LatencySetting | None = None,
    **overrides: Any,
) -> LatencyStats:
    """End-to-end latency of ``model(*example_inputs)``: warm-up, synchronisation, statistics.

    ``setting`` (and keyword ``overrides`` of its fields) say how; a ``batch_size`` given there
    repeats the example inputs along the batch dimension (otherwise their own batch is timed). The
    model is not modified (it is copied before being moved or compiled).
    """
    return compare({"model": model}, example_inputs, setting, **{**overrides, "rounds": 1})["model"]


def compare(
    models: Mapping[str, nn.Module],
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    setting: LatencySetting | None = None,
    **overrides: Any,
) -> dict[str, LatencyStats]:
    """End-to-end latency of several models (e.g. base and merged), measured interleaved in
    ``setting.rounds`` rounds so that drifts of a shared machine affect all of them alike. The
    inputs are repeated to ``batch_size`` when it is given (in ``setting`` or ``overrides``)."""
    batch_size = overrides.get("batch_size", setting.batch_size if setting is not None else None)
    setting = (setting or LatencySetting()).replace(**overrides)
    inputs = batched(as_input_list(example_inputs), batch_size)
    jobs = {name: (PlainOutput(copy.deepcopy(m)), inputs) for name, m in models.items()}
    return measure_interleaved(
        jobs,
        backend=get_backend(setting.backend),
        target=target_of(setting),
        warmup=setting.warmup,
        runs=setting.runs,
        rounds=setting.rounds,
    )


def deploy_form(model: nn.Module, spec: Spec) -> nn.Module:
    """The base network as it deploys: the identity plan merged, i.e. every chain conv with its
    norm folded in, nothing else changed. Speed-ups are measured against this, so that they
    count what LayerMerge removes and not the norm folding any deployment gets for free."""
    from lmzoo.engine import apply_plan, merge

    return merge(apply_plan(model, spec, Plan.identity(spec))).eval()


class PlainOutput(nn.Module):
    """Returns a tensor whatever the wrapped model returns (diffusers outputs, tuples), so every
    backend (ONNX export included) sees a plain graph."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        from lmzoo.engine import tensor_output

        return tensor_output(self.inner(*args))


def as_input_list(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(example_inputs, torch.Tensor):
        return [example_inputs]
    if isinstance(example_inputs, (tuple, list)) and example_inputs:
        return list(example_inputs)
    raise InvalidInputError("example_inputs must be a tensor or a non-empty tuple of tensors")


def batched(inputs: list[torch.Tensor], batch_size: int | None) -> list[torch.Tensor]:
    """The inputs repeated (and cut) along the batch dimension to ``batch_size`` (None: as they are)."""
    if batch_size is None:
        return inputs
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    out = []
    for x in inputs:
        if x.dim() == 0:
            out.append(x)
            continue
        reps = math.ceil(batch_size / x.shape[0])
        out.append(x.repeat(reps, *([1] * (x.dim() - 1)))[:batch_size])
    return out
