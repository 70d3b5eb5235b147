"""Where importance entries run: here, one after the other (``local``), or as Ray tasks on the cluster
``ray.init()`` connects to (``ray``; ``pip install 'lmzoo[ray]'``). Either yields each entry's record as
it finishes; the caller writes it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from lmzoo.errors import InvalidArgumentError

if TYPE_CHECKING:
    from lmzoo.core.activations import Entry
    from lmzoo.importance.context import EstimatorContext
    from lmzoo.importance.store import EntryRecord

EXECUTORS = ("local", "ray")

RunEntry = Callable[["EstimatorContext", str, "Entry", int], "EntryRecord"]


def run_entries(
    executor: str,
    run_entry: RunEntry,
    context: EstimatorContext,
    estimator: str,
    todo: Sequence[Entry],
    seed: int,
) -> Iterator[EntryRecord]:
    if executor not in EXECUTORS:
        raise InvalidArgumentError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        return _run_ray(run_entry, context, estimator, todo, seed)
    return (run_entry(context, estimator, cand, seed) for cand in todo)


def _run_ray(
    run_entry: RunEntry, context: EstimatorContext, estimator: str, todo: Sequence[Entry], seed: int
) -> Iterator[EntryRecord]:
    """One Ray task per entry; results are yielded as they finish (in any order)."""
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError(
            "executor='ray' needs Ray: pip install 'lmzoo[ray]' (or use the local executor)"
        ) from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False, include_dashboard=False)
    remote = ray.remote(num_cpus=1)(run_entry)
    shared = ray.put(context)
    pending = [remote.remote(shared, estimator, cand, seed) for cand in todo]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def in_ray_worker() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE)
