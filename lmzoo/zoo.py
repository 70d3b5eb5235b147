"""The zoo: names of the entries the recipes define, the local store of built checkpoints, and
``lmzoo.load``.

The local store is ``$LMZOO_HOME`` (default ``~/.cache/lmzoo/models``); each built entry is one
checkpoint directory there (:mod:`lmzoo.checkpoint`).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from pathlib import Path

from torch import nn

from lmzoo.checkpoint import CONFIG_NAME, load_checkpoint
from lmzoo.errors import LmzooError


class UnknownModelError(LmzooError):
    """No zoo entry, local checkpoint or Hub repository has this name."""


def store_root() -> Path:
    return Path(os.environ.get("LMZOO_HOME", Path.home() / ".cache" / "lmzoo" / "models"))


def entry_dir(name: str) -> Path:
    return store_root() / name


def list_models(pattern: str | None = None) -> list[str]:
    """Every zoo entry name the recipes define (works offline), filtered by an fnmatch pattern."""
    from lmzoo.recipes import RecipeError, parse_recipe, recipe_files

    names = set()
    for path in recipe_files().values():
        try:
            names.update(parse_recipe(path).entries())
        except RecipeError:
            continue
    if store_root().is_dir():
        names.update(p.name for p in store_root().iterdir() if (p / CONFIG_NAME).is_file())
    return sorted(n for n in names if pattern is None or fnmatch.fnmatch(n, pattern))


def load(name: str, *, revision: str | None = None, device: str = "cpu") -> nn.Module:
    """The merged network of a zoo entry (from the local store) or of ``local-dir:PATH``."""
    if name.startswith("local-dir:"):
        return load_checkpoint(name.removeprefix("local-dir:"), device=device)
    local = entry_dir(name)
    if (local / CONFIG_NAME).is_file():
        return load_checkpoint(local, device=device)
    known = list_models()
    if name in known:
        raise UnknownModelError(
            f"{name} is a zoo entry but is not built in {store_root()}; build it with `lmzoo build {name}` "
            "(set LMZOO_HOME to use another store)"
        )
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `lmzoo list`"
    raise UnknownModelError(f"unknown model {name!r}{hint}")
