"""Training settings as a record (torch-free, so recipes validate without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

#: optimisers ``TrainSettings.optimizer`` may name
OPTIMIZERS = ("sgd", "adam")
#: examples per forward pass when measuring held-out or test metrics: evaluation keeps no
#: gradients, so a large batch costs only activations (a 32-px MobileNetV2 at 512: about 1 GB)
EVAL_BATCH_SIZE = 512


@dataclass(frozen=True)
class TrainSettings:
    """One training run with cosine decay to zero; ``warmup_steps`` of linear warm-up first.
    ``optimizer`` "sgd" is SGD with Nesterov momentum, "adam" is Adam (``momentum`` unused).

    The defaults are the paper's classification recipe (SGD lr 0.1, momentum 0.9, Nesterov, weight
    decay 1e-5, batch 256, one epoch: the official importance estimator's recovery run)."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-5
    batch_size: int = 256
    epochs: float = 1.0
    #: fraction of the steps of ``epochs`` actually run (cheap estimators use less)
    step_fraction: float = 1.0
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    #: random shifts by up to 2 pixels (zero border) and horizontal flips, on the batch
    augment: bool = False
    #: weight of the distillation loss from a teacher (0: the task's loss alone)
    distill_weight: float = 0.0
    distill_temperature: float = 1.0

    def steps(self, batches_per_epoch: int) -> int:
        return max(1, int(batches_per_epoch * self.epochs * self.step_fraction))
