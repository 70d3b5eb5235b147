"""How a network's inputs are prepared: the exact evaluation preprocessing of the data it was trained
and measured on. A build records it in the checkpoint's ``config.json``; ``lmzoo.load`` sets it as the
model's timm ``pretrained_cfg``, so timm's own helpers rebuild it::

    config = timm.data.resolve_data_config(model=model)
    transform = timm.data.create_transform(**config)      # PIL image -> the tensor lmzoo evaluated

The data sets of :mod:`lmzoo.data` are built from the same record, so lmzoo's evaluation and timm's
pipeline agree by construction (a test checks them tensor for tensor). Torch-free: importing it
imports no torch, and timm only in :meth:`Preprocessing.transform`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmzoo.errors import LmzooError

#: the largest input side lmzoo builds or loads: beyond it tracing takes minutes and one activation
#: of a 64-channel conv is over a gigabyte (the largest zoo input is a 256-pixel DDPM; ImageNet 224)
MAX_INPUT_SIDE = 2048
#: channels of an input image (RGB, grey, a few multispectral bands)
MAX_INPUT_CHANNELS = 64

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
#: "center": resize the shorter side to size / crop_pct, then crop the centre (timm's default);
#: "border": images smaller than the input padded to it with the ``fill`` colour (timm's "border")
CROP_MODES = ("center", "border")


class PreprocessingError(LmzooError):
    """A recorded preprocessing is malformed."""


@dataclass(frozen=True)
class Preprocessing:
    """The evaluation transform of a network's data: resize, crop or pad to ``input_size``, scale
    pixels to [0, 1], subtract ``mean`` and divide by ``std`` per channel."""

    #: (channels, height, width) the network takes
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    #: "border": the padding's pixel value per channel (0-255); timm pads with round(255 * mean)
    fill: tuple[int, ...] | None = None
    num_classes: int | None = None
    label_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        channels = self.input_size[0]
        checks = [
            (len(self.input_size) == 3 and all(s > 0 for s in self.input_size), "input_size is (C, H, W)"),
            (len(self.mean) == len(self.std) == channels, "mean and std need one value per channel"),
            (all(s > 0 for s in self.std), "std must be positive"),
            (
                self.interpolation in INTERPOLATIONS,
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}",
            ),
            (self.crop_mode in CROP_MODES, f"crop_mode must be one of {', '.join(CROP_MODES)}"),
            (self.crop_pct > 0, "crop_pct must be positive"),
            (
                self.fill is None or (len(self.fill) == channels and all(0 <= v <= 255 for v in self.fill)),
                "fill is one pixel value (0-255) per channel",
            ),
            (
                self.label_names is None or len(self.label_names) == self.num_classes,
                "label_names needs one name per class",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise PreprocessingError(f"preprocessing: {message}")

    @classmethod
    def padded(
        cls,
        native: int,
        input_size: tuple[int, int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        fill: tuple[int, ...] | None = None,
        **more: Any,
    ) -> Preprocessing:
        """Square ``native``-pixel images, not resampled, padded to ``input_size`` with ``fill``
        (default: the mean colour, as timm pads). In timm's terms crop_mode "border" with
        crop_pct = size / (native + 0.5): timm resizes to floor(size / crop_pct) = native pixels,
        which leaves the image as it is, then pads it to size."""
        size = input_size[1]
        if native >= size:
            return cls(input_size, mean, std, crop_pct=1.0, **more)
        crop_pct = round(size / (native + 0.5), 6)
        assert math.floor(size / crop_pct) == native
        fill = fill if fill is not None else tuple(round(255 * m) for m in mean)
        return cls(input_size, mean, std, crop_pct=crop_pct, crop_mode="border", fill=fill, **more)

    @property
    def native_size(self) -> int:
        """The side the images have before any padding (square images)."""
        if self.crop_mode == "border":
            return math.floor(self.input_size[1] / self.crop_pct)
        return self.input_size[1]

    @property
    def timm_reproduces(self) -> bool:
        """Whether timm's eval transform of :meth:`timm_config` is this transform: timm pads with
        round(255 * mean), a DDPM's black border is not that."""
        return self.crop_mode != "border" or self.fill == tuple(round(255 * m) for m in self.mean)

    def timm_config(self) -> dict[str, Any]:
        """The timm ``pretrained_cfg`` keys of this preprocessing (what ``resolve_data_config`` reads)."""
        config: dict[str, Any] = {
            "input_size": tuple(self.input_size),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            "mean": tuple(self.mean),
            "std": tuple(self.std),
        }
        if self.num_classes is not None:
            config["num_classes"] = self.num_classes
        if self.label_names is not None:
            config["label_names"] = tuple(self.label_names)
        return config

    def transform(self) -> Any:
        """timm's evaluation transform of this preprocessing (PIL image -> normalised tensor)."""
        from timm.data import create_transform, resolve_data_config

        return create_transform(**resolve_data_config(pretrained_cfg=self.timm_config()))

    def describe(self) -> str:
        """One sentence for a model card."""
        c, h, w = self.input_size
        if self.crop_mode == "border":
            native = self.native_size
            geometry = (
                f"{native}×{native} images padded to {h}×{w} with pixel value "
                f"{', '.join(map(str, self.fill or ()))}"
            )
        elif self.crop_pct == 1.0:
            geometry = f"{h}×{w} images, {self.interpolation} resize to {h}×{w} where they differ"
        else:
            geometry = (
                f"{self.interpolation} resize of the shorter side to {math.floor(h / self.crop_pct)}, "
                f"centre crop {h}×{w} (crop_pct {self.crop_pct:g})"
            )
        numbers = ", ".join(f"{m:.4g}" for m in self.mean), ", ".join(f"{s:.4g}" for s in self.std)
        return (
            f"{c} channel{'s' if c != 1 else ''}, {geometry}; pixels scaled to [0, 1], then normalised "
            f"with mean ({numbers[0]}) and std ({numbers[1]})"
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }
        if self.fill is not None:
            data["fill"] = list(self.fill)
        if self.num_classes is not None:
            data["num_classes"] = self.num_classes
        if self.label_names is not None:
            data["label_names"] = list(self.label_names)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """The record of :meth:`to_dict` (as read from a config); malformed -> PreprocessingError."""
        known = {"input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "fill"}
        known |= {"num_classes", "label_names"}
        try:
            unknown = sorted(set(data) - known)
            if unknown:
                raise PreprocessingError(f"preprocessing: unknown key {unknown[0]!r}")
            return cls(
                input_size=_ints(data["input_size"], 3),
                mean=_floats(data["mean"]),
                std=_floats(data["std"]),
                interpolation=str(data.get("interpolation", "bilinear")),
                crop_pct=_number(data.get("crop_pct", 0.875)),
                crop_mode=str(data.get("crop_mode", "center")),
                fill=_ints(data["fill"]) if data.get("fill") is not None else None,
                num_classes=_ints([data["num_classes"]], 1)[0]
                if data.get("num_classes") is not None
                else None,
                label_names=_strings(data["label_names"]) if data.get("label_names") is not None else None,
            )
        except (KeyError, TypeError) as err:
            raise PreprocessingError(f"preprocessing: missing or malformed {err}") from None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PreprocessingError(f"preprocessing: {value!r} is not a number")
    return float(value)


def _floats(values: Any) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or not 0 < len(values) <= 64:
        raise PreprocessingError("preprocessing: mean and std are lists of numbers")
    return tuple(_number(v) for v in values)


def _ints(values: Any, length: int | None = None) -> Any:
    if (
        not isinstance(values, (list, tuple))
        or not 0 < len(values) <= 64
        or (length is not None and len(values) != length)
        or not all(type(v) is int for v in values)
    ):
        raise PreprocessingError(f"preprocessing: expected a list of integers, got {str(values)[:60]}")
    return tuple(values)


def _strings(values: Any) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise PreprocessingError("preprocessing: label_names is a list of strings")
    return tuple(values)
