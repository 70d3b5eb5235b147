"""The engine's commands: ``lmzoo inspect`` (trace a network, summarise its spec and candidates),
``lmzoo solve`` (plans from two tables) and ``lmzoo bench`` (base against merged, end to end)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from lmzoo.cli.options import (
    choice,
    json_output,
    latency_options,
    latency_setting,
    model_options,
    user_errors,
)
from lmzoo.core.candidates import DEFAULT_METHOD, METHODS
from lmzoo.core.problem import DEFAULT_ALPHA, DEFAULT_OBJECTIVE, METHOD_OBJECTIVES, OBJECTIVES
from lmzoo.core.solver import DEFAULT_LEVELS, DEFAULT_UNREACHABLE, MAX_LEVELS, MAX_TOP, UNREACHABLE


@click.command()
@click.argument("model_name")
@model_options
@click.option(
    "--check-plans", default=0, show_default=True, help="Merge this many random plans and check exactness."
)
@json_output
@user_errors
def inspect(
    model_name: str,
    source: str,
    input_size: int,
    in_chans: int,
    num_classes: int | None,
    check_plans: int,
    as_json: bool,
) -> None:
    """Trace a network (random weights) and summarise its LayerMerge spec and candidates; for the
    generic family, also which convolutions form chains and which barriers cut them, and why."""
    import lmzoo
    from lmzoo.adapters import adapter_for
    from lmzoo.core.plan import random_plan
    from lmzoo.engine import check_merge

    model = _model(source, model_name, in_chans=in_chans, num_classes=num_classes)
    x = _image_input(in_chans, input_size)
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
    explain = getattr(adapter_for(model), "explain", None)
    if explain is not None:
        summary["layout"] = [{"where": where, "what": what} for where, what in explain(model)]
    rng = random.Random(0)
    checks = [asdict(check_merge(model, spec, random_plan(spec, cands, rng), x)) for _ in range(check_plans)]
    if checks:
        summary["plan_checks"] = checks
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if key not in ("plan_checks", "layout"):
            click.echo(f"{key:>24}: {value}")
    for row in summary.get("layout", []):
        click.echo(f"{row['where']:>24}: {row['what']}")
    for i, check in enumerate(checks, 1):
        click.echo(
            f"{'plan ' + str(i):>24}: {check['blocks']} blocks (largest kernel {check['largest_kernel']}), "
            f"merged in {check['merge_s']:.2f} s, "
            f"max relative difference {check['relative_error']:.1e}"
        )


@click.command()
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
@choice("--method", METHODS, DEFAULT_METHOD, "Selection method.")
@click.option(
    "--levels",
    type=click.IntRange(1, MAX_LEVELS),
    default=DEFAULT_LEVELS,
    show_default=True,
    help="Grid steps over the budget.",
)
@click.option(
    "--objective",
    metavar="[" + "|".join(OBJECTIVES) + "[:ALPHA]]",
    default=None,
    help=(
        "Maximise the sum of I (the paper's), the product of I (blind to the block count), for "
        "--method layer the official layer-pruning knapsack over kept convs (kept), for --method depth "
        "Kim et al. 2023's additive importance normalised by ALPHA times the mean single-unit score "
        f"(normalized[:ALPHA], ALPHA {DEFAULT_ALPHA:g} by default) [default: {DEFAULT_OBJECTIVE}; for "
        f"layer, {METHOD_OBJECTIVES['layer']}; for depth, {METHOD_OBJECTIVES['depth']}]."
    ),
)
@choice(
    "--unreachable",
    UNREACHABLE,
    DEFAULT_UNREACHABLE,
    "For a target beyond the latency table's fastest plan: stop with an error, or output that plan.",
)
@click.option(
    "--top",
    type=click.IntRange(1, MAX_TOP),
    default=1,
    show_default=True,
    help="Output the K most important plans of each target, best first (each with its rank).",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Write the JSON here instead of stdout."
)
@user_errors
def solve(
    latency_table: str,
    importance_table: str,
    budgets: tuple[float, ...],
    speedups: tuple[float, ...],
    whole_frontier: bool,
    method: str,
    levels: int,
    objective: str | None,
    unreachable: str,
    top: int,
    output: str | None,
) -> None:
    """Choose plans from a latency and an importance table (JSON files written by lmzoo).

    Plans go to stdout (or --output) as JSON; a one-line summary per plan goes to stderr.
    """
    from lmzoo.core import solver
    from lmzoo.core.candidates import check_method
    from lmzoo.core.problem import check_objective
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.tables import ImportanceTable, LatencyTable

    if whole_frontier == bool(budgets or speedups):
        raise InvalidArgumentError("give --budget-ms / --speedup (repeatable), or --frontier, but not both")
    latency = LatencyTable.load(latency_table)
    importance = ImportanceTable.load(importance_table)
    m = check_method(method)
    o = check_objective(objective, m)
    results: list[dict[str, Any]] = []
    if whole_frontier:
        for point in solver.frontier(latency, importance, levels=levels, method=m, objective=o):
            results.append(_plan_record(latency, point.plan, importance=point.importance))
    targets = [{"budget_ms": b} for b in budgets] + [{"speedup": s} for s in speedups]
    for target in targets:
        if top > 1:
            ranked = solver.top_plans(
                latency,
                importance,
                k=top,
                budget_ms=target.get("budget_ms"),
                speedup=target.get("speedup"),
                levels=levels,
                method=m,
                objective=o,
            )
            first_of: dict[Any, int] = {}  # configuration -> its best rank
            for rank, point in enumerate(ranked, 1):
                ranked_record = _plan_record(latency, point.plan, importance=point.importance, target=target)
                ranked_record["rank"] = rank
                if latency.spec is not None:
                    first = first_of.setdefault(point.plan.configuration(latency.spec), rank)
                    if first != rank:  # only 1x1 convs merged differently: the same function
                        ranked_record["same_network_as"] = first
                results.append(ranked_record)
            continue
        plan, max_speedup = solver.solve_reachable(
            latency, importance, **target, unreachable=unreachable, levels=levels, method=m, objective=o
        )
        value = solver.plan_importance(importance, plan, objective=o, method=m)
        record = _plan_record(latency, plan, importance=value, target=target)
        if max_speedup is not None:
            record["unreachable"] = {"max_speedup": max_speedup}
        results.append(record)
    for record in results:
        click.echo(_plan_summary(record), err=True)
    text = json.dumps({"method": m, "objective": o, "plans": results}, indent=1)
    if output:
        Path(output).write_text(text + "\n")
    else:
        click.echo(text)


def _plan_record(latency: Any, plan: Any, *, importance: float, target: Any = None) -> dict[str, Any]:
    from lmzoo.core.solver import identity_latency

    base_ms = identity_latency(latency) + latency.fixed_ms
    predicted = latency.predict(plan)
    summary = plan.summary()
    return {
        **(target or {}),
        "predicted_ms": predicted,
        "fixed_ms": latency.fixed_ms,
        "predicted_speedup": base_ms / predicted if predicted else None,
        "importance": importance,
        "units": summary.units,
        "boundaries_kept": summary.activations_kept,
        "convs_kept": summary.convs_kept,
        "depth": summary.depth,
        "merged_kernels": {str(k): n for k, n in summary.merged_kernels.items()},
        "plan": plan.to_dict(),
    }


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
    if "rank" in record:
        target += f"#{record['rank']}: "
    if "same_network_as" in record:
        target += f"the network of #{record['same_network_as']}, other merges: "
    if "unreachable" in record:
        target += f"beyond the table (its fastest plan: {record['unreachable']['max_speedup']:.3f}x), "
    return (
        f"{target}{record['predicted_ms']:.4g} ms predicted ({speed:.3f}x){importance}; "
        f"activations kept {record['boundaries_kept']}/{record['units']}, "
        f"convs kept {record['convs_kept']}/{record['units']}, merged kernels {kernels}, "
        f"depth {record['units']} -> {record['depth']}"
    )


@click.command()
@click.argument("model_name")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(dir_okay=False),
    help="A plan: the output of `lmzoo solve`, an entry's plan.json, or a bare plan [default: the "
    "entry's plan, or the identity plan].",
)
@click.option(
    "--plan-index", type=click.IntRange(min=0), default=None, help="Which plan of a file holding several."
)
@click.option(
    "--latency-table",
    type=click.Path(dir_okay=False),
    help="Latency table JSON, for the prediction [default: the entry's table].",
)
@latency_options
@model_options
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Measure the comparison this many times and report the spread of the speed-up (one "
    "measurement on a shared machine can be off by tens of percent).",
)
@click.option(
    "--card", "card_file", type=click.Path(dir_okay=False), help="Write the latency card JSON here (+ .png)."
)
@json_output
@click.pass_context
@user_errors
def bench(
    ctx: click.Context,
    model_name: str,
    plan_file: str | None,
    plan_index: int | None,
    latency_table: str | None,
    source: str,
    input_size: int,
    in_chans: int,
    num_classes: int | None,
    repeat: int,
    card_file: str | None,
    as_json: bool,
    **latency: Any,
) -> None:
    """Measure a network's base vs merged latency (random weights: latency does not depend on them).

    MODEL_NAME is an architecture of --source (timm: resnet34) or a zoo entry (a built or published
    entry, hf-hub:ORG/REPO, local-dir:PATH): then its base, its plan, its latency table and the
    latency setting its card was measured with, unless options say otherwise. Base and merged are
    timed interleaved; the base is in deploy form (norms folded), so the speed-up counts what the
    plan removes. Without a plan the identity plan is used.
    """
    from tqdm.auto import tqdm

    import lmzoo
    from lmzoo.engine import apply_plan, merge
    from lmzoo.errors import InvalidTableError
    from lmzoo.latency.card import measure_plan, plot_block_latency
    from lmzoo.latency.stats import SpeedupSpread
    from lmzoo.tables import LatencyTable

    given = {
        name: value
        for name, value in latency.items()
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    entry = _zoo_checkpoint(model_name)
    if entry is not None:
        model, inputs, entry_plan, entry_setting, entry_table = entry
        setting = latency_setting(**{**entry_setting, **given})
        table_path = latency_table or entry_table
    else:
        setting = latency_setting(**latency)
        model = _model(source, model_name, in_chans=in_chans, num_classes=num_classes)
        inputs, entry_plan, table_path = (_image_input(in_chans, input_size),), None, latency_table
    spec = lmzoo.trace(model, inputs)
    if plan_file is not None:
        plan, which = _read_plan(plan_file, plan_index)
        click.echo(f"plan: {which}", err=True)
    elif entry_plan is not None:
        plan = entry_plan
        click.echo(f"plan: the one {model_name} was built with", err=True)
    else:
        plan = lmzoo.Plan.identity(spec)
    plan.validate(spec)
    table = LatencyTable.load(table_path) if table_path else None
    if table is not None and table.spec_fingerprint not in (None, spec.fingerprint):
        raise InvalidTableError(f"{table_path} was measured for another network than {model_name}")
    merged = merge(apply_plan(model, spec, plan))
    measured = [
        measure_plan(model_name, model, spec, plan, inputs, setting, table=table, merged=merged)
        for _ in tqdm(range(repeat), desc="repeats", disable=repeat == 1, leave=False)
    ]
    spread = SpeedupSpread(tuple(card.speedup for card, _ in measured))
    card, timed = measured[spread.median_index]
    if card_file:
        card.save(card_file)
        if table is not None:
            plot_block_latency(table, spec, plan, Path(card_file).with_suffix(".png"), title=model_name)
    if as_json:
        click.echo(
            json.dumps({**card.to_dict(), **({"repeats": spread.to_dict()} if repeat > 1 else {})}, indent=1)
        )
        return
    m = card.measurement
    click.echo(f"{model_name} on {m.backend}, {m.device_name}, batch {setting.batch_size}, {m.dtype}")
    if repeat > 1:
        click.echo(f"  repeat of median speed-up ({spread.median_rank} of {repeat} by speed-up):")
    click.echo(f"  base (norms folded): {timed['base']}")
    click.echo(f"  base as built:       {timed['unfused']}")
    click.echo(f"  merged:              {timed['merged']}")
    click.echo(f"  speed-up:            {card.speedup:.3f}x")
    if repeat > 1:
        click.echo(f"  over the repeats:    {spread}")
    if card.predicted is not None:
        p = card.predicted
        differ = _setting_differences(table.metadata if table else {}, m)
        if differ:
            click.echo(
                f"  predicted:           {p.merged_ms:.4g} ms ({p.speedup:.3f}x) by a table measured with "
                f"{'; '.join(differ)}: its milliseconds are not comparable with these, only its speed-up",
            )
            click.echo(f"warning: the latency table was measured with {'; '.join(differ)}", err=True)
        else:
            error = f"{p.merged_error * 100:+.1f}%" if p.merged_error is not None else "n/a"
            predicted = f"{p.merged_ms:.4g} ms ({p.speedup:.3f}x)"
            click.echo(f"  predicted:           {predicted}; error {error} of the prediction")


#: what a latency table's milliseconds depend on: a prediction compares with a measurement only when
#: these agree
_COMPARABLE = ("backend", "device", "batch_size", "dtype", "threads")


def _setting_differences(table: dict[str, Any], measurement: Any) -> list[str]:
    """How the table's measurement setting differs from this one ("batch 64, here 1"), if at all."""
    differ = []
    for key in _COMPARABLE:
        recorded, here = table.get(key), getattr(measurement, key)
        if key == "device" and isinstance(recorded, str) and isinstance(here, str):
            recorded, here = recorded.split(":")[0], here.split(":")[0]
        if recorded is not None and recorded != here:
            label = key.replace("_size", "")
            differ.append(f"{label} {recorded}, here {here}")
    return differ


def _zoo_checkpoint(name: str) -> tuple[Any, tuple[Any, ...], Any, dict[str, Any], str | None] | None:
    """For a zoo entry (or hf-hub: / local-dir: checkpoint): its base with random weights, example
    inputs, plan, the latency setting its card was measured with and its latency table's path.
    None for any other name (an architecture of a source)."""
    from lmzoo.checkpoint import architecture, read_config
    from lmzoo.errors import LmzooError
    from lmzoo.files import read_json
    from lmzoo.rebuild import example_inputs
    from lmzoo.store import is_built
    from lmzoo.zoo import checkpoint_files, registry

    if not (name.startswith(("hf-hub:", "local-dir:")) or is_built(name) or name in registry()):
        return None
    directory = checkpoint_files(name)
    config = read_config(directory)
    model = architecture(config).build().eval()
    setting: dict[str, Any] = {}
    card_path = directory / "latency.json"
    if card_path.is_file():
        try:
            m = read_json(card_path, what="latency card", error=LmzooError)["measurement"]
            setting = {k: m.get(k) for k in ("backend", "batch_size", "dtype", "threads")}
            setting["device"] = str(m.get("device", "cpu")).split(":")[0]
        except (ValueError, KeyError, TypeError, LmzooError):
            setting = {}
    table = directory / "tables" / "latency.json"
    plan = lmzoo_plan(config["plan"])
    return (
        model,
        example_inputs(config["input_shape"], config["task"]),
        plan,
        setting,
        (str(table) if table.is_file() else None),
    )


def lmzoo_plan(data: Any) -> Any:
    import lmzoo

    return lmzoo.Plan.from_dict(data)


def _model(source: str, name: str, *, in_chans: int, num_classes: int | None) -> Any:
    """The network ``name`` of ``source`` with random weights, in eval mode."""
    from lmzoo.sources import Architecture, get_source

    kwargs: dict[str, Any] = {"in_chans": in_chans} if in_chans != 3 else {}  # 3: every source's default
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    get_source(source).import_own_code(name)  # a factory named on the command line is the user's own
    return Architecture(source, name, kwargs).build().eval()


def _image_input(in_chans: int, size: int) -> Any:
    import torch

    return torch.randn(1, in_chans, size, size)


def _read_plan(path: str, index: int | None = None) -> tuple[Any, str]:
    """The plan a file holds, and which one it is: the output of `lmzoo solve` (several; ``index``,
    by default the first), an entry's plan.json (a solve record) or a bare plan."""
    import lmzoo
    from lmzoo.errors import InvalidPlanError
    from lmzoo.files import read_json

    data = read_json(path, what="plan file", error=InvalidPlanError)
    which = f"{path}"
    if isinstance(data, dict) and "plans" in data:  # the output of `lmzoo solve`
        plans = data["plans"]
        if not plans:
            raise InvalidPlanError(f"{path} holds no plan")
        chosen = index or 0
        if chosen >= len(plans):
            raise InvalidPlanError(f"{path} holds {len(plans)} plans; --plan-index must be below that")
        record = plans[chosen]
        target = record.get("target") or {}
        aim = ", ".join(f"{k} {v:g}" for k, v in target.items()) if isinstance(target, dict) else ""
        which = f"plan {chosen} of the {len(plans)} in {path}" + (f" ({aim})" if aim else "")
        if len(plans) > 1 and index is None:
            which += "; choose another with --plan-index"
        data = record["plan"]
    elif index not in (None, 0):
        raise InvalidPlanError(f"{path} holds one plan; drop --plan-index")
    elif isinstance(data, dict) and isinstance(data.get("plan"), dict):  # a solve record (plan.json)
        which = f"the solve record {path} (target {data.get('target_speedup', '?')}x)"
        data = data["plan"]
    return lmzoo.Plan.from_dict(data), which
