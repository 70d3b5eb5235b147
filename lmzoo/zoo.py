"""The zoo: the registry of entries the recipes define, over the local store of built checkpoints
(:mod:`lmzoo.store`), and ``lmzoo.load``. A published entry has a Hub repo id and a pinned revision in
its recipe's ``hub`` section (:mod:`lmzoo.hub`). Listing and describing entries imports no torch.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmzoo.checkpoint import CONFIG_NAME, load_checkpoint
from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.files import read_json, shown
from lmzoo.hub import HUB_PREFIX, HubError, download_checkpoint, download_records, parse_hub_name
from lmzoo.recipes import DEFAULT_PROFILE
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
    #: "layermerge", or a baseline the recipe's tables also solve (depth, layer, layermerge-union)
    method: str
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
    """Every zoo entry the recipes define (works offline): each target speed-up of each recipe,
    solved with LayerMerge and with each baseline. A recipe that does not parse is left out here;
    ``lmzoo build`` on it reports why."""
    from lmzoo.recipes import RecipeError, parse_recipe, recipe_files

    entries: dict[str, ZooEntry] = {}
    for path in recipe_files().values():
        try:
            recipe = parse_recipe(path)
        except RecipeError:
            continue
        for name, (method, speedup) in recipe.zoo_entries().items():
            entries[name] = ZooEntry(
                name=name,
                recipe=recipe.name,
                method=method,
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


def list_models(pattern: str | None = None, *, method: str | None = None) -> list[str]:
    """Every zoo entry name the recipes define plus any built in the local store (profile builds
    included), filtered by an fnmatch pattern and by selection method (``"depth"``, ...)."""
    entries = registry()
    names = sorted(
        n for n in set(entries) | set(built_entries()) if pattern is None or fnmatch.fnmatch(n, pattern)
    )
    if method is None:
        return names
    return [n for n in names if (entries[n].method if n in entries else _built_method(n)) == method]


def _built_method(name: str) -> str | None:
    return _built_record(entry_dir(name)).get("method")


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list_models(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `lmzoo list`"
    return UnknownModelError(f"unknown model {name!r}{hint}")


def info(
    name: str, *, revision: str | None = None, entries: dict[str, ZooEntry] | None = None
) -> dict[str, Any]:
    """What the zoo knows of an entry (or of ``hf-hub:`` / ``local-dir:`` checkpoints): its registry
    record, whether it is built (and where) and, when built or asked at a Hub ``revision``, what its
    checkpoint says: recipe, profile, method, target and headline figures (evaluation, latency card).
    ``entries``: a :func:`registry` already read (listing many entries parses the recipes once)."""
    if name.startswith((LOCAL_PREFIX, HUB_PREFIX)):
        directory = checkpoint_files(name, revision=revision)
        return {"name": name, "local_path": str(directory), **_built_record(directory)}
    entry = (registry() if entries is None else entries).get(name)
    local = entry_dir(name)
    built = is_built(name)
    if entry is None and not built:
        raise _unknown(name)
    record: dict[str, Any] = asdict(entry) if entry else {"name": name}
    record["published"] = bool(entry and entry.published)
    record["local_path"] = str(local) if built else None
    if revision is not None:
        record.update(_built_record(checkpoint_files(name, revision=revision)))
    elif built:
        record.update(_built_record(local))
    elif entry is not None:
        record["profile"] = DEFAULT_PROFILE
    return record


def _built_record(directory: Path) -> dict[str, Any]:
    """What a checkpoint directory says of itself: its recipe, profile, method and target (from
    config.json and plan.json), and its measured figures."""
    record: dict[str, Any] = {}
    try:
        config = read_json(directory / CONFIG_NAME, what="checkpoint config", error=LmzooError)
        record.update({k: config[k] for k in ("recipe", "target_speedup") if k in config})
        record["profile"] = config.get("profile", DEFAULT_PROFILE)
        if "method" in config:
            record["method"] = config["method"]
        elif (directory / "plan.json").is_file():  # checkpoints of earlier versions
            record["method"] = read_json(directory / "plan.json", what="plan", error=LmzooError).get("method")
    except (LmzooError, AttributeError):
        record["config.json error"] = "unreadable"
    return {**record, **_built_figures(directory)}


def _built_figures(directory: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for filename, read in (("evaluation.json", _evaluation_figures), ("latency.json", _latency_figures)):
        path = directory / filename
        if path.is_file():
            try:
                figures.update(read(read_json(path, what="record", error=LmzooError)))
            except (LmzooError, KeyError, TypeError):
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


def checkpoint_files(name: str, *, revision: str | None = None) -> Path:
    """A local directory holding a checkpoint's config and records (not necessarily its weights):
    ``local-dir:PATH`` itself, the downloaded records of ``hf-hub:ORG/REPO[@REV]``, or a zoo name's
    directory in the local store (or its published records when it is not built here)."""
    if name.startswith(LOCAL_PREFIX):
        directory = Path(name.removeprefix(LOCAL_PREFIX))
        if not _is_file(directory / CONFIG_NAME):
            raise UnknownModelError(f"{shown(directory)} is not an lmzoo checkpoint: it has no {CONFIG_NAME}")
        return directory
    if name.startswith(HUB_PREFIX):
        repo_id, pinned = parse_hub_name(name)
        return download_records(repo_id, _revision(name, pinned, revision))
    if revision is None and is_built(name):
        return entry_dir(name)
    entry = _published_entry(name)
    assert entry.repo_id is not None
    return download_records(entry.repo_id, revision or entry.revision)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a path the system refuses (too long)
        return False


def _revision(name: str, pinned: str | None, revision: str | None) -> str | None:
    if pinned and revision and pinned != revision:
        raise InvalidArgumentError(f"{name} pins revision {pinned} but revision={revision!r} was given")
    return pinned or revision


def _published_entry(name: str) -> ZooEntry:
    """The registry entry of a zoo name that is not built here: published, or an error saying how
    to build it."""
    entry = registry().get(name)
    if entry is None:
        raise _unknown(name)
    if not entry.published:
        raise UnknownModelError(
            f"{name} is a zoo entry but is not built in {store_root()} and not published; {_build_hint(name)}"
        )
    return entry


def _build_hint(name: str) -> str:
    return f"build it with `lmzoo build {name}` (set LMZOO_HOME to use another store)"


def load(
    name: str, *, revision: str | None = None, device: str = "cpu", verify: bool | None = None
) -> nn.Module:
    """The merged network of a zoo entry, of ``hf-hub:ORG/REPO[@REV]`` or of ``local-dir:PATH``,
    on ``device`` ("cpu", "cuda", "cuda:N"; an absent device is an error before anything loads).

    A zoo name is looked up in the local store first, then downloaded from its Hub repo at its
    pinned revision (or ``revision``, which also skips the local store). A build of a recipe profile
    other than the default (``<entry>-smoke``) loads with a :class:`~lmzoo.ProfileBuildWarning`.
    ``verify``: check the config and weights against the digests written with them (default: yes,
    unless ``LMZOO_VERIFY=0``; see :func:`lmzoo.checkpoint.load_checkpoint`)."""
    from lmzoo.devices import resolve_device

    resolve_device(device)
    if name.startswith(LOCAL_PREFIX):
        if revision is not None:
            raise InvalidArgumentError("revision= applies to Hub repositories, not to local-dir: paths")
        return load_checkpoint(name.removeprefix(LOCAL_PREFIX), device=device, verify=verify)
    if name.startswith(HUB_PREFIX):
        repo_id, pinned = parse_hub_name(name)
        return load_checkpoint(
            download_checkpoint(repo_id, _revision(name, pinned, revision)), device=device, verify=verify
        )
    if revision is None and is_built(name):
        return load_checkpoint(entry_dir(name), device=device, own_build=True, verify=verify)
    entry = _published_entry(name)
    assert entry.repo_id is not None
    try:
        return load_checkpoint(
            download_checkpoint(entry.repo_id, revision or entry.revision), device=device, verify=verify
        )
    except HubError as err:
        raise HubError(
            f"{name} is not built locally and its Hub download failed: {err}; or {_build_hint(name)}"
        ) from None
