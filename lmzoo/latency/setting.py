"""How a latency is measured, as one record taken whole everywhere (tables, benchmarks, latency
cards, ``lmzoo bench`` and a recipe's ``latency`` section). Torch-free, so recipes validate cheaply."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lmzoo.errors import InvalidArgumentError

#: the latency backends by name (``lmzoo.latency.backends`` implements each)
BACKENDS = ("torch", "torch-compile", "onnxruntime", "tensorrt")
#: the data types a measurement may use (lmzoo.latency.backends maps each to a torch dtype; fp32,
#: fp16 and bf16 are accepted as aliases)
DTYPES = ("float32", "float16", "bfloat16")
#: untimed and timed runs per measurement, by device kind. CPU: enough runs for a stable median at
#: batch 1 within seconds per table; CUDA: the paper's 300 warm-up / 200 timed runs.
DEFAULT_WARMUP = {"cpu": 10, "cuda": 300}
DEFAULT_RUNS = {"cpu": 50, "cuda": 200}


@dataclass(frozen=True)
class LatencySetting:
    """Backend, device, batch, dtype and CPU threads of a measurement, and how many runs it takes."""

    backend: str = "torch"
    device: str = "cpu"
    batch_size: int = 1
    dtype: str = "float32"
    #: CPU intra-op threads (None: torch's current setting); fixed during a measurement and recorded
    threads: int | None = None
    #: untimed and timed runs per measurement (None: DEFAULT_WARMUP / DEFAULT_RUNS by device kind)
    warmup: int | None = None
    runs: int | None = None
    #: a table is measured in this many passes over all its convs, each with runs / passes timed
    #: runs, so that a slow drift of a shared machine spreads over every entry instead of a few
    passes: int = 3
    #: networks compared end to end (base against merged) alternate in this many rounds, so drifts
    #: of a shared machine affect all of them alike
    rounds: int = 10

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidArgumentError(
                f"unknown latency backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        for name in ("batch_size", "passes", "rounds"):
            _check_count(name, getattr(self, name), minimum=1)
        for name, minimum in (("threads", 1), ("warmup", 0), ("runs", 1)):
            if getattr(self, name) is not None:
                _check_count(name, getattr(self, name), minimum=minimum)

    @property
    def device_kind(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    @property
    def resolved_warmup(self) -> int:
        return DEFAULT_WARMUP[self.device_kind] if self.warmup is None else self.warmup

    @property
    def resolved_runs(self) -> int:
        return DEFAULT_RUNS[self.device_kind] if self.runs is None else self.runs

    def replace(self, **changes: Any) -> LatencySetting:
        """This setting with some fields changed (None values are left alone); an unknown field is
        an error naming the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidArgumentError(
                f"unknown latency setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencySetting:
        return cls().replace(**data)


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InvalidArgumentError(f"{name} must be {kind}, got {value!r}")
