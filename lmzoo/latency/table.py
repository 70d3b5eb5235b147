"""Measured latency tables (DESIGN §6) and end-to-end benchmarks.

Each candidate is timed as what it becomes in the deployed network: one merged ``nn.Conv2d`` (its
merged kernel, stride, padding and groups) followed by the activation at the block's end, at the
block's input shape. Candidates with the same conv configuration are measured once. Identity
(kernel-0) entries cost 0.

Given the base model, the table is calibrated against the network itself: the identity plan's convs
are timed as one chain right beside the base network in deploy form (norms folded), alternating
between the two. The chain/isolated ratio scales every entry (isolated convs run with hot caches,
and at another moment of a shared machine), and base − chain is the fixed cost of everything
outside the chain (stem, head, adds, pooling, attention).

Finished measurements are appended to a JSON-lines cache as they complete, so an interrupted
table resumes where it stopped; a table is only returned once every entry is measured.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmzoo.core.candidates import IDENTITY_KERNEL, METHODS, Candidate, block_geometry, candidates
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.core.tables import LatencyTable
from lmzoo.errors import InvalidArgumentError, InvalidInputError
from lmzoo.latency.backends import (
    Backend,
    Target,
    backend_versions,
    get_backend,
    make_target,
    measure_interleaved,
    measure_times,
)
from lmzoo.latency.stats import LatencyStats, contended

log = logging.getLogger(__name__)

CACHE_FORMAT = "lmzoo.latency-cache/1"
#: alternating rounds when timing the base network against its chain convs (calibration)
CALIBRATION_ROUNDS = 10


@dataclass(frozen=True)
class ConvConfig:
    """The deployed form of a candidate: one conv (+ activation) at an input shape (batch 1)."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    input_shape: tuple[int, int, int]
    activation: str | None

    def module(self) -> nn.Module:
        from lmzoo.adapters._modules import make_activation

        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel,
            stride=self.stride,
            padding=self.padding,
            groups=self.groups,
            bias=True,
        )
        if self.activation == "groupnorm+silu":
            groups = math.gcd(32, self.out_channels)  # diffusers' default of 32 groups where it divides
            return nn.Sequential(conv, nn.GroupNorm(groups, self.out_channels), nn.SiLU())
        return nn.Sequential(conv, make_activation(self.activation))

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def conv_config(spec: Spec, cand: Candidate) -> ConvConfig | None:
    """What ``cand`` deploys to, or None for an identity (kernel-0) block."""
    if cand.kernel == IDENTITY_KERNEL:
        return None
    first, last = spec.unit(cand.start + 1), spec.unit(cand.end)
    geometry = block_geometry(spec, cand.start, cand.end, cand.kept)
    return ConvConfig(
        in_channels=first.in_channels,
        out_channels=last.out_channels,
        kernel=cand.kernel,
        stride=cand.stride,
        padding=geometry.padding,
        groups=first.in_channels if cand.depthwise else 1,
        input_shape=first.input_shape,
        activation=spec.block_activation(cand.start, cand.end),
    )


#: a table is measured in this many passes over all its convs, each with runs / passes timed runs,
#: so that a slow drift of a shared machine spreads over every entry instead of hitting a few
DEFAULT_PASSES = 3


def latency_table(
    spec: Spec,
    *,
    backend: str | Backend = "torch",
    device: str = "cpu",
    batch_size: int = 1,
    dtype: str = "float32",
    threads: int | None = None,
    warmup: int | None = None,
    runs: int | None = None,
    passes: int = DEFAULT_PASSES,
    model: nn.Module | None = None,
    example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    cands: Iterable[Candidate] | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> LatencyTable:
    """Measure one latency entry per candidate of ``spec`` (default: every method's candidates).

    ``model`` (the base network the spec was traced from) calibrates the table against the network
    (module docstring): a context scale on every entry and the fixed cost of the parts outside the
    chain. Without it the entries are the isolated timings, ``fixed_ms`` is 0, and the metadata says so.
    ``cache`` names a JSON-lines file: each finished (conv, pass) is appended at once and reused by
    the next call with the same settings, so an interrupted table resumes. Progress on stderr.
    """
    chosen = get_backend(backend)
    target = make_target(device, dtype, threads)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise InvalidArgumentError(f"passes must be a positive integer, got {passes!r}")
    chosen.check(target)
    if cands is None:
        cands = sorted({c for m in METHODS for c in candidates(spec, method=m)})
    cands = list(cands)
    setting = _setting(chosen, target, batch_size, warmup, runs)
    runs_per_pass = max(1, setting["runs"] // passes)
    configs = {c: conv_config(spec, c) for c in cands}
    unique = dict(sorted({cfg.key(): cfg for cfg in configs.values() if cfg is not None}.items()))
    store = _Cache(Path(cache), {**setting, "passes": passes}) if cache is not None else None
    done: dict[tuple[str, int], list[float]] = store.load() if store else {}
    jobs = [(p, key) for p in range(passes) for key in unique if (key, p) not in done]
    from tqdm.auto import tqdm

    total = passes * len(unique)
    bar = tqdm(
        total=total,
        initial=total - len(jobs),
        desc=f"latency table ({len(unique)} convs x {passes} passes)",
        file=sys.stderr,
        disable=not progress,
    )
    with bar:
        for p, key in jobs:
            cfg = unique[key]
            x = torch.randn(batch_size, *cfg.input_shape)
            times = measure_times(
                cfg.module(), [x], backend=chosen, target=target, warmup=setting["warmup"], runs=runs_per_pass
            )
            done[(key, p)] = times
            if store:
                store.append(key, p, times)
            bar.update(1)
    stats = {
        key: LatencyStats.from_times(
            [t for p in range(passes) for t in done[(key, p)]], warmup=setting["warmup"]
        )
        for key in unique
    }
    entries = {c: 0.0 if cfg is None else stats[cfg.key()].median_ms for c, cfg in configs.items()}
    metadata: dict[str, Any] = {
        **_metadata(target, setting),
        "passes": passes,
        "statistic": "median",
        "entries": len(entries),
        "unique_measurements": len(unique),
        "reused_from_cache": total - len(jobs),
        "entry": "merged conv + the activation at the block end, at the block's input shape",
    }
    fixed_ms = 0.0
    measured = dict(stats)
    if model is not None:
        calibration = _calibrate(spec, model, example_inputs, chosen, target, batch_size, setting)
        measured |= {"calibration: identity chain": calibration.chain, "calibration: base": calibration.base}
        identity_ms = math.fsum(entries[c] for c in Plan.identity(spec))
        # isolated convs run with hot caches (their weights stay cached between runs) and at another
        # moment than the end-to-end runs; one factor per table maps them onto the chain timed in
        # context, right beside the base network (evidence in the latency benchmark)
        scale = calibration.chain.median_ms / identity_ms if identity_ms > 0 else 1.0
        entries = {c: v * scale for c, v in entries.items()}
        fixed_ms = max(calibration.base.median_ms - calibration.chain.median_ms, 0.0)
        metadata["calibration"] = {
            "method": (
                "entries x context_scale, where context_scale = (identity-plan convs timed as one chain) / "
                "(their isolated entries); fixed_ms = base in deploy form (norms folded) - that chain; "
                "base and chain timed in alternating rounds (medians)"
            ),
            "context_scale": scale,
            "isolated_identity_ms": identity_ms,
            "identity_chain": calibration.chain.to_dict(),
            "base_deploy": calibration.base.to_dict(),
        }
        if calibration.base.median_ms < calibration.chain.median_ms:
            log.warning(
                "the chain convs alone (%.3f ms) took longer than the whole base network (%.3f ms); "
                "fixed cost clamped to 0",
                calibration.chain.median_ms,
                calibration.base.median_ms,
            )
    else:
        metadata["calibration"] = {"method": "none (no model given): isolated entries, fixed cost 0"}
    metadata["contended"] = contended(measured, "latency table")
    return LatencyTable(entries, fixed_ms=fixed_ms, spec=spec, metadata=metadata)


def benchmark(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    backend: str | Backend = "torch",
    device: str = "cpu",
    batch_size: int | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    warmup: int | None = None,
    runs: int | None = None,
) -> LatencyStats:
    """End-to-end latency of ``model(*example_inputs)``: warm-up, synchronisation, statistics.

    ``batch_size`` repeats the example inputs along the batch dimension. The model is not modified
    (it is copied before being moved or compiled).
    """
    return compare(
        {"model": model},
        example_inputs,
        backend=backend,
        device=device,
        batch_size=batch_size,
        dtype=dtype,
        threads=threads,
        warmup=warmup,
        runs=runs,
        rounds=1,
    )["model"]


def compare(
    models: Mapping[str, nn.Module],
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    backend: str | Backend = "torch",
    device: str = "cpu",
    batch_size: int | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    warmup: int | None = None,
    runs: int | None = None,
    rounds: int = 10,
) -> dict[str, LatencyStats]:
    """End-to-end latency of several models (e.g. base and merged), measured interleaved in
    ``rounds`` rounds so that drifts of a shared machine affect all of them alike."""
    import copy

    inputs = _batched(_as_list(example_inputs), batch_size)
    target = make_target(device, dtype, threads)
    jobs = {name: (_Plain(copy.deepcopy(m)), inputs) for name, m in models.items()}
    return measure_interleaved(
        jobs, backend=get_backend(backend), target=target, warmup=warmup, runs=runs, rounds=rounds
    )


def measurement_record(
    backend: str | Backend, device: str, batch_size: int, dtype: str, threads: int | None
) -> dict[str, Any]:
    """How a measurement is made, for latency cards: backend, versions, device, batch, dtype, threads."""
    chosen = get_backend(backend)
    target = make_target(device, dtype, threads)
    return _metadata(target, _setting(chosen, target, batch_size, None, None))


class _Plain(nn.Module):
    """Returns a tensor whatever the wrapped model returns (diffusers outputs, tuples), so every
    backend (ONNX export included) sees a plain graph."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        from lmzoo.engine import tensor_output

        return tensor_output(self.inner(*args))


def _as_list(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(example_inputs, torch.Tensor):
        return [example_inputs]
    if isinstance(example_inputs, (tuple, list)) and example_inputs:
        return list(example_inputs)
    raise InvalidInputError("example_inputs must be a tensor or a non-empty tuple of tensors")


def _batched(inputs: list[torch.Tensor], batch_size: int | None) -> list[torch.Tensor]:
    if batch_size is None:
        return inputs
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    out = []
    for x in inputs:
        if x.dim() == 0:
            out.append(x)
            continue
        reps = math.ceil(batch_size / x.shape[0])
        out.append(x.repeat(reps, *([1] * (x.dim() - 1)))[:batch_size])
    return out


def _inputs_from_spec(spec: Spec, batch_size: int) -> list[torch.Tensor]:
    inputs = []
    for shape in spec.input_shapes:
        if len(shape) == 4:
            inputs.append(torch.randn(batch_size, *shape[1:]))
        else:  # a diffusion timestep
            inputs.append(torch.full((batch_size, *shape[1:]), 500, dtype=torch.long))
    return inputs


class _IdentityChain(nn.Module):
    """The convs (+ activations) of the identity plan alone, as the table measures them.

    Where every unit's input is the previous unit's output (ResNet, MobileNetV2) they run as a
    chain on one input; otherwise (a U-Net) each runs on its own input and every output is
    returned, so that no runtime can drop or constant-fold any of them.
    """

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        configs = [cfg for cfg in (conv_config(spec, c) for c in Plan.identity(spec)) if cfg is not None]
        self.convs = nn.ModuleList([cfg.module() for cfg in configs])
        self.shapes = [cfg.input_shape for cfg in configs]
        x = torch.zeros(1, *self.shapes[0])
        chained = True
        with torch.no_grad():
            for conv, shape in zip(self.convs, self.shapes):
                if tuple(x.shape[1:]) != shape:
                    chained = False
                    break
                x = conv(x)
        self.chained = chained

    def example_inputs(self, batch_size: int) -> list[torch.Tensor]:
        shapes = self.shapes[:1] if self.chained else self.shapes
        return [torch.randn(batch_size, *shape) for shape in shapes]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.chained:
            (x,) = inputs
            for conv in self.convs:
                x = conv(x)
            return x
        return tuple(conv(x) for conv, x in zip(self.convs, inputs))


def deploy_form(model: nn.Module, spec: Spec) -> nn.Module:
    """The base network as it deploys: the identity plan merged, i.e. every chain conv with its
    norm folded in, nothing else changed. Speed-ups are measured against this, so that they
    count what LayerMerge removes and not the norm folding any deployment gets for free."""
    from lmzoo.engine import apply_plan, merge

    return merge(apply_plan(model, spec, Plan.identity(spec))).eval()


@dataclass(frozen=True)
class _Calibration:
    base: LatencyStats  # the base network in deploy form, end to end
    chain: LatencyStats  # the identity plan's convs (+ activations) alone, as one network


def _calibrate(
    spec: Spec,
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor] | None,
    backend: Backend,
    target: Target,
    batch_size: int,
    setting: Mapping[str, Any],
) -> _Calibration:
    inputs = (
        _batched(_as_list(example_inputs), batch_size)
        if example_inputs is not None
        else _inputs_from_spec(spec, batch_size)
    )
    chain = _IdentityChain(spec)
    timed = measure_interleaved(
        {
            "base": (_Plain(deploy_form(model, spec)), inputs),
            "chain": (chain, chain.example_inputs(batch_size)),
        },
        backend=backend,
        target=target,
        warmup=setting["warmup"],
        runs=setting["runs"],
        rounds=CALIBRATION_ROUNDS,
    )
    return _Calibration(base=timed["base"], chain=timed["chain"])


def _setting(
    backend: Backend, target: Target, batch_size: int, warmup: int | None, runs: int | None
) -> dict[str, Any]:
    from lmzoo.latency.backends import DEFAULT_RUNS, DEFAULT_WARMUP

    kind = target.device.type
    return {
        "backend": backend.name,
        "backend_options": backend.options(),
        "device": str(target.device),
        "batch_size": batch_size,
        "dtype": target.dtype_name,
        "threads": target.threads if kind == "cpu" else None,
        "warmup": DEFAULT_WARMUP[kind] if warmup is None else warmup,
        "runs": DEFAULT_RUNS[kind] if runs is None else runs,
        "versions": backend_versions(backend),
    }


def _metadata(target: Target, setting: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **setting,
        "device_name": target.device_name(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


class _Cache:
    """Append-only JSON-lines store of finished (conv, pass) timings for one setting.

    Each line is self-contained and written with one ``write`` + fsync, so a killed run leaves at
    most one torn last line, which is dropped (and re-measured) on the next load.
    """

    def __init__(self, path: Path, setting: Mapping[str, Any]) -> None:
        self.path = path
        self.setting_key = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]

    def load(self) -> dict[tuple[str, int], list[float]]:
        found: dict[tuple[str, int], list[float]] = {}
        if not self.path.exists():
            return found
        text = self.path.read_text()
        if text and not text.endswith("\n"):  # drop the torn tail so new lines start clean
            text = text[: text.rfind("\n") + 1]
            self.path.write_text(text)
        for line in text.splitlines():
            try:
                record = json.loads(line)
                if record.get("format") != CACHE_FORMAT or record.get("setting") != self.setting_key:
                    continue
                found[(record["config"], int(record["pass"]))] = [float(t) for t in record["times_ms"]]
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def append(self, config_key: str, pass_index: int, times_ms: Sequence[float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "format": CACHE_FORMAT,
            "setting": self.setting_key,
            "config": config_key,
            "pass": pass_index,
            "times_ms": list(times_ms),
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
