"""The local store (DESIGN §8): ``$LMZOO_HOME`` (default ``~/.cache/lmzoo/models``), one checkpoint
directory per built entry, each written whole by ``lmzoo.checkpoint.write_checkpoint``."""

from __future__ import annotations

import os
from pathlib import Path

from lmzoo.checkpoint import CONFIG_NAME


def store_root() -> Path:
    return Path(os.environ.get("LMZOO_HOME", Path.home() / ".cache" / "lmzoo" / "models"))


def entry_dir(name: str) -> Path:
    return store_root() / name


def is_built(name: str) -> bool:
    return (entry_dir(name) / CONFIG_NAME).is_file()


def built_entries() -> list[str]:
    """The names of the checkpoints in the store (hidden leftovers of interrupted writes excluded)."""
    root = store_root()
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if not p.name.startswith(".") and (p / CONFIG_NAME).is_file()
    )
