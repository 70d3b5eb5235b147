"""The memory format networks are trained and evaluated in: channels-last on CPU for networks with
depthwise convolutions, where PyTorch's NCHW depthwise kernels are the slow path. Measured by
``tests/benchmarks/bench_training.py`` on the 2-core reference machine (torch 2.14, the Fashion-MNIST
zoo's 32 px inputs; training step at batch 256, evaluation at 512), channels-last against NCHW:

- MobileNetV2-1.0, base and a configured ~1.6x network: training 2.0-2.2x, evaluation 1.4-1.6x faster;
- ResNet-34 (no depthwise convs), the same two: training 0.88-0.93x, evaluation 0.80-0.81x (slower),
  so it keeps NCHW; the DDPM UNet (no depthwise convs) trained 1.06x, within the noise, and keeps NCHW.

Only the layout changes, not the arithmetic's meaning: results agree up to float rounding. Latency
tables keep measuring the layout their backend declares (NCHW for ``torch``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def has_depthwise_convs(model: nn.Module) -> bool:
    """Whether any 2-d convolution has one group per input channel (and more than one channel)."""
    return any(
        isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in model.modules()
    )


def preferred_memory_format(model: nn.Module, device: torch.device) -> torch.memory_format:
    """channels-last for a network with depthwise convs on CPU (see the module's figures), else NCHW."""
    if device.type == "cpu" and has_depthwise_convs(model):
        return torch.channels_last
    return torch.contiguous_format


#: set on a model while it is held in channels-last, so nested blocks leave it to the outermost
_HELD = "_lmzoo_channels_last"


@contextmanager
def in_preferred_memory_format(model: nn.Module, device: torch.device) -> Iterator[torch.memory_format]:
    """Convert ``model``'s 4-d weights to its preferred format for the block (parameters stay the same
    objects, so optimisers keep them) and back to NCHW after it; yields the format its 4-d inputs
    should take (:func:`as_format`). Nested blocks on one model convert once."""
    fmt = preferred_memory_format(model, device)
    if fmt == torch.contiguous_format or getattr(model, _HELD, False):
        yield fmt
        return
    model.to(memory_format=fmt)
    setattr(model, _HELD, True)
    try:
        yield fmt
    finally:
        delattr(model, _HELD)
        model.to(memory_format=torch.contiguous_format)


def as_format(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``x`` in ``fmt`` when it is a batch of images (4-d); other tensors as they are."""
    return x.contiguous(memory_format=fmt) if x.dim() == 4 and fmt != torch.contiguous_format else x
