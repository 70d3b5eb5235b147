"""Measured latency tables (DESIGN §6).

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

from lmzoo.adapters.base.activations import make_activation
from lmzoo.core.candidates import IDENTITY_KERNEL, Candidate, all_candidates, block_geometry
from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.latency.backends import Backend, Target, get_backend, measure_interleaved, measure_times, target_of
from lmzoo.latency.endtoend import PlainOutput, as_input_list, batched, deploy_form
from lmzoo.latency.measurement import measurement_of
from lmzoo.latency.setting import LatencySetting
from lmzoo.latency.stats import LatencyStats, contended
from lmzoo.tables import LatencyTable

log = logging.getLogger(__name__)

CACHE_FORMAT = "lmzoo.latency-cache/1"


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
        groups=first.in_channels if cand.depthwise else geometry.groups,
        input_shape=first.input_shape,
        activation=spec.block_activation(cand.start, cand.end),
    )


def latency_table(
    spec: Spec,
    setting: LatencySetting | None = None,
    *,
    model: nn.Module | None = None,
    example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    cands: Iterable[Candidate] | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> LatencyTable:
    """Measure one latency entry per candidate of ``spec`` (default: every method's candidates).

    ``setting`` says how (backend, device, batch, dtype, threads, runs, passes); keyword
    ``overrides`` change single fields of it (``backend="onnxruntime"``, ``batch_size=64``).
    ``model`` (the base network the spec was traced from) calibrates the table against the network
    (module docstring): a context scale on every entry and the fixed cost of the parts outside the
    chain. Without it the entries are the isolated timings, ``fixed_ms`` is 0, and the metadata says so.
    ``cache`` names a JSON-lines file: each finished (conv, pass) is appended at once and reused by
    the next call with the same settings, so an interrupted table resumes. Progress on stderr.
    """
    setting = (setting or LatencySetting()).replace(**overrides)
    chosen = get_backend(setting.backend)
    target = target_of(setting)
    chosen.check(target)
    passes, batch_size = setting.passes, setting.batch_size
    if cands is None:
        cands = all_candidates(spec)
    cands = list(cands)
    measurement = measurement_of(setting)
    runs_per_pass = max(1, measurement.runs // passes)
    configs = {c: conv_config(spec, c) for c in cands}
    unique = dict(sorted({cfg.key(): cfg for cfg in configs.values() if cfg is not None}.items()))
    store = _Cache(Path(cache), {**measurement.setting(), "passes": passes}) if cache is not None else None
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
                cfg.module(),
                [x],
                backend=chosen,
                target=target,
                warmup=measurement.warmup,
                runs=runs_per_pass,
            )
            done[(key, p)] = times
            if store:
                store.append(key, p, times)
            bar.update(1)
    stats = {
        key: LatencyStats.from_times(
            [t for p in range(passes) for t in done[(key, p)]], warmup=measurement.warmup
        )
        for key in unique
    }
    entries = {c: 0.0 if cfg is None else stats[cfg.key()].median_ms for c, cfg in configs.items()}
    metadata: dict[str, Any] = {
        **measurement.to_dict(),
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
        calibration = _calibrate(spec, model, example_inputs, chosen, target, setting)
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


def covering(table: LatencyTable, spec: Spec, cands: Iterable[Candidate]) -> LatencyTable | None:
    """``table`` itself when it holds every one of ``cands``; else a table over exactly ``cands`` in
    which each candidate ``table`` lacks takes the entry of one it holds that deploys to the same conv
    (:func:`conv_config`: the same measurement); None when some candidate's conv is not in it.

    Which convs a candidate keeps is chosen by the base network's weights (largest L1 norm), so a
    retrained base of the same architecture can key its blocks by other kept convs than the table's
    while every block still deploys to a conv the table timed."""
    cands = list(cands)
    if all(c in table.entries for c in cands):
        return table
    timed: dict[str | None, float] = {None: 0.0}  # identity (kernel-0) blocks cost 0
    for cand, ms in table.entries.items():
        config = conv_config(spec, cand)
        if config is not None:
            timed.setdefault(config.key(), ms)
    entries: dict[Candidate, float] = {}
    for cand in cands:
        config = conv_config(spec, cand)
        key = None if config is None else config.key()
        if cand not in table.entries and key not in timed:
            return None
        entries[cand] = table.entries[cand] if cand in table.entries else timed[key]
    rekeyed = sum(c not in table.entries for c in cands)
    return LatencyTable(
        entries,
        fixed_ms=table.fixed_ms,
        spec_fingerprint=spec.fingerprint,
        metadata={**table.metadata, "entries": len(entries), "rekeyed_entries": rekeyed},
        spec=spec,
    )


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
    setting: LatencySetting,
) -> _Calibration:
    batch_size = setting.batch_size
    inputs = (
        batched(as_input_list(example_inputs), batch_size)
        if example_inputs is not None
        else _inputs_from_spec(spec, batch_size)
    )
    chain = _IdentityChain(spec)
    timed = measure_interleaved(
        {
            "base": (PlainOutput(deploy_form(model, spec)), inputs),
            "chain": (chain, chain.example_inputs(batch_size)),
        },
        backend=backend,
        target=target,
        warmup=setting.resolved_warmup,
        runs=setting.resolved_runs,
        rounds=setting.rounds,
    )
    return _Calibration(base=timed["base"], chain=timed["chain"])


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
