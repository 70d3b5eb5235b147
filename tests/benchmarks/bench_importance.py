"""Importance estimators against the paper's: cost per entry and rank agreement (Spearman rho) with
``finetune`` over every entry of a real table, and the quality of the plans each table selects.

    .venv/bin/python tests/benchmarks/bench_importance.py --recipe mobilenetv2-fmnist-layermerge \\
        --base BASE.safetensors --workdir /tmp/lmzoo-bench-importance

``--base`` is the trained base network's weights (default: the recipe's base stage, trained if
needed). Every table is resumable (per-entry records under ``--workdir``), so the script can be
stopped and rerun. Plan quality: each table's plans at the recipe's speed-ups are scored with the
``finetune`` table (the paper's estimate of what the plan keeps).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from safetensors.torch import load_file

import lmzoo
from lmzoo.core.problem import check_objective
from lmzoo.core.solver import plan_importance
from lmzoo.importance import importance_table
from lmzoo.pipeline import Build
from lmzoo.recipes import load_recipe


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    result = np.empty(len(values))
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        result[order[start : stop + 1]] = (start + stop) / 2
        start = stop + 1
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="mobilenetv2-fmnist-layermerge")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--base", default=None, help="base weights (.safetensors)")
    parser.add_argument("--workdir", default="/tmp/lmzoo-bench-importance")
    parser.add_argument("--estimators", default="block-distill,bn-recalibration,finetune-short,finetune")
    parser.add_argument("--limit", type=int, default=None, help="only the first N candidates (a quick check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument(
        "--repeat-finetune",
        type=int,
        default=0,
        help="also re-measure N random entries with finetune at another seed: the estimator's own noise",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    recipe, _ = load_recipe(args.recipe, args.profile)
    build = Build(recipe, workdir=args.workdir)
    if args.base:
        model = build.inputs.random_model()
        model.load_state_dict(load_file(args.base), strict=True)
        build.base = model.eval()  # instead of the base stage's
    model = build.base
    spec, _ = build.traced
    data = build.inputs.importance_data()
    settings = recipe.importance.settings()
    cands = sorted({c for m in lmzoo.METHODS for c in lmzoo.candidates(spec, method=m)})
    if args.limit:
        cands = cands[: args.limit]
    print(
        f"{recipe.model.arch} on {recipe.data.dataset}: {len(cands)} candidates, "
        f"{len(data.train)} importance-train / {len(data.heldout)} held-out images, {args.threads} threads"
    )

    tables = {}
    for estimator in args.estimators.split(","):
        started = time.perf_counter()
        tables[estimator] = importance_table(
            model,
            spec,
            data,
            estimator=estimator,
            settings=settings,
            cands=cands,
            workdir=args.workdir,
            seed=0,
        )
        meta = tables[estimator].metadata
        print(
            f"{estimator:>17}: {meta['measured_entries']} entries, "
            f"{meta['wall_s_total']:.0f} s of entry time "
            f"({meta['wall_s_per_entry']:.2f} s/entry); this call {time.perf_counter() - started:.0f} s; "
            f"base held-out top-1 {meta['base']['accuracy']:.2f}%"
        )

    report: dict[str, dict[str, float]] = {}
    reference = tables.get("finetune")
    measured = [c for c in cands if not c.is_identity]
    for estimator, table in tables.items():
        row = {"s_per_entry": table.metadata["wall_s_per_entry"]}
        if reference is not None:
            ref = np.array([reference[c] for c in measured])
            mine = np.array([table[c] for c in measured])
            row["spearman_vs_finetune"] = spearman(mine, ref)
            row["cost_ratio"] = reference.metadata["wall_s_per_entry"] / max(row["s_per_entry"], 1e-9)
        report[estimator] = row

    if reference is not None and not args.limit:
        latency, _ = build.latency
        for speedup in recipe.solve.speedups:
            for estimator, table in tables.items():
                objective = check_objective(recipe.solve.objective)
                plan = lmzoo.solve(latency, table, speedup=speedup, objective=objective)
                # under the product objective the identity plan scores 0 and plans of any block
                # count compare; under the sum, only plans of one speed-up do
                score = plan_importance(reference, plan, objective=objective) - plan_importance(
                    reference, lmzoo.Plan.identity(spec), objective=objective
                )
                report[estimator][f"plan_{speedup:g}x_finetune_score"] = score
                report[estimator][f"plan_{speedup:g}x_predicted_ms"] = latency.predict(plan)

    print("\nestimator          s/entry  cost ratio  Spearman rho vs finetune")
    for estimator, row in report.items():
        rho = row.get("spearman_vs_finetune", math.nan)
        print(
            f"{estimator:>17}  {row['s_per_entry']:7.2f}  {row.get('cost_ratio', math.nan):9.1f}x  {rho:8.3f}"
        )
    if reference is not None and not args.limit:
        print(
            f"\nplans scored by the finetune table ({recipe.solve.objective} objective, minus the identity "
            "plan's; higher is better)"
        )
        for speedup in recipe.solve.speedups:
            line = "  ".join(f"{e}: {r[f'plan_{speedup:g}x_finetune_score']:+.4f}" for e, r in report.items())
            print(f"  {speedup:g}x  {line}")
    if args.repeat_finetune and reference is not None:
        import random

        sample = sorted(random.Random(1).sample(measured, min(args.repeat_finetune, len(measured))))
        again = importance_table(
            model,
            spec,
            data,
            estimator="finetune",
            settings=settings,
            cands=sample,
            workdir=args.workdir,
            seed=1,
        )
        ref = np.array([reference[c] for c in sample])
        print(f"\nfinetune at seed 1 on {len(sample)} random entries: the paper's estimator against itself")
        self_rho = spearman(np.array([again[c] for c in sample]), ref)
        print(f"  finetune seed 1 vs seed 0: Spearman rho {self_rho:.3f}")
        for estimator, table in tables.items():
            if estimator != "finetune":
                rho = spearman(np.array([table[c] for c in sample]), ref)
                print(f"  {estimator} vs finetune seed 0, same entries: Spearman rho {rho:.3f}")
                report[estimator]["spearman_vs_finetune_sample"] = rho
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
