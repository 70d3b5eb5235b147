"""Latency and importance tables: one number per candidate (DESIGN §6), as plain typed data.

Keys are :class:`Candidate` objects, stored in JSON as candidate dicts (never as strings to be
parsed back). No I/O here: ``lmzoo.tables`` adds ``save`` / ``load`` (the classes ``lmzoo``
exports), the core reads and writes only ``to_dict`` / ``from_dict``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from lmzoo.core.activations import ActivationState, state_order
from lmzoo.core.candidates import Candidate
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import InvalidPlanError, InvalidSpecError, InvalidTableError

T = TypeVar("T", bound="_CandidateTable")

#: the largest value a table holds (ms, or importance): a plan's sum over thousands of blocks stays
#: finite, and the DP's additions keep their precision
MAX_TABLE_VALUE = 1e12
#: the smallest non-zero latency, in ms (a femtosecond, far below any measurement): a grid over a
#: budget of smaller latencies would need more steps than a float can count
MIN_LATENCY_MS = 1e-12


class _CandidateTable:
    """Shared plumbing: validated entries, the spec fingerprint they belong to, free-form metadata."""

    FORMAT: ClassVar[str]
    KIND: ClassVar[str]  # "latency" / "importance", for messages
    VALUE_KEY: ClassVar[str]  # the JSON key holding each entry's number
    SMALLEST: ClassVar[float] = 0.0  # the smallest non-zero value an entry may have

    __slots__ = ("_entries", "metadata", "spec", "spec_fingerprint")

    def __init__(
        self,
        entries: Mapping[Candidate, float],
        *,
        spec_fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        spec: Spec | None = None,
    ) -> None:
        if not isinstance(entries, Mapping):
            raise InvalidTableError(f"{self.KIND} entries must be a mapping Candidate -> number")
        checked: dict[Candidate, float] = {}
        for cand, value in entries.items():
            if not isinstance(cand, Candidate):
                raise InvalidTableError(
                    f"{self.KIND} table keys must be lmzoo Candidates, got {type(cand).__name__}"
                )
            checked[cand] = _non_negative(value, f"{self.KIND} of {cand.describe()}", self.SMALLEST)
        if not checked:
            raise InvalidTableError(f"the {self.KIND} table is empty")
        self._entries = MappingProxyType(checked)
        if spec is not None:
            if spec_fingerprint not in (None, spec.fingerprint):
                raise InvalidTableError("spec_fingerprint does not match the spec given with the table")
            spec_fingerprint = spec.fingerprint
        #: the network the table was made for, when known (lets the solver use each method's exact set)
        self.spec = spec
        self.spec_fingerprint = spec_fingerprint
        self.metadata = dict(metadata or {})
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InvalidTableError(f"{self.KIND} table metadata must be plain JSON data: {err}") from None

    def for_network(self: T, spec: Spec) -> T:
        """This table, after checking that it was made for ``spec``'s network."""
        if self.spec_fingerprint is not None and self.spec_fingerprint != spec.fingerprint:
            raise InvalidTableError(f"this {self.KIND} table was made for another network than the one given")
        return self

    @property
    def entries(self) -> Mapping[Candidate, float]:
        """Candidate -> value (read-only)."""
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self._entries)

    def __getitem__(self, cand: Candidate) -> float:
        try:
            return self._entries[cand]
        except KeyError:
            raise InvalidTableError(f"the {self.KIND} table has no entry for {cand.describe()}") from None

    def __contains__(self, cand: object) -> bool:
        return cand in self._entries

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _CandidateTable)
            and other.FORMAT == self.FORMAT  # a table read from a file equals the same table in memory
            and self.to_dict() == other.to_dict()
        )

    def __hash__(self) -> int:
        return hash((self.FORMAT, len(self._entries), self.spec_fingerprint))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} entries, spec {self.spec_fingerprint})"

    # -- serialisation --------------------------------------------------------------------------
    def _extra_fields(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "spec_fingerprint": self.spec_fingerprint,
            "spec": self.spec.to_dict() if self.spec is not None else None,
            **self._extra_fields(),
            "metadata": self.metadata,
            "entries": [
                {"candidate": c.to_dict(), self.VALUE_KEY: v} for c, v in sorted(self._entries.items())
            ],
        }

    @classmethod
    def _from_parts(cls: type[T], entries: dict[Candidate, float], data: Mapping[str, Any]) -> T:
        return cls(
            entries, spec_fingerprint=data["spec_fingerprint"], metadata=data["metadata"], spec=_spec(data)
        )

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        if not isinstance(data, Mapping) or data.get("format") != cls.FORMAT:
            raise InvalidTableError(f"not an lmzoo {cls.KIND} table: expected 'format': {cls.FORMAT!r}")
        fingerprint = data.get("spec_fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise InvalidTableError("'spec_fingerprint' must be a string or null")
        if not isinstance(data.get("metadata"), dict):
            raise InvalidTableError("'metadata' must be an object")
        rows = data.get("entries")
        if not isinstance(rows, list):
            raise InvalidTableError("'entries' must be a list of {candidate, value} objects")
        entries: dict[Candidate, float] = {}
        for row in rows:
            if not isinstance(row, Mapping) or set(row) != {"candidate", cls.VALUE_KEY}:
                raise InvalidTableError(
                    f"each {cls.KIND} entry needs exactly the keys 'candidate' and {cls.VALUE_KEY!r}"
                )
            try:
                cand = Candidate.from_dict(row["candidate"])
            except InvalidPlanError as err:
                raise InvalidTableError(f"bad candidate in the {cls.KIND} table: {err}") from None
            if cand in entries:
                raise InvalidTableError(f"the {cls.KIND} table lists {cand.describe()} twice")
            entries[cand] = row[cls.VALUE_KEY]
        return cls._from_parts(entries, data)


class LatencyTable(_CandidateTable):
    """Milliseconds per candidate: the merged conv plus the block's activation at its input shape.

    ``fixed_ms`` is the measured latency of everything outside the chain (stem, head, adds, norms,
    attention). ``metadata`` records how the numbers were measured (backend, device, batch, ...).
    """

    FORMAT = "lmzoo.latency-table/1"
    KIND = "latency"
    VALUE_KEY = "ms"
    SMALLEST = MIN_LATENCY_MS

    __slots__ = ("fixed_ms",)

    def __init__(
        self,
        entries: Mapping[Candidate, float],
        *,
        fixed_ms: float = 0.0,
        spec_fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        spec: Spec | None = None,
    ) -> None:
        super().__init__(entries, spec_fingerprint=spec_fingerprint, metadata=metadata, spec=spec)
        self.fixed_ms = _non_negative(fixed_ms, "the fixed cost 'fixed_ms'", MIN_LATENCY_MS)

    def _extra_fields(self) -> dict[str, Any]:
        return {"fixed_ms": self.fixed_ms}

    @classmethod
    def _from_parts(cls, entries: dict[Candidate, float], data: Mapping[str, Any]) -> LatencyTable:
        if "fixed_ms" not in data:
            raise InvalidTableError("a latency table needs 'fixed_ms'")
        return cls(
            entries,
            fixed_ms=data["fixed_ms"],
            spec_fingerprint=data["spec_fingerprint"],
            metadata=data["metadata"],
            spec=_spec(data),
        )

    def chain_ms(self, plan: Plan) -> float:
        """The plan's latency by the table: the sum of its blocks' entries (fixed cost excluded)."""
        return math.fsum(self[block] for block in plan)

    def predict(self, plan: Plan) -> float:
        """Predicted network latency of ``plan`` in ms: its blocks' entries plus the fixed cost."""
        return self.chain_ms(plan) + self.fixed_ms


class ImportanceTable(_CandidateTable):
    """Importance per candidate: the network's performance with only that block compressed, after a
    short recovery, relative to the base (exp(Δtop-1 / 100), or exp(−ΔL / L_base) for diffusion).

    ``states`` (optional) holds depth compression's extended entries: a candidate measured with
    other activations at its ends than its plain entry's (``lmzoo.core.activations``); a table
    with them lets the depth DP choose the activation at every switchable position."""

    FORMAT = "lmzoo.importance-table/1"
    KIND = "importance"
    VALUE_KEY = "value"

    __slots__ = ("_states",)

    def __init__(
        self,
        entries: Mapping[Candidate, float],
        *,
        states: Mapping[ActivationState, float] | None = None,
        spec_fingerprint: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        spec: Spec | None = None,
    ) -> None:
        super().__init__(entries, spec_fingerprint=spec_fingerprint, metadata=metadata, spec=spec)
        checked: dict[ActivationState, float] = {}
        for state, value in (states or {}).items():
            if not isinstance(state, ActivationState):
                raise InvalidTableError(f"state keys must be ActivationStates, got {type(state).__name__}")
            if state.candidate not in self.entries:
                raise InvalidTableError(f"the table has a state of {state.candidate.describe()} but no entry")
            checked[state] = _non_negative(value, f"importance of {state.describe()}")
        self._states = MappingProxyType(checked)

    @property
    def states(self) -> Mapping[ActivationState, float]:
        """ActivationState -> value (read-only): the extended entries, empty for most tables."""
        return self._states

    def _extra_fields(self) -> dict[str, Any]:
        if not self._states:  # tables without states keep their files and hashes
            return {}
        return {
            "states": [
                {**s.to_dict(), self.VALUE_KEY: v}
                for s, v in sorted(self._states.items(), key=lambda item: state_order(item[0]))
            ]
        }

    @classmethod
    def _from_parts(cls, entries: dict[Candidate, float], data: Mapping[str, Any]) -> ImportanceTable:
        rows = data.get("states", [])
        if not isinstance(rows, list):
            raise InvalidTableError("'states' must be a list of activation states with their values")
        states: dict[ActivationState, float] = {}
        for row in rows:
            if not isinstance(row, Mapping) or cls.VALUE_KEY not in row:
                raise InvalidTableError(f"each state needs a {cls.VALUE_KEY!r}")
            try:
                state = ActivationState.from_dict({k: v for k, v in row.items() if k != cls.VALUE_KEY})
            except InvalidPlanError as err:
                raise InvalidTableError(f"bad activation state in the importance table: {err}") from None
            if state in states:
                raise InvalidTableError(f"the importance table lists {state.describe()} twice")
            states[state] = row[cls.VALUE_KEY]
        return cls(
            entries,
            states=states,
            spec_fingerprint=data["spec_fingerprint"],
            metadata=data["metadata"],
            spec=_spec(data),
        )


def _spec(data: Mapping[str, Any]) -> Spec | None:
    raw = data.get("spec")
    if raw is None:
        return None
    try:
        return Spec.from_dict(raw)
    except InvalidSpecError as err:
        raise InvalidTableError(f"the table's 'spec' is malformed: {err}") from None


def _non_negative(value: object, what: str, smallest: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTableError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond floats
        number = math.inf
    if not math.isfinite(number) or not 0 <= number <= MAX_TABLE_VALUE:
        raise InvalidTableError(f"{what} is {number}: values must be finite, >= 0 and <= {MAX_TABLE_VALUE:g}")
    if 0 < number < smallest:
        raise InvalidTableError(f"{what} is {number}: values must be 0 or at least {smallest:g}")
    return number
