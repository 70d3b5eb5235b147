"""Latency benchmark: does the table predict the merged network? Prints figures (not a test).

    .venv/bin/python tests/benchmarks/bench_latency.py [--models mobilenetv2_100 resnet34]
        [--backend torch] [--device cpu] [--batch-size 1] [--threads 2] [--input-size 224]
        [--in-chans 3] [--num-classes N] [--targets 1.3 1.6 2.0]
        [--importance MODEL=importance.json ...] [--csv rows.csv]

For each model (random weights; latency does not depend on them):
1. the full latency table (every method's candidates), with its build time and how many unique
   conv measurements it needed, calibrated against the base network;
2. plans solved at the targets, with random importance (a study of latency only) or, with
   ``--importance``, with a table measured on another input size of the same topology (e.g. a
   Fashion-MNIST entry's ``tables/importance.json`` with ``--in-chans 1 --num-classes 10``): its
   candidates are positions in the chain, so they carry over, with the weight norms of the network
   the table was measured on (the enumeration breaks ties by them);
3. base (deploy form: norms folded), base as built, and the merged plans timed interleaved;
4. predicted vs measured latency, measured speed-up vs target; ``--csv`` appends one row per plan
   in the columns of ``cards/results.csv`` (GPU rows: ``--device cuda --batch-size 128``, once with
   ``--backend torch`` and once with ``--backend torch-compile``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import random
import tempfile
import time
from pathlib import Path

import timm
import torch

import lmzoo
from lmzoo.core.problem import Objective
from lmzoo.latency import compare
from lmzoo.latency.endtoend import deploy_form
from lmzoo.results import RESULT_FIELDS
from lmzoo.tables import ImportanceTable

TARGETS = (1.3, 1.6, 2.0)
#: results.csv's columns, and what these rows add: the input size and where the importance came from
CSV_COLUMNS = [*RESULT_FIELDS, "input_size", "importance"]


def with_measured_weights(spec: lmzoo.Spec, path: str) -> tuple[lmzoo.Spec, ImportanceTable]:
    """``spec`` with the conv weight norms of the network an importance table was measured on, and
    that table moved onto it. Candidate enumeration breaks ties by weight norm, so the randomly
    initialised network here would otherwise offer other kept subsets than the table holds;
    latency does not depend on the weights."""
    measured = ImportanceTable.load(path)
    source = measured.spec

    def geometry(s: lmzoo.Spec) -> list[tuple[str, int, int, int, int]]:
        return [(u.path, u.in_channels, u.out_channels, u.kernel, u.stride) for u in s.units]

    if source is None or geometry(source) != geometry(spec):
        raise SystemExit(
            f"{path}: the table's network has another topology than this one (check --in-chans and "
            "--num-classes against the table's model)"
        )
    units = tuple(
        dataclasses.replace(u, weight_l1=m.weight_l1) for u, m in zip(spec.units, source.units, strict=True)
    )
    spec = dataclasses.replace(spec, units=units)
    return spec, ImportanceTable(dict(measured.entries), spec=spec)


def study(name: str, args: argparse.Namespace) -> list[dict[str, object]]:
    kwargs = {"in_chans": args.in_chans} | ({"num_classes": args.num_classes} if args.num_classes else {})
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(1, args.in_chans, args.input_size, args.input_size)
    spec = lmzoo.trace(model, x)
    path = args.importance.get(name)
    if path is not None:
        spec, importance = with_measured_weights(spec, path)
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
    objective: Objective = "sum" if path is None else "product"
    if path is None:
        rng = random.Random(0)
        importance = ImportanceTable({c: rng.uniform(0.98, 1.0) for c in table.entries}, spec=spec)
    plans = {s: lmzoo.solve(table, importance, speedup=s, objective=objective) for s in args.targets}
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
    rows: list[dict[str, object]] = []
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
        rows.append(
            {
                "model": f"{name}-layermerge-{s:g}x ({args.input_size} px, {args.device})",
                "arch": name,
                "dataset": "none (latency only)",
                "method": "layermerge",
                "objective": objective,
                "target_speedup": s,
                "measured_speedup": round(speedup, 4),
                "predicted_speedup": round(predicted_base / predicted, 4),
                "backend": args.backend,
                "device": meta["device_name"],
                "batch": args.batch_size,
                "dtype": "float32",
                "threads": args.threads if args.device == "cpu" else "",
                "base_ms": round(base, 4),
                "merged_ms": round(stats.median_ms, 4),
                "input_size": args.input_size,
                "importance": args.importance.get(name, "random"),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "lmzoo_version": lmzoo.__version__,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100", "resnet34"])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    parser.add_argument(
        "--importance",
        action="append",
        default=[],
        metavar="MODEL=PATH",
        help="Solve MODEL's plans with this importance table (Π I) instead of random values.",
    )
    parser.add_argument("--csv", type=Path, default=None, help="Append one row per plan to this CSV.")
    args = parser.parse_args()
    args.importance = dict(item.split("=", 1) for item in args.importance)
    rows = [row for name in args.models for row in study(name, args)]
    if args.csv is not None:
        new_file = not args.csv.exists()
        with args.csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="")
            if new_file:
                writer.writeheader()
            writer.writerows(rows)
        print(f"\n{len(rows)} rows appended to {args.csv}")


if __name__ == "__main__":
    main()
