"""The build's commands: ``lmzoo build`` (every stage of a recipe's entries) and ``lmzoo tables``
(one table, through the same stage code and cache)."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from lmzoo.cli.options import choice, recipe_options, user_errors
from lmzoo.core.candidates import METHODS
from lmzoo.importance.executors import EXECUTORS
from lmzoo.pipeline.stages import STAGE_NAMES, Stage


@click.command()
@click.argument("recipe")
@recipe_options
@choice("--until", STAGE_NAMES, Stage.CARD.value, "Stop after this stage.")
@choice(
    "--method",
    METHODS,
    None,
    "Selection method: the paper's baselines are depth (depth compression) and layer (layer "
    "pruning); layermerge-union (an lmzoo extension) adds layer pruning's blocks to LayerMerge's; "
    "entries are named <stem>-<method>-<s>x [default: the recipe's].",
)
@click.option(
    "--speedup",
    "speedups",
    type=click.FloatRange(min=1, min_open=True),
    multiple=True,
    help="Build this target speed-up (repeatable), listed in the recipe or not; it reuses the "
    "recipe's base and tables and is named <recipe>-<s>x [default: the recipe's speed-ups].",
)
@click.option(
    "--seeds",
    type=click.IntRange(1, 100),
    default=None,
    help="Fine-tune each entry from this many seeds (the recipe's seed, +1, ...); results and cards "
    "report their mean and standard deviation, the checkpoint is the first [default: the recipe's, 1].",
)
@user_errors
def build(
    recipe: str,
    profile: str | None,
    workdir: str | None,
    device: str,
    quiet: bool,
    until: str,
    method: str | None,
    speedups: tuple[float, ...],
    seeds: int | None,
) -> None:
    """Build zoo entries from RECIPE (a recipe file, a recipe name for all its speed-ups, or one zoo
    entry name such as mobilenetv2-fmnist-layermerge-1.6x or the baseline mobilenetv2-fmnist-depth-1.6x).
    Every stage is cached under the work directory, so a rerun resumes and the baselines reuse the
    base and tables; the checkpoints go to the local store ($LMZOO_HOME). A build with another
    --profile than the default is named <entry>-<profile> (e.g. ...-1.6x-smoke): it never replaces
    the entry."""
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.pipeline.builder import build as run_build
    from lmzoo.recipes import load_recipe

    resolved, speedup = load_recipe(recipe, profile, method=method)
    if speedup is not None and speedups:
        raise InvalidArgumentError(f"{recipe} names its speed-up; give the recipe name with --speedup")
    if seeds is not None:
        resolved = dataclasses.replace(resolved, seeds=seeds)
    written = run_build(
        resolved,
        speedups=list(speedups) or ([speedup] if speedup is not None else None),
        workdir=workdir,
        until=until,
        device=device,
        progress=not quiet,
        log=lambda message: click.echo(message, err=True),
    )
    for path in written:
        click.echo(str(path))


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


@click.command()
@click.argument("kind", type=click.Choice([Stage.IMPORTANCE.value, Stage.LATENCY.value]))
@click.argument("recipe")
@recipe_options
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the table here.")
@click.option("--shard", callback=_parse_shard, default=None, help="Run every n-th importance entry: i/n.")
@choice("--executor", EXECUTORS, EXECUTORS[0], "Where importance entries run.")
@click.option("--estimator", default=None, help="Override the recipe's importance estimator.")
@user_errors
def tables(
    kind: str,
    recipe: str,
    profile: str | None,
    workdir: str | None,
    device: str,
    quiet: bool,
    out: str | None,
    shard: tuple[int, int] | None,
    executor: str,
    estimator: str | None,
) -> None:
    """Build one table (importance or latency) for RECIPE (a recipe file, recipe name or zoo entry name),
    with the same stage code and cache as `lmzoo build`. Prints the table's path."""
    from lmzoo.pipeline.builder import Build
    from lmzoo.recipes import load_recipe
    from lmzoo.tables import ImportanceTable, LatencyTable

    resolved, _ = load_recipe(recipe, profile)
    session = Build(resolved, workdir=workdir, device=device, progress=not quiet)
    table: LatencyTable | ImportanceTable
    if kind == Stage.LATENCY.value:
        table, path = session.latency
    else:
        from lmzoo.importance.table import IncompleteTableError

        try:
            table, path = session.importance(estimator=estimator, shard=shard, executor=executor)
        except IncompleteTableError as err:
            if shard is None:
                raise
            # this shard's entries are done; the table is whole once every shard is
            click.echo(f"shard {shard[0]}/{shard[1]} done: {err}", err=True)
            return
    if out:
        table.save(out)
    click.echo(out or str(path))
