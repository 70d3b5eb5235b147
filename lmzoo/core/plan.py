"""Plans: a tiling of positions 0..L by candidates (DESIGN §5). Plain data, JSON round-trip."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmzoo.core.candidates import MAX_POSITIONS, Candidate, block_geometry, check_candidate
from lmzoo.core.spec import Spec
from lmzoo.errors import InvalidPlanError

PLAN_FORMAT = "lmzoo.plan/1"
#: the format of a plan that inserts activations (``activated``): a reader of PLAN_FORMAT alone would
#: build another network from it, so it refuses the file instead
PLAN_FORMAT_ACTIVATED = "lmzoo.plan/2"


@dataclass(frozen=True)
class PlanSummary:
    """What a plan does to the network, in counts (cards, latency cards and ``lmzoo solve``)."""

    #: L, the convolution units of the base network's chain
    units: int
    #: blocks of the plan, i.e. convolutions of the merged chain (identity blocks included)
    blocks: int
    #: blocks that keep at least one convolution: the merged chain's depth
    depth: int
    convs_kept: int
    activations_kept: int
    #: merged kernel size -> how many blocks merge two or more convolutions into it
    merged_kernels: dict[int, int]

    def describe(self) -> str:
        kernels = sorted(self.merged_kernels)
        return (
            f"Depth {self.units} → {self.depth} convolutions; {self.convs_kept} of {self.units} convs kept, "
            f"{self.activations_kept} activation boundaries kept; merged kernel sizes {kernels or 'none'}."
        )


class Plan:
    """A sequence of candidates tiling positions 0..L.

    The block boundaries are the kept activations (A); the union of the kept units is the kept
    convolutions (C). ``linear`` lists block ends whose activation is removed all the same: the
    depth-compression baseline runs one activation-free segment as several merged convs when that
    is faster, and may end a segment at a linear position without the activation lmzoo's rule
    inserts there. ``activated`` lists block ends at linear positions where the architecture's
    activation is inserted although the block ending there is a single unit (depth compression's
    activation states, ``lmzoo.core.activations``). LayerMerge plans have neither.
    """

    __slots__ = ("_activated", "_blocks", "_linear")

    def __init__(
        self, blocks: Sequence[Candidate], linear: Iterable[int] = (), activated: Iterable[int] = ()
    ) -> None:
        try:
            blocks = tuple(blocks)
            linear = set(linear)
            activated = set(activated)
        except TypeError:
            raise InvalidPlanError(
                "a plan takes a sequence of Candidates and iterables of positions"
            ) from None
        if not blocks:
            raise InvalidPlanError("a plan needs at least one block")
        for b in blocks:
            if not isinstance(b, Candidate):
                raise InvalidPlanError(f"plan blocks must be Candidates, got {type(b).__name__}")
        if blocks[0].start != 0:
            raise InvalidPlanError(f"a plan must start at position 0, this one starts at {blocks[0].start}")
        for prev, cur in itertools.pairwise(blocks):
            if cur.start != prev.end:
                raise InvalidPlanError(
                    f"plan does not tile: block ({prev.start}, {prev.end}] is followed by "
                    f"({cur.start}, {cur.end}]"
                )
        self._blocks = blocks
        ends = {b.end for b in blocks}
        for position in linear | activated:
            if type(position) is not int or position not in ends:
                raise InvalidPlanError(f"position {position!r} of linear/activated is not the end of a block")
        both = linear & activated
        if both:
            raise InvalidPlanError(f"position {min(both)} is both linear and activated")
        self._linear = tuple(sorted(linear))
        self._activated = tuple(sorted(activated))

    @property
    def blocks(self) -> tuple[Candidate, ...]:
        return self._blocks

    @property
    def length(self) -> int:
        """The number of units L the plan covers."""
        return self._blocks[-1].end

    @property
    def boundaries(self) -> tuple[int, ...]:
        """Positions whose activations are kept (the set A), 0 and L included."""
        return tuple(p for p in self.block_ends if p not in self._linear)

    @property
    def block_ends(self) -> tuple[int, ...]:
        """Positions where one merged conv ends and the next begins, 0 and L included."""
        return (0, *(b.end for b in self._blocks))

    @property
    def linear(self) -> tuple[int, ...]:
        """Block ends whose activation is removed (depth-compression plans only)."""
        return self._linear

    @property
    def activated(self) -> tuple[int, ...]:
        """Block ends after a single unit where an activation is inserted (depth compression's
        activation states only)."""
        return self._activated

    def activation(self, spec: Spec, block: Candidate) -> str | None:
        """The activation after ``block`` (one of this plan's blocks): lmzoo's rule
        (``Spec.block_activation``) unless the plan removes it (linear) or inserts one (activated)."""
        if block.end in self._linear:
            return None
        if block.end in self._activated:
            return spec.positions[block.end].inserted_activation
        return spec.block_activation(block.start, block.end)

    def configuration(
        self, spec: Spec
    ) -> tuple[tuple[int, ...], tuple[tuple[int, str], ...], tuple[int, ...]]:
        """What the configured network's function depends on: the kept convs, the activation after
        each block, and where each block with a spatial kernel starts and ends (a block pads its
        input once for the merged kernel, so its borders are its own). Plans of one configuration
        compute the same function and differ only in which 1x1 convs are merged into one, i.e. in
        latency (e.g. two 1x1 blocks meeting at a position without activation, and the one block
        over both)."""
        after = tuple((b.end, act) for b in self._blocks if (act := self.activation(spec, b)) is not None)
        padded = tuple(p for b in self._blocks if b.kernel > 1 for p in (b.start, b.end))
        return self.kept_units, after, padded

    @property
    def kept_units(self) -> tuple[int, ...]:
        """Indices of the convolutions kept (the set C)."""
        return tuple(k for b in self._blocks for k in b.kept)

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and (self._blocks, self._linear, self._activated) == (
            other._blocks,
            other._linear,
            other._activated,
        )

    def __hash__(self) -> int:
        return hash((self._blocks, self._linear, self._activated))

    def __repr__(self) -> str:
        inner = ", ".join(f"({b.start},{b.end}]k{b.kernel}" for b in self._blocks)
        linear = f", linear={list(self._linear)}" if self._linear else ""
        activated = f", activated={list(self._activated)}" if self._activated else ""
        return f"Plan([{inner}]{linear}{activated})"

    def summary(self) -> PlanSummary:
        merged = Counter(b.kernel for b in self._blocks if len(b.kept) > 1)
        return PlanSummary(
            units=self.length,
            blocks=len(self._blocks),
            depth=sum(1 for b in self._blocks if b.kept),
            convs_kept=len(self.kept_units),
            activations_kept=len(self.boundaries) - 1,
            merged_kernels=dict(sorted(merged.items())),
        )

    def validate(self, spec: Spec) -> None:
        """Raise InvalidPlanError unless every block can be realised exactly on ``spec``."""
        if self.length != spec.length:
            raise InvalidPlanError(
                f"plan covers {self.length} units but the network has {spec.length}: "
                "it was made for another network"
            )
        for block in self._blocks:
            check_candidate(spec, block)
        by_end = {b.end: b for b in self._blocks}
        for position in self._activated:
            p = spec.positions[position]
            if p.activation is not None or p.inserted_activation is None:
                raise InvalidPlanError(
                    f"the plan inserts an activation at position {position}, where the network has "
                    "one already or none to insert"
                )
            if spec.block_activation(by_end[position].start, position) is not None:
                raise InvalidPlanError(
                    f"the plan inserts an activation at position {position}, where a merged block "
                    "gets one anyway: list only single-unit block ends in 'activated'"
                )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": PLAN_FORMAT_ACTIVATED if self._activated else PLAN_FORMAT,
            "length": self.length,
            "blocks": [b.to_dict() for b in self],
            "linear": list(self._linear),
        }
        if self._activated:
            data["activated"] = list(self._activated)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if not isinstance(data, Mapping) or data.get("format") not in (PLAN_FORMAT, PLAN_FORMAT_ACTIVATED):
            raise InvalidPlanError(f"not an lmzoo plan: expected 'format': {PLAN_FORMAT!r}")
        blocks = data.get("blocks")
        if not isinstance(blocks, list):
            raise InvalidPlanError("plan 'blocks' must be a list of candidates")
        if len(blocks) > MAX_POSITIONS:
            raise InvalidPlanError(
                f"plan has {len(blocks)} blocks; a network has at most {MAX_POSITIONS} positions"
            )
        linear = data.get("linear", [])
        activated = data.get("activated", []) if data["format"] == PLAN_FORMAT_ACTIVATED else []
        for name, positions in (("linear", linear), ("activated", activated)):
            if not isinstance(positions, list) or any(type(p) is not int for p in positions):
                raise InvalidPlanError(f"plan {name!r} must be a list of positions")
        plan = cls([Candidate.from_dict(b) for b in blocks], linear, activated)
        if data.get("length") != plan.length:
            raise InvalidPlanError(
                f"plan says length {data.get('length')} but its blocks cover {plan.length}"
            )
        return plan

    @classmethod
    def identity(cls, spec: Spec) -> Plan:
        """The plan that keeps every unit and every activation: computes what the network computes."""
        blocks = []
        for unit in spec.units:
            start, end = unit.index - 1, unit.index
            g = block_geometry(spec, start, end, (unit.index,))
            blocks.append(Candidate(start, end, g.kernel, g.stride, g.depthwise, (unit.index,)))
        return cls(blocks)


def random_plan(
    spec: Spec, cands: Sequence[Candidate], rng: random.Random, *, long_bias: float = 2.0
) -> Plan:
    """A random plan: walk from position 0 choosing among the candidates that start there, weighted
    by length**long_bias (so long, many-conv blocks are common). For exactness checks."""
    by_start: dict[int, list[Candidate]] = {}
    for c in cands:
        by_start.setdefault(c.start, []).append(c)
    blocks, position = [], 0
    while position < spec.length:
        options = by_start.get(position)
        if not options:
            raise InvalidPlanError(f"no candidate starts at position {position}")
        choice = rng.choices(options, weights=[c.length**long_bias for c in options])[0]
        blocks.append(choice)
        position = choice.end
    return Plan(blocks)
