"""Importance tables (DESIGN §6): the network's performance with only one block compressed, after a
short recovery, relative to the base network.

Each entry is an independent job. Its record (value, raw metrics, wall time, seed) is written
atomically to ``workdir/entries/`` when it finishes, so a killed run resumes without recomputing
or corrupting finished entries; ``shard=(i, n)`` runs every n-th job, for several processes or
GPUs sharing one work directory. A table is only returned once every entry is present and none
failed.

Estimators (classification, I = exp(Δtop-1 / 100) on the held-out subset):

- ``finetune`` — the paper's: re-initialise the conv of a block that keeps one conv of several,
  fine-tune the whole network for one epoch of the importance-train subset (SGD, Nesterov,
  cosine decay), measure held-out top-1;
- ``finetune-short`` — the same with a tenth of the steps;
- ``bn-recalibration`` — no training: re-estimate the BatchNorm statistics on the importance-train
  subset, then measure. Cheapest; its rank agreement with ``finetune`` is to be measured.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lmzoo.core.candidates import METHODS, Candidate, candidates
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.core.tables import ImportanceTable, write_atomic
from lmzoo.errors import InvalidArgumentError, InvalidTableError, LmzooError

RECORD_FORMAT = "lmzoo.importance-entry/1"


@dataclass(frozen=True)
class FinetuneSettings:
    """The recovery run of one entry. Paper: lr 0.1, momentum 0.9, Nesterov, wd 1e-5, batch 256,
    one epoch of the importance-train subset with cosine decay."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-5
    batch_size: int = 256
    epochs: float = 1.0
    #: fraction of the steps actually run (finetune-short uses 0.1)
    step_fraction: float = 1.0
    eval_batch_size: int = 512


@dataclass(frozen=True)
class ImportanceData:
    """Disjoint training-split subsets: ``train`` for recovery, ``heldout`` for the measurement."""

    train: Dataset[Any]
    heldout: Dataset[Any]


class EntryFailed(LmzooError):
    """One entry's estimator failed (e.g. its loss diverged); recorded, never turned into a value."""


@dataclass
class EntryRecord:
    candidate: Candidate
    status: str  # "ok" or "failed"
    value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    seed: int = 0
    estimator: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidate"] = self.candidate.to_dict()
        return {"format": RECORD_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EntryRecord:
        fields = {k: v for k, v in data.items() if k != "format"}
        fields["candidate"] = Candidate.from_dict(fields["candidate"])
        return cls(**fields)


Estimator = Callable[["_Context", Candidate, int], dict[str, Any]]


def importance_table(
    model: nn.Module,
    spec: Spec,
    data: ImportanceData,
    *,
    estimator: str = "finetune",
    settings: FinetuneSettings | None = None,
    cands: Iterable[Candidate] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    shard: tuple[int, int] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> ImportanceTable:
    """Measure one importance entry per candidate (default: every method's candidates).

    ``workdir`` keeps one record per finished entry (and resumes from them); without it a temporary
    directory is used. With ``shard=(i, n)`` only every n-th job runs here; the table is returned
    when all shards are done, otherwise IncompleteTableError says how many entries are missing.
    """
    if estimator not in ESTIMATORS:
        raise InvalidArgumentError(
            f"unknown importance estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
        )
    settings = settings or FinetuneSettings()
    if estimator == "finetune-short":
        settings = replace(settings, step_fraction=min(settings.step_fraction, 0.1))
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise InvalidArgumentError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    if cands is None:
        cands = {c for m in METHODS for c in candidates(spec, method=m)}
    ordered = sorted(set(cands), key=lambda c: (c.start, c.end, c.kernel, c.depthwise, c.kept))
    with tempfile.TemporaryDirectory() as scratch:
        store = _Store(Path(workdir) if workdir is not None else Path(scratch), estimator, settings, seed)
        context = _Context(model, spec, data, settings, torch.device(device))
        base = store.base(lambda: context.evaluate(context.configured(Plan.identity(spec))))
        context.base = base
        jobs = [c for c in ordered if not _is_identity(c)]
        if shard is not None:
            jobs = jobs[shard[0] :: shard[1]]
        todo = [c for c in jobs if not store.has(c)]
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(jobs),
            initial=len(jobs) - len(todo),
            desc=f"importance ({estimator})",
            file=sys.stderr,
            disable=not progress,
        )
        with bar:
            for cand in todo:
                store.write(
                    _run_entry(ESTIMATORS[estimator], context, cand, _entry_seed(seed, cand), estimator)
                )
                bar.update(1)
        return _assemble(store, ordered, spec, estimator, settings, base, seed)


class IncompleteTableError(LmzooError):
    """Some entries of an importance table are not measured yet (other shards still running)."""


def _is_identity(cand: Candidate) -> bool:
    """A single conv kept as it is: nothing is compressed, so I = 1 exactly (no run needed)."""
    return cand.length == 1 and cand.kept == (cand.end,)


def _entry_seed(seed: int, cand: Candidate) -> int:
    digest = hashlib.sha256(json.dumps([seed, cand.to_dict()], sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _run_entry(estimate: Estimator, context: _Context, cand: Candidate, seed: int, name: str) -> EntryRecord:
    started = time.perf_counter()
    try:
        metrics = estimate(context, cand, seed)
    except EntryFailed as err:
        return EntryRecord(cand, "failed", None, {}, time.perf_counter() - started, seed, name, str(err))
    value = math.exp((metrics["accuracy"] - context.base["accuracy"]) / 100.0)
    return EntryRecord(cand, "ok", value, metrics, time.perf_counter() - started, seed, name)


def _assemble(
    store: _Store,
    ordered: Sequence[Candidate],
    spec: Spec,
    estimator: str,
    settings: FinetuneSettings,
    base: dict[str, Any],
    seed: int,
) -> ImportanceTable:
    records = store.records()
    missing = [c for c in ordered if not _is_identity(c) and c not in records]
    if missing:
        raise IncompleteTableError(
            f"{len(missing)} of {len(ordered)} importance entries are not measured yet (other shards?); "
            "run the remaining shards, then call again: finished entries are kept"
        )
    wanted = set(ordered)
    failed = [r for c, r in records.items() if r.status != "ok" and c in wanted]
    if failed:
        first, where = failed[0], failed[0].candidate
        raise InvalidTableError(
            f"{len(failed)} importance entries failed, e.g. block ({where.start}, {where.end}] "
            f"kernel {where.kernel}: {first.error}. Fix the settings and delete their records in "
            f"{store.entries} to retry them"
        )
    values = {c: (1.0 if _is_identity(c) else float(records[c].value or 0.0)) for c in ordered}
    wall = sum(records[c].wall_s for c in ordered if not _is_identity(c))
    measured = sum(1 for c in ordered if not _is_identity(c))
    return ImportanceTable(
        values,
        spec=spec,
        metadata={
            "estimator": estimator,
            "settings": asdict(settings),
            "seed": seed,
            "base": base,
            "metric": "top-1 accuracy (%) on the held-out subset; I = exp(delta / 100)",
            "measured_entries": measured,
            "wall_s_total": wall,
            "wall_s_per_entry": wall / measured if measured else 0.0,
        },
    )


class _Store:
    """One JSON record per finished entry, written atomically; keyed by estimator settings."""

    def __init__(self, root: Path, estimator: str, settings: FinetuneSettings, seed: int) -> None:
        key = hashlib.sha256(
            json.dumps(
                {"estimator": estimator, "settings": asdict(settings), "seed": seed}, sort_keys=True
            ).encode()
        ).hexdigest()[:12]
        self.entries = root / f"importance-{estimator}-{key}"
        self.entries.mkdir(parents=True, exist_ok=True)

    def _path(self, cand: Candidate) -> Path:
        name = hashlib.sha256(json.dumps(cand.to_dict(), sort_keys=True).encode()).hexdigest()[:20]
        return self.entries / f"{name}.json"

    def has(self, cand: Candidate) -> bool:
        return self._path(cand).is_file()

    def write(self, record: EntryRecord) -> None:
        write_atomic(self._path(record.candidate), json.dumps(record.to_dict(), allow_nan=False))

    def records(self) -> dict[Candidate, EntryRecord]:
        found = {}
        for path in self.entries.glob("*.json"):
            if path.name == "base.json":
                continue
            try:
                record = EntryRecord.from_dict(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError, LmzooError):
                continue  # not ours or unreadable: re-measured
            found[record.candidate] = record
        return found

    def base(self, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.entries / "base.json"
        if path.is_file():
            return dict(json.loads(path.read_text()))
        metrics = compute()
        write_atomic(path, json.dumps(metrics))
        return metrics


# -- estimators -----------------------------------------------------------------------------------


class _Context:
    """What every estimator needs: the base model and spec, the data, settings, device."""

    def __init__(
        self,
        model: nn.Module,
        spec: Spec,
        data: ImportanceData,
        settings: FinetuneSettings,
        device: torch.device,
    ):
        self.model = model
        self.spec = spec
        self.data = data
        self.settings = settings
        self.device = device
        self.base: dict[str, Any] = {}

    def configured(self, plan: Plan, source: nn.Module | None = None) -> nn.Module:
        from lmzoo.engine import apply_plan

        return apply_plan(source or self.model, self.spec, plan).to(self.device)

    def compressed(self, cand: Candidate) -> nn.Module:
        """The configured network with only ``cand`` compressed (the identity plan elsewhere). A block
        that keeps one conv of several starts that conv afresh (paper)."""
        source = self.model
        if cand.length > 1 and len(cand.kept) == 1:
            source = copy.deepcopy(self.model)
            conv = source.get_submodule(self.spec.unit(cand.kept[0]).path)
            assert isinstance(conv, nn.Conv2d)
            conv.reset_parameters()
        blocks = [b for b in Plan.identity(self.spec) if not cand.start < b.end <= cand.end]
        blocks.insert(cand.start, cand)
        return self.configured(Plan(blocks), source)

    def loader(
        self, dataset: Dataset[Any], *, batch_size: int, shuffle: bool, seed: int = 0
    ) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)

    @torch.no_grad()
    def evaluate(self, net: nn.Module) -> dict[str, Any]:
        net.eval()
        correct = total = 0
        loss = 0.0
        for x, y in self.loader(self.data.heldout, batch_size=self.settings.eval_batch_size, shuffle=False):
            x, y = x.to(self.device), y.to(self.device)
            logits = net(x)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += int(y.numel())
        return {"accuracy": 100.0 * correct / total, "loss": loss / total, "heldout": total}


def _finetune(context: _Context, cand: Candidate, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    s = context.settings
    net = context.compressed(cand).train()
    loader = context.loader(context.data.train, batch_size=s.batch_size, shuffle=True, seed=seed)
    steps = max(1, int(len(loader) * s.epochs * s.step_fraction))
    optimizer = torch.optim.SGD(
        net.parameters(), lr=s.lr, momentum=s.momentum, nesterov=s.momentum > 0, weight_decay=s.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    step = 0
    last_loss = math.nan
    while step < steps:
        for x, y in loader:
            x, y = x.to(context.device), y.to(context.device)
            loss = nn.functional.cross_entropy(net(x), y)
            if not torch.isfinite(loss):
                value = float(loss.detach())
                raise EntryFailed(
                    f"the fine-tuning loss became {value} at step {step + 1} of {steps}; lower the lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            last_loss = float(loss.detach())
            step += 1
            if step >= steps:
                break
    return {**context.evaluate(net), "steps": steps, "train_loss": last_loss}


@torch.no_grad()
def _bn_recalibration(context: _Context, cand: Candidate, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    net = context.compressed(cand)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    net.train()
    loader = context.loader(
        context.data.train, batch_size=context.settings.batch_size, shuffle=True, seed=seed
    )
    batches = 0
    for x, _ in loader:
        net(x.to(context.device))
        batches += 1
    return {**context.evaluate(net), "calibration_batches": batches}


ESTIMATORS: dict[str, Estimator] = {
    "finetune": _finetune,
    "finetune-short": _finetune,
    "bn-recalibration": _bn_recalibration,
}
