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

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmzoo.errors import LmzooError
from lmzoo.files import (
    checked_file,
    file_sha256,
    link_root,
    read_json,
    recover_directory,
    replace_directory,
    shown,
    staging_dir,
    write_json,
)
from lmzoo.preprocessing import MAX_INPUT_CHANNELS, MAX_INPUT_SIDE, Preprocessing, PreprocessingError
from lmzoo.sources import REMOTE_PREFIXES, TASKS, Architecture, get_source, migrate_legacy, source_names
from lmzoo.version import __version__

if TYPE_CHECKING:
    from torch import nn

    from lmzoo.core.plan import Plan

CHECKPOINT_FORMAT = "lmzoo.checkpoint/2"
#: earlier formats this version reads (format 1: ``base.family`` instead of ``base.source``)
READABLE_FORMATS = ("lmzoo.checkpoint/1", CHECKPOINT_FORMAT)
CONFIG_NAME = "config.json"
#: the config key holding the digests of the config and the weights (written with them)
INTEGRITY = "integrity"
WEIGHTS_NAME = "model.safetensors"
#: the weights files a config may name (``"weights"``; absent: model.safetensors): a fixed list, so
#: a config never points a loader at an arbitrary path. The diffusers one holds a DDPM pipeline's UNet.
WEIGHTS_NAMES = (WEIGHTS_NAME, "unet/diffusion_pytorch_model.safetensors")
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
    preprocessing: Preprocessing | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint (``preprocessing``: the evaluation preprocessing of its
    data; ``extra``: provenance such as the recipe and target)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "lmzoo_version": __version__,
        "name": name,
        "base": architecture.to_dict(),
        "input_shape": list(input_shape),
        "task": task,
        "spec_fingerprint": spec_fingerprint,
        "plan": plan.to_dict(),
        **({"preprocessing": preprocessing.to_dict()} if preprocessing is not None else {}),
        **(dict(extra) if extra else {}),
    }


def weights_name(config: Mapping[str, Any]) -> str:
    """The weights file of a checkpoint (relative to its directory)."""
    return str(config.get("weights", WEIGHTS_NAME))


def write_checkpoint(
    directory: str | os.PathLike[str],
    merged: nn.Module,
    config: Mapping[str, Any],
    files: Mapping[str, Callable[[Path], object]] | None = None,
) -> Path:
    """Write a checkpoint into ``directory`` atomically: everything goes to a temporary sibling that
    is renamed into place, so the store never holds a half-written checkpoint. ``merged``'s state goes
    to :func:`weights_name`; ``files`` maps extra file names to writers (cards, plots, recipe,
    tables, a source's own layout)."""
    from safetensors.torch import save_file

    target = Path(directory)
    recover_directory(target)  # a crashed writer's leftovers go first
    tmp = staging_dir(target)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in merged.state_dict().items()}
        weights = tmp / weights_name(config)
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(weights), metadata={"format": "pt"})
        write_json(tmp / CONFIG_NAME, with_integrity(config, weights))
        for name, writer in (files or {}).items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            writer(path)
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_merged_checkpoint(
    directory: str | os.PathLike[str],
    merged: nn.Module,
    config: Mapping[str, Any],
    files: Mapping[str, Callable[[Path], object]] | None = None,
) -> Path:
    """:func:`write_checkpoint` of a merged network in its source's layout
    (:meth:`lmzoo.sources.Source.checkpoint_layout`: a DDPM UNet's is a diffusers pipeline directory)."""
    source = get_source(config["base"]["source"])
    layout = source.checkpoint_layout(merged, config)
    saved = merged
    if layout.weights is not None:  # the file then holds the wrapped network, as its library loads it
        config = {**config, "weights": layout.weights}
        saved = source.wrap(merged, config)
    return write_checkpoint(directory, saved, config, {**layout.files, **(files or {})})


def _config_digest(config: Mapping[str, Any]) -> str:
    """sha256 of the config's content, the digests left out (key order and spacing do not count)."""
    content = {k: v for k, v in config.items() if k != INTEGRITY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_integrity(config: Mapping[str, Any], weights: Path) -> dict[str, Any]:
    """``config`` with the digests of its own content and of the weights file it goes with: a
    flipped byte in the weights, or an edited plan, is then found at load time."""
    return {
        **{k: v for k, v in config.items() if k != INTEGRITY},
        INTEGRITY: {"config_sha256": _config_digest(config), "weights_sha256": file_sha256(weights)},
    }


def verify_integrity(directory: Path, config: Mapping[str, Any]) -> None:
    """Check a (read) config and its weights file against the digests written with them."""
    recorded = config.get(INTEGRITY)
    if recorded is None:
        return  # written before checkpoints carried digests
    fix = "re-download or rebuild it, or load with verify=False (LMZOO_VERIFY=0) to accept it as it is"
    if _config_digest(config) != recorded["config_sha256"]:
        raise CheckpointError(f"{directory / CONFIG_NAME} was changed after it was written; {fix}")
    weights = directory / weights_name(config)
    checked_file(weights, what="weights file", error=CheckpointError, within=link_root(directory))
    if file_sha256(weights) != recorded["weights_sha256"]:
        raise CheckpointError(
            f"{weights} is not the file written with its config (its digest differs); {fix}"
        )


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's config, validated and migrated to the current format."""
    path = Path(directory) / CONFIG_NAME
    try:
        missing = not path.exists() and not path.is_symlink()
    except OSError as err:  # a path the system refuses (too long, not a folder)
        raise CheckpointError(f"cannot read the checkpoint {shown(directory)}: {err.strerror}") from None
    if missing:
        raise CheckpointError(f"{shown(directory)} is not an lmzoo checkpoint: it has no {CONFIG_NAME}")
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
    need(
        not base["arch"].startswith(REMOTE_PREFIXES),
        "'base.arch' names a place to fetch an architecture from, not an architecture",
    )
    need(isinstance(base.get("kwargs"), dict), "'base.kwargs' must be an object")
    shape = config.get("input_shape")
    need(
        isinstance(shape, list)
        and len(shape) == 3
        and all(type(s) is int and s > 0 for s in shape)
        and shape[0] <= MAX_INPUT_CHANNELS
        and max(shape[1:]) <= MAX_INPUT_SIDE,
        f"'input_shape' must be [channels <= {MAX_INPUT_CHANNELS}, height <= {MAX_INPUT_SIDE}, "
        f"width <= {MAX_INPUT_SIDE}]",
    )
    need(config.get("task") in TASKS, f"'task' must be one of {', '.join(TASKS)}")
    need(isinstance(config.get("plan"), dict), "'plan' must be an object")
    need(isinstance(config.get("spec_fingerprint"), str), "'spec_fingerprint' must be a string")
    need(weights_name(config) in WEIGHTS_NAMES, f"'weights' must be one of {', '.join(WEIGHTS_NAMES)}")
    integrity = config.get(INTEGRITY)
    need(
        integrity is None
        or (
            isinstance(integrity, dict)
            and all(isinstance(integrity.get(k), str) for k in ("config_sha256", "weights_sha256"))
        ),
        f"'{INTEGRITY}' must hold config_sha256 and weights_sha256",
    )
    if config.get("preprocessing") is not None:
        try:
            recorded = Preprocessing.from_dict(config["preprocessing"])
        except PreprocessingError as err:
            need(False, str(err))
        need(list(recorded.input_size) == shape, "'preprocessing.input_size' differs from 'input_size'")
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


def load_weights_strictly(module: nn.Module, weights: Path, *, within: Path | None = None) -> None:
    """Load a safetensors file into ``module``: every tensor present, none extra, every shape, dtype
    exact, every value finite. ``within``: where a link may lead (see :func:`lmzoo.files.checked_file`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.exists() and not weights.is_symlink():
        raise CheckpointError(f"{weights.parent} has no {weights.name}; re-download or rebuild it")
    checked_file(weights, what="weights file", error=CheckpointError, within=within)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights} is corrupted ({err}); re-download or rebuild it") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    common = set(expected) & set(state)
    wrong = sorted(k for k in common if expected[k].shape != state[k].shape)
    dtype = sorted(k for k in common if expected[k].dtype != state[k].dtype)
    non_finite = sorted(k for k in state if state[k].is_floating_point() and not state[k].isfinite().all())
    if missing or unexpected or wrong or dtype or non_finite:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
                ("wrong dtype", dtype),
                ("NaN or infinite values", non_finite),
            )
            if keys
        )
        raise CheckpointError(f"{weights} does not match the merged network ({detail})")
    module.load_state_dict(state, strict=True)


def load_checkpoint(
    directory: str | os.PathLike[str],
    *,
    device: str = "cpu",
    own_build: bool = False,
    verify: bool | None = None,
) -> nn.Module:
    """The merged network of a checkpoint directory, weights loaded strictly, in eval mode, as its
    source wraps it (a merged DDPM UNet comes as
    :class:`~lmzoo.sources.diffusers.unet.LayerMergeUNet2DModel`). ``own_build``: the directory is
    the user's own build (the local store), so a user's factory may be imported to rebuild it.
    ``verify`` (default: on, unless ``LMZOO_VERIFY=0``): the config and the weights file must match
    the digests recorded when the checkpoint was written (checkpoints older than the digests have
    none to check)."""
    from lmzoo.devices import resolve_device

    target = resolve_device(device)  # before any work: a missing GPU is one clear error
    directory = Path(directory)
    config = read_config(directory)
    if verify if verify is not None else os.environ.get("LMZOO_VERIFY", "1") != "0":
        verify_integrity(directory, config)
    warn_if_profile_build(config)
    if own_build:
        try:
            get_source(config["base"]["source"]).import_own_code(config["base"]["arch"])
        except LmzooError as err:
            raise CheckpointError(f"{directory}: {err}") from None
    merged = merged_structure(config, directory)
    source = get_source(config["base"]["source"])
    if "weights" in config:  # a source's own layout: the file holds the wrapped network's state
        model = source.wrap(merged, config)
        load_weights_strictly(model, directory / weights_name(config), within=link_root(directory))
    else:
        load_weights_strictly(merged, directory / WEIGHTS_NAME, within=link_root(directory))
        model = source.wrap(merged, config)
    object.__setattr__(model, "lmzoo_checkpoint", str(directory))  # where it came from (cards, provenance)
    if config.get("preprocessing") is not None:
        attach_preprocessing(model, Preprocessing.from_dict(config["preprocessing"]), config["task"])
    return model.to(target).eval()


def warn_if_profile_build(config: Mapping[str, Any]) -> None:
    """A :class:`~lmzoo.errors.ProfileBuildWarning` when the checkpoint was built with a recipe
    profile other than the default (a smoke build is not the zoo entry)."""
    import sys
    import warnings
    from types import FrameType

    from lmzoo.errors import ProfileBuildWarning

    profile = config.get("profile", "default")
    if profile == "default":
        return
    frame: FrameType | None = sys._getframe(1)  # the warning points at the first caller outside lmzoo
    level = 2
    package = str(Path(__file__).parent)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(
        f"{config.get('name', 'this checkpoint')} was built with the recipe's {profile!r} profile: it is "
        "not the zoo entry, and its weights and figures are not the entry's",
        ProfileBuildWarning,
        stacklevel=level,
    )


#: timm pretrained_cfg keys that describe the base's original weights or test-time settings, not
#: the merged network: dropped when the checkpoint's preprocessing is attached
_FOREIGN_CFG_KEYS = (
    "url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "tag", "custom_load",
    "test_input_size", "test_crop_pct", "license", "description", "origin_url", "paper_name",
    "paper_ids", "notes", "label_offset", "label_descriptions",
)  # fmt: skip


def attach_preprocessing(model: nn.Module, preprocessing: Preprocessing, task: str) -> None:
    """Record ``preprocessing`` on a loaded network: ``model.lmzoo_preprocessing``, and for a
    classifier timm's ``pretrained_cfg`` (and its alias ``default_cfg``), so
    ``timm.data.resolve_data_config(model=model)`` and ``create_transform`` rebuild it."""
    object.__setattr__(model, "lmzoo_preprocessing", preprocessing)
    if task != "classification" or not preprocessing.timm_reproduces:
        return
    inherited = dict(getattr(model, "pretrained_cfg", None) or {})
    kept = {k: v for k, v in inherited.items() if k not in _FOREIGN_CFG_KEYS}
    cfg = {**kept, **preprocessing.timm_config()}
    object.__setattr__(model, "pretrained_cfg", cfg)
    object.__setattr__(model, "default_cfg", cfg)
