"""Importance estimators against the paper's: cost per entry and rank agreement (Spearman rho) with
``finetune`` over every entry of a real table, and the quality of the plans each table selects.

    .venv/bin/python tests/benchmarks/bench_importance.py --recipe mobilenetv2-fmnist-layermerge \\
        --base BASE.safetensors --workdir /tmp/lmzoo-bench-importance

``--base`` is the trained base network's weights (default: the recipe's base stage, trained if
needed). Every table is resumable (per-entry records under ``--workdir``), so the script can be
stopped and rerun. Plan quality: each table's plans at the recipe's speed-ups are scored with the
``finetune`` table (the paper's estimate of what the plan keeps).

``--sample N`` measures only N random measured entries (seeded; no plan quality then), and
``--finetune-seeds S`` measures ``finetune`` at S seeds: its agreement with itself is the ceiling of
any estimator's agreement with it, and each estimator is also compared with the seeds' mean.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import replace

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
    parser.add_argument(
        "--estimators", default="block-distill,bn-suffix,bn-recalibration,finetune-short,finetune"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N candidates (a quick check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--sample", type=int, default=None, help="only N random measured entries (seed 0)")
    parser.add_argument(
        "--finetune-seeds", type=int, default=1, help="measure finetune at this many seeds (its own noise)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an importance setting for the non-finetune estimators (e.g. block_steps=25)",
    )
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        default=None,
        help="measure the non-finetune estimators on this fraction of the training split (a prefix of "
        "the recipe's held-out subset; finetune keeps the recipe's); use a workdir of its own",
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
    cheap_data = data
    if args.heldout_fraction is not None:
        cheap_data = Build(
            replace(recipe, importance=replace(recipe.importance, heldout_fraction=args.heldout_fraction)),
            workdir=args.workdir,
        ).inputs.importance_data()
    settings = recipe.importance.settings()
    cands = sorted({c for m in lmzoo.METHODS for c in lmzoo.candidates(spec, method=m)})
    if args.limit:
        cands = cands[: args.limit]
    if args.sample:
        measurable = [c for c in cands if not c.is_identity]
        cands = sorted(random.Random(0).sample(measurable, min(args.sample, len(measurable))))
    overrides = {
        key: float(value) if "." in value or "e" in value else int(value)
        for key, value in (item.split("=", 1) for item in args.set)
    }
    print(
        f"{recipe.model.arch} on {recipe.data.dataset}: {len(cands)} candidates, "
        f"{len(data.train)} importance-train / {len(data.heldout)} held-out images "
        f"({len(cheap_data.heldout)} for the non-finetune estimators), {args.threads} threads"
    )

    tables = {}
    for estimator in args.estimators.split(","):
        started = time.perf_counter()
        tables[estimator] = importance_table(
            model,
            spec,
            data if estimator == "finetune" else cheap_data,
            estimator=estimator,
            settings=settings if estimator == "finetune" else replace(settings, **overrides),
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

    if reference is not None and not (args.limit or args.sample):
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
    if reference is not None and not (args.limit or args.sample):
        print(
            f"\nplans scored by the finetune table ({recipe.solve.objective} objective, minus the identity "
            "plan's; higher is better)"
        )
        for speedup in recipe.solve.speedups:
            line = "  ".join(f"{e}: {r[f'plan_{speedup:g}x_finetune_score']:+.4f}" for e, r in report.items())
            print(f"  {speedup:g}x  {line}")
    if args.finetune_seeds > 1 and reference is not None:
        repeats = [
            importance_table(
                model,
                spec,
                data,
                estimator="finetune",
                settings=settings,
                cands=cands,
                workdir=args.workdir,
                seed=seed,
            )
            for seed in range(1, args.finetune_seeds)
        ]
        ref = np.array([reference[c] for c in measured])
        print(f"\nfinetune at {args.finetune_seeds} seeds on {len(measured)} entries")
        for seed, again in enumerate(repeats, start=1):
            rho = spearman(np.array([again[c] for c in measured]), ref)
            print(f"  finetune seed {seed} vs seed 0: Spearman rho {rho:.3f} (the ceiling for one seed)")
            report.setdefault("finetune", {})[f"spearman_seed{seed}_vs_seed0"] = rho
        mean = np.mean([ref] + [np.array([t[c] for c in measured]) for t in repeats], axis=0)
        for estimator, table in tables.items():
            rho = spearman(np.array([table[c] for c in measured]), mean)
            print(f"  {estimator} vs the mean of the finetune seeds: Spearman rho {rho:.3f}")
            report[estimator]["spearman_vs_finetune_mean"] = rho
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
