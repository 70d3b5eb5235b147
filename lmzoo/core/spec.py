"""The network spec: a traced network seen as a chain of convolution units (DESIGN §3).

Units u_1..u_L are convolutions with their foldable norms. Position l is the output of unit l
(position 0 is the input of u_1). The value at a position is

    value(l) = act_l(conv_l(value(l - 1)) + shortcut)        (shortcut only where a span ends at l)

so an activation at a residual target applies after the addition, as in ResNet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from lmzoo.errors import InvalidSpecError

#: Activation kinds a position can carry (lmzoo.adapters.base.activations makes their modules); a
#: kind may carry its parameter after a colon ("leaky_relu:0.2"). "groupnorm+silu" is the DDPM
#: norm+activation pair.
ACTIVATION_KINDS = frozenset(
    {
        "relu",
        "relu6",
        "silu",
        "gelu",
        "gelu-tanh",
        "hardswish",
        "hardsigmoid",
        "sigmoid",
        "tanh",
        "mish",
        "selu",
        "leaky_relu",
        "elu",
        "groupnorm+silu",
    }
)


@dataclass(frozen=True)
class Unit:
    """One convolution (with its norm) of the chain; unit ``index`` spans positions (index-1, index]."""

    index: int
    path: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    depthwise: bool
    input_shape: tuple[int, int, int]
    weight_l1: float
    #: the unit may be dropped entirely (the paper's kernel-0 option, e.g. DDPM upsampling convs)
    removable: bool = False
    #: the groups of a grouped conv that is not depthwise (ResNeXt, RegNet); 1 otherwise. Composed
    #: with others it merges densely; kept alone it keeps its groups
    groups: int = 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.groups == 1:  # specs written before it existed keep their fingerprints
            del data["groups"]
        return data

    @property
    def reducible(self) -> bool:
        """Whether the conv may be pruned (replaced by identity): same channels and stride 1."""
        return self.in_channels == self.out_channels and self.stride == 1


@dataclass(frozen=True)
class Position:
    """A point between units; ``activation`` applies after any residual addition there."""

    index: int
    activation: str | None = None
    #: no block may cross this position (pooling, attention, resampling, stage breaks ...)
    barrier: bool = False
    #: activation the architecture inserts when a block of >= 2 units ends here without one
    inserted_activation: str | None = None


@dataclass(frozen=True)
class ResidualSpan:
    """value(target) = branch(value(source)) + shortcut(value(source)).

    ``projection`` is the module path of a 1x1 conv (+ norm) shortcut, ``None`` for identity: an
    ``nn.Sequential(conv, norm)``, or the conv alone when ``projection_norm`` names its norm.
    """

    source: int
    target: int
    projection: str | None = None
    stride: int = 1
    projection_norm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.projection_norm is None:  # specs written before it existed keep their fingerprints
            del data["projection_norm"]
        return data


@dataclass(frozen=True)
class Spec:
    """The traced structure of a network, as the candidate enumeration and solver see it."""

    family: str
    units: tuple[Unit, ...]
    positions: tuple[Position, ...]
    spans: tuple[ResidualSpan, ...] = ()
    #: shapes of the example inputs used to trace (batch dimension included)
    input_shapes: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        length = len(self.units)
        if length == 0:
            raise InvalidSpecError("a spec needs at least one unit")
        if [u.index for u in self.units] != list(range(1, length + 1)):
            raise InvalidSpecError("units must be numbered 1..L in order")
        if [p.index for p in self.positions] != list(range(length + 1)):
            raise InvalidSpecError(f"a spec with {length} units needs positions 0..{length}")
        for p in self.positions:
            for kind in (p.activation, p.inserted_activation):
                if kind is not None and kind.split(":", 1)[0] not in ACTIVATION_KINDS:
                    raise InvalidSpecError(f"unknown activation kind {kind!r} at position {p.index}")
        for u in self.units:
            if u.kernel < 1 or u.stride < 1 or u.padding < 0:
                raise InvalidSpecError(f"unit {u.index} ({u.path}) has an invalid conv geometry")
        for s in self.spans:
            if not 0 <= s.source < s.target <= length:
                raise InvalidSpecError(f"residual span ({s.source}, {s.target}) is outside 0..{length}")

    @property
    def length(self) -> int:
        """L, the number of units."""
        return len(self.units)

    def unit(self, index: int) -> Unit:
        """Unit ``index`` (1-based)."""
        return self.units[index - 1]

    def units_in(self, start: int, end: int) -> tuple[Unit, ...]:
        """The units of block (start, end]."""
        return self.units[start:end]

    def spans_inside(self, start: int, end: int) -> Iterator[ResidualSpan]:
        """Residual spans lying entirely inside block (start, end]: fused into its kernel."""
        return (s for s in self.spans if start <= s.source and s.target <= end)

    def block_activation(self, start: int, end: int) -> str | None:
        """The activation after block (start, end]: the position's own, or the one the architecture
        inserts where a block of >= 2 units ends on a linear position (MobileNetV2)."""
        position = self.positions[end]
        if position.activation is None and end - start >= 2:
            return position.inserted_activation
        return position.activation

    def block_is_valid(self, start: int, end: int) -> bool:
        """A block is valid when it crosses no barrier and no residual span only partly overlaps it."""
        if not 0 <= start < end <= self.length:
            return False
        if any(self.positions[p].barrier for p in range(start + 1, end)):
            return False
        for s in self.spans:
            outside = s.target <= start or s.source >= end
            contains = s.source <= start and end <= s.target
            inside = start <= s.source and s.target <= end
            if not (outside or contains or inside):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe structure (used for fingerprints and checkpoint configs)."""
        return {
            "family": self.family,
            "units": [u.to_dict() for u in self.units],
            "positions": [asdict(p) for p in self.positions],
            "spans": [s.to_dict() for s in self.spans],
            "input_shapes": [list(s) for s in self.input_shapes],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Spec:
        """Inverse of ``to_dict``; malformed data raises InvalidSpecError."""
        try:
            units = tuple(Unit(**{**u, "input_shape": tuple(u["input_shape"])}) for u in data["units"])
            return cls(
                family=str(data["family"]),
                units=units,
                positions=tuple(Position(**p) for p in data["positions"]),
                spans=tuple(ResidualSpan(**s) for s in data["spans"]),
                input_shapes=tuple(tuple(int(d) for d in s) for s in data["input_shapes"]),
            )
        except (KeyError, TypeError) as err:
            raise InvalidSpecError(f"not a valid lmzoo spec: {err}") from None

    @property
    def fingerprint(self) -> str:
        """A short hash of the structure (weights excluded) identifying compatible specs."""
        data = self.to_dict()
        for u in data["units"]:
            u.pop("weight_l1")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
