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
