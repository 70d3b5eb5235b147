"""The class a merged DDPM UNet loads as: its own diffusers ``ModelMixin, ConfigMixin`` model whose
config holds the base ``UNet2DModel`` config and the LayerMerge plan, with the ``UNet2DModel`` call
signature ``forward(sample, timestep, class_labels=None, return_dict=True)``.

Its config also repeats ``sample_size``, ``in_channels`` and ``out_channels`` so diffusers pipelines
(``DDPMPipeline(unet=model, scheduler=...)``) use it like a UNet2DModel. ``save_pretrained`` /
``from_pretrained`` round-trip it, and a DDPM zoo checkpoint is a DDPMPipeline directory whose
``model_index.json`` names this class (``["lmzoo", "LayerMergeUNet2DModel"]``), so
``DDPMPipeline.from_pretrained(checkpoint)`` loads it once ``lmzoo`` is imported (diffusers takes
components only from modules the caller imported), with no other code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from torch import nn


class LayerMergeUNet2DModel(ModelMixin, ConfigMixin):
    """A DDPM ``UNet2DModel`` with LayerMerge-merged ResNet blocks (``self.unet``)."""

    def __init__(
        self,
        base_config: dict[str, Any],
        plan: dict[str, Any],
        input_shape: list[int],
        spec_fingerprint: str,
        sample_size: int | None = None,
        in_channels: int | None = None,
        out_channels: int | None = None,
        merged: nn.Module | None = None,
    ) -> None:
        """``merged``: the merged ``UNet2DModel`` when the caller already has it (not part of the
        config); otherwise its structure is rebuilt from the base config and the plan."""
        super().__init__()
        self.register_to_config(
            base_config=base_config,
            plan=plan,
            input_shape=list(input_shape),
            spec_fingerprint=spec_fingerprint,
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
        )
        if merged is None:
            from lmzoo.rebuild import merged_structure
            from lmzoo.sources import Architecture

            merged = merged_structure(
                Architecture("diffusers", "UNet2DModel", base_config),
                input_shape=input_shape,
                task="denoising",
                spec_fingerprint=spec_fingerprint,
                plan=plan,
                weights=True,
            )
        self.unet = merged

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """diffusers' ``from_pretrained``, always with real tensors (``low_cpu_mem_usage=False``): the
        merged structure is rebuilt by tracing the base network, which meta tensors cannot run."""
        kwargs["low_cpu_mem_usage"] = False
        kwargs.pop("device_map", None)
        return super().from_pretrained(*args, **kwargs)

    @classmethod
    def wrapping(cls, merged: nn.Module, config: Mapping[str, Any]) -> LayerMergeUNet2DModel:
        """Wrap a merged ``UNet2DModel`` described by an lmzoo checkpoint ``config``."""
        kwargs = config["base"]["kwargs"]
        return cls(
            base_config=dict(kwargs),
            plan=config["plan"],
            input_shape=list(config["input_shape"]),
            spec_fingerprint=config["spec_fingerprint"],
            sample_size=kwargs.get("sample_size"),
            in_channels=kwargs.get("in_channels", 3),
            out_channels=kwargs.get("out_channels", 3),
            merged=merged,
        )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Any:
        return self.unet(sample, timestep, class_labels=class_labels, return_dict=return_dict)
