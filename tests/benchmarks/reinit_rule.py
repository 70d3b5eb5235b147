"""Which conv an importance entry should start afresh, measured on a zoo recipe: the recipe's table
under lmzoo's former rule (``kept-alone``: the conv kept alone in a multi-conv block starts afresh, a
single conv kept as it is is I = 1 unmeasured) against the official code's (``single``: every
single-conv block starts afresh and is measured, a multi-conv block's kept convs keep their weights).

    .venv/bin/python tests/benchmarks/reinit_rule.py --recipe mobilenetv2-fmnist-layermerge \\
        --latency cards/mobilenetv2-fmnist-layermerge-1.6x/tables/latency.json --workdir WORK \\
        --finetune 1.6 2

Prints how the tables differ (entries changed, Spearman rho overall and per group), the plans each
table selects at the recipe's speed-ups for LayerMerge (the recipe's objective and the paper's sum)
and depth compression, and with ``--finetune S ...`` the test accuracy of both rules' LayerMerge plans
at those speed-ups after the recipe's fine-tune (the plan each rule would ship). The committed
latency table is used, so nothing is timed (the machine may be busy). Everything is cached under
``--workdir`` (the base and the tables are the build's own stages): rerunning resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import numpy as np
import torch
from bench_importance import spearman

from lmzoo.core.candidates import Candidate
from lmzoo.core.plan import Plan
from lmzoo.core.problem import check_objective
from lmzoo.core.solver import plan_importance, solve_reachable
from lmzoo.importance import importance_table
from lmzoo.pipeline import Build
from lmzoo.pipeline.finetune import finetune_stage
from lmzoo.recipes import load_recipe
from lmzoo.tables import ImportanceTable, LatencyTable

RULES = ("kept-alone", "single")


#: unaffected entries measured again under the single rule, to show they are the same computation
CHECKED = 6


def affected(cand: Candidate) -> bool:
    """Entries whose computation the rule changes: a single conv kept as it is (measured and started
    afresh under single, I = 1 under kept-alone) and a multi-conv block keeping one conv (started
    afresh under kept-alone only)."""
    return cand.is_identity or keeps_one(cand)


def keeps_one(cand: Candidate) -> bool:
    """A multi-conv block keeping one conv."""
    return cand.length > 1 and len(cand.kept) == 1


def single_rule_table(build: Build, kept_alone: ImportanceTable, workdir: str) -> ImportanceTable:
    """The table under the single rule: the affected entries measured, the others taken from the
    kept-alone table after CHECKED of them are measured again and found equal (same entry seeds,
    same steps, nothing started afresh under either rule)."""
    recipe = build.recipe
    settings = dataclasses.replace(recipe.importance.settings(), reinit="single")
    spec, _ = build.traced
    cands = sorted(kept_alone.entries)
    unaffected = [c for c in cands if not affected(c)]
    measured = [c for c in cands if affected(c)] + unaffected[:: max(1, len(unaffected) // CHECKED)][:CHECKED]
    table = importance_table(
        build.base,
        spec,
        build.inputs.importance_data(),
        cands=measured,
        estimator=recipe.importance.estimator,
        settings=settings,
        task=build.inputs.task,
        workdir=f"{workdir}/reinit-single",
        seed=recipe.importance.seed,
    )
    same = [c for c in measured if not affected(c)]
    differ = [c for c in same if table.entries[c] != kept_alone.entries[c]]
    print(f"  {len(same)} unaffected entries measured again under single: {len(differ)} differ")
    if differ:
        raise SystemExit("unaffected entries changed under the single rule: copy them no further")
    return ImportanceTable({**kept_alone.entries, **table.entries}, spec=spec, metadata={"reinit": "single"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="mobilenetv2-fmnist-layermerge")
    parser.add_argument("--latency", required=True, help="a committed latency table of the recipe's network")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--profile", help="a recipe profile (smoke: a quick check of this script)")
    parser.add_argument("--finetune", type=float, nargs="*", default=[], help="speed-ups to fine-tune")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    recipe, _ = load_recipe(args.recipe, args.profile)
    importance = dataclasses.replace(recipe.importance, reinit="kept-alone")
    recipe = dataclasses.replace(recipe, importance=importance)
    build = Build(recipe, workdir=args.workdir, progress=True)
    kept_alone = build.importance()[0]  # the recipe's own table (its rule: kept-alone)
    spec, _ = build.traced
    tables = {"kept-alone": kept_alone, "single": single_rule_table(build, kept_alone, args.workdir)}
    latency = LatencyTable.load(args.latency).for_network(spec)
    base_ms = latency.predict(Plan.identity(spec))
    report: dict[str, object] = {"recipe": recipe.name, "estimator": recipe.importance.estimator}

    old, new = tables["kept-alone"].entries, tables["single"].entries
    cands = sorted(old)
    groups = {
        "all": cands,
        "single kept (measured vs 1)": [c for c in cands if c.is_identity],
        "multi-conv keeping one (afresh vs kept)": [c for c in cands if keeps_one(c)],
        "unaffected": [c for c in cands if not affected(c)],
    }
    print(f"{recipe.name}: {len(cands)} entries, estimator {recipe.importance.estimator}")
    for name, group in groups.items():
        a = np.array([math.log(old[c]) for c in group])
        b = np.array([math.log(new[c]) for c in group])
        changed = int(np.sum(a != b))
        rho = spearman(a, b) if len(group) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")
        print(
            f"  {name:42s} n={len(group):3d} changed={changed:3d} rho={rho:+.3f} "
            f"mean dtop1 kept-alone={100 * a.mean():+.2f} single={100 * b.mean():+.2f} points"
        )
        report[name] = {
            "n": len(group),
            "changed": changed,
            "rho": rho,
            "mean_old": a.mean(),
            "mean_new": b.mean(),
        }

    plans: dict[tuple[str, str, float], dict[str, object]] = {}
    for method, objective in (
        ("layermerge", recipe.solve.objective),
        ("layermerge", "sum"),
        ("depth", recipe.solve.depth_objective),
    ):
        objective = check_objective(objective, method)
        for speedup in recipe.solve.speedups:
            row = {}
            for rule in RULES:
                plan, _ = solve_reachable(
                    latency, tables[rule], speedup=speedup, method=method, objective=objective,
                    levels=recipe.solve.levels, unreachable="fastest",
                )  # fmt: skip
                row[rule] = plan
            same = row["kept-alone"] == row["single"]
            print(f"  {method} ({objective}) {speedup:g}x: {'same plan' if same else 'plans differ'}")
            for rule, plan in row.items():
                log_i = {
                    r: plan_importance(tables[r], plan, method=method, objective="product") for r in RULES
                }
                print(
                    f"    {rule:10s}: {len(plan)} blocks, {len(plan.boundaries) - 1} activations, "
                    f"{plan.summary().convs_kept} convs, predicted {base_ms / latency.predict(plan):.3f}x, "
                    f"sum log I by kept-alone {log_i['kept-alone']:+.4f}, by single {log_i['single']:+.4f}"
                )
            plans[(method, objective, speedup)] = row
    report["plans"] = {
        f"{m} {o} {s:g}x": {r: p.to_dict() for r, p in row.items()} for (m, o, s), row in plans.items()
    }

    task, train_set, test_set = build.inputs.task, build.inputs.train_set, build.inputs.test_set
    accuracy = {}
    for speedup in args.finetune:
        row = plans[("layermerge", check_objective(recipe.solve.objective, "layermerge"), speedup)]
        for rule in RULES if row["kept-alone"] != row["single"] else RULES[:1]:
            net = finetune_stage(
                build.workspace, build.base, spec, row[rule], train_set, task, name=f"{rule} {speedup:g}x"
            )
            metrics = task.evaluate(net, test_set, batch_size=256, device=torch.device("cpu"))
            accuracy[f"{speedup:g}x {rule}"] = metrics
            print(f"  fine-tuned LayerMerge {speedup:g}x plan of {rule}: {metrics}")
    report["finetuned"] = accuracy
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=float)


if __name__ == "__main__":
    main()
