"""Importance tables (DESIGN §6): ``table`` measures them entry by entry through registered
estimators (``registry``, built-ins in ``estimators`` and ``block_distill``), each entry a record in
a resumable store (``store``) run here or on Ray (``executors``); ``context`` is what an estimator
works with, ``settings`` its recovery run. Names below are imported on first use."""

from typing import TYPE_CHECKING

from lmzoo.lazy import lazy_exports

_EXPORTS = {
    "lmzoo.importance.table": ("importance_table", "IncompleteTableError", "run_entry"),
    "lmzoo.importance.context": ("EstimatorContext", "ImportanceData", "EntryFailed"),
    "lmzoo.importance.settings": ("FinetuneSettings", "DDPM_FINETUNE"),
    "lmzoo.importance.registry": ("Estimator", "register_estimator", "estimator_names", "get_estimator"),
    "lmzoo.importance.store": ("EntryRecord",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(name for names in _EXPORTS.values() for name in names)

if TYPE_CHECKING:
    from lmzoo.importance.context import EntryFailed, EstimatorContext, ImportanceData
    from lmzoo.importance.registry import Estimator, estimator_names, get_estimator, register_estimator
    from lmzoo.importance.settings import DDPM_FINETUNE, FinetuneSettings
    from lmzoo.importance.store import EntryRecord
    from lmzoo.importance.table import IncompleteTableError, importance_table, run_entry
