"""Where tensors go: a device name checked once, with one clear error when it cannot be used here."""

from __future__ import annotations

import torch

from lmzoo.errors import InvalidArgumentError, LmzooError

DEVICE_TYPES = ("cpu", "cuda", "mps")


class DeviceUnavailableError(LmzooError, RuntimeError):
    """A device was asked for that this machine (or this torch build) does not have."""


def resolve_device(
    device: str | torch.device, *, error: type[LmzooError] = DeviceUnavailableError
) -> torch.device:
    """``device`` as a torch.device that exists here (a bare "cuda" becomes the current GPU).
    Unknown names raise InvalidArgumentError; absent devices raise ``error``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in DEVICE_TYPES:
        raise InvalidArgumentError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise error(
                f"device {str(device)!r} was asked for but CUDA is not available here (torch "
                f"{torch.__version__}, no GPU visible): use 'cpu', or run on a machine with a GPU"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidArgumentError(f"{str(device)!r}: only {torch.cuda.device_count()} GPU(s) visible")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise error(f"device {str(device)!r} was asked for but MPS is not available here: use 'cpu'")
    return dev
