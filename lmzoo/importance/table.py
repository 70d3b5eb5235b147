"""Importance tables (DESIGN §6): the network's performance with only one block compressed, after a
short recovery, relative to the base network.

Each entry is an independent job run by a registered estimator (``lmzoo.importance.estimators``).
Its record (value, raw metrics, wall time, seed) is written atomically under ``workdir`` when it
finishes (``lmzoo.importance.store``), so a killed run resumes without recomputing or corrupting
finished entries; ``shard=(i, n)`` runs every n-th job, for several processes or GPUs sharing one
work directory, and ``executor="ray"`` runs the jobs as Ray tasks (``lmzoo.importance.executors``).
A table is only returned once every entry is present and none failed.

The metric comes from the task (:mod:`lmzoo.tasks`): classification I = exp(Δtop-1 / 100), DDPM
denoising I = exp(−ΔL / L_base), both on the held-out subset.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmzoo.core.activations import ActivationState, Entry, check_state, entry_candidate, state_order
from lmzoo.core.candidates import Candidate, all_candidates
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import InvalidArgumentError, InvalidTableError, LmzooError
from lmzoo.importance.context import (
    PROCESS_CACHE,
    EntryFailed,
    EstimatorContext,
    ImportanceData,
    inputs_digest,
    reinitialised_unit,
)
from lmzoo.importance.executors import EXECUTORS, in_ray_worker, run_entries
from lmzoo.importance.registry import DEFAULT_ESTIMATOR, get_estimator
from lmzoo.importance.settings import FinetuneSettings
from lmzoo.importance.store import EntryRecord, EntryStore
from lmzoo.tables import ImportanceTable
from lmzoo.tasks import Task, task_for
from lmzoo.training.loop import TrainingDiverged


class IncompleteTableError(LmzooError):
    """Some entries of an importance table are not measured yet (other shards still running)."""


def importance_table(
    model: nn.Module,
    spec: Spec,
    data: ImportanceData,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    settings: FinetuneSettings | None = None,
    task: Task | None = None,
    cands: Iterable[Candidate] | None = None,
    states: Iterable[ActivationState] = (),
    workdir: str | os.PathLike[str] | None = None,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> ImportanceTable:
    """Measure one importance entry per candidate (default: every method's candidates), and one
    per activation state in ``states`` (depth compression's extended entries,
    ``lmzoo.core.activations.extra_states``; their candidates must be among ``cands``).

    ``task`` defaults to the one the model's source names (denoising for diffusers UNets,
    classification otherwise). ``workdir`` keeps one record per finished entry (and resumes from
    them); without it a temporary directory is used. With ``shard=(i, n)`` only every n-th job runs
    here; the table is returned when all shards are done, otherwise IncompleteTableError says how
    many entries are missing. ``executor="ray"`` submits the jobs as Ray tasks to the cluster
    ``ray.init()`` connects to (``RAY_ADDRESS``, or a local one); records are still written here as
    results arrive.
    """
    registered = get_estimator(estimator)
    if executor not in EXECUTORS:
        raise InvalidArgumentError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    settings = registered.settings(settings or FinetuneSettings())
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise InvalidArgumentError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    if cands is None:
        cands = all_candidates(spec)
    ordered = sorted(set(cands), key=lambda c: (c.start, c.end, c.kernel, c.depthwise, c.kept))
    extended = sorted(set(states), key=state_order)
    known = set(ordered)
    for state in extended:
        check_state(spec, state)
        if state.candidate not in known:
            raise InvalidArgumentError(f"{state.describe()}: its candidate is not among the table's")
    task = task or task_for(model)
    context = EstimatorContext(model, spec, data, settings, task, torch.device(device))
    if registered.check is not None:
        registered.check(context)  # fails early for models the estimator cannot measure
    with tempfile.TemporaryDirectory() as scratch:
        # a scratch directory starts empty: only kept records need to say what they were measured on
        root, inputs = (
            (Path(scratch), "") if workdir is None else (Path(workdir), inputs_digest(model, spec, data))
        )
        store = EntryStore(root, estimator, settings, seed, inputs=inputs)
        base = store.base(lambda: context.evaluate(context.configured(Plan.identity(spec))))
        context.base = base
        # states after the plain entries, interleaved by start so block-distill's maps advance once
        jobs: list[Entry] = [c for c in ordered if not needs_no_run(c, settings)]
        jobs = sorted(
            [*jobs, *extended], key=lambda e: (entry_candidate(e).start, isinstance(e, ActivationState))
        )
        if shard is not None:
            jobs = jobs[shard[0] :: shard[1]]
        todo = [c for c in jobs if not store.has(c)]
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(jobs),
            initial=len(jobs) - len(todo),
            desc=f"importance ({estimator})",
            unit="entry",
            file=sys.stderr,
            disable=not progress,
        )
        try:
            with bar:
                for record in run_entries(executor, run_entry, context, estimator, todo, seed):
                    store.write(record)
                    bar.update(1)
        finally:
            PROCESS_CACHE.pop(context.token, None)
        return _assemble(store, ordered, extended, spec, estimator, settings, task, base, seed)


def run_entry(context: EstimatorContext, estimator: str, cand: Entry, seed: int) -> EntryRecord:
    """Run one entry; a diverging recovery becomes a failed record (never a value)."""
    if context.device.type == "cpu" and torch.get_num_threads() > 1 and in_ray_worker():
        torch.set_num_threads(1)  # one CPU per Ray task: do not oversubscribe the node
    entry_seed = _entry_seed(seed, cand)
    started = time.perf_counter()
    try:
        metrics = get_estimator(estimator).run(context, cand, entry_seed)
    except (EntryFailed, TrainingDiverged) as err:
        return EntryRecord(
            cand, "failed", None, {}, time.perf_counter() - started, entry_seed, estimator, str(err)
        )
    value = context.task.importance(metrics, context.base)
    if not math.isfinite(value):
        return EntryRecord(
            cand, "failed", None, metrics, time.perf_counter() - started, entry_seed, estimator,
            f"the held-out metric is not finite ({metrics}); lower the lr",
        )  # fmt: skip
    return EntryRecord(cand, "ok", value, metrics, time.perf_counter() - started, entry_seed, estimator)


def needs_no_run(cand: Candidate, settings: FinetuneSettings) -> bool:
    """Whether ``cand``'s entry is I = 1 exactly, without a run: it compresses nothing and starts
    nothing afresh (under the ``single`` reinit rule a single conv is started afresh and measured)."""
    return cand.is_identity and reinitialised_unit(cand, settings.reinit) is None


def _entry_seed(seed: int, cand: Entry) -> int:
    digest = hashlib.sha256(json.dumps([seed, cand.to_dict()], sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _assemble(
    store: EntryStore,
    ordered: Sequence[Candidate],
    extended: Sequence[ActivationState],
    spec: Spec,
    estimator: str,
    settings: FinetuneSettings,
    task: Task,
    base: dict[str, Any],
    seed: int,
) -> ImportanceTable:
    records = store.records()
    free = {c for c in ordered if needs_no_run(c, settings)}
    everything: list[Entry] = [*ordered, *extended]
    missing = [c for c in everything if c not in free and c not in records]
    if missing:
        raise IncompleteTableError(
            f"{len(missing)} of {len(everything)} importance entries are not measured yet (other shards?); "
            "run the remaining shards, then call again: finished entries are kept"
        )
    wanted = set(everything)
    failed = [r for c, r in records.items() if r.status != "ok" and c in wanted]
    if failed:
        first, where = failed[0], failed[0].candidate
        raise InvalidTableError(
            f"{len(failed)} importance entries failed, e.g. {where.describe()}: {first.error}. Fix the "
            f"settings and delete their records in {store.entries} to retry them"
        )
    values = {c: (1.0 if c in free else float(records[c].value or 0.0)) for c in ordered}
    state_values = {s: float(records[s].value or 0.0) for s in extended}
    wall = sum(records[c].wall_s for c in everything if c not in free)
    measured = len(everything) - len(free)
    return ImportanceTable(
        values,
        states=state_values,
        spec=spec,
        metadata={
            "estimator": estimator,
            "task": task.name,
            "settings": asdict(settings),
            "seed": seed,
            "base": base,
            "metric": task.importance_rule,
            "measured_entries": measured,
            "wall_s_total": wall,
            "wall_s_per_entry": wall / measured if measured else 0.0,
        },
    )
