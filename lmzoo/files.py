"""Files at the edge of lmzoo: atomic writes, bounded JSON reads, and JSON persistence for records.

The core and the records are plain data (``to_dict`` / ``from_dict``); this module is where they meet
the disk. A writer never leaves a half-written file (temporary file, fsync, one rename), and a reader
never follows a file that is not a regular file or is too large to be what it claims.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from lmzoo.errors import LmzooError

#: the largest JSON file lmzoo reads (a ResNet-152 importance table is about 1 MiB; anything much
#: larger is not an lmzoo file, and reading it whole would only cost memory)
MAX_JSON_BYTES = 64 * 1024 * 1024


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename: readers never see half
    of it, and a crash leaves the old file (or none), never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 1) -> Path:
    """:func:`write_atomic` of JSON (NaN and infinity refused: they are not JSON)."""
    return write_atomic(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def read_text(
    path: str | os.PathLike[str], *, what: str, error: type[LmzooError], limit: int = MAX_JSON_BYTES
) -> str:
    """The text of a regular file of at most ``limit`` bytes; anything else is one ``error`` naming
    ``what`` it should have been (a FIFO, a device or a huge file is refused before reading)."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise error(f"cannot read the {what} {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"the {what} {path} is not a regular file")
    if info.st_size > limit:
        raise error(f"the {what} {path} is {info.st_size} bytes, more than the {limit} an lmzoo file can be")
    try:
        with open(path, "rb") as handle:
            blob = handle.read(limit + 1)
    except OSError as err:
        raise error(f"cannot read the {what} {path}: {err.strerror}") from None
    try:
        return blob.decode()
    except UnicodeDecodeError:
        raise error(f"{path} is not a valid JSON {what}: not UTF-8 text") from None


def read_json(
    path: str | os.PathLike[str], *, what: str, error: type[LmzooError], limit: int = MAX_JSON_BYTES
) -> Any:
    """The JSON value of a file (see :func:`read_text`); NaN, infinity and nesting deeper than
    Python's recursion limit are refused as ``error``."""
    text = read_text(path, what=what, error=error, limit=limit)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise error(f"{path} is not a valid JSON {what}: nested too deeply") from None
    except ValueError as err:
        raise error(f"{path} is not a valid JSON {what}: {err}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


R = TypeVar("R", bound="JsonFile")


class JsonFile:
    """Adds ``save(path)`` / ``load(path)`` to a record class with ``to_dict`` / ``from_dict``
    (huggingface_hub's template-method persistence: the record knows its data, this its file).

    Subclasses name what they are (``FILE_KIND``, for messages) and the error a bad file raises."""

    FILE_KIND: ClassVar[str] = "file"
    FILE_ERROR: ClassVar[type[LmzooError]] = LmzooError

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as JSON, atomically."""
        return write_json(path, self.to_dict())  # type: ignore[attr-defined]

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a record written by :meth:`save`; a malformed file is one ``FILE_ERROR``."""
        data = read_json(path, what=cls.FILE_KIND, error=cls.FILE_ERROR)
        try:
            return cls.from_dict(data)  # type: ignore[attr-defined]
        except cls.FILE_ERROR as err:
            raise cls.FILE_ERROR(f"{path}: {err}") from None
