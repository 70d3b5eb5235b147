"""The zoo: the registry of entries the recipes define, over the local store of built checkpoints
(:mod:`lmzoo.store`), and ``lmzoo.load``. A published entry has a Hub repo id and a pinned revision in
its recipe's ``hub`` section (:mod:`lmzoo.hub`). Listing and describing entries imports no torch.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmzoo.checkpoint import load_checkpoint
from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.hub import HUB_PREFIX, HubError, download_checkpoint, parse_hub_name
from lmzoo.store import built_entries, entry_dir, is_built, store_root

if TYPE_CHECKING:
    from torch import nn

LOCAL_PREFIX = "local-dir:"


class UnknownModelError(LmzooError):
    """No zoo entry, local checkpoint or Hub repository has this name."""


@dataclass(frozen=True)
class ZooEntry:
    """One zoo entry as its recipe defines it."""

    name: str
    recipe: str
    #: where the base architecture comes from (lmzoo.sources) and its name there
    source: str
    arch: str
    dataset: str
    target_speedup: float
    latency_backend: str
    latency_device: str
    latency_batch: int
    #: "<org>/<name>" when the recipe names a Hub organisation
    repo_id: str | None
    #: the pinned commit sha once published
    revision: str | None

    @property
    def published(self) -> bool:
        return self.repo_id is not None and self.revision is not None


def registry() -> dict[str, ZooEntry]:
    """Every zoo entry the recipes define (works offline). A recipe that does not parse is left out
    here; ``lmzoo build`` on it reports why."""
    from lmzoo.recipes import RecipeError, parse_recipe, recipe_files

    entries: dict[str, ZooEntry] = {}
    for path in recipe_files().values():
        try:
            recipe = parse_recipe(path)
        except RecipeError:
            continue
        for speedup in recipe.solve.speedups:
            name = recipe.entry_name(speedup)
            entries[name] = ZooEntry(
                name=name,
                recipe=recipe.name,
                source=recipe.model.source,
                arch=recipe.model.arch,
                dataset=recipe.data.dataset,
                target_speedup=speedup,
                latency_backend=recipe.latency.backend,
                latency_device=recipe.latency.device,
                latency_batch=recipe.latency.batch_size,
                repo_id=f"{recipe.hub.org}/{name}" if recipe.hub.org else None,
                revision=recipe.hub.revisions.get(name),
            )
    return entries


def list_models(pattern: str | None = None) -> list[str]:
    """Every zoo entry name the recipes define plus any built in the local store, filtered by an
    fnmatch pattern."""
    names = set(registry()) | set(built_entries())
    return sorted(n for n in names if pattern is None or fnmatch.fnmatch(n, pattern))


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `lmzoo list`"
    return UnknownModelError(f"unknown model {name!r}{hint}")


def info(name: str, *, entries: dict[str, ZooEntry] | None = None) -> dict[str, Any]:
    """What the zoo knows of an entry: its registry record, whether it is built (and where) and,
    when built, its headline figures from the checkpoint's evaluation and latency card. ``entries``:
    a :func:`registry` already read (listing many entries parses the recipes once)."""
    entry = (registry() if entries is None else entries).get(name)
    local = entry_dir(name)
    built = is_built(name)
    if entry is None and not built:
        raise _unknown(name)
    record: dict[str, Any] = asdict(entry) if entry else {"name": name}
    record["published"] = bool(entry and entry.published)
    record["local_path"] = str(local) if built else None
    if built:
        record.update(_built_figures(local))
    return record


def _built_figures(directory: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for filename, read in (("evaluation.json", _evaluation_figures), ("latency.json", _latency_figures)):
        path = directory / filename
        if path.is_file():
            try:
                figures.update(read(json.loads(path.read_text())))
            except (ValueError, KeyError, TypeError):
                figures[f"{filename} error"] = "unreadable"
    return figures


def _evaluation_figures(evaluation: dict[str, Any]) -> dict[str, Any]:
    return {"task": evaluation["task"], "test": evaluation["test"], "base_test": evaluation["base_test"]}


def _latency_figures(card: dict[str, Any]) -> dict[str, Any]:
    m = card["measurement"]
    return {
        "measured_speedup": card["speedup"],
        "latency": {
            k: m.get(k) for k in ("backend", "device", "device_name", "batch_size", "dtype", "threads")
        },
    }


def load(name: str, *, revision: str | None = None, device: str = "cpu") -> nn.Module:
    """The merged network of a zoo entry, of ``hf-hub:ORG/REPO[@REV]`` or of ``local-dir:PATH``.

    A zoo name is looked up in the local store first, then downloaded from its Hub repo at its
    pinned revision (or ``revision``, which also skips the local store)."""
    if name.startswith(LOCAL_PREFIX):
        if revision is not None:
            raise InvalidArgumentError("revision= applies to Hub repositories, not to local-dir: paths")
        return load_checkpoint(name.removeprefix(LOCAL_PREFIX), device=device)
    if name.startswith(HUB_PREFIX):
        repo_id, pinned = parse_hub_name(name)
        if pinned and revision and pinned != revision:
            raise InvalidArgumentError(f"{name} pins revision {pinned} but revision={revision!r} was given")
        return load_checkpoint(download_checkpoint(repo_id, pinned or revision), device=device)
    if revision is None and is_built(name):
        return load_checkpoint(entry_dir(name), device=device, own_build=True)
    entry = registry().get(name)
    if entry is None:
        raise _unknown(name)
    build_hint = f"build it with `lmzoo build {name}` (set LMZOO_HOME to use another store)"
    if not entry.published:
        raise UnknownModelError(
            f"{name} is a zoo entry but is not built in {store_root()} and not published; {build_hint}"
        )
    assert entry.repo_id is not None
    try:
        return load_checkpoint(download_checkpoint(entry.repo_id, revision or entry.revision), device=device)
    except HubError as err:
        raise HubError(
            f"{name} is not built locally and its Hub download failed: {err}; or {build_hint}"
        ) from None
