"""Merge maths on tensors: affine maps realised by one convolution, and how they compose.

A :class:`ConvMap` is the affine map

    out[o, b] = sum_{c, k} W[o, c, k] * in[c, S*b - P + k] + bias[o]      (zero outside the input)

i.e. a convolution with kernel W, stride S and padding P. Depthwise maps store W as (C, 1, K, K).
Everything here is pure: tensors in, tensors out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MapShape:
    """The geometry of a :class:`ConvMap` without its tensors: what composing and adding maps does
    to channels, kernel, stride and padding (checkpoint loading builds merged modules from it)."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    depthwise: bool

    @classmethod
    def identity(cls, channels: int) -> MapShape:
        return cls(channels, channels, 1, 1, 0, True)

    def then(self, second: MapShape) -> MapShape:
        """``second`` applied after this map: K = k1 + s1 (k2 - 1), S = s1 s2, P = p1 + s1 p2."""
        if self.out_channels != second.in_channels:
            raise ValueError(
                f"cannot compose: {self.out_channels} channels feed a map expecting {second.in_channels}"
            )
        return MapShape(
            self.in_channels,
            second.out_channels,
            self.kernel + self.stride * (second.kernel - 1),
            self.stride * second.stride,
            self.padding + self.stride * second.padding,
            self.depthwise and second.depthwise,
        )

    def plus(self, other: MapShape) -> MapShape:
        """The sum of two maps on one grid aligned by their paddings."""
        if self.stride != other.stride:
            raise ValueError(f"cannot add maps of strides {self.stride} and {other.stride}")
        if (self.in_channels, self.out_channels) != (other.in_channels, other.out_channels):
            raise ValueError("cannot add maps of different channel counts")
        padding = max(self.padding, other.padding)
        kernel = padding + max(self.kernel - self.padding, other.kernel - other.padding)
        depthwise = self.depthwise and other.depthwise
        return MapShape(self.in_channels, self.out_channels, kernel, self.stride, padding, depthwise)


@dataclass(frozen=True)
class ConvMap:
    weight: Tensor  # (out, in, K, K), or (C, 1, K, K) when depthwise
    bias: Tensor  # (out,)
    stride: int
    padding: int
    depthwise: bool

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return self.out_channels if self.depthwise else int(self.weight.shape[1])

    @property
    def shape(self) -> MapShape:
        return MapShape(
            self.in_channels, self.out_channels, self.kernel, self.stride, self.padding, self.depthwise
        )


def identity_map(channels: int, *, dtype: torch.dtype, device: torch.device | str = "cpu") -> ConvMap:
    """The identity as a 1x1 depthwise map."""
    weight = torch.ones(channels, 1, 1, 1, dtype=dtype, device=device)
    return ConvMap(weight, torch.zeros(channels, dtype=dtype, device=device), 1, 0, True)


def conv_map(
    weight: Tensor, bias: Tensor | None, *, stride: int, padding: int, groups: int, dtype: torch.dtype
) -> ConvMap:
    """The map of a square, undilated conv: dense (groups 1), depthwise (groups = channels, weight
    (C, 1, K, K)), or grouped, which becomes its dense block-diagonal equivalent."""
    out_channels = weight.shape[0]
    depthwise = groups > 1 and groups == out_channels and weight.shape[1] == 1
    w = weight.detach().to(dtype)
    if groups > 1 and not depthwise:
        w = grouped_to_dense(w, groups)
    b = torch.zeros(out_channels, dtype=dtype, device=weight.device) if bias is None else bias.to(dtype)
    return ConvMap(w, b.detach(), stride, padding, depthwise)


def grouped_to_dense(weight: Tensor, groups: int) -> Tensor:
    """A grouped conv weight (out, in / groups, K, K) as the dense block-diagonal (out, in, K, K):
    output group g reads only input group g."""
    out_channels, per_group = weight.shape[0], weight.shape[1]
    out_per_group = out_channels // groups
    dense = weight.new_zeros(out_channels, per_group * groups, *weight.shape[2:])
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[rows, g * per_group : (g + 1) * per_group] = weight[rows]
    return dense


def scale_shift(m: ConvMap, scale: Tensor, shift: Tensor) -> ConvMap:
    """Per-output-channel affine after the map: out * scale + shift (BN folding)."""
    scale = scale.to(m.weight.dtype)
    return ConvMap(
        m.weight * scale[:, None, None, None],
        m.bias * scale + shift.to(m.weight.dtype),
        m.stride,
        m.padding,
        m.depthwise,
    )


def batchnorm_scale_shift(
    running_mean: Tensor, running_var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """Eval-mode BN as y = x * scale + shift: scale = gamma / sqrt(var + eps), shift = beta - mean * scale."""
    var = running_var.double()
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.detach().double()
    shift = -running_mean.double() * scale
    if bias is not None:
        shift = shift + bias.detach().double()
    return scale, shift


def densify(m: ConvMap) -> ConvMap:
    """A depthwise map as the equivalent dense (diagonal) map."""
    if not m.depthwise:
        return m
    diag = torch.diag_embed(m.weight[:, 0].permute(1, 2, 0))  # (K, K, C, C)
    return ConvMap(diag.permute(2, 3, 0, 1).contiguous(), m.bias, m.stride, m.padding, False)


def compose(first: ConvMap, second: ConvMap) -> ConvMap:
    """The single map equal to ``second`` applied after ``first``.

    Kernel K = k1 + s1 (k2 - 1), stride s1 s2, padding p1 + s1 p2; tap m of the result gathers the
    products W2[j] W1[k] with m = s1 j + k (a full convolution of W1 with W2 dilated by s1, with the
    channel dimension contracted). bias = b2 + sum_{c, j} W2[., c, j] b1[c].
    """
    geometry = first.shape.then(second.shape)
    s1 = first.stride
    k1, k2 = first.kernel, second.kernel
    kernel = geometry.kernel
    w1, w2 = first.weight, second.weight
    if second.depthwise:
        out_shape = (w1.shape[0], w1.shape[1], kernel, kernel)
        bias = second.bias + w2.sum(dim=(1, 2, 3)) * first.bias
    else:
        out_shape = (w2.shape[0], w1.shape[1] if not first.depthwise else w2.shape[1], kernel, kernel)
        bias = second.bias + w2.sum(dim=(2, 3)) @ first.bias
    weight = w1.new_zeros(out_shape)
    # One pass per tap j of the second kernel: the whole first kernel lands at offset s1 * j.
    for jy in range(k2):
        for jx in range(k2):
            tap = w2[:, :, jy, jx]
            if second.depthwise:  # per channel c: W[c, i] += W2[c, j] W1[c, i]
                contrib = tap[:, 0, None, None, None] * w1
            elif first.depthwise:  # W[o, c] += W2[o, c, j] W1[c]
                contrib = tap[:, :, None, None] * w1[None, :, 0]
            else:  # W[o, i] += sum_c W2[o, c, j] W1[c, i]: one matrix product
                contrib = (tap @ w1.reshape(w1.shape[0], -1)).reshape(tap.shape[0], *w1.shape[1:])
            weight[:, :, s1 * jy : s1 * jy + k1, s1 * jx : s1 * jx + k1] += contrib
    return ConvMap(weight, bias, geometry.stride, geometry.padding, geometry.depthwise)


def add(a: ConvMap, b: ConvMap) -> ConvMap:
    """The map a(x) + b(x): both kernels placed on one grid aligned by their paddings."""
    geometry = a.shape.plus(b.shape)
    if a.depthwise != b.depthwise:
        a, b = densify(a), densify(b)
    padding, kernel = geometry.padding, geometry.kernel
    weight = a.weight.new_zeros(*a.weight.shape[:2], kernel, kernel)
    for m in (a, b):
        o = padding - m.padding
        weight[:, :, o : o + m.kernel, o : o + m.kernel] += m.weight
    return ConvMap(weight, a.bias + b.bias, a.stride, padding, a.depthwise)


def is_identity(m: ConvMap) -> bool:
    """Exactly the identity (1x1, unit weights, no bias, stride 1)."""
    return (
        m.depthwise
        and m.kernel == 1
        and m.stride == 1
        and m.padding == 0
        and bool(torch.all(m.weight == 1))
        and bool(torch.all(m.bias == 0))
    )
