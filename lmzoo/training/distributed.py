"""PyTorch DDP plumbing shared by training and the build (``torchrun``): whether this process is one
of several, which one leads, joining the process group, and running cached work on rank 0 first."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    return not distributed() or dist.get_rank() == 0


def init_distributed(device: str) -> str:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group (gloo on CPU, NCCL on CUDA) and
    return this rank's device. Fine-tuning then runs as DDP; the other stages run on rank 0."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or distributed():
        return device
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def main_first(work: Callable[[], T]) -> T:
    """Run cached work on rank 0 first; the other ranks then read its cached result."""
    if not distributed():
        return work()
    if is_main_process():
        result = work()
        dist.barrier()
        return result
    dist.barrier()
    return work()


def world_size() -> int:
    """Processes training together (1 outside DDP)."""
    return dist.get_world_size() if distributed() else 1
