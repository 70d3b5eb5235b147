"""The training loop shared by the base, importance and fine-tune stages: SGD (Nesterov) or Adam with
diffusers' cosine schedule with warm-up, an optional weight average (diffusers' ``EMAModel``),
resumable from a local state file, one process or PyTorch DDP (``torchrun``)."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.training.distributed import distributed, is_main_process
from lmzoo.training.memory_format import as_format, in_preferred_memory_format
from lmzoo.training.settings import OPTIMIZERS, TrainSettings

STATE_FORMAT = "lmzoo.train-state/1"


class TrainingDiverged(LmzooError):
    """The training loss became NaN or infinite."""


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to 2 pixels (zero padding) and random horizontal flip, per image.
    Kept instead of torchvision.transforms.v2, which draws one crop and one flip per call (per batch,
    given a batch); drawing from the step's seeded generator keeps a resumed run identical."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (n,), generator=generator).tolist()
    dx = torch.randint(0, 5, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    return torch.where(flip.view(n, 1, 1, 1).to(out.device), out.flip(-1), out)


def _batches(
    dataset: Dataset[Any], batch_size: int, seed: int, device: torch.device
) -> tuple[int, Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]]:
    """Per-epoch shuffled batches (this rank's share under DDP), identical for a given seed."""
    if distributed():
        sampler: DistributedSampler[Any] | None = DistributedSampler(dataset, shuffle=True, seed=seed)
        per_rank = max(1, batch_size // dist.get_world_size())
        loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=False)
    else:
        sampler = None
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
        )

    def epoch(index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if sampler is not None:
            sampler.set_epoch(index)
        else:
            loader.generator.manual_seed(seed + index)
        for x, y in loader:
            yield x.to(device), y.to(device)

    return len(loader), epoch


Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def classification_loss(settings: TrainSettings, teacher: nn.Module | None = None) -> Loss:
    """Cross-entropy (with the settings' label smoothing), plus KL distillation from ``teacher``."""

    def loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if settings.augment:
            x = augment_batch(x, generator)
        logits = net(x)
        value = nn.functional.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
        if teacher is None or settings.distill_weight == 0:
            return value
        with torch.no_grad():
            target = teacher(x)
        t = settings.distill_temperature
        kl = nn.functional.kl_div(
            nn.functional.log_softmax(logits / t, dim=1),
            nn.functional.log_softmax(target / t, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        return (1 - settings.distill_weight) * value + settings.distill_weight * t * t * kl

    return loss


def make_optimizer(params: Any, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=settings.lr,
            momentum=settings.momentum,
            nesterov=settings.momentum > 0,
            weight_decay=settings.weight_decay,
        )
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    raise InvalidArgumentError(
        f"unknown optimizer {settings.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
    )


def train(
    model: nn.Module,
    dataset: Dataset[Any],
    settings: TrainSettings,
    loss_fn: Loss,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    state_path: str | os.PathLike[str] | None = None,
    save_every: int = 50,
    progress: bool = True,
    desc: str = "train",
    ema_decay: float = 0.0,
) -> dict[str, Any]:
    """Train ``model`` in place on ``dataset`` minimising ``loss_fn``; returns {steps, train_loss}.

    With ``state_path`` the run saves its state (weights, optimiser, step) every ``save_every``
    steps and resumes from it, so a killed run continues where it stopped. Under DDP (after
    ``torch.distributed.init_process_group``) each rank trains on its share of every batch.
    ``ema_decay`` > 0 keeps an exponential moving average of the parameters (DDPM; diffusers'
    ``EMAModel``: decay min(d, (1 + t) / (10 + t)) after a first step that copies) and leaves it in
    ``model`` at the end; buffers (BatchNorm statistics) are the trained model's.
    """
    device = torch.device(device)
    model.to(device).train()
    with in_preferred_memory_format(model, device) as fmt:  # before DDP builds its buckets
        batches_per_epoch, epoch_batches = _batches(dataset, settings.batch_size, seed, device)
        steps = settings.steps(batches_per_epoch)
        net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed() else model
        optimizer = make_optimizer(model.parameters(), settings)
        schedule = _cosine_with_warmup(optimizer, settings.warmup_steps, steps)
        step = 0
        state_file = Path(state_path) if state_path is not None else None
        ema = _weight_average(model, ema_decay) if ema_decay > 0 else None
        if state_file is not None and state_file.is_file():
            step = _load_state(state_file, model, optimizer, schedule, ema)
        generator = torch.Generator().manual_seed(seed)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=steps,
            initial=step,
            desc=desc,
            file=sys.stderr,
            disable=not (progress and is_main_process()),
        )
        last_loss = math.nan
        with bar:
            while step < steps:
                epoch, skip = divmod(step, batches_per_epoch)
                for index, (x, y) in enumerate(epoch_batches(epoch)):
                    if index < skip:
                        continue  # resuming inside an epoch: the same batches as before
                    generator.manual_seed(seed * 1_000_003 + step)  # per-step randomness survives a resume
                    loss = loss_fn(net, as_format(x, fmt), y, generator)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"the training loss became {float(loss.detach())} at step {step + 1} of {steps}; "
                            "lower the lr"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    if ema is not None:
                        ema.step(model.parameters())
                    last_loss = float(loss.detach())
                    step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.3f}", refresh=False)
                    if state_file is not None and (step % save_every == 0 or step == steps):
                        _save_state(state_file, model, optimizer, schedule, step, ema)
                    if step >= steps:
                        break
        if ema is not None:
            ema.copy_to(model.parameters())
        return {"steps": steps, "train_loss": last_loss}


def _weight_average(model: nn.Module, decay: float) -> Any:
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=decay, use_ema_warmup=False)


def _cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, steps: int) -> Any:
    from diffusers.optimization import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=steps)


def _save_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, step: int, ema: Any
) -> None:
    if not is_main_process():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # unique per writer
    os.close(fd)
    torch.save(
        {
            "format": STATE_FORMAT,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            **({"ema": ema.state_dict()} if ema is not None else {}),
        },
        tmp,
    )
    os.replace(tmp, path)


def _load_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, ema: Any
) -> int:
    # a local file this process wrote itself; weights_only keeps it free of arbitrary pickles
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise LmzooError(f"{path} is not an lmzoo training state; delete it to start the run afresh")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if ema is not None:
        if "ema" not in state:
            raise LmzooError(f"{path} was saved without a weight average; delete it to start the run afresh")
        try:
            ema.load_state_dict(state["ema"])
        except (ValueError, TypeError, KeyError):
            raise LmzooError(
                f"{path} holds a weight average of another format; delete it to start afresh"
            ) from None
    return int(state["step"])
