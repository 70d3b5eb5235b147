"""Shared machinery for families whose mergeable part is one chain of residual blocks (ResNet,
MobileNetV2): the configured block, the chain module, and a ChainAdapter base class.

A family adapter only describes its chain (:class:`ChainLayout`); tracing, applying plans and
merging are common.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from lmzoo.adapters.base.activations import IDEMPOTENT, make_activation
from lmzoo.adapters.base.modules import (
    MERGE_DTYPE,
    check_mergeable_conv,
    grouped_with_norm,
    is_depthwise,
    module_map,
    module_shape,
    plain_batchnorm,
    to_module,
    unit_from_conv,
)
from lmzoo.adapters.base.registry import Adapter
from lmzoo.adapters.base.tracing import run_with_hooks
from lmzoo.core import kernels
from lmzoo.core.candidates import Candidate
from lmzoo.core.kernels import MapShape
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Position, ResidualSpan, Spec
from lmzoo.errors import InvalidPlanError, UnsupportedModelError


@dataclass(frozen=True)
class LayoutUnit:
    """One conv of the chain: its module path, the norm after it, and the activation at its output."""

    conv: str
    norm: str | None
    activation: str | None


@dataclass(frozen=True)
class ChainLayout:
    """What a family adapter finds in a model, from module types and attribute names alone."""

    #: consecutive submodules whose composition in forward() is the chain; the chain replaces them
    containers: tuple[str, ...]
    units: tuple[LayoutUnit, ...]
    spans: tuple[ResidualSpan, ...] = ()
    barriers: frozenset[int] = frozenset()
    inserted_activation: Mapping[int, str] = field(default_factory=dict)


class UnitStep(nn.Module):
    """A kept unit inside a configured block: conv (unpadded when the block pads) then its norm."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module | None, original_padding: int) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm if norm is not None else nn.Identity()
        self.original_padding = original_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))

    def conv_map(self) -> kernels.ConvMap:
        m = module_map(self.conv, self.conv.in_channels, padding=self.original_padding)
        return kernels.compose(m, module_map(self.norm, self.conv.out_channels, device=m.weight.device))

    def map_shape(self) -> MapShape:
        return module_shape(self.conv, self.conv.in_channels, padding=self.original_padding)


M = TypeVar("M", kernels.ConvMap, MapShape)


@dataclass(frozen=True)
class _InnerSpan:
    source: int
    target: int
    crop: int  # rows/cols dropped at the top-left of the source map so the grids align


class ConfiguredBlock(nn.Module):
    """Block (start, end] as a trainable network computing exactly its merged conv's function.

    All padding is moved onto the block input (DESIGN §5): the input is zero-padded by
    P = sum_l p_l * prod_{m<l} s_m and every conv runs unpadded, so no intermediate map is
    zero-padded (which would break the equivalence with one merged conv at the borders).
    Shortcuts inside the block read their source map cropped so that it lines up with the target.
    A lone kept conv with no shortcut keeps its own padding, which is the same thing.
    """

    def __init__(
        self,
        candidate: Candidate,
        in_channels: int,
        steps: Sequence[nn.Module],
        spans: Sequence[ResidualSpan],
        shortcuts: Sequence[nn.Module],
    ) -> None:
        super().__init__()
        self.start, self.end = candidate.start, candidate.end
        self.in_channels = in_channels
        self.steps = nn.ModuleList(steps)
        self.shortcuts = nn.ModuleList(shortcuts)
        kept = [s for s in steps if isinstance(s, UnitStep)]
        self.pad = 0
        if len(kept) > 1 or spans:
            stride = 1
            for kept_step in kept:
                self.pad += kept_step.original_padding * stride
                stride *= kept_step.conv.stride[0]
                kept_step.conv.padding = (0, 0)
        # border width of each position's map relative to the unpadded network's map
        border = {self.start: self.pad}
        for pos, step in enumerate(self.steps, start=self.start + 1):
            b = border[pos - 1]
            if isinstance(step, UnitStep):
                p = 0 if self.pad == 0 else step.original_padding
                b, rem = divmod(b - p, step.conv.stride[0])
                if rem or b < 0:
                    raise InvalidPlanError(f"block ({self.start}, {self.end}] cannot be aligned")
            border[pos] = b
        self.inner_spans = [
            _InnerSpan(s.source, s.target, border[s.source] - s.stride * border[s.target]) for s in spans
        ]
        #: positions whose maps an inner shortcut reads later
        self.span_sources = {s.source for s in spans}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        saved = {self.start: x}
        for pos, step in enumerate(self.steps, start=self.start + 1):
            x = step(x)
            for span, shortcut in zip(self.inner_spans, self.shortcuts):
                if span.target == pos:
                    h = saved[span.source][..., span.crop :, span.crop :]
                    h = shortcut(h)
                    x = x + h[..., : x.shape[-2], : x.shape[-1]]
            if pos in self.span_sources:
                saved[pos] = x
        return x

    def _like(self) -> torch.Tensor:
        """A tensor with the block's device and dtype (a block keeping no conv has no parameters)."""
        return next(self.parameters(), torch.empty(0))

    def _fold(
        self,
        identity: Callable[[int], M],
        unit: Callable[[UnitStep], M],
        shortcut: Callable[[nn.Module, int], M],
        then: Callable[[M, M], M],
        plus: Callable[[M, M], M],
    ) -> M:
        """The block's maps composed in order, inner shortcuts added at their targets; generic over
        maps (:meth:`merged_map`) and their bare geometry (:meth:`merged_shape`)."""
        current = identity(self.in_channels)
        saved = {self.start: current}
        for pos, step in enumerate(self.steps, start=self.start + 1):
            if isinstance(step, UnitStep):
                current = then(current, unit(step))
            for span, module in zip(self.inner_spans, self.shortcuts):
                if span.target == pos:
                    source = saved[span.source]
                    current = plus(current, then(source, shortcut(module, source.out_channels)))
            if pos in self.span_sources:
                saved[pos] = current
        return current

    def merged_map(self) -> kernels.ConvMap:
        device = self._like().device
        return self._fold(
            lambda channels: kernels.identity_map(channels, dtype=MERGE_DTYPE, device=device),
            UnitStep.conv_map,
            lambda module, channels: module_map(module, channels, device=device),
            kernels.compose,
            kernels.add,
        )

    def merged_shape(self) -> MapShape:
        return self._fold(MapShape.identity, UnitStep.map_shape, module_shape, MapShape.then, MapShape.plus)

    def lmzoo_merged(self, structure_only: bool = False) -> nn.Module:
        kept = [s for s in self.steps if isinstance(s, UnitStep)]
        if not self.inner_spans and not kept:
            return nn.Identity()
        if (
            not self.inner_spans
            and len(kept) == 1
            and kept[0].conv.groups > 1
            and not is_depthwise(kept[0].conv)
        ):
            return grouped_with_norm(kept[0].conv, kept[0].norm, structure_only)  # keeps its groups
        merged = self.merged_shape() if structure_only else self.merged_map()
        return to_module(merged, like=self._like())


class Chain(nn.Module):
    """The chain of blocks, each followed by its residual additions and its activation.

    Used for configured networks (blocks are ConfiguredBlocks) and merged ones (blocks are single
    convs); shortcuts here are the residual spans that contain a block rather than lie inside one.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        ends: Sequence[int],
        activations: Sequence[nn.Module],
        spans: Sequence[ResidualSpan],
        shortcuts: Sequence[nn.Module],
        span_channels: Sequence[int],
        start: int = 0,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.activations = nn.ModuleList(activations)
        self.shortcuts = nn.ModuleList(shortcuts)
        self.ends = list(ends)
        self.spans = list(spans)
        self.span_channels = list(span_channels)
        #: positions whose maps a shortcut reads later (run_blocks keeps them in ``saved``); lists of
        #: ints, not sets or span records, so torch.jit.script compiles the forward
        self.span_sources = sorted({s.source for s in spans})
        self.shortcut_sources = [s.source for s in spans]
        self.shortcut_targets = [s.target for s in spans]
        #: the position of the chain's input (a network may hold several chains)
        self.start = start
        self._resuming = False
        self._resume: Iterator[tuple[int, torch.Tensor, dict[int, torch.Tensor]]] = iter(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and self._resuming:  # (TorchScript compiles without this branch)
            first, x, resumed = next(self._resume)
            return self.run_blocks(x, resumed, first, len(self.ends))
        saved = torch.jit.annotate(dict[int, torch.Tensor], {})
        if self.start in self.span_sources:
            saved[self.start] = x
        return self.run_blocks(x, saved, 0, len(self.ends))

    def run_blocks(
        self, x: torch.Tensor, saved: dict[int, torch.Tensor], first: int, stop: int
    ) -> torch.Tensor:
        """Blocks ``first .. stop - 1`` from the map ``x`` at the start of block ``first``; ``saved``
        holds the maps at earlier positions that later shortcuts read, and is updated in place.
        (Written for TorchScript too: module lists are zipped whole, never indexed by a variable.)"""
        for index, (block, act) in enumerate(zip(self.blocks, self.activations)):
            if first <= index < stop:
                end = self.ends[index]
                x = block(x)
                for j, shortcut in enumerate(self.shortcuts):
                    if self.shortcut_targets[j] == end:
                        x = x + shortcut(saved[self.shortcut_sources[j]])
                x = act(x)
                if end in self.span_sources:
                    saved[end] = x
        return x

    @contextmanager
    def resumed(self, states: Iterable[tuple[int, torch.Tensor, dict[int, torch.Tensor]]]) -> Iterator[None]:
        """Inside the context each forward call ignores its input and continues from the next
        ``(first block, map, saved maps)`` of ``states``: the rest of the network runs from cached
        intermediate maps (cheap importance estimators evaluate only what follows a block)."""
        self._resume, self._resuming = iter(states), True
        try:
            yield
        finally:
            self._resume, self._resuming = iter(()), False

    def lmzoo_merged(self, structure_only: bool = False) -> Chain:
        blocks = [
            b.lmzoo_merged(structure_only) if isinstance(b, ConfiguredBlock) else copy.deepcopy(b)
            for b in self.blocks
        ]
        like = next(self.parameters(), torch.empty(0))  # a chain whose every conv is dropped has none

        def merged_shortcut(module: nn.Module, channels: int) -> nn.Module:
            if isinstance(module, nn.Identity):
                return nn.Identity()
            if structure_only:
                return to_module(module_shape(module, channels), like=like)
            return to_module(module_map(module, channels, device=like.device), like=like)

        shortcuts = [merged_shortcut(s, ch) for s, ch in zip(self.shortcuts, self.span_channels)]
        return Chain(
            blocks,
            self.ends,
            copy.deepcopy(list(self.activations)),
            self.spans,
            shortcuts,
            self.span_channels,
            self.start,
        )


# torch.jit.script reads attribute types from the class annotations (an empty list's cannot be
# inferred); this module's ``from __future__ import annotations`` would leave it strings it cannot resolve
Chain.__annotations__.update(
    {name: list[int] for name in ("ends", "span_sources", "shortcut_sources", "shortcut_targets")}
)


class ChainAdapter(Adapter):
    """Base class for families described by a ChainLayout."""

    @abstractmethod
    def layout(self, model: nn.Module) -> ChainLayout:
        """The model's chain, from module types and attribute names (raise UnsupportedModelError)."""

    @classmethod
    def lays_out(cls, model: nn.Module) -> bool:
        """Whether the family can describe ``model`` (its ``matches`` then claims it)."""
        try:
            cls().layout(model)
        except UnsupportedModelError:
            return False
        return True

    def trace(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Spec:
        layout = self.layout(model)
        convs = {u.conv: check_mergeable_conv(model.get_submodule(u.conv), u.conv) for u in layout.units}
        shapes, order = run_with_hooks(model, dict(convs), example_inputs)
        if order != [u.conv for u in layout.units]:
            raise UnsupportedModelError(
                f"{type(model).__name__}.forward runs its convs in another order than its module "
                "structure says; lmzoo cannot tell what it computes"
            )
        units = tuple(
            unit_from_conv(i, u.conv, convs[u.conv], shapes[u.conv])
            for i, u in enumerate(layout.units, start=1)
        )
        positions = [Position(0, None, 0 in layout.barriers, layout.inserted_activation.get(0))]
        for i, u in enumerate(layout.units, start=1):
            positions.append(
                Position(i, u.activation, i in layout.barriers, layout.inserted_activation.get(i))
            )
        return Spec(
            family=self.family,
            units=units,
            positions=tuple(positions),
            spans=layout.spans,
            input_shapes=tuple(tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)),
        )

    def apply_plan(self, model: nn.Module, spec: Spec, plan: Plan, *, in_place: bool = False) -> nn.Module:
        layout = self.layout(model)
        _check_layout_matches(layout, model, spec)
        configured = model if in_place else copy.deepcopy(model)
        chain = build_chain(configured, layout.units, spec, plan)
        configured.set_submodule(layout.containers[0], chain)
        for name in layout.containers[1:]:
            configured.set_submodule(name, nn.Identity())
        return configured


def _check_layout_matches(layout: ChainLayout, model: nn.Module, spec: Spec) -> None:
    mismatch = len(layout.units) != spec.length
    for lu, su in zip(layout.units, spec.units):
        conv = model.get_submodule(lu.conv)
        if not isinstance(conv, nn.Conv2d) or (
            lu.conv,
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            conv.stride[0],
        ) != (su.path, su.in_channels, su.out_channels, su.kernel, su.stride):
            mismatch = True
    if mismatch:
        raise InvalidPlanError(
            "the spec was traced from a different network than the one given: trace this model "
            "with lmzoo.trace and solve again"
        )


def build_chain(
    model: nn.Module,
    units: Sequence[LayoutUnit],
    spec: Spec,
    plan: Plan,
    first: int = 0,
    last: int | None = None,
) -> Chain:
    """The Chain of ``plan``'s blocks between positions ``first`` and ``last`` (the whole plan by
    default), with the modules of ``model`` that ``units`` name (one per spec unit, in order)."""
    last = spec.length if last is None else last
    chosen = [c for c in plan if first <= c.start and c.end <= last]
    spans = [s for s in spec.spans if first <= s.source and s.target <= last]
    blocks: list[nn.Module] = []
    activations: list[nn.Module] = []
    span_targets = {s.target for s in spans}
    previous_kind: str | None = None  # the activation applied at the current block's start
    for cand in chosen:
        steps: list[nn.Module] = []
        for unit, lu in zip(spec.units_in(cand.start, cand.end), units[cand.start : cand.end]):
            if unit.index in cand.kept:
                conv = cast(nn.Conv2d, model.get_submodule(lu.conv))
                norm = plain_batchnorm(model.get_submodule(lu.norm), lu.norm) if lu.norm else None
                steps.append(UnitStep(conv, norm, unit.padding))
            else:
                steps.append(nn.Identity())
        inner = [s for s in spec.spans_inside(cand.start, cand.end)]
        blocks.append(
            ConfiguredBlock(
                cand,
                spec.unit(cand.start + 1).in_channels,
                steps,
                inner,
                [_shortcut(model, s) for s in inner],
            )
        )
        kind = plan.activation(spec, cand)
        applied = kind
        if not cand.kept and kind in IDEMPOTENT and kind == previous_kind and cand.end not in span_targets:
            kind = None  # an identity block between two equal idempotent activations: act(act(x)) = act(x)
        activations.append(make_activation(kind))
        previous_kind = applied
    boundaries = set(plan.block_ends)
    outer = [
        s
        for s in spans
        if s.source in boundaries
        and s.target in boundaries
        and not any(c.start <= s.source and s.target <= c.end for c in chosen)
    ]
    return Chain(
        blocks,
        [c.end for c in chosen],
        activations,
        outer,
        [_shortcut(model, s) for s in outer],
        [spec.unit(s.source + 1).in_channels for s in outer],
        first,
    )


def _shortcut(model: nn.Module, span: ResidualSpan) -> nn.Module:
    if span.projection is None:
        return nn.Identity()
    if span.projection_norm is not None:
        conv, norm = model.get_submodule(span.projection), model.get_submodule(span.projection_norm)
        return nn.Sequential(conv, plain_batchnorm(norm, span.projection_norm))
    projection = model.get_submodule(span.projection)
    assert isinstance(projection, nn.Sequential)
    conv, norm = projection[0], projection[1]
    return nn.Sequential(conv, plain_batchnorm(norm, f"{span.projection}.1"))
