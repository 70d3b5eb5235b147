"""diffusers: ``UNet2DModel`` built from its config (the DDPM UNet), pretrained weights from a Hub
repository in diffusers layout (``hf-hub:google/ddpm-cifar10-32``), safetensors only. A merged UNet
loads as :class:`lmzoo.sources.diffusers.unet.LayerMergeUNet2DModel`, a diffusers model class of its
own that pipelines accept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lmzoo.errors import DataNotFoundError, InvalidArgumentError
from lmzoo.files import write_json
from lmzoo.sources import CheckpointLayout, Source, register_source

if TYPE_CHECKING:
    from torch import nn

#: the diffusers classes this source builds (a config may name only these: nothing is imported by
#: a name read from a file)
ARCHITECTURES = ("UNet2DModel",)
#: where a merged UNet's weights go in its checkpoint: the "unet" component of a diffusers pipeline
#: directory, so DDPMPipeline.from_pretrained loads the checkpoint directory as it is
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@register_source
class DiffusersSource(Source):
    name = "diffusers"
    description = "diffusers UNet2DModel(**config): DDPM UNets by their config"

    def check(self, arch: str, kwargs: Mapping[str, Any]) -> None:
        if arch not in ARCHITECTURES:
            raise InvalidArgumentError(
                f"model.arch {arch!r} is not a diffusers class lmzoo builds; "
                f"choose one of {', '.join(ARCHITECTURES)}"
            )

    def build(self, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        self.check(arch, kwargs)
        from diffusers import UNet2DModel

        try:
            return UNet2DModel(**kwargs)  # type: ignore[return-value]
        except Exception as err:  # constructors given bad arguments raise every kind of error
            raise InvalidArgumentError(f"cannot build the diffusers {arch} {dict(kwargs)!r}: {err}") from None

    def load_pretrained(self, reference: str, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        self.check(arch, kwargs)
        from diffusers import UNet2DModel

        repo = reference.removeprefix("hf-hub:")
        try:
            model = UNet2DModel.from_pretrained(repo, use_safetensors=True)  # never unpickle a download
        except (OSError, RuntimeError, ValueError) as err:
            raise DataNotFoundError(
                f"cannot get the pretrained weights {reference} ({type(err).__name__}: {str(err)[:200]}); "
                "connect to the Hub (or set HF_ENDPOINT to a mirror), or pre-download them with "
                f"`hf download {repo}`"
            ) from None
        differ = [
            (k, v, model.config.get(k)) for k, v in kwargs.items() if _plain(model.config.get(k)) != _plain(v)
        ]
        if differ:
            key, want, got = differ[0]
            raise InvalidArgumentError(
                f"{reference} has {key} = {got!r} but model.kwargs says {want!r}; fix model.kwargs"
            )
        return model

    def task(self, arch: str) -> str:
        return "denoising"

    def owns(self, model: nn.Module) -> bool:
        return type(model).__module__.startswith("diffusers.") and type(model).__name__ in ARCHITECTURES

    def wrap(self, merged: nn.Module, config: Mapping[str, Any]) -> nn.Module:
        from lmzoo.sources.diffusers.unet import LayerMergeUNet2DModel

        return LayerMergeUNet2DModel.wrapping(merged, config)  # type: ignore[return-value]

    def checkpoint_layout(self, merged: nn.Module, config: Mapping[str, Any]) -> CheckpointLayout:
        """A diffusers DDPMPipeline directory around lmzoo's files: ``model_index.json``, the
        scheduler's config (the training schedule) and the UNet component (its config and weights),
        so ``DDPMPipeline.from_pretrained(directory or repo)`` loads the merged UNet as
        :class:`~lmzoo.sources.diffusers.unet.LayerMergeUNet2DModel` with nothing but lmzoo installed."""
        import diffusers
        from diffusers import DDPMScheduler

        from lmzoo.tasks import DDPM_SCHEDULE

        unet = self.wrap(merged, config)
        index = {
            "_class_name": "DDPMPipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", "DDPMScheduler"],
            "unet": ["lmzoo", type(unet).__name__],
        }
        scheduler = DDPMScheduler(**DDPM_SCHEDULE)
        return CheckpointLayout(
            weights=UNET_WEIGHTS,
            files={
                "model_index.json": lambda p: write_json(p, index, indent=2),
                "scheduler/scheduler_config.json": lambda p: p.write_text(scheduler.to_json_string()),  # type: ignore[attr-defined]
                "unet/config.json": lambda p: p.write_text(unet.to_json_string()),  # type: ignore[operator]
            },
        )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
