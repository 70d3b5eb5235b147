"""The build's work directory: one folder per stage output, named by the stage and a key of the
content that determines it, so a rerun resumes and other speed-ups reuse earlier stages.

    workdir/<recipe name>/base-<key>/         model.safetensors, metrics.json, train.state
    workdir/<recipe name>/latency-<key>/      latency.json, measurements.jsonl
    workdir/<recipe name>/importance-<key>/   importance.json, per-entry records
    workdir/<recipe name>/solve-<key>/        plan.json
    ...

A cached output is read through :meth:`Workspace.cached`: one that does not validate is recomputed
(with a warning naming the file), never trusted. A stage computes under :meth:`Workspace.exclusive`,
an advisory lock of its folder, so two processes building the same recipe on one work directory take
turns: the second reads what the first computed instead of computing it again beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lmzoo.pipeline.stages import Stage
from lmzoo.recipes import Recipe

log = logging.getLogger(__name__)
T = TypeVar("T")

#: the lock file of a stage folder (:meth:`Workspace.exclusive`)
LOCK_NAME = ".lock"
#: what a cached output's reader may raise when the file is damaged or of another version
INVALID_OUTPUT = (ValueError, KeyError, TypeError, OSError, RuntimeError)


def default_workdir() -> Path:
    return Path(os.environ.get("LMZOO_WORKDIR", Path.home() / ".cache" / "lmzoo" / "work"))


def content_key(*parts: Any) -> str:
    """A short digest of JSON-able content: equal content, equal key."""
    blob = json.dumps(parts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-able: {value!r}")


@dataclass
class Workspace:
    recipe: Recipe
    root: Path

    @classmethod
    def for_recipe(cls, recipe: Recipe, workdir: str | os.PathLike[str] | None = None) -> Workspace:
        return cls(recipe, Path(workdir) if workdir is not None else default_workdir())

    def stage(self, name: Stage | str, key: str) -> Path:
        """The folder of one stage output (created on first use)."""
        label = name.value if isinstance(name, Stage) else name
        path = self.root / self.recipe.name / f"{label}-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output(
        self, stage: Stage | str, key: str, name: str, read: Callable[[Path], T]
    ) -> tuple[Path, T | None]:
        """The file of a stage output and, when it exists and validates, its content."""
        path = self.stage(stage, key) / name
        return path, self.cached(path, read)

    @staticmethod
    @contextmanager
    def exclusive(folder: Path) -> Iterator[Path]:
        """Hold ``folder``'s lock while a stage reads or computes its output there (other lmzoo
        processes wait, saying so). Under ``torchrun`` the ranks coordinate by barriers instead."""
        from lmzoo.training.distributed import distributed

        try:
            import fcntl
        except ImportError:  # no advisory locks on this system: one writer per work directory
            yield folder
            return
        if distributed():
            yield folder
            return
        with open(folder / LOCK_NAME, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("%s is in use by another lmzoo process; waiting for it to finish", folder)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def cached(path: Path, read: Callable[[Path], T]) -> T | None:
        """``read(path)`` when the stage output exists and validates; None when it must be computed
        (a damaged or foreign file is reported, then replaced by the recomputed output)."""
        if not path.is_file():
            return None
        from lmzoo.errors import LmzooError

        try:
            return read(path)
        except (LmzooError, *INVALID_OUTPUT) as err:
            log.warning("%s does not validate (%s); recomputing it", path, str(err)[:200])
            return None


def save_weights(module: Any, weights: Path) -> None:
    """Write a trained stage's weights atomically, then drop the training state it resumed from."""
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{weights.name}.", suffix=".tmp", dir=weights.parent)  # unique
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, tmp)
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    (weights.parent / "train.state").unlink(missing_ok=True)


def load_weights(module: Any, weights: Path) -> Any:
    """``module`` with a stage's weights loaded strictly; a damaged file raises ValueError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(weights)
    except SafetensorError as err:
        raise ValueError(f"not a safetensors file ({err})") from None
    module.load_state_dict(state, strict=True)
    return module
