"""Plans made for an earlier spec of the same network (an adapter that since numbers more units)
carried onto today's spec, meaning for meaning: every unit keeps its block, kernel and kept convs,
and each unit the earlier spec did not have becomes a block of its own, kept as it is."""

from __future__ import annotations

from lmzoo.core.candidates import Candidate, block_geometry
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import InvalidPlanError


def lift_plan(plan: Plan, earlier: Spec, spec: Spec) -> Plan:
    """``plan`` (made for ``earlier``) as a plan of ``spec``. Units are matched by module path; the
    units of a block must stay consecutive, and the units ``spec`` adds must not be removable (a plan
    that never mentioned them can only have kept them)."""
    plan.validate(earlier)
    index = {u.path: u.index for u in spec.units}
    missing = [u.path for u in earlier.units if u.path not in index]
    if missing:
        raise InvalidPlanError(
            f"the network no longer has unit {missing[0]}: the plan cannot be carried over"
        )
    new_index = {u.index: index[u.path] for u in earlier.units}
    covered: set[int] = set()
    blocks: list[Candidate] = []
    for block in plan:
        units = [new_index[i] for i in range(block.start + 1, block.end + 1)]
        if units != list(range(units[0], units[-1] + 1)):
            raise InvalidPlanError(f"{block.describe()} is no longer one run of consecutive units")
        covered.update(units)
        kept = tuple(new_index[k] for k in block.kept)
        blocks.append(Candidate(units[0] - 1, units[-1], block.kernel, block.stride, block.depthwise, kept))
    for unit in spec.units:
        if unit.index in covered:
            continue
        if unit.removable:
            raise InvalidPlanError(
                f"unit {unit.path} is new and removable: the plan does not say whether it is kept"
            )
        g = block_geometry(spec, unit.index - 1, unit.index, (unit.index,))
        blocks.append(Candidate(unit.index - 1, unit.index, g.kernel, g.stride, g.depthwise, (unit.index,)))
    blocks.sort(key=lambda b: b.start)
    lifted = Plan(blocks, (new_index[p] for p in plan.linear), (new_index[p] for p in plan.activated))
    lifted.validate(spec)
    return lifted
