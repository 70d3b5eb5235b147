"""The build's stages, in order (DESIGN §8). One list: ``lmzoo build --until`` offers exactly these,
and each is a stage with its own cached output (``lmzoo.pipeline.build`` runs them)."""

from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    #: the base network: pretrained, or trained from scratch (``base-*/model.safetensors``)
    BASE = "base"
    #: the latency table (``latency-*/latency.json``)
    LATENCY = "latency"
    #: the importance table (``importance-*/importance.json``)
    IMPORTANCE = "importance"
    #: the plan of each target speed-up (``solve-*/plan.json``)
    SOLVE = "solve"
    #: the configured network fine-tuned (``finetune-*/configured.safetensors``)
    FINETUNE = "finetune"
    #: the deploy network, checked against the configured one (``merge-*/merge.json``)
    MERGE = "merge"
    #: test metrics, end-to-end latency, samples (``evaluate-*/evaluation.json``)
    EVALUATE = "evaluate"
    #: the checkpoint, its card and provenance, written into the local store
    CARD = "card"

    @classmethod
    def parse(cls, name: str | Stage) -> Stage:
        from lmzoo.errors import InvalidArgumentError

        try:
            return cls(name)
        except ValueError:
            raise InvalidArgumentError(
                f"unknown stage {name!r}; choose one of {', '.join(STAGE_NAMES)}"
            ) from None

    def reaches(self, other: Stage) -> bool:
        """Whether a build that stops after this stage runs ``other``."""
        order = list(Stage)
        return order.index(other) <= order.index(self)


STAGE_NAMES = tuple(stage.value for stage in Stage)
