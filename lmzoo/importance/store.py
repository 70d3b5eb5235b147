"""The importance table's entries on disk: one JSON record per finished entry, written atomically, in
a folder keyed by the estimator, its settings, the seed and what it measures (network and data), so
a killed run resumes without recomputing or corrupting finished entries, several shards can share
the folder, and records of another network or data are never taken for this one's."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmzoo.core.activations import ActivationState, Entry
from lmzoo.core.candidates import Candidate
from lmzoo.errors import LmzooError
from lmzoo.files import read_json, write_json
from lmzoo.importance.settings import FinetuneSettings

RECORD_FORMAT = "lmzoo.importance-entry/1"


@dataclass
class EntryRecord:
    """What one entry's run produced: its value (None when it failed), the raw held-out metrics,
    its wall time and seed. ``candidate`` is the entry: a candidate or an activation state."""

    candidate: Entry
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
        entry = fields["candidate"]
        is_state = isinstance(entry, dict) and "start_active" in entry
        fields["candidate"] = ActivationState.from_dict(entry) if is_state else Candidate.from_dict(entry)
        return cls(**fields)


class EntryStore:
    """The records of one estimator setting, measured on one network and data (``inputs``: their
    digest, :func:`lmzoo.importance.context.inputs_digest`), under a work directory."""

    def __init__(
        self, root: Path, estimator: str, settings: FinetuneSettings, seed: int, *, inputs: str
    ) -> None:
        key = hashlib.sha256(
            json.dumps(
                {"estimator": estimator, "settings": settings.cache_key(), "seed": seed, "inputs": inputs},
                sort_keys=True,
            ).encode()
        ).hexdigest()[:12]
        self.entries = root / f"importance-{estimator}-{key}"
        self.entries.mkdir(parents=True, exist_ok=True)

    def _path(self, cand: Entry) -> Path:
        name = hashlib.sha256(json.dumps(cand.to_dict(), sort_keys=True).encode()).hexdigest()[:20]
        return self.entries / f"{name}.json"

    def has(self, cand: Entry) -> bool:
        return self._path(cand).is_file()

    def write(self, record: EntryRecord) -> None:
        write_json(self._path(record.candidate), record.to_dict(), indent=None)

    def records(self) -> dict[Entry, EntryRecord]:
        found = {}
        for path in self.entries.glob("*.json"):
            if path.name == "base.json":
                continue
            try:
                record = EntryRecord.from_dict(read_json(path, what="importance entry", error=LmzooError))
            except (ValueError, KeyError, TypeError, LmzooError):
                continue  # not ours or unreadable: re-measured
            found[record.candidate] = record
        return found

    def base(self, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The base network's held-out metrics, measured once per store."""
        path = self.entries / "base.json"
        if path.is_file():
            try:
                return dict(read_json(path, what="base metrics", error=LmzooError))
            except (LmzooError, TypeError, ValueError):
                warnings.warn(f"{path} is unreadable; measuring the base again", stacklevel=2)
        metrics = compute()
        write_json(path, metrics, indent=None)
        return metrics
