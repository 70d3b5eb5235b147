"""The zoo's commands: ``lmzoo list``, ``info``, ``show``, ``results``, ``card``, ``export`` and
``publish``. Every command that reads a checkpoint takes a zoo entry name (a profile build's
``<entry>-<profile>`` too), ``hf-hub:ORG/REPO[@REV]`` or ``local-dir:PATH``."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import click

from lmzoo.cli.options import choice, json_output, user_errors
from lmzoo.core.candidates import METHODS
from lmzoo.export import DEFAULT_OPSET, FORMATS


@click.command(name="list")
@click.argument("pattern", required=False)
@choice(
    "--method", METHODS, None, "Only entries of this selection method (the paper's baselines: depth, layer)."
)
@json_output
@user_errors
def list_command(pattern: str | None, method: str | None, as_json: bool) -> None:
    """List zoo entries (fnmatch PATTERN, e.g. 'mobilenetv2-*'): LayerMerge's and the baselines',
    built locally, published, or defined by a recipe only; builds of other recipe profiles
    (<entry>-smoke) are marked."""
    import lmzoo
    from lmzoo.recipes import DEFAULT_PROFILE
    from lmzoo.zoo import info, registry

    entries = registry()
    records = [info(name, entries=entries) for name in lmzoo.list_models(pattern, method=method)]
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    for r in records:
        state = "built" if r["local_path"] else ("published" if r["published"] else "recipe only")
        if r.get("profile", DEFAULT_PROFILE) != DEFAULT_PROFILE:
            state += f" ({r['profile']} profile: not the zoo entry)"
        target = f"{r['target_speedup']:g}x" if r.get("target_speedup") else ""
        click.echo(
            f"{r['name']:<48} {target:>6}  {r.get('method') or '':<16} {r.get('dataset', ''):<14} {state}"
        )


@click.command()
@click.argument("name")
@click.option("--revision", default=None, help="Hub revision (tag, branch or commit sha).")
@json_output
@user_errors
def info(name: str, revision: str | None, as_json: bool) -> None:
    """What the zoo knows of NAME (a zoo entry, hf-hub:ORG/REPO or local-dir:PATH): recipe,
    method, profile, Hub repo and revision, local checkpoint and its measured figures."""
    from lmzoo.zoo import info as zoo_info

    record = zoo_info(name, revision=revision)
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
    from lmzoo.checkpoint import CONFIG_NAME, CheckpointError, read_config
    from lmzoo.engine import tensor_output
    from lmzoo.files import read_text
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
    click.echo(
        read_text(card, what="model card", error=CheckpointError)
        if card.is_file()
        else f"(no card in {directory})"
    )


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
    """The checkpoint directory of a built entry (weights included): its store directory, or a
    local-dir: path."""
    from lmzoo.checkpoint import CONFIG_NAME, read_config
    from lmzoo.store import entry_dir
    from lmzoo.zoo import info as zoo_info

    if name.startswith("local-dir:"):
        directory = Path(name.removeprefix("local-dir:"))
        read_config(directory)  # not a checkpoint, or a damaged one: one error saying which
        return directory
    if name.startswith("hf-hub:"):
        from lmzoo.errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"{name} is on the Hub; this command works on a local checkpoint (the store or local-dir:)"
        )
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
@click.option(
    "--update",
    is_flag=True,
    help="Keep the rows of OUT that the store has no entry for (built or published elsewhere); the "
    "store's rows replace those of the same model, data set and profile.",
)
@user_errors
def results(pattern: str | None, out: str, update: bool) -> None:
    """Collect the built entries of the local store (fnmatch PATTERN) into a results CSV: one row per
    model and one per base, with target, predicted and measured speed-ups, the latency setting and the
    test metric; plus frontier-<arch>-<dataset>.png (metric against measured speed-up, all methods)
    for every architecture and data set the store's entries cover."""
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.recipes import DEFAULT_PROFILE
    from lmzoo.results import merge_results, plot_frontier, read_results, results_rows, write_results
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
    written = merge_results(read_results(target), rows) if update and target.is_file() else rows
    write_results(written, target)
    click.echo(f"{target}: {sum(r['method'] != 'base' for r in written)} models")
    for arch, dataset, profile in sorted({(r["arch"], r["dataset"], r["profile"]) for r in rows}):
        suffix = "" if profile == DEFAULT_PROFILE else f"-{profile}"  # a smoke build's plot stays apart
        plot = target.with_name(f"frontier-{arch}-{dataset}{suffix}.png")
        if plot_frontier(written, plot, group=(arch, dataset), profile=profile):
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
@click.option("--revision", default=None, help="Hub revision (tag, branch or commit sha) of a Hub name.")
@user_errors
def card(name: str, results: str | None, out: str | None, revision: str | None) -> None:
    """Regenerate the model card (README.md) of NAME from what its checkpoint holds: a built entry
    or local-dir:PATH (the card is rewritten there; prints its path), or hf-hub:ORG/REPO or a
    published entry not built here (prints the regenerated card, or writes it under --out)."""
    import shutil

    from lmzoo.cards import card_from_checkpoint
    from lmzoo.checkpoint import CheckpointError, read_config, weights_name
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.files import link_root, regular_files
    from lmzoo.results import plot_frontier, read_results
    from lmzoo.store import is_built
    from lmzoo.zoo import checkpoint_files

    local = name.startswith("local-dir:") or (
        revision is None and not name.startswith("hf-hub:") and is_built(name)
    )
    directory = _built_entry(name) if local else checkpoint_files(name, revision=revision)
    weights = weights_name(read_config(directory))
    frontier = None
    if results is not None:  # drawn into the checkpoint, or beside the card written from a Hub one
        if not local and out is None:
            raise InvalidArgumentError(
                "--results with a Hub checkpoint needs --out (its snapshot is read-only)"
            )
        frontier = (directory if local else Path(str(out))) / "frontier.png"
        frontier.parent.mkdir(parents=True, exist_ok=True)
        plot_frontier(read_results(results), frontier, entry=read_config(directory)["name"])
    text = card_from_checkpoint(directory, frontier=frontier is not None or None)
    if local:
        (directory / "README.md").write_text(text)
    if out:
        target = Path(out)
        within = link_root(directory)  # a Hub snapshot's files are links into its cache folder
        for source in regular_files(directory, error=CheckpointError, within=within, skip=(".cache", ".git")):
            relative = source.relative_to(directory)
            if str(relative) != weights:
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.resolve() != source.resolve():
                    shutil.copyfile(source, path)
        (target / "README.md").write_text(text)
        click.echo(str(target / "README.md"))
    elif local:
        click.echo(str(directory / "README.md"))
    else:
        click.echo(text)


@click.command(name="export")
@click.argument("name")
@choice("--format", FORMATS, FORMATS[0], "Export format.")
@click.option("--opset", type=click.IntRange(min=7), default=DEFAULT_OPSET, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="A batch dimension of any size (checked at 1 and 3).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the file [default: model.onnx in the checkpoint directory].",
)
@user_errors
def export(name: str, format: str, opset: int, dynamic_batch: bool, out: str | None) -> None:
    """Export the merged network of built entry NAME (or local-dir:PATH) to ONNX, run it in
    onnxruntime against PyTorch before keeping it, and write the check's record (onnx.json) next
    to it; `lmzoo card` then says how it was checked and `lmzoo publish` uploads both. Prints the
    file's path."""
    from lmzoo.export import export_checkpoint

    path, record = export_checkpoint(_built_entry(name), out=out, opset=opset, dynamic_batch=dynamic_batch)
    click.echo(f"checked in onnxruntime: {record.describe()}", err=True)
    click.echo(str(path))


@click.command()
@click.argument("name")
@click.option("--repo-id", default=None, help="Publish to this Hub repository (ORG/REPO) as one commit.")
@click.option(
    "--to-git",
    type=click.Path(file_okay=False),
    default=None,
    help="Instead, commit into the git repository at this directory (Hub layout, for mirrors).",
)
@click.option(
    "--tag",
    default=None,
    help="Tag the published commit [default: lmzoo-<version>; when that names another commit, "
    "lmzoo-<version>-<sha>].",
)
@click.option("--move-tag", is_flag=True, help="Move --tag when it already names another commit.")
@click.option(
    "--onnx", "with_onnx", is_flag=True, help="Export to ONNX first (lmzoo export) and publish it too."
)
@click.option(
    "--allow-profile",
    is_flag=True,
    help="Publish a build of a recipe profile other than the default (e.g. a smoke build).",
)
@click.option("--private", is_flag=True, help="Create the Hub repository as private.")
@user_errors
def publish(
    name: str,
    repo_id: str | None,
    to_git: str | None,
    tag: str | None,
    move_tag: bool,
    with_onnx: bool,
    allow_profile: bool,
    private: bool,
) -> None:
    """Publish built entry NAME (or local-dir:PATH) to the Hub (--repo-id; token from HF_TOKEN or
    `hf auth login`) or to a git mirror (--to-git). Repeatable: unchanged files make no new commit
    and the tag stays. Prints the commit sha; pin it in the recipe's hub.revisions so
    `lmzoo.load(NAME)` downloads exactly that."""
    from lmzoo.checkpoint import read_config
    from lmzoo.errors import InvalidArgumentError
    from lmzoo.hub import publish_to_git, publish_to_hub

    if (repo_id is None) == (to_git is None):
        raise InvalidArgumentError("give exactly one of --repo-id ORG/REPO or --to-git DIR")
    directory = _built_entry(name)
    profile = read_config(directory).get("profile", "default")
    if profile != "default" and not allow_profile:
        raise InvalidArgumentError(
            f"{name} was built with the recipe's {profile!r} profile, not as the zoo entry; rebuild it "
            "without --profile, or pass --allow-profile to publish it as what it is"
        )
    if with_onnx:
        from lmzoo.export import export_checkpoint

        export_checkpoint(directory)
        _regenerate_card(directory)
    if to_git:
        published = publish_to_git(directory, to_git, tag=tag, move_tag=move_tag)
    else:
        assert repo_id is not None
        published = publish_to_hub(directory, repo_id, tag=tag, move_tag=move_tag, private=private)
    change = "a new commit" if published.new_commit else "no new commit: the files were already there"
    click.echo(f"published {name}: {change}, tagged {published.tag}", err=True)
    click.echo(published.sha)


def _regenerate_card(directory: Path) -> None:
    """Rewrite the card of a checkpoint whose files changed (an export added), when it has the records
    a card is made from."""
    from lmzoo.cards import card_from_checkpoint

    if (directory / "recipe.yaml").is_file():
        (directory / "README.md").write_text(card_from_checkpoint(directory))
