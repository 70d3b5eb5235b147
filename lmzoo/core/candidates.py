"""Candidates: the rows of the latency and importance tables (DESIGN §4).

A candidate is one way to realise block (start, end] as a single merged convolution: which of its
convolutions are kept, and the resulting kernel, stride and depthwise-ness.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from lmzoo.core.spec import Spec, Unit
from lmzoo.errors import InvalidArgumentError, InvalidPlanError

#: kernel size recorded for a block whose every conv is removed (identity, zero latency)
IDENTITY_KERNEL = 0
#: the most chain positions a network may have: ten times ResNet-1001's convolutions, so a plan or
#: a table of a real network always fits, and a forged one of millions of blocks is refused at once
MAX_POSITIONS = 10_000


@dataclass(frozen=True, order=True)
class Candidate:
    """Block (start, end] merged into one conv of size ``kernel`` keeping units ``kept``."""

    start: int
    end: int
    kernel: int
    stride: int
    depthwise: bool
    kept: tuple[int, ...]

    def __post_init__(self) -> None:
        fields = {"start": self.start, "end": self.end, "kernel": self.kernel, "stride": self.stride}
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in fields.values()):
            raise InvalidPlanError(f"a candidate's start, end, kernel and stride are integers, got {fields}")
        if not isinstance(self.depthwise, bool):
            raise InvalidPlanError(f"a candidate's depthwise is True or False, got {self.depthwise!r}")
        if not isinstance(self.kept, (tuple, list)) or any(
            isinstance(k, bool) or not isinstance(k, numbers.Integral) for k in self.kept
        ):
            raise InvalidPlanError(f"a candidate's kept units are a tuple of integers, got {self.kept!r}")
        for name, value in fields.items():
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "kept", tuple(int(k) for k in self.kept))
        if self.end > MAX_POSITIONS:
            raise InvalidPlanError(
                f"candidate block ({self.start}, {self.end}] lies beyond {MAX_POSITIONS} positions"
            )
        if self.kernel < 0 or self.stride < 1:
            raise InvalidPlanError(
                f"candidate kernel {self.kernel} / stride {self.stride}: kernel >= 0, stride >= 1"
            )
        if not 0 <= self.start < self.end:
            raise InvalidPlanError(f"candidate block ({self.start}, {self.end}] is empty or negative")
        if list(self.kept) != sorted(set(self.kept)) or any(
            not self.start < k <= self.end for k in self.kept
        ):
            raise InvalidPlanError(
                f"candidate ({self.start}, {self.end}] keeps units {list(self.kept)}: "
                "kept units must be increasing and inside the block"
            )
        if (self.kernel == IDENTITY_KERNEL) != (not self.kept):
            raise InvalidPlanError("kernel 0 means 'no conv kept' and nothing else")
        # candidates key dicts in hot loops (tables, solver): hash the fields once
        object.__setattr__(
            self, "_hash", hash((self.start, self.end, self.kernel, self.stride, self.depthwise, self.kept))
        )

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined]

    @property
    def length(self) -> int:
        """Number of units the block covers."""
        return self.end - self.start

    @property
    def is_identity(self) -> bool:
        """A single conv kept as it is: the block computes what the network computes there."""
        return self.length == 1 and self.kept == (self.end,)

    def describe(self) -> str:
        """The candidate in words, for messages."""
        return f"block ({self.start}, {self.end}] kernel {self.kernel} keeping {list(self.kept)}"

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "kernel": self.kernel,
            "stride": self.stride,
            "depthwise": self.depthwise,
            "kept": list(self.kept),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Candidate:
        expected = {"start", "end", "kernel", "stride", "depthwise", "kept"}
        if not isinstance(data, Mapping) or set(data) != expected:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise InvalidPlanError(f"a candidate needs exactly the keys {sorted(expected)}, got {got}")
        ints = {k: data[k] for k in ("start", "end", "kernel", "stride")}
        kept = data["kept"]
        if (
            any(type(v) is not int for v in ints.values())
            or type(data["depthwise"]) is not bool
            or not isinstance(kept, list)
            or any(type(k) is not int for k in kept)
        ):
            raise InvalidPlanError(f"candidate fields have the wrong types: {dict(data)}")
        return cls(
            start=cast(int, ints["start"]),
            end=cast(int, ints["end"]),
            kernel=cast(int, ints["kernel"]),
            stride=cast(int, ints["stride"]),
            depthwise=cast(bool, data["depthwise"]),
            kept=tuple(cast(list[int], kept)),
        )


@dataclass(frozen=True)
class CandidateRules:
    """Which merges are enumerated. The defaults are the paper's rules."""

    #: inside a block only 1x1 convs may follow a strided conv (paper); False allows the general
    #: stride composition k = k1 + s1 * (k2 - 1)
    pointwise_after_stride: bool = True
    #: largest kernel a merge of two or more convs may have; None = no cap (paper). Deep networks
    #: reach merged kernels whose float64 composition does not fit in memory (resnet101: 47x47)
    max_kernel: int | None = None


PAPER_RULES = CandidateRules()


@dataclass(frozen=True)
class BlockGeometry:
    """What keeping ``kept`` in a block gives: the merged conv's kernel, stride, depthwise-ness and
    padding (all of the block's padding on its input: P = sum_l p_l * prod_{m<l} s_m)."""

    kernel: int
    stride: int
    depthwise: bool
    padding: int = 0
    #: the groups of the merged conv when it is one grouped conv kept alone (1: dense or depthwise)
    groups: int = 1


def block_geometry(spec: Spec, start: int, end: int, kept: Iterable[int]) -> BlockGeometry:
    """Merged kernel size, stride and depthwise flag of block (start, end] keeping ``kept``.

    Composing conv (k1, s1) then (k2, s2) gives kernel k1 + s1 (k2 - 1) and stride s1 s2; with no
    strided conv before the last non-1x1 conv this is the paper's 1 + sum(k_l - 1).
    """
    kept = tuple(kept)
    if not kept:
        return BlockGeometry(IDENTITY_KERNEL, 1, False)
    kernel, stride, padding = 1, 1, 0
    for index in kept:
        unit = spec.unit(index)
        kernel += stride * (unit.kernel - 1)
        padding += stride * unit.padding
        stride *= unit.stride
    inside = list(spec.spans_inside(start, end))
    projection_inside = any(s.projection is not None for s in inside)
    depthwise = all(spec.unit(k).depthwise for k in kept) and not projection_inside
    groups = spec.unit(kept[0]).groups if len(kept) == 1 and not inside else 1
    return BlockGeometry(kernel, stride, depthwise, padding, groups)


def check_candidate(spec: Spec, candidate: Candidate) -> None:
    """Raise InvalidPlanError unless ``candidate`` can be realised exactly on ``spec``.

    This checks structure, not the enumeration rules: any candidate whose merge is exact is accepted.
    """
    c = candidate
    where = f"candidate ({c.start}, {c.end}]"
    if c.end > spec.length:
        raise InvalidPlanError(f"{where} ends past the last position {spec.length} of this spec")
    if not spec.block_is_valid(c.start, c.end):
        raise InvalidPlanError(f"{where} crosses a barrier or only partly overlaps a residual span")
    kept = set(c.kept)
    for unit in spec.units_in(c.start, c.end):
        if unit.index not in kept and not unit.reducible:
            raise InvalidPlanError(
                f"{where} drops unit {unit.index} ({unit.path}), which changes channels or stride"
            )
    geometry = block_geometry(spec, c.start, c.end, c.kept)
    if (c.kernel, c.stride, c.depthwise) != (geometry.kernel, geometry.stride, geometry.depthwise):
        raise InvalidPlanError(
            f"{where} says kernel={c.kernel}, stride={c.stride}, depthwise={c.depthwise} but keeping "
            f"units {list(c.kept)} of this spec gives kernel={geometry.kernel}, "
            f"stride={geometry.stride}, depthwise={geometry.depthwise}: it belongs to another spec"
        )


def _transition_allowed(rules: CandidateRules, seen_stride: bool, unit: Unit) -> bool:
    return not (rules.pointwise_after_stride and seen_stride and unit.kernel > 1)


#: the selection methods: LayerMerge, the paper's two baselines as restrictions of it, and
#: lmzoo's union of LayerMerge's and layer pruning's sets (an extension, not the paper's)
Method = Literal["layermerge", "depth", "layer", "layermerge-union"]
METHODS: tuple[Method, ...] = ("layermerge", "depth", "layer", "layermerge-union")
DEFAULT_METHOD: Method = "layermerge"


def check_method(method: object) -> Method:
    if method not in METHODS:
        raise InvalidArgumentError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return cast(Method, method)


def candidates(
    spec: Spec, rules: CandidateRules = PAPER_RULES, *, method: Method = DEFAULT_METHOD
) -> list[Candidate]:
    """The candidates ``method`` chooses from, sorted by (start, end, kernel, depthwise, kept).

    - ``"layermerge"`` (default): LayerMerge's set, described below;
    - ``"depth"`` (Kim et al. 2023, depth compression): every valid block with all its convs kept
      (activations removed and convs merged, nothing pruned);
    - ``"layer"`` (layer pruning): single-unit blocks only, each conv kept or, when it preserves the
      shape, replaced by the identity (kernel 0); every activation stays;
    - ``"layermerge-union"`` (an lmzoo extension; DESIGN §4): LayerMerge's set together with layer
      pruning's, so a conv may also be dropped while the activations around it stay. The paper's
      LayerMerge offers that kernel-0 block only on the DDPM upsampling convs; with the union the
      optimum by the tables is never below either method's.

    For each valid block and each reachable (kernel, depthwise) pair one subset of convs is kept:
    the one with the largest sum of weight L1 norms. Irreducible convs (channel change or stride)
    are always kept. The subsets are searched by a dynamic programme over the block's units whose
    state is (kernel so far, stride so far, all-depthwise, any strided conv kept).
    """
    method = check_method(method)
    if method == "depth":
        return _depth_candidates(spec, rules)
    if method == "layer":
        return _layer_candidates(spec)
    if method == "layermerge-union":
        union = set(candidates(spec, rules)) | set(_layer_candidates(spec))
        return sorted(union, key=candidate_order)
    found: list[Candidate] = []
    # State key -> (l1 sum, kept units). Keys fully determine the future, so keeping the best
    # l1 per key is exact.
    State = tuple[int, int, bool, bool]
    for start in range(spec.length):
        states: dict[State, tuple[float, tuple[int, ...]]] = {(1, 1, True, False): (0.0, ())}
        for end in range(start + 1, spec.length + 1):
            unit = spec.unit(end)
            nxt: dict[State, tuple[float, tuple[int, ...]]] = {}
            for (kernel, stride, all_dw, seen_stride), (l1, kept) in states.items():
                if unit.reducible:
                    _offer(nxt, (kernel, stride, all_dw, seen_stride), (l1, kept))
                if _transition_allowed(rules, seen_stride, unit):
                    key = (
                        kernel + stride * (unit.kernel - 1),
                        stride * unit.stride,
                        all_dw and unit.depthwise,
                        seen_stride or unit.stride > 1,
                    )
                    _offer(nxt, key, (l1 + unit.weight_l1, (*kept, end)))
            states = nxt
            if spec.block_is_valid(start, end):
                found.extend(_emit(spec, rules, start, end, states))
            if spec.positions[end].barrier:
                break
    found.sort(key=candidate_order)
    return found


def all_candidates(spec: Spec, rules: CandidateRules = PAPER_RULES) -> list[Candidate]:
    """Every method's candidates together, sorted: the rows of latency and importance tables, so
    that one pair of tables serves LayerMerge and both baselines."""
    return sorted({c for m in METHODS for c in candidates(spec, rules, method=m)}, key=candidate_order)


def candidate_order(c: Candidate) -> tuple[int, int, int, bool, tuple[int, ...]]:
    """Candidates' natural order, as a key (much faster than the dataclass comparisons)."""
    return (c.start, c.end, c.kernel, c.depthwise, c.kept)


def _offer(
    states: dict[Any, tuple[float, tuple[int, ...]]], key: Any, value: tuple[float, tuple[int, ...]]
) -> None:
    old = states.get(key)
    if old is None or _better(value, old):
        states[key] = value


def _better(a: tuple[float, tuple[int, ...]], b: tuple[float, tuple[int, ...]]) -> bool:
    """Larger L1 sum wins; ties go to the lexicographically smaller kept tuple (deterministic)."""
    return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])


def _emit(
    spec: Spec,
    rules: CandidateRules,
    start: int,
    end: int,
    states: Mapping[tuple[int, int, bool, bool], tuple[float, tuple[int, ...]]],
) -> list[Candidate]:
    units = spec.units_in(start, end)
    best: dict[tuple[int, bool], tuple[float, tuple[int, ...], int]] = {}
    projection_inside = any(s.projection is not None for s in spec.spans_inside(start, end))
    for (kernel, stride, all_dw, _), (l1, kept) in states.items():
        if not kept:
            # Dropping every conv is the paper's kernel-0 option, allowed only on removable units
            # (every dropped unit is reducible, so shapes are preserved).
            if not all(u.removable for u in units):
                continue
            key = (IDENTITY_KERNEL, False)
        else:
            if any(u.index not in kept and not u.reducible for u in units):
                continue
            if rules.max_kernel is not None and len(kept) > 1 and kernel > rules.max_kernel:
                continue
            key = (kernel, all_dw and not projection_inside)
        old = best.get(key)
        if old is None or _better((l1, kept), old[:2]):
            best[key] = (l1, kept, stride)
    return [
        Candidate(start, end, kernel, stride if kernel else 1, depthwise, kept)
        for (kernel, depthwise), (_, kept, stride) in best.items()
    ]


def _depth_candidates(spec: Spec, rules: CandidateRules) -> list[Candidate]:
    found = []
    for start in range(spec.length):
        seen_stride = False
        for end in range(start + 1, spec.length + 1):
            unit = spec.unit(end)
            if not _transition_allowed(rules, seen_stride, unit):
                break
            seen_stride = seen_stride or unit.stride > 1
            kept = tuple(range(start + 1, end + 1))
            g = block_geometry(spec, start, end, kept)
            capped = rules.max_kernel is not None and end - start > 1 and g.kernel > rules.max_kernel
            if spec.block_is_valid(start, end) and not capped:
                found.append(Candidate(start, end, g.kernel, g.stride, g.depthwise, kept))
            if spec.positions[end].barrier:
                break
    return found


def _layer_candidates(spec: Spec) -> list[Candidate]:
    found = []
    for unit in spec.units:
        start, end = unit.index - 1, unit.index
        if unit.reducible:
            found.append(Candidate(start, end, IDENTITY_KERNEL, 1, False, ()))
        g = block_geometry(spec, start, end, (unit.index,))
        found.append(Candidate(start, end, g.kernel, g.stride, g.depthwise, (unit.index,)))
    return found
