"""Latency statistics: what one measurement returns (never a single bare number)."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: a measurement whose median run took this many times its fast tenth (p10) was shared with another
#: process for most of its runs. Quiet CPU tables stay under 1.6 (MobileNetV2's worst of 145 entries:
#: 1.59); a table timed beside a test run reached 4.6.
CONTENDED_RATIO = 2.0


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
        p10, p90 = (float(q) for q in np.quantile(ordered, [0.10, 0.90]))  # linear interpolation
        return cls(
            median_ms=statistics.median(ordered),
            p10_ms=p10,
            p90_ms=p90,
            mean_ms=statistics.fmean(ordered),
            min_ms=ordered[0],
            runs=len(ordered),
            warmup=warmup,
        )

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how noisy the measurement was."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms else 0.0

    @property
    def contended(self) -> bool:
        """Most runs were slowed by something else on the device (median > CONTENDED_RATIO x p10)."""
        return self.p10_ms > 0 and self.median_ms > CONTENDED_RATIO * self.p10_ms

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


def contended(measurements: Mapping[str, LatencyStats], what: str) -> list[str]:
    """The names of the contended measurements, sorted; logs one warning naming the worst when any.
    The numbers are kept (they are what was measured): re-measure on an idle device to replace them."""
    ratios = {name: s.median_ms / s.p10_ms for name, s in measurements.items() if s.contended}
    names = sorted(ratios)
    if names:
        worst = max(names, key=ratios.__getitem__)
        log.warning(
            "%s: %d of %d measurements look contended (median over %.1fx the fastest tenth; "
            "worst %.1fx, %s): another process was probably using the device; re-measure with it idle",
            what,
            len(names),
            len(measurements),
            CONTENDED_RATIO,
            ratios[worst],
            worst,
        )
    return names


@dataclass(frozen=True)
class SpeedupSpread:
    """Speed-ups of one plan measured in several independent interleaved comparisons: how far one
    measurement (a card's figure) can be trusted on this machine."""

    speedups: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.speedups:
            raise ValueError("no speed-ups to summarise")

    @property
    def median_rank(self) -> int:
        """The median's place among the speed-ups in increasing order, from 1 (the lower middle one
        of an even count: a measured value, whose card can be shown)."""
        return (len(self.speedups) - 1) // 2 + 1

    @property
    def median_index(self) -> int:
        """Which repeat has the median speed-up."""
        ordered = sorted(range(len(self.speedups)), key=self.speedups.__getitem__)
        return ordered[self.median_rank - 1]

    @property
    def median(self) -> float:
        return self.speedups[self.median_index]

    @property
    def relative_range(self) -> float:
        """(max - min) / median."""
        return (max(self.speedups) - min(self.speedups)) / self.median

    def to_dict(self) -> dict[str, Any]:
        return {
            "speedups": list(self.speedups),
            "median": self.median,
            "min": min(self.speedups),
            "max": max(self.speedups),
            "relative_range": self.relative_range,
        }

    def __str__(self) -> str:
        return (
            f"{self.median:.3f}x median of {len(self.speedups)} repeats (min {min(self.speedups):.3f}x, "
            f"max {max(self.speedups):.3f}x; range {self.relative_range * 100:.1f} % of the median)"
        )
