"""What a network is trained and measured for: classification (top-1) or DDPM denoising (noise-
prediction loss). Importance, fine-tuning and evaluation use a task instead of asking the model;
which task a network has is its source's answer (``lmzoo.sources``), and :func:`make_task` turns
that name into the task."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lmzoo.engine import tensor_output
from lmzoo.errors import InvalidArgumentError
from lmzoo.training.loop import Loss, classification_loss
from lmzoo.training.memory_format import as_format, in_preferred_memory_format
from lmzoo.training.settings import EVAL_BATCH_SIZE, TrainSettings


class Task(ABC):
    name: str
    #: how the importance value is computed from the held-out metric
    importance_rule: str

    @abstractmethod
    def loss(self, settings: TrainSettings, teacher: nn.Module | None = None) -> Loss:
        """The training loss of one batch."""

    @abstractmethod
    def evaluate(
        self, net: nn.Module, data: Dataset[Any], *, batch_size: int = EVAL_BATCH_SIZE, device: torch.device
    ) -> dict[str, Any]:
        """Deterministic held-out metrics."""

    @abstractmethod
    def importance(self, metrics: dict[str, Any], base: dict[str, Any]) -> float:
        """The importance value of a compressed network's metrics relative to the base's."""

    @abstractmethod
    def example_inputs(self, dataset: Dataset[Any], batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Inputs for tracing the network on this data."""


class Classification(Task):
    name = "classification"
    importance_rule = "top-1 accuracy (%) on the held-out subset; I = exp((acc - acc_base) / 100)"

    def loss(self, settings: TrainSettings, teacher: nn.Module | None = None) -> Loss:
        return classification_loss(settings, teacher)

    @torch.no_grad()
    def evaluate(
        self, net: nn.Module, data: Dataset[Any], *, batch_size: int = EVAL_BATCH_SIZE, device: torch.device
    ) -> dict[str, Any]:
        net.eval()
        correct = total = 0
        loss = 0.0
        with in_preferred_memory_format(net, device) as fmt:
            for x, y in DataLoader(data, batch_size=batch_size, shuffle=False):
                x, y = as_format(x.to(device), fmt), y.to(device)
                logits = net(x)
                loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                total += int(y.numel())
        return {"accuracy": 100.0 * correct / total, "loss": loss / total, "heldout": total}

    def importance(self, metrics: dict[str, Any], base: dict[str, Any]) -> float:
        return math.exp((metrics["accuracy"] - base["accuracy"]) / 100.0)

    def example_inputs(self, dataset: Dataset[Any], batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        x = torch.stack([dataset[i][0] for i in range(batch_size)])
        return (x,)


#: the DDPM noise schedule (Ho et al. 2020: T = 1000, betas linear from 1e-4 to 0.02), as diffusers'
#: DDPMScheduler arguments: training, evaluation, sampling and a checkpoint's scheduler_config.json
DDPM_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
}


class Denoising(Task):
    """DDPM noise prediction (Ho et al. 2020): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, loss
    = ||eps - net(x_t, t)||^2. Held-out metrics use noise and timesteps drawn from ``eval_seed``, the
    same for every network, so losses are comparable. Images are expected in [-1, 1]."""

    name = "denoising"
    importance_rule = "noise-prediction loss L on the held-out subset; I = exp(-(L - L_base) / L_base)"

    def __init__(self, eval_seed: int = 0) -> None:
        from diffusers import DDPMScheduler

        self.num_train_timesteps = int(DDPM_SCHEDULE["num_train_timesteps"])
        self.scheduler: Any = DDPMScheduler(**DDPM_SCHEDULE)
        self.eval_seed = eval_seed

    def _noisy(
        self, x: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        t = torch.randint(0, self.num_train_timesteps, (x.shape[0],), generator=generator).to(x.device)
        return self.scheduler.add_noise(x, noise, t), t, noise

    def loss(self, settings: TrainSettings, teacher: nn.Module | None = None) -> Loss:
        """Noise-prediction MSE; with a ``teacher`` and ``settings.distill_weight`` w > 0, the
        target is (1 - w) * noise + w * teacher(x_t, t) in loss terms: the student also matches the
        base network's prediction on the same noisy input."""
        weight = settings.distill_weight if teacher is not None else 0.0

        def loss(
            net: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
        ) -> torch.Tensor:
            noisy, t, noise = self._noisy(x, generator)
            prediction = tensor_output(net(noisy, t))
            value = nn.functional.mse_loss(prediction, noise)
            if weight == 0 or teacher is None:
                return value
            with torch.no_grad():
                target = tensor_output(teacher(noisy, t))
            return (1 - weight) * value + weight * nn.functional.mse_loss(prediction, target)

        return loss

    @torch.no_grad()
    def evaluate(
        self, net: nn.Module, data: Dataset[Any], *, batch_size: int = EVAL_BATCH_SIZE, device: torch.device
    ) -> dict[str, Any]:
        net.eval()
        total, loss = 0, 0.0
        for x, _ in DataLoader(data, batch_size=batch_size, shuffle=False):
            noise, t = self._fixed_draws(x, first=total)
            x, noise, t = x.to(device), noise.to(device), t.to(device)
            noisy = self.scheduler.add_noise(x, noise, t)
            err = nn.functional.mse_loss(tensor_output(net(noisy, t)), noise, reduction="none")
            loss += float(err.flatten(1).mean(1).sum())
            total += x.shape[0]
        return {"loss": loss / total, "heldout": total}

    def _fixed_draws(self, x: torch.Tensor, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise and timestep of held-out example ``first + i`` depend on its index only, so every
        network (and every batch size) is measured on the same noisy inputs."""
        noises, steps = [], []
        for i in range(x.shape[0]):
            g = torch.Generator().manual_seed(self.eval_seed * 1_000_003 + first + i)
            steps.append(torch.randint(0, self.num_train_timesteps, (1,), generator=g))
            noises.append(torch.randn(x.shape[1:], generator=g))
        return torch.stack(noises), torch.cat(steps)

    def importance(self, metrics: dict[str, Any], base: dict[str, Any]) -> float:
        return math.exp(-(metrics["loss"] - base["loss"]) / base["loss"])

    @torch.no_grad()
    def sample(
        self, net: nn.Module, shape: tuple[int, ...], *, steps: int = 100, seed: int = 0, device: str = "cpu"
    ) -> torch.Tensor:
        """Images in [0, 1] generated by DDIM (eta 0, ``steps`` steps) from the training schedule's
        betas; the same ``seed`` gives every network the same starting noise."""
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        net.eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
        for t in scheduler.timesteps:
            eps = tensor_output(net(x, t.expand(shape[0]).to(device)))
            x = scheduler.step(eps, t, x).prev_sample
        return ((x.clamp(-1, 1) + 1) / 2).cpu()

    def example_inputs(self, dataset: Dataset[Any], batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        x = torch.stack([dataset[i][0] for i in range(batch_size)])
        return (x, torch.zeros(batch_size, dtype=torch.long))


def make_task(name: str) -> Task:
    """The task called ``name`` (``lmzoo.sources.TASKS``), with its default settings."""
    tasks: dict[str, type[Task]] = {"classification": Classification, "denoising": Denoising}
    if name not in tasks:
        raise InvalidArgumentError(f"unknown task {name!r}; choose one of {', '.join(tasks)}")
    return tasks[name]()


def task_for(model: nn.Module) -> Task:
    """The task of ``model``, as the source that built it says (:func:`lmzoo.sources.task_for`)."""
    from lmzoo.sources import task_for as task_name

    return make_task(task_name(model))
