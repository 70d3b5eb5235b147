"""Importance estimators by name: a new estimator is one function plus ``@register_estimator``.

An estimator measures one entry of the importance table: given the estimator context (the base
network and spec, the data subsets, the settings, the task; ``lmzoo.importance.context``), a
entry (a candidate, or an activation state: a candidate with other activations at its ends,
``lmzoo.core.activations``) and a seed, it returns the held-out metrics of the network with only
that block compressed (the task turns them into I). Built-in estimators are in
``lmzoo.importance.estimators``; other packages register more through the ``lmzoo.estimators``
entry-point group. This module imports no torch, so recipes validate estimator names cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from lmzoo.errors import InvalidArgumentError
from lmzoo.registry import Registry

if TYPE_CHECKING:
    from lmzoo.core.activations import Entry
    from lmzoo.importance.context import EstimatorContext
    from lmzoo.importance.settings import FinetuneSettings


class Estimator(Protocol):
    """Held-out metrics of the network with only ``entry``'s block compressed (after its recovery)."""

    def __call__(self, context: EstimatorContext, entry: Entry, seed: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RegisteredEstimator:
    name: str
    run: Estimator
    #: the settings this estimator runs with, from the table's (e.g. a tenth of the steps)
    adjust: Callable[[FinetuneSettings], FinetuneSettings] | None = None
    #: raises InvalidArgumentError (with what to use instead) for models it cannot measure
    check: Callable[[EstimatorContext], None] | None = None

    def settings(self, settings: FinetuneSettings) -> FinetuneSettings:
        return settings if self.adjust is None else self.adjust(settings)


#: the paper's estimator (one epoch of recovery per entry)
DEFAULT_ESTIMATOR = "finetune"

ESTIMATORS: Registry[RegisteredEstimator] = Registry(
    "importance estimator",
    builtins=lambda: ["lmzoo.importance.estimators"],
    entry_point_group="lmzoo.estimators",
    error=InvalidArgumentError,
)


def register_estimator(
    name: str,
    *,
    adjust: Callable[[FinetuneSettings], FinetuneSettings] | None = None,
    check: Callable[[EstimatorContext], None] | None = None,
) -> Callable[[Estimator], Estimator]:
    """Decorator registering an estimator function under ``name``."""

    def register(run: Estimator) -> Estimator:
        ESTIMATORS.add(name, RegisteredEstimator(name, run, adjust, check))
        return run

    return register


def estimator_names() -> tuple[str, ...]:
    """Every registered estimator name, in registration order."""
    return ESTIMATORS.names()


def get_estimator(name: str) -> RegisteredEstimator:
    return ESTIMATORS.get(name)
