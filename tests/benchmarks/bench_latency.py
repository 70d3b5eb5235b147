"""Latency benchmark: does the table predict the merged network? Prints figures (not a test).

    .venv/bin/python tests/benchmarks/bench_latency.py [--models mobilenetv2_100 resnet34]
        [--backend torch] [--device cpu] [--batch-size 1] [--threads 2]

For each model at 224x224 (random weights; latency does not depend on them):
1. the full latency table (every method's candidates), with its build time and how many unique
   conv measurements it needed, calibrated against the base network;
2. plans solved at 1.3x, 1.6x and 2.0x (random importance: this study is about latency only);
3. base (deploy form: norms folded), base as built, and the merged plans timed interleaved;
4. predicted vs measured latency, measured speed-up vs target.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import timm
import torch

import lmzoo
from lmzoo.core.tables import ImportanceTable
from lmzoo.latency import compare
from lmzoo.latency.table import deploy_form

TARGETS = (1.3, 1.6, 2.0)


def study(name: str, args: argparse.Namespace) -> None:
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, 224, 224)
    spec = lmzoo.trace(model, x)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        table = lmzoo.latency_table(
            spec,
            backend=args.backend,
            device=args.device,
            batch_size=args.batch_size,
            threads=args.threads,
            model=model,
            example_inputs=x,
            cache=f"{tmp}/cache.jsonl",
            progress=False,
        )
        build_s = time.perf_counter() - started
    meta, cal = table.metadata, table.metadata["calibration"]
    print(
        f"\n{name}: table of {len(table)} candidates from {meta['unique_measurements']} unique conv "
        f"measurements in {build_s:.0f} s ({meta['device_name']}, {args.backend}, "
        f"batch {args.batch_size}); context scale {cal['context_scale']:.3f}, "
        f"fixed cost {table.fixed_ms:.2f} ms"
    )
    rng = random.Random(0)
    importance = ImportanceTable({c: rng.uniform(0.98, 1.0) for c in table.entries}, spec=spec)
    plans = {s: lmzoo.solve(table, importance, speedup=s) for s in TARGETS}
    models = {"base": deploy_form(model, spec), "as built": model}
    models.update({f"{s}x": lmzoo.merge(lmzoo.apply_plan(model, spec, p)) for s, p in plans.items()})
    timed = compare(
        models,
        x,
        backend=args.backend,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        runs=args.runs,
        rounds=args.rounds,
    )
    predicted_base = table.predict(lmzoo.Plan.identity(spec))
    base = timed["base"].median_ms
    error = (base - predicted_base) / predicted_base * 100
    print(
        f"  base (norms folded) measured {base:.2f} ms, predicted {predicted_base:.2f} ms ({error:+.1f}%); "
        f"base as built {timed['as built'].median_ms:.2f} ms"
    )
    print("  target | predicted ms | measured ms (p10-p90) | error | measured speed-up | / target | blocks")
    for s, plan in plans.items():
        stats = timed[f"{s}x"]
        predicted = table.predict(plan)
        speedup = base / stats.median_ms
        error = (stats.median_ms - predicted) / predicted * 100
        print(
            f"  {s:>5.1f}x | {predicted:12.2f} | {stats.median_ms:6.2f} "
            f"({stats.p10_ms:.2f}-{stats.p90_ms:.2f}) | {error:+5.1f}% | {speedup:17.2f} "
            f"| {speedup / s:8.2f} "
            f"| {len(plan)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100", "resnet34"])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    for name in args.models:
        study(name, args)


if __name__ == "__main__":
    main()
