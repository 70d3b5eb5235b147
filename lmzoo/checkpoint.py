"""Checkpoints (DESIGN §8): a directory holding a merged network without pickles or training code.

    model.safetensors   merged weights
    config.json         format, lmzoo version, base architecture and constructor arguments, input
                        shape, task, spec fingerprint and the plan
    README.md, latency.json, recipe.yaml, tables/ ...   (cards and provenance; not read to load)

Loading rebuilds the base architecture with random weights, traces it at the recorded input shape,
applies and merges the plan, and loads the weights strictly: every tensor must be present with
its exact shape.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import InvalidArgumentError, LmzooError

CHECKPOINT_FORMAT = "lmzoo.checkpoint/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FAMILIES = ("timm", "diffusers-unet2d")


class CheckpointError(LmzooError):
    """A checkpoint directory is missing, incomplete or inconsistent."""


def checkpoint_config(
    *,
    name: str,
    family: str,
    arch: str,
    kwargs: Mapping[str, Any],
    input_shape: tuple[int, ...],
    task: str,
    spec_fingerprint: str,
    plan: Plan,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    from lmzoo import __version__

    return {
        "format": CHECKPOINT_FORMAT,
        "lmzoo_version": __version__,
        "name": name,
        "base": {"family": family, "arch": arch, "kwargs": dict(kwargs)},
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
    files: Mapping[str, Callable[[Path], None]] | None = None,
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
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")
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
    path = Path(directory) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(), parse_constant=_reject)
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not an lmzoo checkpoint: it has no {CONFIG_NAME}") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({err}); re-download or rebuild the checkpoint"
        ) from None
    _check_config(config, path)
    return dict(config)


def _reject(constant: str) -> None:
    raise ValueError(f"{constant} is not allowed")


def _check_config(config: Any, path: Path) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CheckpointError(f"{path}: {what}; re-download or rebuild the checkpoint")

    need(isinstance(config, dict), "the config is not a JSON object")
    need(config.get("format") == CHECKPOINT_FORMAT, f"'format' is not {CHECKPOINT_FORMAT!r}")
    base = config.get("base")
    need(isinstance(base, dict), "'base' must be an object")
    need(base.get("family") in FAMILIES, f"'base.family' must be one of {', '.join(FAMILIES)}")
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
    need(config.get("task") in ("classification", "denoising"), "'task' must be classification or denoising")
    need(isinstance(config.get("plan"), dict), "'plan' must be an object")
    need(isinstance(config.get("spec_fingerprint"), str), "'spec_fingerprint' must be a string")


def build_architecture(family: str, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """A timm architecture (by name) or a diffusers UNet2DModel (by config), with random weights."""
    try:
        if family == "timm":
            import timm

            return timm.create_model(arch, pretrained=False, **kwargs)
        if family == "diffusers-unet2d":
            from diffusers import UNet2DModel

            return UNet2DModel(**kwargs)  # type: ignore[return-value]
    except Exception as err:  # constructors given bad arguments raise every kind of error
        raise InvalidArgumentError(f"cannot build the {family} model {arch!r}: {err}") from None
    raise InvalidArgumentError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")


def build_base(config: Mapping[str, Any]) -> nn.Module:
    """The base architecture of a checkpoint config, with random weights."""
    base = config["base"]
    try:
        return build_architecture(base["family"], base["arch"], base["kwargs"])
    except InvalidArgumentError as err:
        raise CheckpointError(str(err)) from None


def example_inputs(config: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
    x = torch.zeros(1, *config["input_shape"])
    if config["task"] == "denoising":
        return (x, torch.zeros(1, dtype=torch.long))
    return (x,)


def merged_structure(
    config: Mapping[str, Any], where: str | os.PathLike[str] = "config", *, weights: bool = False
) -> nn.Module:
    """The merged network a checkpoint config describes, to load a state dict into: the base
    architecture traced at the recorded input shape (its fingerprint must match), the plan applied
    and merged in place. The merged modules hold uninitialised memory, or with ``weights`` the merge
    of the random base."""
    from lmzoo.engine import merged_in_place

    model = build_base(config)
    try:
        spec = _traced_shapes(model, example_inputs(config), config["spec_fingerprint"])
        if spec.fingerprint != config["spec_fingerprint"]:
            raise CheckpointError(
                f"{where}: the base architecture traces to another network than the one the plan was "
                "made for (different timm/diffusers version or constructor arguments)"
            )
        plan = Plan.from_dict(config["plan"])
        return merged_in_place(model, spec, plan, weights=weights)
    except CheckpointError:
        raise
    except LmzooError as err:
        raise CheckpointError(f"{where}: the plan does not fit the base architecture: {err}") from None
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as err:
        raise CheckpointError(
            f"{where}: the base architecture does not run at the recorded input shape ({err})"
        ) from None


def _traced_shapes(model: nn.Module, inputs: tuple[torch.Tensor, ...], fingerprint: str) -> Spec:
    """The spec of ``model`` at ``inputs``. Only shapes matter when loading, so the forward first runs
    on an empty batch (no arithmetic; most of a load's trace time otherwise); a model that cannot
    run an empty batch, or whose spec then differs from the checkpoint's, is traced at batch 1."""
    import dataclasses

    from lmzoo.engine import trace

    try:
        spec = trace(model, tuple(x[:0] for x in inputs))
        spec = dataclasses.replace(spec, input_shapes=tuple(tuple(x.shape) for x in inputs))
        if spec.fingerprint == fingerprint:
            return spec
    except LmzooError:
        pass
    return trace(model, inputs)


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


def load_checkpoint(directory: str | os.PathLike[str], *, device: str = "cpu") -> nn.Module:
    """The merged network of a checkpoint directory, weights loaded strictly, in eval mode. A merged
    DDPM UNet comes as :class:`~lmzoo.adapters.diffusers_merged.LayerMergeUNet2DModel`."""
    directory = Path(directory)
    config = read_config(directory)
    merged = merged_structure(config, directory)
    load_weights_strictly(merged, directory / WEIGHTS_NAME)
    model: nn.Module = merged
    if config["base"]["family"] == "diffusers-unet2d":
        from lmzoo.adapters.diffusers_merged import LayerMergeUNet2DModel

        model = LayerMergeUNet2DModel.wrapping(merged, config)  # type: ignore[assignment]
    object.__setattr__(model, "lmzoo_checkpoint", str(directory))  # where it came from (cards, provenance)
    return model.to(device).eval()
