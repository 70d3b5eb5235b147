"""The ``block-distill`` importance estimator: train only the compressed block, in its deploy form (one
conv), to reproduce the base network's map at the block's end from cached maps at its start; then
evaluate only the network after the block, on cached held-out maps. Chain families only."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lmzoo.core.activations import ActivationState, Entry, default_state, entry_candidate
from lmzoo.core.candidates import Candidate
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.importance.context import PROCESS_CACHE, EntryFailed, EstimatorContext

#: a batch of maps at one chain position
Maps = torch.Tensor
#: maps at earlier positions that later shortcuts read
Saved = dict[int, torch.Tensor]


def block_maps(context: EstimatorContext) -> BlockMaps:
    """Cached maps of the base network (kept per process, never pickled)."""
    cached = PROCESS_CACHE.get(context.token)
    if cached is None:
        cached = PROCESS_CACHE[context.token] = BlockMaps(context)
    return cached


class BlockMaps:
    """The base network's maps at one chain position, for the importance-train and held-out
    subsets, advanced position by position (entries come sorted by start) so each prefix of the
    network runs once per subset rather than once per entry. Maps are kept in held-out-sized batches
    (the batches ``Task.evaluate`` uses)."""

    def __init__(self, context: EstimatorContext) -> None:
        self.context = context
        self.net = context.model_identity()
        self.chain = context.chain(self.net)
        self._targets: dict[int, torch.Tensor] = {}
        self._restart()

    def _restart(self) -> None:
        self.position = 0
        self.train = self._chain_inputs(self.context.data.train)
        self.heldout = self._chain_inputs(self.context.data.heldout)
        self._targets.clear()

    @torch.no_grad()
    def _chain_inputs(self, dataset: Dataset[Any]) -> list[tuple[torch.Tensor, dict[int, torch.Tensor]]]:
        """The chain's input map for every batch (the stem runs once)."""
        captured: list[torch.Tensor] = []

        def grab(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            captured.append(inputs[0])
            raise _Captured

        handle = self.chain.register_forward_pre_hook(grab)
        try:
            for x, _ in DataLoader(dataset, batch_size=self.context.settings.eval_batch_size, shuffle=False):
                with contextlib.suppress(_Captured):
                    self.net(x.to(self.context.device))
        finally:
            handle.remove()
        sources = self.chain.span_sources
        return [(x, {0: x} if 0 in sources else {}) for x in captured]

    @torch.no_grad()
    def at(self, position: int) -> None:
        """Advance both caches to the map at ``position`` (restarting when asked to go back)."""
        if position < self.position:
            self._restart()
        while self.position < position:
            needed = {s.source for s in self.chain.spans if s.target > self.position + 1}
            for batches in (self.train, self.heldout):
                for i, (x, saved) in enumerate(batches):
                    saved = dict(saved)
                    x = self.chain.run_blocks(x, saved, self.position, self.position + 1)
                    batches[i] = (x, {k: v for k, v in saved.items() if k in needed})
            self.position += 1
            self._targets.clear()

    def train_inputs(self) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        x = torch.cat([x for x, _ in self.train])
        return x, {k: torch.cat([saved[k] for _, saved in self.train]) for k in self.train[0][1]}

    @torch.no_grad()
    def train_targets(self, end: int) -> torch.Tensor:
        """The base network's maps at ``end`` for the importance-train subset (shared by every
        candidate over the same span)."""
        if end not in self._targets:
            self._targets[end] = torch.cat(
                [self.chain.run_blocks(x, dict(saved), self.position, end) for x, saved in self.train]
            )
        return self._targets[end]


class _Captured(Exception):
    pass


def at_entry(
    context: EstimatorContext, entry: Entry, seed: int
) -> tuple[Candidate, BlockMaps, nn.Module, Any, Callable[[Maps, Saved], tuple[Maps, Saved]]]:
    """What an estimator from cached maps starts with: the entry's candidate, the base network's
    maps advanced to its start, the compressed network (eval mode), its chain, and the function
    giving the maps that enter the entry's block."""
    cand = entry_candidate(entry)
    maps = block_maps(context)
    maps.at(cand.start)
    net = context.compressed(entry, seed).eval()
    chain = context.chain(net)
    return cand, maps, net, chain, entering_maps(context.spec, entry, chain)


def distill_block(context: EstimatorContext, entry: Entry, seed: int) -> dict[str, Any]:
    """Train the compressed block, in its deploy form (one conv), to reproduce the base network's
    map at the block's end; then evaluate only the network after the block's start. An activation
    state inserting the activation at the block's start applies it to the cached maps there."""
    s = context.settings
    cand, maps, net, chain, entering = at_entry(context, entry, seed)

    started = time.perf_counter()
    last: float | None = None  # a block without parameters (all convs dropped) has nothing to train
    steps = 0
    if any(True for _ in chain.blocks[cand.start].parameters()):
        student = chain.blocks[cand.start]
        merged_flops, unit_flops = _merged_flops(context.spec, cand), _unit_flops(context.spec, cand)
        if merged_flops <= unit_flops:
            student = chain.blocks[cand.start] = student.lmzoo_merged()  # cheaper to train as one conv
        steps = _block_steps(context, min(merged_flops, unit_flops))
        inputs, saved = entering(*maps.train_inputs())
        wanted = maps.train_targets(cand.end)
        optimizer = torch.optim.Adam(student.parameters(), lr=s.block_lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        generator = torch.Generator().manual_seed(seed)
        for step in range(steps):
            pick = torch.randint(0, len(inputs), (min(s.block_batch_size, len(inputs)),), generator=generator)
            out = chain.run_blocks(
                inputs[pick], {k: v[pick] for k, v in saved.items()}, cand.start, cand.start + 1
            )
            loss = nn.functional.mse_loss(out, wanted[pick])
            if not torch.isfinite(loss):
                raise EntryFailed(
                    f"the block-distillation loss became {float(loss)} at step {step + 1}; lower block_lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            last = float(loss.detach())
    train_s = time.perf_counter() - started
    with chain.resumed([(cand.start, *entering(x, saved)) for x, saved in maps.heldout]):
        metrics = context.evaluate(net)
    return {**metrics, "block_loss": last, "block_steps": steps, "block_train_s": train_s}


def entering_maps(spec: Spec, entry: Entry, chain: Any) -> Callable[[Maps, Saved], tuple[Maps, Saved]]:
    """The maps entering the entry's block from the base network's maps at its start: the same,
    or with the activation an activation state inserts at its start applied."""
    cand = entry_candidate(entry)
    inserted = _inserted_at_start(spec, entry)
    start_activation = chain.activations[cand.start - 1] if inserted else nn.Identity()

    def entering(x: Maps, saved: Saved) -> tuple[Maps, Saved]:
        if not inserted:
            return x, saved
        with torch.no_grad():
            x = start_activation(x)
        return x, {k: (x if k == cand.start else v) for k, v in saved.items()}

    return entering


def _inserted_at_start(spec: Spec, entry: Entry) -> bool:
    """Whether ``entry`` inserts an activation at its block's start (an activation state)."""
    return isinstance(entry, ActivationState) and (
        entry.start_active and not default_state(spec, entry.candidate).start_active
    )


def _block_steps(context: EstimatorContext, student_flops: int) -> int:
    """At most ``block_steps``, and at most a tenth of the finetune estimator's training compute
    (one epoch of importance-train through the whole network): long blocks get fewer steps."""
    s = context.settings
    network = sum(_unit_flops(context.spec, c) for c in Plan.identity(context.spec))
    examples = len(context.data.train)  # type: ignore[arg-type]
    budget = 0.1 * examples * network / (s.block_batch_size * max(student_flops, 1))
    return max(1, min(s.block_steps, int(budget)))


def _conv_flops(unit_in: int, unit_out: int, kernel: int, depthwise: bool, out_hw: int) -> int:
    return unit_out * (1 if depthwise else unit_in) * kernel * kernel * out_hw


def _unit_flops(spec: Spec, cand: Candidate) -> int:
    """Multiply-adds of the block's kept convs, run one after the other."""
    total = 0
    for index in cand.kept:
        u = spec.unit(index)
        _, h, w = u.input_shape
        total += _conv_flops(
            u.in_channels, u.out_channels, u.kernel, u.depthwise, (h // u.stride) * (w // u.stride)
        )
    return total


def _merged_flops(spec: Spec, cand: Candidate) -> int:
    """Multiply-adds of the block's merged conv (the padding makes its output the block's)."""
    first, last = spec.unit(cand.start + 1), spec.unit(cand.end)
    _, h, w = first.input_shape
    return _conv_flops(
        first.in_channels,
        last.out_channels,
        cand.kernel,
        cand.depthwise,
        (h // cand.stride) * (w // cand.stride),
    )
