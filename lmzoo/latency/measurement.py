"""Where and how a latency was measured: the setting resolved on this machine (backend and library
versions, device name, batch, dtype, threads, runs, date), recorded next to every number lmzoo
reports, in latency tables and latency cards."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from lmzoo.latency.backends import backend_versions, get_backend, target_of
from lmzoo.latency.setting import LatencySetting


@dataclass(frozen=True)
class Measurement:
    backend: str
    backend_options: dict[str, Any]
    device: str
    batch_size: int
    dtype: str
    #: CPU threads (None on CUDA)
    threads: int | None
    warmup: int
    runs: int
    versions: dict[str, str]
    device_name: str = ""
    date: str = ""
    #: end-to-end comparisons: alternating rounds and the input shape (batch first)
    rounds: int | None = None
    input: list[int] | None = None
    #: names of measurements that look contended (lmzoo.latency.stats.contended)
    contended: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if v is not None or k == "threads"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def setting(self) -> dict[str, Any]:
        """The fields that decide the numbers (a measurement cache is keyed by them)."""
        keys = (
            "backend",
            "backend_options",
            "device",
            "batch_size",
            "dtype",
            "threads",
            "warmup",
            "runs",
            "versions",
        )
        return {k: getattr(self, k) for k in keys}


def measurement_of(setting: LatencySetting, **extra: Any) -> Measurement:
    """The measurement ``setting`` makes here and now (``extra``: rounds, input, contended)."""
    backend = get_backend(setting.backend)
    target = target_of(setting)
    return Measurement(
        backend=backend.name,
        backend_options=backend.options(),
        device=str(target.device),
        batch_size=setting.batch_size,
        dtype=target.dtype_name,
        threads=target.threads if not target.is_cuda else None,
        warmup=setting.resolved_warmup,
        runs=setting.resolved_runs,
        versions=backend_versions(backend),
        device_name=target.device_name(),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    )
