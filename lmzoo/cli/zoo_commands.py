"""The zoo's commands: ``lmzoo list``, ``info``, ``show``, ``results``, ``card`` and ``publish``."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import click

from lmzoo.cli.options import json_output, user_errors


@click.command(name="list")
@click.argument("pattern", required=False)
@json_output
@user_errors
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


@click.command()
@click.argument("name")
@json_output
@user_errors
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


@click.command()
@click.argument("name")
@click.option("--revision", default=None, help="Hub revision (tag, branch or commit sha).")
@user_errors
def show(name: str, revision: str | None) -> None:
    """Load entry NAME (or hf-hub:ORG/REPO, local-dir:PATH) as `lmzoo.load` does, check that it runs,
    and print its model card."""
    import torch

    import lmzoo
    from lmzoo.checkpoint import CONFIG_NAME, read_config
    from lmzoo.engine import tensor_output
    from lmzoo.rebuild import example_inputs

    model = lmzoo.load(name, revision=revision)
    directory = Path(str(model.lmzoo_checkpoint))  # set by lmzoo.checkpoint.load_checkpoint
    config = read_config(directory)
    with torch.no_grad():
        out = tensor_output(model(*example_inputs(config["input_shape"], config["task"])))
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
    from lmzoo.checkpoint import CONFIG_NAME
    from lmzoo.store import entry_dir
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


@click.command()
@click.argument("pattern", required=False)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="cards/results.csv",
    show_default=True,
    help="The results CSV to write; a frontier plot per architecture and data set goes next to it.",
)
@user_errors
def results(pattern: str | None, out: str) -> None:
    """Collect the built entries of the local store (fnmatch PATTERN) into a results CSV: one row per
    model and one per base, with target, predicted and measured speed-ups, the latency setting and the
    test metric; plus frontier-<arch>-<dataset>.png (metric against measured speed-up, all methods)."""
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.results import plot_frontier, results_rows, write_results
    from lmzoo.store import built_entries, entry_dir, store_root

    root = store_root()
    names = [n for n in built_entries() if pattern is None or fnmatch.fnmatch(n, pattern)]
    rows = results_rows([entry_dir(n) for n in names])
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


@click.command()
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
@user_errors
def card(name: str, results: str | None, out: str | None) -> None:
    """Regenerate the model card (README.md) of built entry NAME (or local-dir:PATH) from what its
    checkpoint holds. Prints the card's path."""
    import shutil

    from lmzoo.cards import card_from_checkpoint
    from lmzoo.checkpoint import WEIGHTS_NAME, read_config
    from lmzoo.results import plot_frontier, read_results

    directory = _built_entry(name)
    if results is not None:
        plot_frontier(read_results(results), directory / "frontier.png", entry=read_config(directory)["name"])
    text = card_from_checkpoint(directory)
    (directory / "README.md").write_text(text)
    if out:
        target = Path(out)
        for source in sorted(directory.rglob("*")):
            if source.is_file() and source.name != WEIGHTS_NAME:
                path = target / source.relative_to(directory)
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, path)
    click.echo(str(Path(out) / "README.md") if out else str(directory / "README.md"))


@click.command()
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
@user_errors
def publish(name: str, repo_id: str | None, to_git: str | None, tag: str | None, private: bool) -> None:
    """Publish built entry NAME (or local-dir:PATH) to the Hub (--repo-id; token from HF_TOKEN or
    `hf auth login`) or to a git mirror (--to-git). Prints the new revision (commit sha); pin it in
    the recipe's hub.revisions so `lmzoo.load(NAME)` downloads exactly that."""
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.hub import publish_to_git, publish_to_hub
    from lmzoo.version import __version__

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
