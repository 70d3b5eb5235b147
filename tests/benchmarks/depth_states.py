"""Depth compression with and without its activation states, on a zoo recipe: the extra entries'
cost and values, and the plans each table selects at the recipe's speed-ups.

    .venv/bin/python tests/benchmarks/depth_states.py --recipe mobilenetv2-fmnist-layermerge \\
        --latency cards/mobilenetv2-fmnist-layermerge-1.6x/tables/latency.json --workdir WORK

The states are measured into the build's own importance stage (``importance-states.json``, the
plain entries reused), so a later ``lmzoo build <stem>-depth-<s>x`` finds them. The committed
latency table is used, so nothing is timed (the machine may be busy). Prints, per speed-up: blocks,
kept activations, inserted / removed ReLU6 at linear positions, predicted speed-up and the
objective (Kim et al.'s normalized score, in Δtop-1 points) of the plan with states against the plan
of lmzoo's fixed rule, both scored by the extended table.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from lmzoo.core.activations import default_state, switchable
from lmzoo.core.plan import Plan
from lmzoo.core.problem import check_objective
from lmzoo.core.solver import plan_importance, solve_reachable
from lmzoo.pipeline import Build
from lmzoo.recipes import load_recipe
from lmzoo.tables import ImportanceTable, LatencyTable


def describe(plan: Plan, spec, latency: LatencyTable, table: ImportanceTable, objective: str) -> dict:
    base_ms = latency.predict(Plan.identity(spec))
    inserted = [p for p in plan.activated]
    removed = [p for p in plan.linear if switchable(spec, p) and p in {b.end for b in plan}]
    return {
        "blocks": len(plan),
        "activations": sum(1 for b in plan if plan.activation(spec, b) is not None),
        "inserted_relu6": len(inserted),
        "linear_ends_without_relu6": len(removed),
        "predicted_speedup": base_ms / latency.predict(plan),
        "objective": 100 * plan_importance(table, plan, method="depth", objective=objective),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="mobilenetv2-fmnist-layermerge")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--latency", required=True, help="a committed latency table of the recipe")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    recipe, _ = load_recipe(args.recipe, args.profile)
    build = Build(recipe.with_method("depth"), workdir=args.workdir, progress=True)
    spec, _ = build.traced
    plain = build.importance(states=False)[0]
    extended, path = build.importance(states=True)
    latency = LatencyTable.load(args.latency).for_network(spec)
    objective = check_objective(recipe.solve.depth_objective, "depth")

    records = {}
    for record_path in path.parent.glob("importance-*/*.json"):
        data = json.loads(record_path.read_text())
        if isinstance(data, dict) and "start_active" in data.get("candidate", {}):
            records[record_path.name] = data["wall_s"]
    states = extended.states
    print(
        f"{recipe.name}: {len(states)} activation states measured in {sum(records.values()) / 60:.1f} min "
        f"({len(plain.entries)} plain entries in {plain.metadata['wall_s_total'] / 60:.1f} min)"
    )
    deltas = {}
    for state, value in states.items():
        default = plain.entries[state.candidate]
        kind = (
            "ReLU6 at start"
            if state.start_active != default_state(spec, state.candidate).start_active
            else ("ReLU6 at end" if state.end_active else "no ReLU6 at end")
        )
        deltas.setdefault(kind, []).append(100 * (math.log(value) - math.log(default)))
    report: dict[str, object] = {"states": len(states), "measure_s": sum(records.values()), "by_kind": {}}
    for kind, values in sorted(deltas.items()):
        a = np.array(values)
        print(
            f"  {kind:16s} n={len(a):3d}: Δtop-1 against the plain entry mean {a.mean():+.2f}, "
            f"better in {int((a > 0).sum())}"
        )
        report["by_kind"][kind] = {"n": len(a), "mean": float(a.mean()), "better": int((a > 0).sum())}  # type: ignore[index]
    rows = {}
    for speedup in recipe.solve.speedups:
        row = {}
        for name, table in (("fixed rule", plain), ("states", extended)):
            plan, _ = solve_reachable(
                latency, table, speedup=speedup, method="depth", objective=objective,
                levels=recipe.solve.levels, unreachable="fastest",
            )  # fmt: skip
            row[name] = {**describe(plan, spec, latency, extended, objective), "plan": plan.to_dict()}
        print(f"  depth ({objective}) {speedup:g}x:")
        for name, figures in row.items():
            print(
                f"    {name:10s}: {figures['blocks']} blocks, {figures['activations']} activations "
                f"({figures['inserted_relu6']} ReLU6 inserted after a lone conv, "
                f"{figures['linear_ends_without_relu6']} merges ending linear), predicted "
                f"{figures['predicted_speedup']:.3f}x, objective {figures['objective']:+.2f}"
            )
        rows[f"{speedup:g}x"] = row
    report["plans"] = rows
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
