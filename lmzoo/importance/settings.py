"""The settings of an importance entry's recovery run (torch-free, so recipes validate without torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmzoo.errors import InvalidArgumentError
from lmzoo.training.settings import EVAL_BATCH_SIZE, TrainSettings

#: which kept conv an entry starts afresh before its recovery:
#: - ``single``: the conv (and the norm after it) of every single-conv block, which is measured like
#:   any other entry; a multi-conv block's kept convs keep their weights (the official code,
#:   kim24layermerge/importance.py; Kim et al. 2023 alike);
#: - ``kept-alone``: the conv kept alone in a multi-conv block; a single conv kept as it is is
#:   I = 1 without a run (lmzoo 0.1.0.dev0).
REINIT_RULES = ("single", "kept-alone")


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
    #: see REINIT_RULES
    reinit: str = "kept-alone"
    #: bn-suffix: importance-train examples its BatchNorm statistics are re-estimated on (at least
    #: one held-out-sized batch); 512 estimate a batch's statistics well at a fifth of the subset
    calibration_examples: int = 512

    def cache_key(self) -> dict[str, object]:
        """The fields that identify cached entries: fields added later are left out at their
        defaults (which are what lmzoo did before they existed), so entries measured then stay
        valid."""
        fields = asdict(self)
        for name, before in (("reinit", "kept-alone"), ("calibration_examples", 512)):
            if fields[name] == before:
                del fields[name]
        return fields

    def __post_init__(self) -> None:
        if self.reinit not in REINIT_RULES:
            raise InvalidArgumentError(
                f"reinit must be one of {', '.join(REINIT_RULES)}, got {self.reinit!r}"
            )


#: The paper's DDPM importance recipe (official code): Adam lr 2e-4, 50 epochs of a 500-image subset.
DDPM_FINETUNE = FinetuneSettings(optimizer="adam", lr=2e-4, weight_decay=0.0, batch_size=128, epochs=50)
