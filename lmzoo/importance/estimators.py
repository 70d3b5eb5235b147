"""The built-in importance estimators (their cost and rank agreement with ``finetune`` are measured in
``tests/benchmarks/bench_importance.py``):

- ``finetune`` — the paper's: a block that keeps one conv of several starts that conv and its norm
  afresh, then the whole network is fine-tuned for one epoch of importance-train (SGD + Nesterov,
  cosine decay; Adam for DDPM), and measured on the held-out subset;
- ``finetune-short`` — the same with a tenth of the steps;
- ``block-distill`` — only the compressed block is trained, to reproduce the base network's map at
  the block's end from cached maps at its start; then only the rest of the network runs on cached
  held-out maps (chain families: timm ResNet, MobileNetV2);
- ``bn-recalibration`` — no training: BatchNorm statistics re-estimated on importance-train;
- ``bn-suffix`` — the same from cached maps at the block's start: only the statistics from the block
  on are re-estimated (on ``calibration_examples`` examples), and only that part of the network runs
  (chain families).

Each is one function of (context, entry, seed) registered by name; the work they share is the
context's (``lmzoo.importance.context``), so this module needs no torch import of its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lmzoo.importance.registry import register_estimator

if TYPE_CHECKING:
    from lmzoo.core.activations import Entry
    from lmzoo.importance.context import EstimatorContext

#: finetune-short runs this fraction of finetune's steps
SHORT_FRACTION = 0.1


@register_estimator("finetune")
def finetune(context: EstimatorContext, entry: Entry, seed: int) -> dict[str, Any]:
    net = context.compressed(entry, seed)
    summary = context.recover(net, seed)
    return {**context.evaluate(net), **summary}


@register_estimator(
    "finetune-short", adjust=lambda s: replace(s, step_fraction=min(s.step_fraction, SHORT_FRACTION))
)
def finetune_short(context: EstimatorContext, entry: Entry, seed: int) -> dict[str, Any]:
    return finetune(context, entry, seed)


@register_estimator("block-distill", check=lambda context: context.chain())
def block_distill(context: EstimatorContext, entry: Entry, seed: int) -> dict[str, Any]:
    from lmzoo.importance.block_distill import distill_block

    return distill_block(context, entry, seed)


def _chain_with_batch_norms(context: EstimatorContext) -> None:
    context.require_batch_norms()
    context.chain()


@register_estimator("bn-suffix", check=_chain_with_batch_norms)
def bn_suffix(context: EstimatorContext, entry: Entry, seed: int) -> dict[str, Any]:
    from lmzoo.importance.bn_suffix import recalibrate_suffix

    return recalibrate_suffix(context, entry, seed)


@register_estimator("bn-recalibration", check=lambda context: context.require_batch_norms())
def bn_recalibration(context: EstimatorContext, entry: Entry, seed: int) -> dict[str, Any]:
    net = context.compressed(entry, seed)
    batches = context.recalibrate_batch_norms(net, seed)
    return {**context.evaluate(net), "calibration_batches": batches}
