"""The ``lmzoo`` command line. Data goes to stdout, logs to stderr; user errors are one line."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import wraps
from typing import Any, TypeVar

import click

from lmzoo.core.candidates import DEFAULT_METHOD, METHODS
from lmzoo.core.solver import DEFAULT_LEVELS

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """Turn lmzoo errors into one clean line on stderr and exit status 2 (no traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lmzoo.errors import LmzooError

        try:
            return func(*args, **kwargs)
        except LmzooError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="lmzoo")
def main() -> None:
    """lmzoo: depth-compressed CNNs with LayerMerge."""


@main.command()
@click.argument("model_name")
@click.option("--input-size", default=224, show_default=True, help="Square input resolution to trace at.")
@click.option("--in-chans", default=3, show_default=True, help="Input channels of the model.")
@click.option("--num-classes", default=None, type=int, help="Classifier size (timm default if omitted).")
@click.option(
    "--check-plans", default=0, show_default=True, help="Merge this many random plans and check exactness."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_user_errors
def inspect(
    model_name: str, input_size: int, in_chans: int, num_classes: int | None, check_plans: int, as_json: bool
) -> None:
    """Trace a timm model (random weights) and summarise its LayerMerge spec and candidates."""
    import timm
    import torch

    import lmzoo
    from lmzoo.core.plan import random_plan
    from lmzoo.errors import UnsupportedModelError

    if not timm.is_model(model_name):
        raise UnsupportedModelError(f"{model_name!r} is not a timm model name (see timm.list_models())")
    kwargs: dict[str, Any] = {"in_chans": in_chans}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(model_name, **kwargs).eval()
    x = torch.randn(1, in_chans, input_size, input_size)
    started = time.perf_counter()
    spec = lmzoo.trace(model, x)
    cands = lmzoo.candidates(spec)
    elapsed = time.perf_counter() - started
    summary: dict[str, Any] = {
        "model": model_name,
        "family": spec.family,
        "units": spec.length,
        "residual_spans": len(spec.spans),
        "barriers": [p.index for p in spec.positions if p.barrier],
        "candidates": len(cands),
        "largest_kernel": max(c.kernel for c in cands),
        "trace_and_candidates_s": round(elapsed, 3),
    }
    rng = random.Random(0)
    checks = [
        asdict(lmzoo.engine.check_merge(model, spec, random_plan(spec, cands, rng), x))
        for _ in range(check_plans)
    ]
    if checks:
        summary["plan_checks"] = checks
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if key != "plan_checks":
            click.echo(f"{key:>24}: {value}")
    for i, check in enumerate(checks, 1):
        click.echo(
            f"{'plan ' + str(i):>24}: {check['blocks']} blocks (largest kernel {check['largest_kernel']}), "
            f"merged in {check['merge_s']:.2f} s, "
            f"max relative difference {check['relative_error']:.1e}"
        )


@main.command()
@click.argument("latency_table", type=click.Path(dir_okay=False))
@click.argument("importance_table", type=click.Path(dir_okay=False))
@click.option(
    "--budget-ms", "budgets", multiple=True, type=float, help="Chain latency budget in ms (repeatable)."
)
@click.option(
    "--speedup",
    "speedups",
    multiple=True,
    type=float,
    help="Target speed-up over the base by the table, fixed cost included (repeatable).",
)
@click.option(
    "--frontier", "whole_frontier", is_flag=True, help="Output the whole accuracy-latency frontier."
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=DEFAULT_METHOD,
    show_default=True,
    help="Selection method.",
)
@click.option(
    "--levels", type=int, default=DEFAULT_LEVELS, show_default=True, help="Grid steps over the budget."
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Write the JSON here instead of stdout."
)
@_user_errors
def solve(
    latency_table: str,
    importance_table: str,
    budgets: tuple[float, ...],
    speedups: tuple[float, ...],
    whole_frontier: bool,
    method: str,
    levels: int,
    output: str | None,
) -> None:
    """Choose plans from a latency and an importance table (JSON files written by lmzoo).

    Plans go to stdout (or --output) as JSON; a one-line summary per plan goes to stderr.
    """
    from lmzoo.core import solver
    from lmzoo.core.tables import ImportanceTable, LatencyTable
    from lmzoo.errors import InvalidArgumentError

    if whole_frontier == bool(budgets or speedups):
        raise InvalidArgumentError("give --budget-ms / --speedup (repeatable), or --frontier, but not both")
    latency = LatencyTable.load(latency_table)
    importance = ImportanceTable.load(importance_table)
    m = solver.check_method(method)
    results: list[dict[str, Any]] = []
    if whole_frontier:
        for point in solver.frontier(latency, importance, levels=levels, method=m):
            results.append(_plan_record(latency, point.plan, importance=point.importance))
    targets = [{"budget_ms": b} for b in budgets] + [{"speedup": s} for s in speedups]
    for target in targets:
        plan = solver.solve(
            latency,
            importance,
            budget_ms=target.get("budget_ms"),
            speedup=target.get("speedup"),
            levels=levels,
            method=m,
        )
        value = solver.plan_importance(importance, plan)
        results.append(_plan_record(latency, plan, importance=value, target=target))
    for record in results:
        click.echo(_plan_summary(record), err=True)
    text = json.dumps({"method": m, "plans": results}, indent=1)
    if output:
        from pathlib import Path

        Path(output).write_text(text + "\n")
    else:
        click.echo(text)


def _plan_record(latency: Any, plan: Any, *, importance: float, target: Any = None) -> dict[str, Any]:
    from lmzoo.core.solver import identity_latency

    base_ms = identity_latency(latency) + latency.fixed_ms
    predicted = latency.predict(plan)
    kernels: dict[str, int] = {}
    for block in plan:
        if block.length > 1:
            kernels[str(block.kernel)] = kernels.get(str(block.kernel), 0) + 1
    record: dict[str, Any] = {
        **(target or {}),
        "predicted_ms": predicted,
        "fixed_ms": latency.fixed_ms,
        "predicted_speedup": base_ms / predicted if predicted else None,
        "importance": importance,
        "units": plan.length,
        "boundaries_kept": len(plan.boundaries) - 1,
        "convs_kept": len(plan.kept_units),
        "depth": sum(1 for b in plan if b.kept),
        "merged_kernels": dict(sorted(kernels.items(), key=lambda kv: int(kv[0]))),
        "plan": plan.to_dict(),
    }
    return record


def _plan_summary(record: dict[str, Any]) -> str:
    if "budget_ms" in record:
        target = f"budget {record['budget_ms']:.4g} ms: "
    elif "speedup" in record:
        target = f"target {record['speedup']:.3g}x: "
    else:
        target = ""
    importance = f", importance {record['importance']:.4f}"
    kernels = ", ".join(f"{k}x{k}:{n}" for k, n in record["merged_kernels"].items()) or "none"
    speed = record["predicted_speedup"]
    return (
        f"{target}{record['predicted_ms']:.4g} ms predicted ({speed:.3f}x){importance}; "
        f"activations kept {record['boundaries_kept']}/{record['units']}, "
        f"convs kept {record['convs_kept']}/{record['units']}, merged kernels {kernels}, "
        f"depth {record['units']} -> {record['depth']}"
    )
