"""Latency cards (DESIGN §8): how fast a merged network is against its base, and how it was measured.

A card is plain JSON: the measurement setting (backend and its versions, device, batch, dtype,
threads, runs, date), base and merged statistics, the measured speed-up, and, when a latency table
is given, the table's prediction and its error. A PNG shows the per-block latency, base vs merged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.core.tables import LatencyTable
from lmzoo.latency.stats import LatencyStats, contended

CARD_FORMAT = "lmzoo.latency-card/1"


def latency_card(
    *,
    model: str,
    plan: Plan,
    measurement: Mapping[str, Any],
    base: LatencyStats,
    merged: LatencyStats,
    base_unfused: LatencyStats | None = None,
    table: LatencyTable | None = None,
    spec: Spec | None = None,
) -> dict[str, Any]:
    """The latency card of a merged network (all numbers in milliseconds)."""
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "model": model,
        "measurement": dict(measurement),
        "base": {"what": "the base network in deploy form (norms folded)", **base.to_dict()},
        "merged": merged.to_dict(),
        "speedup": base.median_ms / merged.median_ms,
        "plan": {
            "blocks": len(plan),
            "units": plan.length,
            "convs_kept": len(plan.kept_units),
            "activations_kept": len(plan.boundaries) - 1,
        },
        "predicted": None,
    }
    if base_unfused is not None:
        card["base_unfused"] = {
            "what": "the base network as built (norms not folded)",
            **base_unfused.to_dict(),
        }
    if table is not None and spec is not None:
        predicted_base = table.predict(Plan.identity(spec))
        predicted = table.predict(plan)
        card["predicted"] = {
            "base_ms": predicted_base,
            "merged_ms": predicted,
            "speedup": predicted_base / predicted if predicted else math.inf,
            "merged_error": (merged.median_ms - predicted) / predicted if predicted else None,
            "table": {
                k: table.metadata.get(k) for k in ("backend", "device_name", "batch_size", "dtype", "date")
            },
        }
    return card


def measure_plan(
    name: str,
    model: nn.Module,
    spec: Spec,
    plan: Plan,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    backend: str = "torch",
    device: str = "cpu",
    batch_size: int = 1,
    dtype: str = "float32",
    threads: int | None = None,
    runs: int | None = None,
    rounds: int = 3,
    table: LatencyTable | None = None,
    merged: nn.Module | None = None,
) -> tuple[dict[str, Any], dict[str, LatencyStats]]:
    """Time the base (deploy form and as built) and the merged network interleaved; return the
    latency card and the raw statistics. ``merged`` defaults to merging ``plan`` on ``model``."""
    from lmzoo.engine import apply_plan, merge
    from lmzoo.latency.table import compare, deploy_form, measurement_record

    if merged is None:
        merged = merge(apply_plan(model, spec, plan))
    timed = compare(
        {"base": deploy_form(model, spec), "merged": merged, "unfused": model},
        example_inputs,
        backend=backend,
        device=device,
        batch_size=batch_size,
        dtype=dtype,
        threads=threads,
        runs=runs,
        rounds=rounds,
    )
    first = example_inputs if isinstance(example_inputs, torch.Tensor) else example_inputs[0]
    measurement = {
        **measurement_record(backend, device, batch_size, dtype, threads),
        "rounds": rounds,
        "input": [batch_size, *first.shape[1:]],
    }
    if runs is not None:
        measurement["runs"] = runs
    measurement["contended"] = contended(timed, f"{name} end-to-end latency")
    card = latency_card(
        model=name,
        plan=plan,
        measurement=measurement,
        base=timed["base"],
        merged=timed["merged"],
        base_unfused=timed["unfused"],
        table=table,
        spec=spec,
    )
    return card, timed


def write_card(card: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=1) + "\n")
    return path


def plot_block_latency(
    table: LatencyTable, spec: Spec, plan: Plan, path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Bar chart of each plan block's table latency: the base convs it replaces vs the merged conv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    identity = {c.end: c for c in Plan.identity(spec)}
    base = [math.fsum(table[identity[u]] for u in range(b.start + 1, b.end + 1)) for b in plan]
    merged = [table[b] for b in plan]
    labels = [f"{b.start}-{b.end}" if b.length > 1 else str(b.end) for b in plan]
    width = max(6.0, 0.22 * len(plan))
    fig, ax = plt.subplots(figsize=(width, 3.6))
    xs = range(len(plan))
    ax.bar([x - 0.2 for x in xs], base, width=0.4, label="base (convs of the block)", color="#9aa5b1")
    ax.bar([x + 0.2 for x in xs], merged, width=0.4, label="merged", color="#2f6fbf")
    ax.set_xticks(list(xs), labels, rotation=90, fontsize=7)
    ax.set_xlabel("plan block (units)")
    ax.set_ylabel("latency (ms, from the table)")
    setting = f"{table.metadata.get('backend', '?')}, {table.metadata.get('device_name', '?')}, " + (
        f"batch {table.metadata.get('batch_size', '?')}"
    )
    ax.set_title(f"{title} per-block latency, base vs merged ({setting})".strip(), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
