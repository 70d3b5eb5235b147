"""The ``bn-suffix`` importance estimator: no training; the BatchNorm statistics from the entry's
block to the network's end are re-estimated on importance-train maps, and only that part runs on the
held-out maps. The base network's maps at the block's start are cached as for ``block-distill``
(whose cache it shares), so each entry runs only what follows its start; the layers before it are
unchanged by the entry and keep their statistics. Chain families only."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import TensorDataset

from lmzoo.adapters.base.chain import UnitStep
from lmzoo.core.activations import Entry
from lmzoo.importance.block_distill import at_entry
from lmzoo.importance.context import PROCESS_CACHE, EstimatorContext, batch_norms
from lmzoo.training.memory_format import as_format, in_preferred_memory_format


def recalibrate_suffix(context: EstimatorContext, entry: Entry, seed: int) -> dict[str, Any]:
    """Held-out metrics of the network with the entry's block compressed (no training), after
    re-estimating the statistics of every BatchNorm that runs from the block on, on the first
    ``calibration_examples`` importance-train maps."""
    cand, maps, net, chain, entering = at_entry(context, entry, seed)
    with in_preferred_memory_format(net, context.device) as fmt:

        def resume(
            x: torch.Tensor, saved: dict[int, torch.Tensor]
        ) -> tuple[int, torch.Tensor, dict[int, torch.Tensor]]:
            x, saved = entering(x, saved)
            return cand.start, as_format(x, fmt), {k: as_format(v, fmt) for k, v in saved.items()}

        batch = context.settings.eval_batch_size
        wanted = math.ceil(context.settings.calibration_examples / batch)
        calibration = [resume(x, saved) for x, saved in maps.train[:wanted]]
        probe = context.example_inputs()[0][:1]  # the stem runs on it; the chain ignores its input
        suffix = _norms_after_start(net, chain, calibration[0], probe)
        for norm in suffix:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the calibration batches
            norm.train()
        with torch.no_grad(), chain.resumed(calibration):
            for _ in calibration:
                net(probe)
        net.eval()
        _fold_norms(list(chain.blocks)[cand.start :])
        with chain.resumed([resume(x, saved) for x, saved in maps.heldout]):
            metrics = context.task.evaluate(
                net, _heldout_tensors(context), batch_size=batch, device=context.device
            )
    seen = sum(len(x) for _, x, _ in calibration)
    return {**metrics, "calibration_examples": seen, "recalibrated_norms": len(suffix)}


def _heldout_tensors(context: EstimatorContext) -> TensorDataset:
    """The held-out subset as tensors, kept per process: the stem still runs on each batch (the
    chain ignores its input), but the subset's per-image loading runs once."""
    key = f"{context.token}/heldout-tensors"
    if key not in PROCESS_CACHE:
        heldout = context.data.heldout
        count = len(heldout)  # type: ignore[arg-type]
        images, labels = zip(*(heldout[i] for i in range(count)), strict=True)
        PROCESS_CACHE[key] = TensorDataset(torch.stack(images), torch.as_tensor(labels))
    return PROCESS_CACHE[key]


def _fold_norms(blocks: list[nn.Module]) -> None:
    """Each kept conv and the BatchNorm after it as one conv (eval mode; equal up to rounding)."""
    for block in blocks:
        for step in block.modules():
            if isinstance(step, UnitStep) and isinstance(step.norm, nn.BatchNorm2d):
                step.conv = fuse_conv_bn_eval(step.conv, step.norm)
                step.norm = nn.Identity()


def _norms_after_start(
    net: nn.Module, chain: Any, state: tuple[int, torch.Tensor, dict[int, torch.Tensor]], probe: torch.Tensor
) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorms that run once the chain starts at the entry's block (the block's, the later
    blocks', the head's), found by one resumed forward in eval mode."""
    started: list[bool] = []
    ran: list[nn.modules.batchnorm._BatchNorm] = []
    norms = batch_norms(net)
    handles = [chain.register_forward_pre_hook(lambda *_: started.append(True))]
    handles += [
        m.register_forward_pre_hook(lambda module, _inputs: ran.append(module) if started else None)
        for m in norms
    ]
    first, x, saved = state
    try:
        with torch.no_grad(), chain.resumed([(first, x[:1], {k: v[:1] for k, v in saved.items()})]):
            net(probe)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(ran))
