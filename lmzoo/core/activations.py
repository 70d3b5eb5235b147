"""Activation states at linear positions: depth compression's extended entries (Kim et al. 2023).

Some positions carry no activation in the original network but one the architecture can insert
(MobileNetV2's linear bottleneck outputs: ``Position.inserted_activation``). lmzoo's default rule
puts it there when a merged block of two or more units ends at such a position and leaves it out
after a single unit. Kim et al.'s depth compression makes it a choice: a segment ending there may
end with the activation or without it, and a segment starting there sees the one chosen. Each
choice is measured as its own importance entry (their ``construct_ext_blks``):

- a segment starting at the chain's input (position 0): the one state it has;
- a segment starting at a switchable position: with or without the activation there, and then an
  activation at its end (inserted if the end is switchable too);
- otherwise, a segment ending at a switchable position: with or without the activation there;
- any other segment: the one state it has.

On timm MobileNetV2-1.0 and -1.4 that is 171 segments and 315 states, as in their tables.

An :class:`ActivationState` is one such entry: a candidate with its start and end activations. The
candidate's plain entry (the importance table's row) is its *default* state, the one lmzoo's rule
gives inside the identity plan; the others are the table's ``states``. The DP then carries the
state of every switchable position (the (t, m, a) DP of their ``optimal_patterns``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lmzoo.core.candidates import Candidate, candidate_order
from lmzoo.core.spec import Spec
from lmzoo.errors import InvalidPlanError


@dataclass(frozen=True)
class ActivationState:
    """``candidate``'s block with an activation at its start (``start_active``) and end
    (``end_active``) or not, the others as in the base network."""

    candidate: Candidate
    start_active: bool
    end_active: bool

    def __post_init__(self) -> None:
        if not isinstance(self.candidate, Candidate):
            raise InvalidPlanError(f"an activation state needs a Candidate, got {self.candidate!r}")
        if type(self.start_active) is not bool or type(self.end_active) is not bool:
            raise InvalidPlanError("an activation state's start_active and end_active are True or False")

    def describe(self) -> str:
        def said(active: bool) -> str:
            return "with" if active else "without"

        return (
            f"{self.candidate.describe()} {said(self.start_active)} an activation at its start and "
            f"{said(self.end_active)} one at its end"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.to_dict(),
            "start_active": self.start_active,
            "end_active": self.end_active,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActivationState:
        expected = {"candidate", "start_active", "end_active"}
        if not isinstance(data, Mapping) or set(data) != expected:
            raise InvalidPlanError(f"an activation state needs exactly the keys {sorted(expected)}")
        return cls(Candidate.from_dict(data["candidate"]), data["start_active"], data["end_active"])


#: an importance entry: a candidate in its default state, or an activation state
Entry = Candidate | ActivationState


def entry_candidate(entry: Entry) -> Candidate:
    return entry.candidate if isinstance(entry, ActivationState) else entry


def state_order(state: ActivationState) -> tuple[Any, ...]:
    return (*candidate_order(state.candidate), state.start_active, state.end_active)


def switchable(spec: Spec, position: int) -> bool:
    """Whether the activation at ``position`` is a choice: none in the network, one insertable."""
    p = spec.positions[position]
    return p.activation is None and p.inserted_activation is not None


def default_state(spec: Spec, cand: Candidate) -> ActivationState:
    """The state ``cand``'s plain importance entry is measured in: the identity plan around it (the
    start as in the network), lmzoo's rule at its end (``Spec.block_activation``)."""
    start = spec.positions[cand.start].activation is not None
    return ActivationState(cand, start, spec.block_activation(cand.start, cand.end) is not None)


def table_key(spec: Spec, state: ActivationState) -> Entry:
    """Where an importance table keeps ``state``: its candidate's plain entry when it is the
    default state, else among the table's states."""
    return state.candidate if state == default_state(spec, state.candidate) else state


def allowed_states(spec: Spec, cand: Candidate) -> list[ActivationState]:
    """The states depth compression chooses from for segment ``cand`` (the module docstring's
    rules), its default state first. The default is always offered, so the identity plan exists."""
    default = default_state(spec, cand)
    start_free, end_free = switchable(spec, cand.start), switchable(spec, cand.end)
    if cand.start == 0:
        wanted = []
    elif start_free:
        end = True if end_free else default.end_active
        wanted = [(False, end), (True, end)]
    elif end_free:
        wanted = [(default.start_active, False), (default.start_active, True)]
    else:
        wanted = []
    states = [default]
    for start, end in wanted:
        state = ActivationState(cand, start, end)
        if state != default:
            states.append(state)
    return states


def extra_states(spec: Spec, cands: Iterable[Candidate]) -> list[ActivationState]:
    """The states of ``cands`` beyond their defaults: the entries an extended table adds."""
    found = [s for c in cands for s in allowed_states(spec, c)[1:]]
    return sorted(found, key=state_order)


def check_state(spec: Spec, state: ActivationState) -> None:
    """Raise InvalidPlanError unless ``state`` is one depth compression offers on ``spec``."""
    if state not in allowed_states(spec, state.candidate):
        raise InvalidPlanError(f"{state.describe()} is not a state depth compression offers on this network")
