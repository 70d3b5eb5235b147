"""The local store (DESIGN §8): ``$LMZOO_HOME`` (default ``~/.cache/lmzoo/models``), one checkpoint
directory per built entry, each written whole by ``lmzoo.checkpoint.write_checkpoint`` and swapped in
atomically. Readers first undo what a crashed writer left (:func:`lmzoo.files.recover_directory`), so
a leftover is never listed or loaded; a zoo name is a name, never a path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lmzoo.checkpoint import CONFIG_NAME
from lmzoo.errors import InvalidArgumentError
from lmzoo.files import recover_directories, recover_directory, shown

#: a zoo entry's name: what a Hub repository name may be (and never a path, a hidden name or "..")
ZOO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def store_root() -> Path:
    return Path(os.environ.get("LMZOO_HOME", Path.home() / ".cache" / "lmzoo" / "models"))


def check_name(name: str) -> str:
    """``name`` when it is a zoo entry name; otherwise one error saying how to name a local path."""
    if not isinstance(name, str) or not ZOO_NAME.fullmatch(name) or ".." in name:
        raise InvalidArgumentError(
            f"{shown(str(name))!r} is not a zoo entry name (letters, digits, '.', '_', '-'; at most 200); "
            "load a checkpoint directory as local-dir:PATH"
        )
    return name


def entry_dir(name: str) -> Path:
    return store_root() / check_name(name)


def is_built(name: str) -> bool:
    directory = entry_dir(name)
    recover_directory(directory)
    return (directory / CONFIG_NAME).is_file()


def built_entries() -> list[str]:
    """The names of the checkpoints in the store (what crashed writers left is cleaned first, and
    hidden names are never entries)."""
    root = store_root()
    if not root.is_dir():
        return []
    recover_directories(root)
    return sorted(
        p.name for p in root.iterdir() if not p.name.startswith(".") and (p / CONFIG_NAME).is_file()
    )
