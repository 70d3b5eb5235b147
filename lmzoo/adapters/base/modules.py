"""Bridges between torch modules and the pure merge maths, shared by every adapter."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from lmzoo.adapters.base.activations import module_kind
from lmzoo.core import kernels
from lmzoo.core.kernels import ConvMap, MapShape
from lmzoo.core.spec import Unit
from lmzoo.errors import UnsupportedModelError

#: merges are computed in float64 and cast back, so merging adds no visible round-off
MERGE_DTYPE = torch.float64


def activation_kind(module: nn.Module | None, where: str) -> str | None:
    """The spec's name for an activation module (None for identity); an error naming ``where`` for
    a module that is not an elementwise activation lmzoo knows."""
    if module is None or isinstance(module, nn.Identity):
        return None
    kind = module_kind(module)
    if kind is None:
        raise UnsupportedModelError(
            f"{where}: {type(module).__name__} is not an elementwise activation lmzoo knows"
        )
    return kind


def check_mergeable_conv(conv: nn.Module, where: str) -> nn.Conv2d:
    """The conv, if its geometry is one lmzoo can merge exactly; else UnsupportedModelError."""
    if type(conv) is not nn.Conv2d:
        raise UnsupportedModelError(f"{where}: expected a plain nn.Conv2d, found {type(conv).__name__}")
    k, kw = conv.kernel_size
    problems = []
    if k != kw or conv.stride[0] != conv.stride[1]:
        problems.append("non-square kernel or stride")
    if conv.padding != ((k - 1) // 2,) * 2 or k % 2 == 0:
        problems.append(f"padding {conv.padding} is not 'same' padding for kernel {k}")
    if conv.dilation != (1, 1):
        problems.append("dilation")
    if conv.padding_mode != "zeros":
        problems.append(f"padding mode {conv.padding_mode!r}")
    if problems:
        raise UnsupportedModelError(f"{where}: conv cannot be merged exactly ({'; '.join(problems)})")
    return conv


def plain_batchnorm(norm: nn.Module, where: str) -> nn.BatchNorm2d:
    """A plain nn.BatchNorm2d with the parameters and statistics of ``norm`` (activation dropped)."""
    if not isinstance(norm, nn.BatchNorm2d) or not norm.track_running_stats:
        raise UnsupportedModelError(f"{where}: expected BatchNorm2d with running statistics")
    bn = nn.BatchNorm2d(norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=norm.affine)
    stats = cast(torch.Tensor, norm.running_mean)
    bn = bn.to(device=stats.device, dtype=stats.dtype)
    bn.load_state_dict(norm.state_dict())
    bn.train(norm.training)
    return bn


def module_map(
    module: nn.Module, channels: int, *, padding: int | None = None, device: torch.device | None = None
) -> ConvMap:
    """The affine map of a linear module: Conv2d, BatchNorm2d (eval), Identity or a Sequential of those.

    ``padding`` overrides a single conv's padding (configured networks run convs unpadded and keep
    the original padding aside).
    """
    if isinstance(module, nn.Sequential):
        maps = []
        for sub in module:
            maps.append(module_map(sub, channels, device=device))
            channels = maps[-1].out_channels
        return compose_all(maps, channels, device=device)
    if isinstance(module, nn.Identity):
        return kernels.identity_map(channels, dtype=MERGE_DTYPE, device=device or "cpu")
    if isinstance(module, nn.Conv2d):
        return kernels.conv_map(
            module.weight,
            module.bias,
            stride=module.stride[0],
            padding=int(module.padding[0]) if padding is None else padding,
            groups=module.groups,
            dtype=MERGE_DTYPE,
        )
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or module.running_var is None:
            raise TypeError("a BatchNorm without running statistics cannot be folded")
        scale, shift = kernels.batchnorm_scale_shift(
            module.running_mean, module.running_var, module.weight, module.bias, module.eps
        )
        ident = kernels.identity_map(module.num_features, dtype=MERGE_DTYPE, device=scale.device)
        return kernels.scale_shift(ident, scale, shift)
    raise TypeError(f"{type(module).__name__} is not a linear module lmzoo can merge")


def module_shape(module: nn.Module, channels: int, *, padding: int | None = None) -> MapShape:
    """The geometry of :func:`module_map` of ``module``, without computing the map."""
    if isinstance(module, nn.Sequential):
        shape = MapShape.identity(channels)
        for sub in module:
            shape = shape.then(module_shape(sub, shape.out_channels))
        return shape
    if isinstance(module, nn.Conv2d):
        return MapShape(
            module.in_channels,
            module.out_channels,
            module.kernel_size[0],
            module.stride[0],
            int(module.padding[0]) if padding is None else padding,
            is_depthwise(module),
        )
    if isinstance(module, (nn.Identity, nn.BatchNorm2d)):
        return MapShape.identity(module.num_features if isinstance(module, nn.BatchNorm2d) else channels)
    raise TypeError(f"{type(module).__name__} is not a linear module lmzoo can merge")


def compose_all(maps: Iterable[ConvMap], channels: int, *, device: torch.device | None = None) -> ConvMap:
    """Compose maps in order; the identity when there are none."""
    result: ConvMap | None = None
    for m in maps:
        result = m if result is None else kernels.compose(result, m)
    if result is None:
        return kernels.identity_map(channels, dtype=MERGE_DTYPE, device=device or "cpu")
    return result


def compose_all_shapes(shapes: Iterable[MapShape], channels: int) -> MapShape:
    """The geometry of :func:`compose_all` of maps with these shapes."""
    result: MapShape | None = None
    for shape in shapes:
        result = shape if result is None else result.then(shape)
    return MapShape.identity(channels) if result is None else result


def to_module(m: ConvMap | MapShape | None, *, like: torch.Tensor) -> nn.Module:
    """One nn.Conv2d realising the map; ``None`` (a block that keeps nothing) is nn.Identity; a bare
    :class:`MapShape` gives the conv with uninitialised weights (to load a state dict into).

    Whether a block merges to the identity is decided by its structure, never by its weight values,
    so the merged module tree depends on the plan alone."""
    if m is None:
        return nn.Identity()
    shape = m if isinstance(m, MapShape) else m.shape
    conv = _uninitialised_conv(
        shape.in_channels,
        shape.out_channels,
        shape.kernel,
        stride=shape.stride,
        padding=shape.padding,
        groups=shape.out_channels if shape.depthwise else 1,
        bias=True,
        device=like.device,
        dtype=like.dtype,
    )
    if isinstance(m, ConvMap):
        with torch.no_grad():
            conv.weight.copy_(m.weight)
            cast(torch.Tensor, conv.bias).copy_(m.bias)
    return conv


class _UninitialisedConv2d(nn.Conv2d):
    def reset_parameters(self) -> None:
        """Skipped: the weights are about to be overwritten (a merged map, or a loaded state dict)."""


def _uninitialised_conv(*args: object, **kwargs: object) -> nn.Conv2d:
    """A plain nn.Conv2d whose parameters hold uninitialised memory: built without the random
    initialisation (which costs more than a whole checkpoint load for large merged kernels, and
    torch.nn.utils.skip_init's meta-device detour is slower still), then given back its own class."""
    conv: nn.Conv2d = _UninitialisedConv2d(*args, **kwargs)  # type: ignore[arg-type]
    conv.__class__ = nn.Conv2d
    return conv


def unit_from_conv(
    index: int, path: str, conv: nn.Conv2d, input_shape: tuple[int, ...], *, removable: bool = False
) -> Unit:
    """The spec unit of a (checked) conv, with its traced input shape (C, H, W)."""
    channels, height, width = (int(s) for s in input_shape)
    return Unit(
        index=index,
        path=path,
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel=conv.kernel_size[0],
        stride=conv.stride[0],
        padding=int(conv.padding[0]),
        depthwise=is_depthwise(conv),
        input_shape=(channels, height, width),
        weight_l1=float(conv.weight.detach().abs().sum()),
        removable=removable,
        groups=1 if is_depthwise(conv) else conv.groups,
    )


def grouped_with_norm(conv: nn.Conv2d, norm: nn.Module, structure_only: bool = False) -> nn.Conv2d:
    """A grouped conv followed by its norm (BatchNorm or identity) as one conv with the same groups:
    the norm's per-channel scale and shift folded into its weight and bias."""
    merged = _uninitialised_conv(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[0],
        stride=conv.stride[0],
        padding=conv.padding[0],
        groups=conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    if not structure_only:
        m = module_map(norm, conv.out_channels, device=conv.weight.device)
        scale, shift = m.weight.reshape(-1), m.bias  # a norm's map is a depthwise 1x1 map
        bias = conv.bias.detach().to(MERGE_DTYPE) if conv.bias is not None else torch.zeros_like(shift)
        with torch.no_grad():
            merged.weight.copy_(conv.weight.detach().to(MERGE_DTYPE) * scale[:, None, None, None])
            cast(torch.Tensor, merged.bias).copy_(bias * scale + shift)
    return merged


def is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
