"""What every importance estimator works with: the base network and its spec, the data subsets, the
settings and the task, plus the steps estimators share (the network with one block compressed, a
recovery run, BatchNorm recalibration, the held-out measurement). Pickled once per Ray cluster
(``ray.put``); caches that must not travel live in :data:`PROCESS_CACHE`."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lmzoo.core.activations import ActivationState, Entry, default_state, entry_candidate
from lmzoo.core.candidates import Candidate
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.importance.settings import FinetuneSettings
from lmzoo.tasks import Task
from lmzoo.training.loop import train

#: per-process state of a context, keyed by its token (e.g. block-distill's cached maps)
PROCESS_CACHE: dict[str, Any] = {}


class EntryFailed(LmzooError):
    """One entry's estimator failed (e.g. its loss diverged); recorded, never turned into a value."""


@dataclass(frozen=True)
class ImportanceData:
    """Disjoint training-split subsets: ``train`` for recovery, ``heldout`` for the measurement."""

    train: Dataset[Any]
    heldout: Dataset[Any]


def inputs_digest(model: nn.Module, spec: Spec, data: ImportanceData) -> str:
    """What an importance entry is measured on, as a digest: the network's structure and every
    weight, and which examples the two subsets hold. Records kept under a work directory are reused
    only for the same inputs, never for a retrained network or other subsets."""
    digest = hashlib.sha256(spec.fingerprint.encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())  # the tensor's own bytes, not a copy
    for subset in (data.train, data.heldout):
        digest.update(json.dumps(_dataset_identity(subset)).encode())
    return digest.hexdigest()


def _dataset_identity(dataset: Dataset[Any]) -> Any:
    """Which examples a dataset holds, as far as can be told without reading them: a Subset's indices
    into its parent, otherwise the dataset's type and length."""
    if isinstance(dataset, Subset):
        indices = hashlib.sha256(json.dumps([int(i) for i in dataset.indices]).encode()).hexdigest()
        return {"subset_of": _dataset_identity(dataset.dataset), "indices": indices}
    return {"type": type(dataset).__qualname__, "length": len(dataset)}  # type: ignore[arg-type]


class EstimatorContext:
    """The inputs of every entry of one importance table."""

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
        #: the base network's held-out metrics (set before entries run)
        self.base: dict[str, Any] = {}
        #: identifies this context's per-process caches
        self.token = uuid.uuid4().hex

    def configured(self, plan: Plan, source: nn.Module | None = None) -> nn.Module:
        from lmzoo.engine import apply_plan

        return apply_plan(source or self.model, self.spec, plan).to(self.device)

    def compressed(self, entry: Entry, seed: int) -> nn.Module:
        """The configured network with only the entry's candidate compressed (the identity plan
        elsewhere; an activation state also sets the activations at its ends), the conv the
        settings' reinit rule names (and the norm right after it) started afresh, drawn from
        ``seed``."""
        cand = entry_candidate(entry)
        torch.manual_seed(seed)
        source = self.model
        fresh = reinitialised_unit(cand, self.settings.reinit)
        if fresh is not None:
            source = copy.deepcopy(self.model)
            path = self.spec.unit(fresh).path
            conv = source.get_submodule(path)
            assert isinstance(conv, nn.Conv2d)
            conv.reset_parameters()
            norm = norm_after(source, path, self.example_inputs())
            if norm is not None:
                norm.reset_parameters()  # BatchNorm: unit affine and fresh running statistics
        blocks = [b for b in Plan.identity(self.spec) if not cand.start < b.end <= cand.end]
        blocks.insert(cand.start, cand)
        return self.configured(entry_plan(self.spec, blocks, entry), source)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(self.device) for t in self.task.example_inputs(self.data.train, batch_size=2))

    def recover(self, net: nn.Module, seed: int) -> dict[str, Any]:
        """Fine-tune ``net`` in place on the importance-train subset with the context's settings."""
        s = self.settings
        return train(
            net, self.data.train, s, self.task.loss(s), seed=seed, device=self.device, progress=False
        )

    @torch.no_grad()
    def recalibrate_batch_norms(self, net: nn.Module, seed: int) -> int:
        """Re-estimate every BatchNorm's statistics of ``net`` on the importance-train subset (no
        training); returns the number of batches seen."""
        for m in batch_norms(net):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        net.train()
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            self.data.train, batch_size=self.settings.batch_size, shuffle=True, generator=generator
        )
        batches = 0
        for x, _ in loader:
            net(x.to(self.device))
            batches += 1
        return batches

    def evaluate(self, net: nn.Module) -> dict[str, Any]:
        """The task's metrics of ``net`` on the held-out subset."""
        return self.task.evaluate(
            net, self.data.heldout, batch_size=self.settings.eval_batch_size, device=self.device
        )

    def can_recalibrate_batch_norms(self, net: nn.Module | None = None) -> bool:
        """Whether ``net`` (default: the base) has BatchNorm statistics that
        :meth:`recalibrate_batch_norms` can re-estimate (a classifier's: it feeds images alone)."""
        return self.task.name == "classification" and bool(
            batch_norms(net if net is not None else self.model)
        )

    def require_batch_norms(self) -> None:
        if not self.can_recalibrate_batch_norms():
            raise InvalidArgumentError(
                "the bn-recalibration estimator needs a classifier with BatchNorm layers; "
                "use finetune or finetune-short for this model"
            )

    def chain(self, net: nn.Module | None = None) -> Any:
        """The one :class:`~lmzoo.adapters.base.chain.Chain` of ``net`` (default: the identity plan of
        the base), for estimators that work block by block."""
        from lmzoo.adapters.base.chain import Chain

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


def entry_plan(spec: Spec, blocks: list[Candidate], entry: Entry) -> Plan:
    """The plan of ``blocks`` (the identity plan around one candidate) with the activations an
    activation state asks for at the candidate's ends."""
    if not isinstance(entry, ActivationState):
        return Plan(blocks)
    cand, default = entry.candidate, default_state(spec, entry.candidate)
    linear: list[int] = []
    activated: list[int] = []
    if entry.start_active != default.start_active:
        # the block before is a single unit ending at a linear position: insert there, never remove
        (activated if entry.start_active else linear).append(cand.start)
    if entry.end_active != default.end_active:
        (activated if entry.end_active else linear).append(cand.end)
    plan = Plan(blocks, linear, activated)
    plan.validate(spec)
    return plan


def reinitialised_unit(cand: Candidate, rule: str) -> int | None:
    """The unit whose conv an entry starts afresh under ``rule`` (REINIT_RULES), or None."""
    if rule == "single":
        return cand.end if cand.length == 1 and cand.kept else None
    return cand.kept[0] if cand.length > 1 and len(cand.kept) == 1 else None


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


_Norm = nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm


def norm_after(model: nn.Module, conv_path: str, example: tuple[torch.Tensor, ...]) -> _Norm | None:
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
