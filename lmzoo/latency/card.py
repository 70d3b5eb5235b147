"""Latency cards (DESIGN §8): how fast a merged network is against its base, and how it was measured.

A card is a record (JSON in ``latency.json``): the measurement (backend and its versions, device,
batch, dtype, threads, runs, date), base and merged statistics, the measured speed-up, and, when a
latency table is given, the table's prediction and its error. A PNG shows the per-block latency,
base vs merged.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.core.tables import LatencyTable
from lmzoo.errors import InvalidArgumentError
from lmzoo.files import JsonFile
from lmzoo.latency.measurement import Measurement, measurement_of
from lmzoo.latency.setting import LatencySetting
from lmzoo.latency.stats import LatencyStats, contended

CARD_FORMAT = "lmzoo.latency-card/1"
#: table metadata a card's prediction repeats, so a reader sees which table predicted it
_TABLE_KEYS = ("backend", "device_name", "batch_size", "dtype", "date")


@dataclass(frozen=True)
class Prediction:
    """What the latency table predicted for base and merged, and the merged network's error."""

    base_ms: float
    merged_ms: float
    speedup: float
    #: (measured - predicted) / predicted of the merged network
    merged_error: float | None
    table: dict[str, Any]


@dataclass(frozen=True)
class LatencyCard(JsonFile):
    """The latency card of a merged network (all numbers in milliseconds)."""

    FILE_KIND = "latency card"
    FILE_ERROR = InvalidArgumentError

    model: str
    measurement: Measurement
    #: the base network in deploy form (norms folded): what speed-ups are against
    base: LatencyStats
    merged: LatencyStats
    speedup: float
    #: blocks, units, convs_kept, activations_kept of the plan
    plan: dict[str, int]
    predicted: Prediction | None = None
    #: the base network as built (norms not folded)
    base_unfused: LatencyStats | None = None

    @property
    def foreign_table(self) -> str | None:
        """The device the predicting table was measured on, when it is not the one this card measured
        on (the plan was fitted to that machine's timings); None otherwise or when unknown."""
        table = self.predicted.table.get("device_name") if self.predicted else None
        here = self.measurement.device_name
        return str(table) if table and here and table != here else None

    def to_dict(self) -> dict[str, Any]:
        card: dict[str, Any] = {
            "format": CARD_FORMAT,
            "model": self.model,
            "measurement": self.measurement.to_dict(),
            "base": {"what": "the base network in deploy form (norms folded)", **self.base.to_dict()},
            "merged": self.merged.to_dict(),
            "speedup": self.speedup,
            "plan": dict(self.plan),
            "predicted": dataclasses.asdict(self.predicted) if self.predicted is not None else None,
        }
        if self.base_unfused is not None:
            card["base_unfused"] = {
                "what": "the base network as built (norms not folded)",
                **self.base_unfused.to_dict(),
            }
        return card

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyCard:
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            raise InvalidArgumentError(f"not an lmzoo latency card: expected 'format': {CARD_FORMAT!r}")
        try:
            return cls(
                model=data["model"],
                measurement=Measurement.from_dict(data["measurement"]),
                base=LatencyStats.from_dict(data["base"]),
                merged=LatencyStats.from_dict(data["merged"]),
                speedup=float(data["speedup"]),
                plan=dict(data["plan"]),
                predicted=Prediction(**data["predicted"]) if data.get("predicted") else None,
                base_unfused=LatencyStats.from_dict(data["base_unfused"])
                if data.get("base_unfused")
                else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidArgumentError(f"malformed latency card ({type(err).__name__}: {err})") from None


def latency_card(
    *,
    model: str,
    plan: Plan,
    measurement: Measurement,
    base: LatencyStats,
    merged: LatencyStats,
    base_unfused: LatencyStats | None = None,
    table: LatencyTable | None = None,
    spec: Spec | None = None,
) -> LatencyCard:
    """The latency card of a merged network, with the table's prediction when a table is given."""
    summary = plan.summary()
    predicted = None
    if table is not None and spec is not None:
        predicted_base, predicted_merged = table.predict(Plan.identity(spec)), table.predict(plan)
        predicted = Prediction(
            base_ms=predicted_base,
            merged_ms=predicted_merged,
            speedup=predicted_base / predicted_merged if predicted_merged else math.inf,
            merged_error=(merged.median_ms - predicted_merged) / predicted_merged
            if predicted_merged
            else None,
            table={k: table.metadata.get(k) for k in _TABLE_KEYS},
        )
    return LatencyCard(
        model=model,
        measurement=measurement,
        base=base,
        merged=merged,
        speedup=base.median_ms / merged.median_ms,
        plan={
            "blocks": summary.blocks,
            "units": summary.units,
            "convs_kept": summary.convs_kept,
            "activations_kept": summary.activations_kept,
        },
        predicted=predicted,
        base_unfused=base_unfused,
    )


def measure_plan(
    name: str,
    model: nn.Module,
    spec: Spec,
    plan: Plan,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    setting: LatencySetting | None = None,
    *,
    table: LatencyTable | None = None,
    merged: nn.Module | None = None,
) -> tuple[LatencyCard, dict[str, LatencyStats]]:
    """Time the base (deploy form and as built) and the merged network interleaved with ``setting``
    (its batch size repeats the example inputs); return the latency card and the raw statistics.
    ``merged`` defaults to merging ``plan`` on ``model``."""
    from lmzoo.engine import apply_plan, merge
    from lmzoo.latency.endtoend import compare, deploy_form

    setting = setting or LatencySetting()
    if merged is None:
        merged = merge(apply_plan(model, spec, plan))
    timed = compare(
        {"base": deploy_form(model, spec), "merged": merged, "unfused": model}, example_inputs, setting
    )
    first = example_inputs if isinstance(example_inputs, torch.Tensor) else example_inputs[0]
    measurement = measurement_of(
        setting,
        rounds=setting.rounds,
        input=[setting.batch_size, *first.shape[1:]],
        contended=contended(timed, f"{name} end-to-end latency"),
    )
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
