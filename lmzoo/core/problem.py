"""The dynamic program's input (DESIGN §7): for a method and an objective, the options the DP chooses
from (each a transition (start, end] standing for one or more blocks), with their latencies and
objective terms, checked to cover the network the tables were made for.

Methods (DESIGN §7) are the same DP over different options:

- ``layermerge``: every candidate is an option;
- ``layer``: single-unit candidates only (keep the conv or replace it by the identity);
- ``depth``: Kim et al. 2023's two-stage DP. Stage 1 finds, for every activation-free segment
  (i, j] that has an all-convs-kept candidate, the fastest way to run it as one or several merged
  convs (a shortest path over the all-kept candidates inside it); stage 2 is the solver's DP over
  segments, with the segment's importance and its stage-1 latency.
- ``layermerge-union`` (an lmzoo extension): LayerMerge's candidates together with layer pruning's.

Objectives (what "summed importance" sums):

- ``sum`` (the paper's, and its official code's): maximise sum_c I_c. With I = exp(Δ/100) every
  block contributes about 1 whatever its accuracy, so this objective also rewards plans with more
  blocks (more kept activations): one block more is worth about 100 points of Δtop-1.
- ``product``: maximise prod_c I_c, i.e. sum_c log I_c = sum_c Δ_c / 100 for classifiers: the
  additive estimate of the compressed network's accuracy change. Splitting an unchanged block
  (Δ = 0, log I = 0) in two changes nothing, so the block count carries no weight.
- ``kept`` (layer pruning only, the official kim24layer code's knapsack): maximise the sum over the
  *kept* removable convs of exp(drop / 100) = 1 / I_drop, where I_drop = exp(Δ / 100) is the
  importance of removing that conv; a removed conv, or one that cannot be removed, adds 0. Each kept
  conv is worth about 1, so this keeps as many convs as fit, the drops breaking near-ties.
- ``normalized:ALPHA`` (depth compression only, Kim et al. 2023's official ``generate_ext_imp_table``
  with ``--norm single``): maximise sum_c h_c with h_c = log I_c - ALPHA * mean_s log I_s, the mean
  over the single-unit segments s (log I is the official score Δtop-1 in units of 100 points, or
  -ΔL/L for a DDPM: a scale the argmax ignores). Each segment earns the bonus -ALPHA * mean: when
  single-unit entries are measured (the ``single`` reinit rule) their mean is negative and a larger
  ALPHA keeps more activations; when they are I = 1 unmeasured, the mean is 0 and this is ``product``.
  ``normalized`` alone is ALPHA = 1, the official default; its README solves MobileNetV2-1.0 with 1.6
  and MobileNetV2-1.4 with 1.2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lmzoo.core.activations import ActivationState, Entry, allowed_states, switchable, table_key
from lmzoo.core.candidates import (
    PAPER_RULES,
    Candidate,
    CandidateRules,
    Method,
    candidate_order,
    candidates,
    check_method,
)
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.core.tables import ImportanceTable, LatencyTable
from lmzoo.errors import InvalidArgumentError, InvalidTableError

#: an objective's name, with its parameter after a colon where it takes one ("normalized:1.6")
Objective = str
OBJECTIVES: tuple[str, ...] = ("sum", "product", "kept", "normalized")
#: the paper's objective (DESIGN §7)
DEFAULT_OBJECTIVE: Objective = "sum"
#: each method's objective when none is given: the one its official code maximises
METHOD_OBJECTIVES: dict[str, Objective] = {"layer": "kept", "depth": "normalized"}
#: the only method each method-specific objective applies to, and that method in words
OBJECTIVE_METHODS = {"kept": ("layer", "layer pruning"), "normalized": ("depth", "depth compression")}
#: ALPHA of ``normalized`` alone: the official generate_tables.py's default
DEFAULT_ALPHA = 1.0
#: ALPHA is a weight of the mean single-unit score: beyond this it is no longer a normalisation
MAX_ALPHA = 100.0


def default_objective(method: object) -> Objective:
    """The objective ``method`` uses when none is given (the official code's)."""
    return METHOD_OBJECTIVES.get(str(method), DEFAULT_OBJECTIVE)


def check_objective(objective: object, method: object = None) -> Objective:
    """``objective`` (None: ``method``'s default), checked to exist and to apply to ``method``."""
    if objective is None:
        return default_objective(method)
    if not isinstance(objective, str):
        raise InvalidArgumentError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    name, _, parameter = objective.partition(":")
    if name not in OBJECTIVES or (parameter and name != "normalized"):
        raise InvalidArgumentError(
            f"objective must be one of {', '.join(OBJECTIVES)} (normalized:ALPHA takes a weight), "
            f"got {objective!r}"
        )
    if parameter:
        normalization_alpha(objective)
    only, words = OBJECTIVE_METHODS.get(name, (None, ""))
    if only is not None and method is not None and method != only:
        raise InvalidArgumentError(f"objective {name!r} is {words}'s (method={only!r}), not {method}'s")
    return objective


def normalization_alpha(objective: str) -> float:
    """ALPHA of a ``normalized[:ALPHA]`` objective."""
    _, _, parameter = objective.partition(":")
    if not parameter:
        return DEFAULT_ALPHA
    try:
        alpha = float(parameter)
    except ValueError:
        alpha = math.nan
    if not 0 <= alpha <= MAX_ALPHA:
        raise InvalidArgumentError(
            f"objective {objective!r}: ALPHA must be a number from 0 to {MAX_ALPHA:g} "
            "(official: 1.0; 1.6 for MobileNetV2-1.0, 1.2 for MobileNetV2-1.4)"
        )
    return alpha


@dataclass(frozen=True)
class Option:
    """One DP transition (start, end]: the blocks it stands for, its latency and importance.
    ``start`` and ``end`` are DP nodes: positions, except in depth compression with activation
    states, where a switchable position is two nodes (without and with its activation).
    ``end_linear`` / ``end_activated``: the option removes / inserts the activation at its last
    block's end against lmzoo's rule (an activation state)."""

    start: int
    end: int
    latency_ms: float
    importance: float
    blocks: tuple[Candidate, ...]
    end_linear: bool = False
    end_activated: bool = False

    @property
    def linear(self) -> tuple[int, ...]:
        inside = tuple(b.end for b in self.blocks[:-1])
        return (*inside, self.blocks[-1].end) if self.end_linear else inside

    @property
    def activated(self) -> tuple[int, ...]:
        return (self.blocks[-1].end,) if self.end_activated else ()


class Problem:
    """The DP's input: options with their blocks, latencies and importances, grouped by end."""

    def __init__(
        self,
        *,
        length: int,
        options: Sequence[Option],
        latency_of: Mapping[Candidate, float],
        identity_ms: float,
        fixed_ms: float,
        method: Method,
        spec: Spec | None,
        rules: CandidateRules = PAPER_RULES,
    ) -> None:
        self.length = length
        self.rules = rules
        self.options = tuple(options)
        self.latency_of = latency_of
        self.identity_ms = identity_ms
        self.fixed_ms = fixed_ms
        self.method = method
        self.spec = spec
        self.starts = np.array([o.start for o in self.options], dtype=np.int64)
        self.latencies = np.array([o.latency_ms for o in self.options])
        self.importances = np.array([o.importance for o in self.options])
        by_end: list[list[int]] = [[] for _ in range(length + 1)]
        for index, option in enumerate(self.options):
            by_end[option.end].append(index)
        self.by_end = [np.array(group, dtype=np.int64) for group in by_end]

    def speedup(self, chain_ms: float) -> float:
        """Speed-up of a plan with this chain latency over the identity plan, fixed cost included."""
        total = chain_ms + self.fixed_ms
        return math.inf if total == 0 else (self.identity_ms + self.fixed_ms) / total

    def budget_for(self, speedup: float) -> float:
        """The chain budget giving ``speedup``: (identity + fixed) / speedup - fixed."""
        return (self.identity_ms + self.fixed_ms) / speedup - self.fixed_ms

    def plan(self, chosen: Sequence[int] | np.ndarray) -> Plan:
        options = [self.options[int(o)] for o in chosen]
        plan = Plan(
            [b for o in options for b in o.blocks],
            [p for o in options for p in o.linear],
            [p for o in options for p in o.activated],
        )
        if self.spec is not None:
            plan.validate(self.spec)
        return plan

    def chain_ms(self, chosen: Sequence[int] | np.ndarray) -> float:
        return math.fsum(self.latency_of[b] for o in chosen for b in self.options[int(o)].blocks)


def left_to_right(terms: Iterable[float]) -> float:
    """Plain float addition in order, as the DP accumulates (``sum`` compensates since 3.12)."""
    value = 0.0
    for term in terms:
        value += float(term)
    return value


_IN_METHOD: dict[Method, Callable[[Candidate], bool]] = {
    "layermerge": lambda c: True,
    "depth": lambda c: c.kept == tuple(range(c.start + 1, c.end + 1)),
    "layer": lambda c: c.length == 1,
    "layermerge-union": lambda c: True,
}


def objective_terms(
    objective: object,
    importance: Mapping[Candidate, float],
    cands: Iterable[Entry],
    states: Mapping[ActivationState, float] | None = None,
) -> dict[Entry, float]:
    """Each entry's term in the objective: I itself (``sum``), log I (``product``), log I less
    ALPHA times the mean log I of the single-unit all-kept entries, activation states included
    (``normalized``), or under ``kept`` 1 / I of the candidate removing the same conv when the
    candidate keeps it (0 otherwise). ``cands`` may hold activation states of ``states``."""
    objective = check_objective(objective)
    states = states or {}
    cands = list(cands)

    def value(entry: Entry) -> float:
        return states[entry] if isinstance(entry, ActivationState) else importance[entry]

    if objective == "sum":
        return {c: value(c) for c in cands}
    if objective == "product" or objective.startswith("normalized"):
        need = f"objective {objective!r} needs importances > 0"
        terms: dict[Entry, float] = {c: _log_importance(value(c), c, need) for c in cands}
        if objective == "product":
            return terms
        singles: list[Entry] = [c for c in importance if c.is_identity]
        singles += [s for s in states if s.candidate.is_identity]
        if not singles:
            raise InvalidTableError(
                f"objective {objective!r} needs the single-unit entries, and the table has none"
            )
        mean = math.fsum(_log_importance(value(c), c, need) for c in singles) / len(singles)
        bonus = normalization_alpha(objective) * mean
        return {c: t - bonus for c, t in terms.items()}
    removed = {(c.start, c.end): c for c in importance if c.length == 1 and not c.kept}
    terms = {}
    for c in cands:
        if isinstance(c, ActivationState) or c.length != 1:
            raise InvalidArgumentError(f"objective 'kept' is layer pruning's; {c.describe()} is a merge")
        drop = removed.get((c.start, c.end))
        if not c.kept or drop is None:
            terms[c] = 0.0
        else:
            terms[c] = math.exp(-_log_importance(importance[drop], drop, "objective 'kept' needs I > 0"))
    return terms


def _log_importance(value: float, cand: Entry, need: str) -> float:
    """log I, refused (with ``need`` as the reason) when I is not positive."""
    if value <= 0:
        raise InvalidTableError(
            f"{need}, but {cand.describe()} has {value!r}: "
            "use objective='sum', or a table of I = exp(...) values"
        )
    return math.log(value)


def build_problem(
    latency: object,
    importance: object,
    method: object,
    spec: Spec | None,
    objective: object,
    rules: CandidateRules = PAPER_RULES,
) -> Problem:
    if not isinstance(latency, LatencyTable) or not isinstance(importance, ImportanceTable):
        raise InvalidArgumentError(
            "solve/frontier take a LatencyTable and an ImportanceTable (in that order), got "
            f"{type(latency).__name__} and {type(importance).__name__}"
        )
    method = check_method(method)
    objective = check_objective(objective, method)
    spec = spec or latency.spec or importance.spec
    _check_same_network(latency, importance, spec)
    if spec is not None:
        universe = set(candidates(spec, rules, method=method))
        for table in (latency, importance):
            missing = sorted(universe - table.entries.keys())
            if missing:
                raise InvalidTableError(
                    f"the {table.KIND} table lacks {len(missing)} of the {len(universe)} {method} "
                    f"candidates of this network, e.g. {missing[0].describe()}: build it over "
                    f"lmzoo.candidates(spec, method={method!r})"
                )
    else:
        keep = _IN_METHOD[method]
        universe = {c for c in latency.entries if keep(c)}
        others = {c for c in importance.entries if keep(c)}
        if universe != others:
            only_lat, only_imp = sorted(universe - others), sorted(others - universe)
            example = only_lat[0] if only_lat else only_imp[0]
            raise InvalidTableError(
                f"the tables cover different candidates ({len(only_lat)} only in the latency table, "
                f"{len(only_imp)} only in the importance table, e.g. {example.describe()}): build "
                "both over the same candidates, or pass spec= to use exactly the method's set"
            )
    identity = identity_candidates(universe, "")
    length = len(identity)
    if any(c.end > length for c in universe):
        raise InvalidTableError("the tables hold candidates past the last unit of their identity plan")
    states = importance.states if method == "depth" else {}
    terms = objective_terms(objective, importance.entries, [*universe, *states], states)
    if states:
        if spec is None:
            raise InvalidTableError(
                "an importance table with activation states needs its network's spec (pass spec=)"
            )
        options, length = _depth_state_options(spec, universe, latency, terms)
    elif method == "depth":
        options = _depth_options(universe, latency, terms)
    else:
        lat = latency.entries
        options = [
            Option(c.start, c.end, lat[c], terms[c], (c,)) for c in sorted(universe, key=candidate_order)
        ]
    return Problem(
        length=length,
        options=options,
        latency_of=latency.entries,
        identity_ms=math.fsum(latency.entries[c] for c in identity),
        fixed_ms=latency.fixed_ms,
        method=method,
        spec=spec,
        rules=rules,
    )


def _check_same_network(latency: LatencyTable, importance: ImportanceTable, spec: Spec | None) -> None:
    prints = {
        "latency table": latency.spec_fingerprint,
        "importance table": importance.spec_fingerprint,
        "spec": spec.fingerprint if spec is not None else None,
    }
    known = {k: v for k, v in prints.items() if v is not None}
    if len(set(known.values())) > 1:
        detail = ", ".join(f"{k} {v}" for k, v in known.items())
        raise InvalidTableError(f"the tables come from different networks (spec fingerprints: {detail})")


def identity_candidates(universe: Iterable[Candidate], kind: str) -> list[Candidate]:
    keys = set(universe)
    if not keys:
        raise InvalidTableError("the tables hold no candidate of this method (not even the identity plan)")
    length = max(c.end for c in keys)
    singles = {c.end: c for c in keys if c.is_identity}
    missing = [unit for unit in range(1, length + 1) if unit not in singles]
    if missing:
        where = f"the {kind} table" if kind else "the tables"
        raise InvalidTableError(
            f"{where} do not cover the identity plan: no entry keeping unit {missing[0]} alone "
            f"(block ({missing[0] - 1}, {missing[0]}]); tables must include every single-unit candidate"
        )
    return [singles[unit] for unit in range(1, length + 1)]


def _depth_options(
    universe: set[Candidate], latency: LatencyTable, terms: Mapping[Entry, float]
) -> list[Option]:
    """Stage 1 of Kim et al.: the fastest merge pattern of every activation-free segment."""
    return [
        Option(seg.start, seg.end, path_ms, terms[seg], path)
        for seg, path, path_ms in _fastest_patterns(universe, latency)
    ]


def _depth_state_options(
    spec: Spec, universe: set[Candidate], latency: LatencyTable, terms: Mapping[Entry, float]
) -> tuple[list[Option], int]:
    """Kim et al.'s (t, m, a) DP as options over nodes: a switchable position is two nodes (without
    and with its activation), any other position one; every segment gives one option per state it
    offers (``lmzoo.core.activations``), with its stage-1 pattern. When the last position is
    switchable, a final node follows both of its nodes (options without blocks). Returns the
    options and the final node."""
    nodes: dict[tuple[int, bool], int] = {}
    for position in range(spec.length + 1):
        if switchable(spec, position):
            nodes[(position, False)], nodes[(position, True)] = len(nodes), len(nodes) + 1
        else:
            nodes[(position, spec.positions[position].activation is not None)] = len(nodes)
    options = []
    for seg, path, path_ms in _fastest_patterns(universe, latency):
        last = path[-1]
        lmzoo_rule = spec.block_activation(last.start, last.end) is not None
        for state in allowed_states(spec, seg):
            key = table_key(spec, state)
            if key not in terms:
                raise InvalidTableError(
                    f"the importance table's activation states lack {state.describe()}: measure "
                    "every state of lmzoo.core.activations.extra_states(spec, candidates)"
                )
            options.append(
                Option(
                    nodes[(seg.start, state.start_active)],
                    nodes[(seg.end, state.end_active)],
                    path_ms,
                    terms[key],
                    path,
                    end_linear=lmzoo_rule and not state.end_active,
                    end_activated=state.end_active and not lmzoo_rule,
                )
            )
    final = len(nodes) - 1
    if switchable(spec, spec.length):
        final = len(nodes)
        options += [Option(nodes[(spec.length, a)], final, 0.0, 0.0, ()) for a in (False, True)]
    return options, final


def _fastest_patterns(
    universe: set[Candidate], latency: LatencyTable
) -> list[tuple[Candidate, tuple[Candidate, ...], float]]:
    """Every all-kept segment with its fastest merge pattern and that pattern's latency."""
    by_start: dict[int, list[Candidate]] = {}
    for c in sorted(universe, key=candidate_order):
        by_start.setdefault(c.start, []).append(c)
    patterns = []
    for start in sorted(by_start):
        segments = by_start[start]
        last = max(c.end for c in segments)
        # shortest path from `start` over all-kept candidates lying in [start, last]
        fastest: dict[int, tuple[float, tuple[Candidate, ...]]] = {start: (0.0, ())}
        for position in range(start, last):
            if position not in fastest:
                continue
            so_far, path = fastest[position]
            for c in sorted(by_start.get(position, ()), key=lambda c: -c.end):
                if c.end > last:
                    continue
                total = math.fsum((so_far, latency.entries[c]))
                old = fastest.get(c.end)
                # strict: on ties the pattern found first (fewer, longer blocks) stays
                if old is None or total < old[0]:
                    fastest[c.end] = (total, (*path, c))
        for seg in segments:
            total, path = fastest[seg.end]
            patterns.append((seg, path, math.fsum(latency.entries[b] for b in path)))
    return patterns
