"""The ``lmzoo`` command line. Data goes to stdout, logs to stderr; user errors are one line."""

from __future__ import annotations

import fnmatch
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
from lmzoo.core.solver import DEFAULT_LEVELS, DEFAULT_OBJECTIVE, OBJECTIVES
from lmzoo.latency.backends import BACKENDS

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

    import lmzoo
    from lmzoo.core.plan import random_plan

    model = _timm_model(model_name, in_chans=in_chans, num_classes=num_classes)
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
    "--objective",
    type=click.Choice(OBJECTIVES),
    default=DEFAULT_OBJECTIVE,
    show_default=True,
    help="Maximise the sum of I (the paper's) or the product of I (blind to the block count).",
)
@click.option(
    "--unreachable",
    type=click.Choice(["error", "fastest"]),
    default="error",
    show_default=True,
    help="For a target beyond the latency table's fastest plan: stop with an error, or output that plan.",
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
    objective: str,
    unreachable: str,
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
    o = solver.check_objective(objective)
    results: list[dict[str, Any]] = []
    if whole_frontier:
        for point in solver.frontier(latency, importance, levels=levels, method=m, objective=o):
            results.append(_plan_record(latency, point.plan, importance=point.importance))
    targets = [{"budget_ms": b} for b in budgets] + [{"speedup": s} for s in speedups]
    for target in targets:
        plan, max_speedup = solver.solve_reachable(
            latency, importance, **target, unreachable=unreachable, levels=levels, method=m, objective=o
        )
        value = solver.plan_importance(importance, plan, objective=o)
        record = _plan_record(latency, plan, importance=value, target=target)
        if max_speedup is not None:
            record["unreachable"] = {"max_speedup": max_speedup}
        results.append(record)
    for record in results:
        click.echo(_plan_summary(record), err=True)
    text = json.dumps({"method": m, "objective": o, "plans": results}, indent=1)
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
    if "unreachable" in record:
        target += f"beyond the table (its fastest plan: {record['unreachable']['max_speedup']:.3f}x), "
    return (
        f"{target}{record['predicted_ms']:.4g} ms predicted ({speed:.3f}x){importance}; "
        f"activations kept {record['boundaries_kept']}/{record['units']}, "
        f"convs kept {record['convs_kept']}/{record['units']}, merged kernels {kernels}, "
        f"depth {record['units']} -> {record['depth']}"
    )


@main.command()
@click.argument("model_name")
@click.option(
    "--plan", "plan_file", type=click.Path(dir_okay=False), help="Plan JSON (as written by `lmzoo solve`)."
)
@click.option(
    "--latency-table", type=click.Path(dir_okay=False), help="Latency table JSON, for the prediction."
)
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", default=1, show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads [default: torch's current setting].")
@click.option("--input-size", default=224, show_default=True, help="Square input resolution.")
@click.option("--in-chans", default=3, show_default=True)
@click.option("--num-classes", default=None, type=int, help="Classifier size (timm default if omitted).")
@click.option("--runs", type=int, default=None, help="Timed runs per network [default: by device].")
@click.option(
    "--rounds", default=10, show_default=True, help="Alternating rounds (base and merged interleaved)."
)
@click.option(
    "--card", "card_file", type=click.Path(dir_okay=False), help="Write the latency card JSON here (+ .png)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
@_user_errors
def bench(
    model_name: str,
    plan_file: str | None,
    latency_table: str | None,
    backend: str,
    device: str,
    batch_size: int,
    dtype: str,
    threads: int | None,
    input_size: int,
    in_chans: int,
    num_classes: int | None,
    runs: int | None,
    rounds: int,
    card_file: str | None,
    as_json: bool,
) -> None:
    """Measure a timm model's base vs merged latency (random weights: latency does not depend on them).

    Base and merged are timed interleaved; the base is in deploy form (norms folded), so the
    speed-up counts what the plan removes. Without --plan the identity plan is used.
    """
    from pathlib import Path

    import lmzoo
    from lmzoo.core.tables import LatencyTable
    from lmzoo.errors import InvalidTableError
    from lmzoo.latency.card import measure_plan, plot_block_latency, write_card

    model = _timm_model(model_name, in_chans=in_chans, num_classes=num_classes)
    x = _image_input(in_chans, input_size)
    spec = lmzoo.trace(model, x)
    plan = lmzoo.Plan.identity(spec) if plan_file is None else _read_plan(plan_file)
    plan.validate(spec)
    table = LatencyTable.load(latency_table) if latency_table else None
    if table is not None and table.spec_fingerprint not in (None, spec.fingerprint):
        raise InvalidTableError(
            f"{latency_table} was measured for another network than {model_name} at {input_size}"
        )
    card, timed = measure_plan(
        model_name,
        model,
        spec,
        plan,
        x,
        backend=backend,
        device=device,
        batch_size=batch_size,
        dtype=dtype,
        threads=threads,
        runs=runs,
        rounds=rounds,
        table=table,
    )
    if card_file:
        write_card(card, card_file)
        if table is not None:
            plot_block_latency(table, spec, plan, Path(card_file).with_suffix(".png"), title=model_name)
    if as_json:
        click.echo(json.dumps(card, indent=1))
        return
    m = card["measurement"]
    click.echo(f"{model_name} on {m['backend']}, {m['device_name']}, batch {batch_size}, {m['dtype']}")
    click.echo(f"  base (norms folded): {timed['base']}")
    click.echo(f"  base as built:       {timed['unfused']}")
    click.echo(f"  merged:              {timed['merged']}")
    click.echo(f"  speed-up:            {card['speedup']:.3f}x")
    if card["predicted"]:
        p = card["predicted"]
        click.echo(
            f"  predicted:           {p['merged_ms']:.4g} ms ({p['speedup']:.3f}x); "
            f"error {p['merged_error'] * 100:+.1f}% of the prediction"
        )


@main.command()
@click.argument("recipe")
@click.option("--profile", default=None, help="Recipe profile, e.g. smoke [default: the recipe's default].")
@click.option(
    "--workdir", type=click.Path(file_okay=False), default=None, help="Stage cache [default: $LMZOO_WORKDIR]."
)
@click.option(
    "--until",
    type=click.Choice(["base", "latency", "importance", "solve", "finetune", "merge", "evaluate", "card"]),
    default="card",
    show_default=True,
    help="Stop after this stage.",
)
@click.option("--device", default="cpu", show_default=True, help="Device for training and evaluation.")
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=None,
    help="Selection method: the paper's baselines are depth (depth compression) and layer (layer "
    "pruning); layermerge-union (an lmzoo extension) adds layer pruning's blocks to LayerMerge's; "
    "entries are named <stem>-<method>-<s>x [default: the recipe's].",
)
@_user_errors
def build(
    recipe: str, profile: str | None, workdir: str | None, until: str, device: str, method: str | None
) -> None:
    """Build zoo entries from RECIPE (a recipe file, a recipe name for all its speed-ups, or one zoo
    entry name such as mobilenetv2-fmnist-layermerge-1.6x or the baseline mobilenetv2-fmnist-depth-1.6x).
    Every stage is cached under the work directory, so a rerun resumes and the baselines reuse the
    base and tables; the checkpoints go to the local store ($LMZOO_HOME)."""
    from lmzoo import pipeline
    from lmzoo.recipes import load_recipe

    resolved, speedup = load_recipe(recipe, profile, method=method)
    written = pipeline.build(
        resolved,
        speedups=[speedup] if speedup is not None else None,
        workdir=workdir,
        until=until,
        device=device,
        log=lambda message: click.echo(message, err=True),
    )
    for path in written:
        click.echo(str(path))


@main.command(name="list")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@_user_errors
def list_command(pattern: str | None, as_json: bool) -> None:
    """List zoo entries (fnmatch PATTERN, e.g. 'mobilenetv2-*'): built locally, published, or
    defined by a recipe only."""
    import lmzoo
    from lmzoo.zoo import info, registry

    entries = registry()
    records = [info(name, entries=entries) for name in lmzoo.list_models(pattern)]
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    for r in records:
        state = "built" if r["local_path"] else ("published" if r["published"] else "recipe only")
        target = f"{r['target_speedup']:g}x" if "target_speedup" in r else ""
        click.echo(f"{r['name']:<44} {target:>6}  {r.get('dataset', ''):<14} {state}")


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@_user_errors
def info(name: str, as_json: bool) -> None:
    """What the zoo knows of entry NAME: recipe, Hub repo and revision, local checkpoint and its
    measured figures."""
    from lmzoo.zoo import info as zoo_info

    record = zoo_info(name)
    if as_json:
        click.echo(json.dumps(record, indent=1))
        return
    for key, value in record.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()
            )
        click.echo(f"{key:<18} {value}")


@main.command()
@click.argument("name")
@click.option("--revision", default=None, help="Hub revision (tag, branch or commit sha).")
@_user_errors
def show(name: str, revision: str | None) -> None:
    """Load entry NAME (or hf-hub:ORG/REPO, local-dir:PATH) as `lmzoo.load` does, check that it runs,
    and print its model card."""
    from pathlib import Path

    import torch

    import lmzoo
    from lmzoo.checkpoint import CONFIG_NAME, example_inputs, read_config
    from lmzoo.engine import tensor_output

    model = lmzoo.load(name, revision=revision)
    directory = Path(str(model.lmzoo_checkpoint))  # set by lmzoo.checkpoint.load_checkpoint
    config = read_config(directory)
    with torch.no_grad():
        out = tensor_output(model(*example_inputs(config)))
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    params = sum(p.numel() for p in model.parameters())
    click.echo(
        f"loaded {name}: {type(model).__name__}, {convs} convolutions, {params / 1e6:.2f} M parameters, "
        f"output {tuple(out.shape)} for input {tuple(config['input_shape'])} ({directory / CONFIG_NAME})",
        err=True,
    )
    card = directory / "README.md"
    if not card.is_file():  # a Hub download fetches only what loading needs; the card comes now
        card = _hub_card(name, directory) or card
    click.echo(card.read_text() if card.is_file() else f"(no card in {directory})")


def _hub_card(name: str, snapshot: Any) -> Any:
    from lmzoo.hub import HUB_PREFIX, download_card, parse_hub_name
    from lmzoo.zoo import registry

    repo_id: str | None
    if name.startswith(HUB_PREFIX):
        repo_id = parse_hub_name(name)[0]
    else:
        entry = registry().get(name)
        repo_id = entry.repo_id if entry else None
    return download_card(repo_id, snapshot.name) if repo_id else None  # snapshot folder = commit sha


def _built_entry(name: str) -> Any:
    from pathlib import Path

    from lmzoo.checkpoint import CONFIG_NAME
    from lmzoo.zoo import entry_dir
    from lmzoo.zoo import info as zoo_info

    if name.startswith("local-dir:"):
        directory = Path(name.removeprefix("local-dir:"))
    else:
        zoo_info(name)  # unknown names fail here, with suggestions
        directory = entry_dir(name)
    if not (directory / CONFIG_NAME).is_file():
        from lmzoo.zoo import UnknownModelError

        raise UnknownModelError(
            f"{name} is not built in {directory.parent}; build it with `lmzoo build {name}`"
        )
    return directory


@main.command()
@click.argument("pattern", required=False)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="cards/results.csv",
    show_default=True,
    help="The results CSV to write; a frontier plot per architecture and data set goes next to it.",
)
@_user_errors
def results(pattern: str | None, out: str) -> None:
    """Collect the built entries of the local store (fnmatch PATTERN) into a results CSV: one row per
    model and one per base, with target, predicted and measured speed-ups, the latency setting and the
    test metric; plus frontier-<arch>-<dataset>.png (metric against measured speed-up, all methods)."""
    from pathlib import Path

    from lmzoo.cards import plot_frontier, results_rows, write_results
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.zoo import store_root

    root = store_root()
    directories = [
        p
        for p in (root.iterdir() if root.is_dir() else [])
        if pattern is None or fnmatch.fnmatch(p.name, pattern)
    ]
    rows = results_rows(directories)
    if not rows:
        raise InvalidArgumentError(
            f"no built entries in {root} match {pattern or '*'}; build some with `lmzoo build`"
        )
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_results(rows, target)
    click.echo(f"{target}: {sum(r['method'] != 'base' for r in rows)} models")
    for group in sorted({(r["arch"], r["dataset"]) for r in rows}):
        plot = target.with_name(f"frontier-{group[0]}-{group[1]}.png")
        if plot_frontier(rows, plot, group=group):
            click.echo(str(plot))


@main.command()
@click.argument("name")
@click.option(
    "--results", type=click.Path(dir_okay=False), default=None, help="A results CSV: also draw frontier.png."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Also mirror the card files (everything but the weights) here, e.g. cards/NAME.",
)
@_user_errors
def card(name: str, results: str | None, out: str | None) -> None:
    """Regenerate the model card (README.md) of built entry NAME (or local-dir:PATH) from what its
    checkpoint holds. Prints the card's path."""
    import shutil
    from pathlib import Path

    from lmzoo.cards import card_from_checkpoint
    from lmzoo.checkpoint import WEIGHTS_NAME

    directory = _built_entry(name)
    text = card_from_checkpoint(directory, results=results)
    (directory / "README.md").write_text(text)
    if out:
        target = Path(out)
        for source in sorted(directory.rglob("*")):
            if source.is_file() and source.name != WEIGHTS_NAME:
                path = target / source.relative_to(directory)
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, path)
    click.echo(str(Path(out) / "README.md") if out else str(directory / "README.md"))


@main.command()
@click.argument("name")
@click.option("--repo-id", default=None, help="Publish to this Hub repository (ORG/REPO) as one commit.")
@click.option(
    "--to-git",
    type=click.Path(file_okay=False),
    default=None,
    help="Instead, commit into the git repository at this directory (Hub layout, for mirrors).",
)
@click.option("--tag", default=None, help="Tag the new revision [default: lmzoo-<version>].")
@click.option("--private", is_flag=True, help="Create the Hub repository as private.")
@_user_errors
def publish(name: str, repo_id: str | None, to_git: str | None, tag: str | None, private: bool) -> None:
    """Publish built entry NAME (or local-dir:PATH) to the Hub (--repo-id; token from HF_TOKEN or
    `hf auth login`) or to a git mirror (--to-git). Prints the new revision (commit sha); pin it in
    the recipe's hub.revisions so `lmzoo.load(NAME)` downloads exactly that."""
    from lmzoo import __version__
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.hub import publish_to_git, publish_to_hub

    if (repo_id is None) == (to_git is None):
        raise InvalidArgumentError("give exactly one of --repo-id ORG/REPO or --to-git DIR")
    directory = _built_entry(name)
    tag = tag or f"lmzoo-{__version__}"
    if to_git:
        sha = publish_to_git(directory, to_git, tag=tag)
    else:
        assert repo_id is not None
        sha = publish_to_hub(directory, repo_id, tag=tag, private=private)
    click.echo(sha)


def _parse_shard(_ctx: Any, _param: Any, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter("expected i/n with 0 <= i < n, e.g. 0/2") from None
    if not 0 <= i < n:
        raise click.BadParameter("expected i/n with 0 <= i < n, e.g. 0/2")
    return i, n


@main.command()
@click.argument("kind", type=click.Choice(["importance", "latency"]))
@click.argument("recipe")
@click.option("--profile", default=None, help="Recipe profile, e.g. smoke [default: the recipe's default].")
@click.option(
    "--workdir", type=click.Path(file_okay=False), default=None, help="Stage cache [default: $LMZOO_WORKDIR]."
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the table here.")
@click.option("--shard", callback=_parse_shard, default=None, help="Run every n-th importance entry: i/n.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--estimator", default=None, help="Override the recipe's importance estimator.")
@click.option("--device", default="cpu", show_default=True, help="Device for training and importance runs.")
@_user_errors
def tables(
    kind: str,
    recipe: str,
    profile: str | None,
    workdir: str | None,
    out: str | None,
    shard: tuple[int, int] | None,
    executor: str,
    estimator: str | None,
    device: str,
) -> None:
    """Build one table (importance or latency) for RECIPE (a recipe file, family or zoo entry name),
    with the same stage code and cache as `lmzoo build`. Prints the table's path."""
    from lmzoo import pipeline
    from lmzoo.recipes import load_recipe
    from lmzoo.tasks import task_for

    resolved, _ = load_recipe(recipe, profile)
    ws = pipeline.Workspace.for_recipe(resolved, workdir)
    model = pipeline.base_stage(ws, device=device)
    task = task_for(model)
    train_set, _test = pipeline.datasets(resolved)
    spec, example = pipeline.traced(model, task, train_set)
    table: Any
    if kind == "latency":
        table, path = pipeline.latency_stage(ws, model, spec, example)
    else:
        table, path = pipeline.importance_stage(
            ws, model, spec, train_set, estimator=estimator, shard=shard, executor=executor, device=device
        )
    if out:
        table.save(out)
    click.echo(out or str(path))


def _timm_model(name: str, *, in_chans: int, num_classes: int | None) -> Any:
    import timm

    from lmzoo.errors import UnsupportedModelError

    if not timm.is_model(name):
        raise UnsupportedModelError(f"{name!r} is not a timm model name (see timm.list_models())")
    kwargs: dict[str, Any] = {"in_chans": in_chans}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return timm.create_model(name, **kwargs).eval()


def _image_input(in_chans: int, size: int) -> Any:
    import torch

    return torch.randn(1, in_chans, size, size)


def _read_plan(path: str) -> Any:
    from pathlib import Path

    import lmzoo
    from lmzoo.errors import InvalidPlanError

    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise InvalidPlanError(f"cannot read the plan {path}: {err.strerror}") from None
    except ValueError as err:
        raise InvalidPlanError(f"{path} is not JSON: {err}") from None
    if isinstance(data, dict) and "plans" in data:  # the output of `lmzoo solve`: take its first plan
        plans = data["plans"]
        if not plans:
            raise InvalidPlanError(f"{path} holds no plan")
        data = plans[0]["plan"]
    return lmzoo.Plan.from_dict(data)


if __name__ == "__main__":
    main()
