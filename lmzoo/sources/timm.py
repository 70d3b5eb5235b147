"""timm: any architecture ``timm.create_model`` knows, by name and keyword arguments (e.g.
``mobilenetv2_100`` with ``num_classes=10, in_chans=1``); pretrained weights from the Hub's timm
repositories (``hf-hub:timm/mobilenetv2_100.ra_in1k``), safetensors only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lmzoo.errors import DataNotFoundError, InvalidArgumentError
from lmzoo.sources import REMOTE_PREFIXES, Source, register_source

if TYPE_CHECKING:
    from torch import nn


@register_source
class TimmSource(Source):
    name = "timm"
    description = "timm.create_model(arch, **kwargs): any timm architecture by name"

    def check(self, arch: str, kwargs: Mapping[str, Any]) -> None:
        if not arch:
            raise InvalidArgumentError("model.arch names the timm architecture (e.g. mobilenetv2_100)")
        if arch.startswith(REMOTE_PREFIXES):
            raise InvalidArgumentError(
                f"model.arch {arch!r} is a location, not an architecture name; put it in model.pretrained"
            )

    def build(self, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        import timm

        self.check(arch, kwargs)
        if not timm.is_model(arch):
            raise InvalidArgumentError(f"{arch!r} is not a timm model name (see timm.list_models())")
        try:
            return timm.create_model(arch, pretrained=False, **kwargs)
        except Exception as err:  # constructors given bad arguments raise every kind of error
            raise InvalidArgumentError(f"cannot build the timm model {arch!r}: {err}") from None

    def load_pretrained(self, reference: str, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        import timm

        repo = reference.removeprefix("hf-hub:")
        try:  # timm reads model.safetensors from a Hub repo (it never unpickles those)
            return timm.create_model(f"hf-hub:{repo}", pretrained=True, **kwargs)
        except (OSError, RuntimeError, ValueError) as err:
            raise DataNotFoundError(_unreachable(reference, repo, err)) from None

    def owns(self, model: nn.Module) -> bool:
        return type(model).__module__.startswith("timm.")


def _unreachable(reference: str, repo: str, err: Exception) -> str:
    return (
        f"cannot get the pretrained weights {reference} ({type(err).__name__}: {str(err)[:200]}); "
        "connect to the Hub (or set HF_ENDPOINT to a mirror), or pre-download them with "
        f"`hf download {repo}`"
    )
