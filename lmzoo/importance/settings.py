"""The settings of an importance entry's recovery run (torch-free, so recipes validate without torch)."""

from __future__ import annotations

from dataclasses import dataclass

from lmzoo.training.settings import EVAL_BATCH_SIZE, TrainSettings


@dataclass(frozen=True)
class FinetuneSettings(TrainSettings):
    """The recovery run of one entry: a training schedule (defaults: the paper's classification
    recipe, see TrainSettings) plus what the estimators add."""

    #: examples per forward pass when measuring the held-out subset
    eval_batch_size: int = EVAL_BATCH_SIZE
    #: block-distill: Adam steps on the block alone (in its merged form), their lr and batch; 50
    #: steps reached Spearman 0.74 against finetune at an eighth of its cost (bench_importance.py)
    block_steps: int = 50
    block_lr: float = 3e-3
    block_batch_size: int = 128


#: The paper's DDPM importance recipe (official code): Adam lr 2e-4, 50 epochs of a 500-image subset.
DDPM_FINETUNE = FinetuneSettings(optimizer="adam", lr=2e-4, weight_decay=0.0, batch_size=128, epochs=50)
