"""Importance tables (DESIGN §6): the network's performance with only one block compressed, after a
short recovery, relative to the base network.

Each entry is an independent job. Its record (value, raw metrics, wall time, seed) is written
atomically under ``workdir`` when it finishes, so a killed run resumes without recomputing or
corrupting finished entries; ``shard=(i, n)`` runs every n-th job, for several processes or GPUs
sharing one work directory, and ``executor="ray"`` runs the jobs as Ray tasks. A table is only
returned once every entry is present and none failed.

The metric comes from the task (:mod:`lmzoo.tasks`): classification I = exp(Δtop-1 / 100), DDPM
denoising I = exp(−ΔL / L_base), both on the held-out subset. Estimators:

- ``finetune`` — the paper's: a block that keeps one conv of several starts that conv and its norm
  afresh, then the whole network is fine-tuned for one epoch of importance-train (SGD + Nesterov,
  cosine decay; Adam for DDPM), and measured on the held-out subset;
- ``finetune-short`` — the same with a tenth of the steps;
- ``block-distill`` — only the compressed block is trained, to reproduce the base network's map at
  the block's end from cached maps at its start; then only the rest of the network is run on cached
  held-out maps. Chain families (timm ResNet, MobileNetV2);
- ``bn-recalibration`` — no training: BatchNorm statistics re-estimated on importance-train.

Cost and rank agreement with ``finetune`` are measured in ``tests/benchmarks/bench_importance.py``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from lmzoo.tasks import Task, task_for
from lmzoo.training import TrainingDiverged, TrainSettings, train

RECORD_FORMAT = "lmzoo.importance-entry/1"
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class FinetuneSettings(TrainSettings):
    """The recovery run of one entry. Defaults are the paper's classification recipe: SGD lr 0.1,
    momentum 0.9, Nesterov, wd 1e-5, batch 256, one epoch of importance-train, cosine decay."""

    eval_batch_size: int = 512
    #: block-distill: Adam steps on the block alone (in its merged form), their lr and batch
    block_steps: int = 50
    block_lr: float = 3e-3
    block_batch_size: int = 128


#: The paper's DDPM importance recipe (official code): Adam lr 2e-4, 50 epochs of a 500-image subset.
DDPM_FINETUNE = FinetuneSettings(optimizer="adam", lr=2e-4, weight_decay=0.0, batch_size=128, epochs=50)


@dataclass(frozen=True)
class ImportanceData:
    """Disjoint training-split subsets: ``train`` for recovery, ``heldout`` for the measurement."""

    train: Dataset[Any]
    heldout: Dataset[Any]


class EntryFailed(LmzooError):
    """One entry's estimator failed (e.g. its loss diverged); recorded, never turned into a value."""


class IncompleteTableError(LmzooError):
    """Some entries of an importance table are not measured yet (other shards still running)."""


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
    task: Task | None = None,
    cands: Iterable[Candidate] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> ImportanceTable:
    """Measure one importance entry per candidate (default: every method's candidates).

    ``task`` defaults to denoising for diffusers UNets and classification otherwise. ``workdir``
    keeps one record per finished entry (and resumes from them); without it a temporary directory
    is used. With ``shard=(i, n)`` only every n-th job runs here; the table is returned when all
    shards are done, otherwise IncompleteTableError says how many entries are missing.
    ``executor="ray"`` submits the jobs as Ray tasks to the cluster ``ray.init()`` connects to
    (``RAY_ADDRESS``, or a local one); records are still written here as results arrive.
    """
    if estimator not in ESTIMATORS:
        raise InvalidArgumentError(
            f"unknown importance estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
        )
    if executor not in EXECUTORS:
        raise InvalidArgumentError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    settings = settings or FinetuneSettings()
    if estimator == "finetune-short":
        settings = replace(settings, step_fraction=min(settings.step_fraction, 0.1))
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise InvalidArgumentError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    if cands is None:
        cands = {c for m in METHODS for c in candidates(spec, method=m)}
    ordered = sorted(set(cands), key=lambda c: (c.start, c.end, c.kernel, c.depthwise, c.kept))
    task = task or task_for(model)
    context = _Context(model, spec, data, settings, task, torch.device(device))
    if estimator == "block-distill":
        context.chain()  # fails early for families without a chain
    if estimator == "bn-recalibration" and (task.name != "classification" or not _batch_norms(model)):
        raise InvalidArgumentError(
            "the bn-recalibration estimator needs a classifier with BatchNorm layers; "
            "use finetune or finetune-short for this model"
        )
    with tempfile.TemporaryDirectory() as scratch:
        store = _Store(Path(workdir) if workdir is not None else Path(scratch), estimator, settings, seed)
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
            unit="entry",
            file=sys.stderr,
            disable=not progress,
        )
        run = _run_local if executor == "local" else _run_ray
        try:
            with bar:
                for record in run(context, estimator, todo, seed):
                    store.write(record)
                    bar.update(1)
        finally:
            _PROCESS_MAPS.pop(context.token, None)
        return _assemble(store, ordered, spec, estimator, settings, task, base, seed)


def _run_local(
    context: _Context, estimator: str, todo: Sequence[Candidate], seed: int
) -> Iterator[EntryRecord]:
    for cand in todo:
        yield run_entry(context, estimator, cand, seed)


def _run_ray(
    context: _Context, estimator: str, todo: Sequence[Candidate], seed: int
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


def run_entry(context: _Context, estimator: str, cand: Candidate, seed: int) -> EntryRecord:
    """Run one entry; a diverging recovery becomes a failed record (never a value)."""
    if context.device.type == "cpu" and torch.get_num_threads() > 1 and _in_ray_worker():
        torch.set_num_threads(1)  # one CPU per Ray task: do not oversubscribe the node
    entry_seed = _entry_seed(seed, cand)
    started = time.perf_counter()
    try:
        metrics = ESTIMATORS[estimator](context, cand, entry_seed)
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


def _in_ray_worker() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE)


def _is_identity(cand: Candidate) -> bool:
    """A single conv kept as it is: nothing is compressed, so I = 1 exactly (no run needed)."""
    return cand.length == 1 and cand.kept == (cand.end,)


def _entry_seed(seed: int, cand: Candidate) -> int:
    digest = hashlib.sha256(json.dumps([seed, cand.to_dict()], sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _assemble(
    store: _Store,
    ordered: Sequence[Candidate],
    spec: Spec,
    estimator: str,
    settings: FinetuneSettings,
    task: Task,
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
    """What every estimator needs: the base model and spec, the data, settings, task, device.
    Pickled once per Ray cluster (``ray.put``); per-process caches live in ``_PROCESS_MAPS``."""

    def __init__(
        self,
        model: nn.Module,
        spec: Spec,
        data: ImportanceData,
        settings: FinetuneSettings,
        task: Task,
        device: torch.device,
    ):
        self.model = model
        self.spec = spec
        self.data = data
        self.settings = settings
        self.task = task
        self.device = device
        self.base: dict[str, Any] = {}
        self.token = uuid.uuid4().hex

    def configured(self, plan: Plan, source: nn.Module | None = None) -> nn.Module:
        from lmzoo.engine import apply_plan

        return apply_plan(source or self.model, self.spec, plan).to(self.device)

    def compressed(self, cand: Candidate) -> nn.Module:
        """The configured network with only ``cand`` compressed (the identity plan elsewhere). A block
        that keeps one conv of several starts that conv, and the norm right after it, afresh (paper)."""
        source = self.model
        if cand.length > 1 and len(cand.kept) == 1:
            source = copy.deepcopy(self.model)
            path = self.spec.unit(cand.kept[0]).path
            conv = source.get_submodule(path)
            assert isinstance(conv, nn.Conv2d)
            conv.reset_parameters()
            norm = _norm_after(source, path, self.example_inputs())
            if norm is not None:
                norm.reset_parameters()  # BatchNorm: unit affine and fresh running statistics
        blocks = [b for b in Plan.identity(self.spec) if not cand.start < b.end <= cand.end]
        blocks.insert(cand.start, cand)
        return self.configured(Plan(blocks), source)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(self.device) for t in self.task.example_inputs(self.data.train, batch_size=2))

    def evaluate(self, net: nn.Module) -> dict[str, Any]:
        return self.task.evaluate(
            net, self.data.heldout, batch_size=self.settings.eval_batch_size, device=self.device
        )

    def chain(self, net: nn.Module | None = None) -> Any:
        from lmzoo.adapters._chain import Chain

        net = net if net is not None else self.model_identity()
        chains = [m for m in net.modules() if isinstance(m, Chain)]
        if len(chains) != 1:
            raise InvalidArgumentError(
                "the block-distill estimator needs a chain-family model (timm ResNet, MobileNetV2); "
                "use finetune, finetune-short or bn-recalibration for this model"
            )
        return chains[0]

    def model_identity(self) -> nn.Module:
        return self.configured(Plan.identity(self.spec)).eval()

    def maps(self) -> _BlockMaps:
        """Cached maps of the base network (kept per process, never pickled)."""
        cached = _PROCESS_MAPS.get(self.token)
        if cached is None:
            cached = _PROCESS_MAPS[self.token] = _BlockMaps(self)
        return cached


_Norm = nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm


def _norm_after(model: nn.Module, conv_path: str, example: tuple[torch.Tensor, ...]) -> _Norm | None:
    """The normalisation layer that reads the conv's output directly (found by one traced forward),
    or None when something else comes first (e.g. a DDPM time embedding is added)."""
    conv = model.get_submodule(conv_path)
    produced: list[torch.Tensor] = []
    found: list[_Norm] = []

    def on_conv(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        produced.append(output)

    def on_norm(module: _Norm, inputs: tuple[Any, ...]) -> None:
        if produced and not found and inputs and inputs[0] is produced[0]:
            found.append(module)

    handles = [conv.register_forward_hook(on_conv)]
    handles += [m.register_forward_pre_hook(on_norm) for m in model.modules() if isinstance(m, _Norm)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(*example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return found[0] if found else None


def _finetune(context: _Context, cand: Candidate, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    net = context.compressed(cand)
    s = context.settings
    summary = train(
        net, context.data.train, s, context.task.loss(s), seed=seed, device=context.device, progress=False
    )
    return {**context.evaluate(net), **summary}


@torch.no_grad()
def _bn_recalibration(context: _Context, cand: Candidate, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    net = context.compressed(cand)
    for m in _batch_norms(net):
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    net.train()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        context.data.train, batch_size=context.settings.batch_size, shuffle=True, generator=generator
    )
    batches = 0
    for x, _ in loader:
        net(x.to(context.device))
        batches += 1
    return {**context.evaluate(net), "calibration_batches": batches}


def _batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


_PROCESS_MAPS: dict[str, _BlockMaps] = {}


class _BlockMaps:
    """The base network's maps at one chain position, for the importance-train and held-out
    subsets, advanced position by position (entries come sorted by start) so each prefix of the
    network runs once per subset rather than once per entry. Maps are kept in held-out-sized batches
    (the batches ``Task.evaluate`` uses)."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        self.net = context.model_identity()
        self.chain = context.chain(self.net)
        self._targets: dict[int, torch.Tensor] = {}
        self._restart()

    def _restart(self) -> None:
        self.position = 0
        self.train = self._chain_inputs(self.context.data.train)
        self.heldout = self._chain_inputs(self.context.data.heldout)
        self._targets.clear()

    @torch.no_grad()
    def _chain_inputs(self, dataset: Dataset[Any]) -> list[tuple[torch.Tensor, dict[int, torch.Tensor]]]:
        """The chain's input map for every batch (the stem runs once)."""
        captured: list[torch.Tensor] = []

        def grab(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            captured.append(inputs[0])
            raise _Captured

        handle = self.chain.register_forward_pre_hook(grab)
        try:
            for x, _ in DataLoader(dataset, batch_size=self.context.settings.eval_batch_size, shuffle=False):
                with contextlib.suppress(_Captured):
                    self.net(x.to(self.context.device))
        finally:
            handle.remove()
        sources = self.chain._sources
        return [(x, {0: x} if 0 in sources else {}) for x in captured]

    @torch.no_grad()
    def at(self, position: int) -> None:
        """Advance both caches to the map at ``position`` (restarting when asked to go back)."""
        if position < self.position:
            self._restart()
        while self.position < position:
            needed = {s.source for s in self.chain.spans if s.target > self.position + 1}
            for batches in (self.train, self.heldout):
                for i, (x, saved) in enumerate(batches):
                    saved = dict(saved)
                    x = self.chain.run_blocks(x, saved, self.position, self.position + 1)
                    batches[i] = (x, {k: v for k, v in saved.items() if k in needed})
            self.position += 1
            self._targets.clear()

    def train_inputs(self) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        x = torch.cat([x for x, _ in self.train])
        return x, {k: torch.cat([saved[k] for _, saved in self.train]) for k in self.train[0][1]}

    @torch.no_grad()
    def train_targets(self, end: int) -> torch.Tensor:
        """The base network's maps at ``end`` for the importance-train subset (shared by every
        candidate over the same span)."""
        if end not in self._targets:
            self._targets[end] = torch.cat(
                [self.chain.run_blocks(x, dict(saved), self.position, end) for x, saved in self.train]
            )
        return self._targets[end]


class _Captured(Exception):
    pass


def _block_distill(context: _Context, cand: Candidate, seed: int) -> dict[str, Any]:
    """Train the compressed block, in its deploy form (one conv), to reproduce the base network's
    map at the block's end; then evaluate only the network after the block's start."""
    torch.manual_seed(seed)
    s = context.settings
    maps = context.maps()
    maps.at(cand.start)
    net = context.compressed(cand).eval()
    chain = context.chain(net)
    started = time.perf_counter()
    last: float | None = None  # a block without parameters (all convs dropped) has nothing to train
    steps = 0
    if any(True for _ in chain.blocks[cand.start].parameters()):
        student = chain.blocks[cand.start]
        merged_flops, unit_flops = _merged_flops(context.spec, cand), _unit_flops(context.spec, cand)
        if merged_flops <= unit_flops:
            student = chain.blocks[cand.start] = student.lmzoo_merged()  # cheaper to train as one conv
        steps = _block_steps(context, min(merged_flops, unit_flops))
        inputs, saved = maps.train_inputs()
        wanted = maps.train_targets(cand.end)
        optimizer = torch.optim.Adam(student.parameters(), lr=s.block_lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        generator = torch.Generator().manual_seed(seed)
        for step in range(steps):
            pick = torch.randint(0, len(inputs), (min(s.block_batch_size, len(inputs)),), generator=generator)
            out = chain.run_blocks(
                inputs[pick], {k: v[pick] for k, v in saved.items()}, cand.start, cand.start + 1
            )
            loss = nn.functional.mse_loss(out, wanted[pick])
            if not torch.isfinite(loss):
                raise EntryFailed(
                    f"the block-distillation loss became {float(loss)} at step {step + 1}; lower block_lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            last = float(loss.detach())
    train_s = time.perf_counter() - started
    with chain.resumed([(cand.start, x, saved) for x, saved in maps.heldout]):
        metrics = context.evaluate(net)
    return {**metrics, "block_loss": last, "block_steps": steps, "block_train_s": train_s}


def _block_steps(context: _Context, student_flops: int) -> int:
    """At most ``block_steps``, and at most a tenth of the finetune estimator's training compute
    (one epoch of importance-train through the whole network): long blocks get fewer steps."""
    s = context.settings
    network = sum(_unit_flops(context.spec, c) for c in Plan.identity(context.spec))
    examples = len(context.data.train)  # type: ignore[arg-type]
    budget = 0.1 * examples * network / (s.block_batch_size * max(student_flops, 1))
    return max(1, min(s.block_steps, int(budget)))


def _conv_flops(unit_in: int, unit_out: int, kernel: int, depthwise: bool, out_hw: int) -> int:
    return unit_out * (1 if depthwise else unit_in) * kernel * kernel * out_hw


def _unit_flops(spec: Spec, cand: Candidate) -> int:
    """Multiply-adds of the block's kept convs, run one after the other."""
    total = 0
    for index in cand.kept:
        u = spec.unit(index)
        _, h, w = u.input_shape
        total += _conv_flops(
            u.in_channels, u.out_channels, u.kernel, u.depthwise, (h // u.stride) * (w // u.stride)
        )
    return total


def _merged_flops(spec: Spec, cand: Candidate) -> int:
    """Multiply-adds of the block's merged conv (the padding makes its output the block's)."""
    first, last = spec.unit(cand.start + 1), spec.unit(cand.end)
    _, h, w = first.input_shape
    return _conv_flops(
        first.in_channels,
        last.out_channels,
        cand.kernel,
        cand.depthwise,
        (h // cand.stride) * (w // cand.stride),
    )


ESTIMATORS: dict[str, Estimator] = {
    "finetune": _finetune,
    "finetune-short": _finetune,
    "block-distill": _block_distill,
    "bn-recalibration": _bn_recalibration,
}
