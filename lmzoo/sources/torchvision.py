"""torchvision: any ``torchvision.models`` classification network by name (``resnet50``,
``mobilenet_v2``, ``efficientnet_b0`` ...) with its keyword arguments (``num_classes``,
``width_mult``). Pretrained weights come from safetensors only: a Hub repository
(``hf-hub:ORG/REPO``) or a local ``.safetensors`` file in torchvision's key layout (torchvision's own
downloads are pickles, which lmzoo does not load)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lmzoo.errors import InvalidArgumentError
from lmzoo.sources import Source, load_state, register_source, safetensors_state

if TYPE_CHECKING:
    from torch import nn


@register_source
class TorchvisionSource(Source):
    name = "torchvision"
    description = "torchvision.models.get_model(arch, **kwargs): any torchvision classification network"

    def check(self, arch: str, kwargs: Mapping[str, Any]) -> None:
        if not arch or ":" in arch or "/" in arch:
            raise InvalidArgumentError(
                f"model.arch {arch!r} must name a torchvision classification model (e.g. resnet50)"
            )
        if "weights" in kwargs:
            raise InvalidArgumentError(
                "model.kwargs may not name torchvision weights (they are pickles); give safetensors in "
                "model.pretrained instead"
            )

    def build(self, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        import torchvision

        self.check(arch, kwargs)
        known = torchvision.models.list_models(module=torchvision.models)
        if arch not in known:
            raise InvalidArgumentError(
                f"{arch!r} is not a torchvision classification model (see torchvision.models.list_models())"
            )
        try:
            return torchvision.models.get_model(arch, weights=None, **kwargs)
        except Exception as err:  # constructors given bad arguments raise every kind of error
            raise InvalidArgumentError(f"cannot build the torchvision model {arch!r}: {err}") from None

    def load_pretrained(self, reference: str, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        return load_state(self.build(arch, kwargs), safetensors_state(reference), reference)

    def owns(self, model: nn.Module) -> bool:
        return type(model).__module__.startswith("torchvision.")
