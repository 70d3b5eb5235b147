"""Latency statistics: what one measurement returns (never a single bare number)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LatencyStats:
    """Timings of ``runs`` forward passes after ``warmup`` untimed ones, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int

    @classmethod
    def from_times(cls, times_ms: Sequence[float], *, warmup: int) -> LatencyStats:
        ordered = sorted(float(t) for t in times_ms)
        if not ordered:
            raise ValueError("no timings to summarise")
        return cls(
            median_ms=statistics.median(ordered),
            p10_ms=_quantile(ordered, 0.10),
            p90_ms=_quantile(ordered, 0.90),
            mean_ms=statistics.fmean(ordered),
            min_ms=ordered[0],
            runs=len(ordered),
            warmup=warmup,
        )

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how noisy the measurement was."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def __str__(self) -> str:
        return (
            f"{self.median_ms:.4g} ms median (p10 {self.p10_ms:.4g}, p90 {self.p90_ms:.4g}; "
            f"{self.runs} runs after {self.warmup} warm-up)"
        )


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
