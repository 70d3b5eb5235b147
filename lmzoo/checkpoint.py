"""Checkpoints (DESIGN §8): a directory holding a merged network without pickles or training code.

    model.safetensors   merged weights
    config.json         format, lmzoo version, the base (source, architecture, constructor
                        arguments), input shape, task, spec fingerprint and the plan
    README.md, latency.json, recipe.yaml, tables/ ...   (cards and provenance; not read to load)

Loading rebuilds the merged structure from the config (``lmzoo.rebuild``), loads the weights strictly
(every tensor present with its exact shape) and lets the base's source wrap the result. Configs of
format 1 named a construction *family* instead of a source; they are migrated when read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmzoo.errors import LmzooError
from lmzoo.files import read_json, write_json
from lmzoo.sources import TASKS, Architecture, get_source, migrate_legacy, source_names
from lmzoo.version import __version__

if TYPE_CHECKING:
    from torch import nn

    from lmzoo.core.plan import Plan

CHECKPOINT_FORMAT = "lmzoo.checkpoint/2"
#: earlier formats this version reads (format 1: ``base.family`` instead of ``base.source``)
READABLE_FORMATS = ("lmzoo.checkpoint/1", CHECKPOINT_FORMAT)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: config.json is a few kB (the plan of a 50-conv network is about 8 kB)
MAX_CONFIG_BYTES = 1024 * 1024


class CheckpointError(LmzooError):
    """A checkpoint directory is missing, incomplete or inconsistent."""


def checkpoint_config(
    *,
    name: str,
    architecture: Architecture,
    input_shape: tuple[int, ...],
    task: str,
    spec_fingerprint: str,
    plan: Plan,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint (``extra``: provenance such as the recipe and target)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "lmzoo_version": __version__,
        "name": name,
        "base": architecture.to_dict(),
        "input_shape": list(input_shape),
        "task": task,
        "spec_fingerprint": spec_fingerprint,
        "plan": plan.to_dict(),
        **(dict(extra) if extra else {}),
    }


def write_checkpoint(
    directory: str | os.PathLike[str],
    merged: nn.Module,
    config: Mapping[str, Any],
    files: Mapping[str, Callable[[Path], object]] | None = None,
) -> Path:
    """Write a checkpoint into ``directory`` atomically: everything goes to a temporary sibling that
    is renamed into place, so the store never holds a half-written checkpoint. ``files`` maps extra
    file names to writers (cards, plots, recipe, tables)."""
    from safetensors.torch import save_file

    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in merged.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        write_json(tmp / CONFIG_NAME, config)
        for name, writer in (files or {}).items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            writer(path)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's config, validated and migrated to the current format."""
    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise CheckpointError(f"{directory} is not an lmzoo checkpoint: it has no {CONFIG_NAME}")
    try:
        config = read_json(path, what="checkpoint config", error=CheckpointError, limit=MAX_CONFIG_BYTES)
    except CheckpointError as err:
        raise CheckpointError(f"{err}; re-download or rebuild the checkpoint") from None
    return _migrated(_checked(config, path))


def _checked(config: Any, path: Path) -> dict[str, Any]:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CheckpointError(f"{path}: {what}; re-download or rebuild the checkpoint")

    need(isinstance(config, dict), "the config is not a JSON object")
    need(config.get("format") in READABLE_FORMATS, f"'format' is not {CHECKPOINT_FORMAT!r}")
    base = config.get("base")
    need(isinstance(base, dict), "'base' must be an object")
    if config["format"] == CHECKPOINT_FORMAT:
        need(
            base.get("source") in source_names(), f"'base.source' must be one of {', '.join(source_names())}"
        )
    else:
        need(isinstance(base.get("family"), str), "'base.family' must be a string")
    need(isinstance(base.get("arch"), str), "'base.arch' must be a string")
    need(isinstance(base.get("kwargs"), dict), "'base.kwargs' must be an object")
    shape = config.get("input_shape")
    need(
        isinstance(shape, list)
        and len(shape) == 3
        and all(type(s) is int and s > 0 for s in shape)
        and shape[0] <= 64
        and shape[1] * shape[2] <= 2048 * 2048,
        "'input_shape' must be [channels <= 64, height, width] with height x width <= 2048 x 2048",
    )
    need(config.get("task") in TASKS, f"'task' must be one of {', '.join(TASKS)}")
    need(isinstance(config.get("plan"), dict), "'plan' must be an object")
    need(isinstance(config.get("spec_fingerprint"), str), "'spec_fingerprint' must be a string")
    return dict(config)


def _migrated(config: dict[str, Any]) -> dict[str, Any]:
    """A format-1 config (``base.family``) as format 2 (``base.source``); others unchanged."""
    if config["format"] == CHECKPOINT_FORMAT:
        return config
    base = dict(config["base"])
    try:
        base["source"], base["arch"] = migrate_legacy(base.pop("family"), base["arch"])
    except LmzooError as err:
        raise CheckpointError(f"{err}; re-download or rebuild the checkpoint") from None
    return {**config, "format": CHECKPOINT_FORMAT, "base": base}


def architecture(config: Mapping[str, Any]) -> Architecture:
    """The base architecture a (read) config names."""
    base = config["base"]
    return Architecture(base["source"], base["arch"], dict(base["kwargs"]))


def merged_structure(
    config: Mapping[str, Any], where: str | os.PathLike[str] = "config", *, weights: bool = False
) -> nn.Module:
    """The merged network a checkpoint config describes, to load a state dict into (see
    :func:`lmzoo.rebuild.merged_structure`)."""
    from lmzoo.rebuild import RebuildError
    from lmzoo.rebuild import merged_structure as rebuild

    try:
        return rebuild(
            architecture(config),
            input_shape=config["input_shape"],
            task=config["task"],
            spec_fingerprint=config["spec_fingerprint"],
            plan=config["plan"],
            weights=weights,
            where=str(where),
        )
    except RebuildError as err:
        raise CheckpointError(str(err)) from None


def load_weights_strictly(module: nn.Module, weights: Path) -> None:
    """Load a safetensors file into ``module``: every tensor present, none extra, every shape exact."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except FileNotFoundError:
        raise CheckpointError(f"{weights.parent} has no {weights.name}; re-download or rebuild it") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights} is corrupted ({err}); re-download or rebuild it") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(f"{weights} does not match the merged network ({detail})")
    module.load_state_dict(state, strict=True)


def load_checkpoint(
    directory: str | os.PathLike[str], *, device: str = "cpu", own_build: bool = False
) -> nn.Module:
    """The merged network of a checkpoint directory, weights loaded strictly, in eval mode, as its
    source wraps it (a merged DDPM UNet comes as
    :class:`~lmzoo.sources.diffusers.unet.LayerMergeUNet2DModel`). ``own_build``: the directory is
    the user's own build (the local store), so a user's factory may be imported to rebuild it."""
    directory = Path(directory)
    config = read_config(directory)
    if own_build:
        try:
            get_source(config["base"]["source"]).import_own_code(config["base"]["arch"])
        except LmzooError as err:
            raise CheckpointError(f"{directory}: {err}") from None
    merged = merged_structure(config, directory)
    load_weights_strictly(merged, directory / WEIGHTS_NAME)
    model = get_source(config["base"]["source"]).wrap(merged, config)
    object.__setattr__(model, "lmzoo_checkpoint", str(directory))  # where it came from (cards, provenance)
    return model.to(device).eval()
