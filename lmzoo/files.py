"""Files at the edge of lmzoo: atomic writes, bounded JSON reads, and JSON persistence for records.

The core and the records are plain data (``to_dict`` / ``from_dict``); this module is where they meet
the disk. A writer never leaves a half-written file (temporary file, fsync, one rename), and a reader
never follows a file that is not a regular file or is too large to be what it claims.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
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


def regular_files(
    directory: str | os.PathLike[str],
    *,
    error: type[LmzooError],
    within: str | os.PathLike[str] | None = None,
    skip: tuple[str, ...] = (),
) -> list[Path]:
    """Every file under ``directory`` (sorted; folders named in ``skip`` left out), each a regular
    file or a link to one inside ``within`` (default: ``directory``; a Hub snapshot's links point into
    its cache folder). A link leading elsewhere, or a FIFO or device, is one ``error``: its target is
    never read or copied."""
    directory = Path(directory)
    root = Path(within or directory).resolve()
    found = []
    for path in sorted(directory.rglob("*")):
        if any(part in skip for part in path.relative_to(directory).parts):
            continue
        outside = _link_outside(path, root)
        if outside is not None:
            raise error(f"{path} is a link to {outside}, outside {root}; lmzoo copies regular files only")
        if path.is_dir():
            continue
        if not path.is_file():
            raise error(f"{path} is not a regular file (a FIFO, socket or device); remove it")
        found.append(path)
    return found


def _link_outside(path: Path, root: Path) -> Path | None:
    """Where ``path`` leads when it is a link to somewhere outside ``root`` (resolved); else None."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    return None if target.is_relative_to(root) else target


#: renameat2(2)'s flag that swaps two paths in one step (Linux >= 3.15 on ext4, xfs, btrfs, tmpfs)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories ``a`` and ``b`` atomically; False where the system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without renameat2
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot swap
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def staging_dir(target: Path) -> Path:
    """A fresh hidden sibling of ``target`` to write it in (``.NAME.tmp-<pid>-<random>``: the pid
    tells :func:`recover_directory` whether its writer still runs)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))


def replace_directory(staged: Path, target: Path) -> None:
    """Put the directory ``staged`` in place of ``target`` so that every reader sees the old
    directory or the new one, whole: one rename when ``target`` does not exist, an atomic swap when
    it does (the old one is then deleted). Where the file system cannot swap, the old directory is
    first renamed to ``.NAME.old``, which :func:`recover_directory` puts back if a crash comes between."""
    if not target.exists():
        os.replace(staged, target)
        return
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now the old directory
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_directory(target: Path) -> None:
    """Undo a swap a crash interrupted (``target`` gone, ``.NAME.old`` left) and delete what crashed
    writers left (``.NAME.tmp-<pid>-*`` of processes no longer running; ``.NAME.old`` beside a
    complete ``target``). Readers call it before looking, so leftovers are never listed or loaded."""
    parent, name = target.parent, target.name
    if not parent.is_dir():
        return
    old = parent / f".{name}.old"
    if old.is_dir() and not target.exists():
        with contextlib.suppress(OSError):  # another reader may be putting it back at the same time
            os.replace(old, target)
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    for leftover in parent.glob(f".{glob.escape(name)}.tmp-*"):
        pid = leftover.name.removeprefix(f".{name}.tmp-").split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def recover_directories(parent: Path) -> None:
    """:func:`recover_directory` for every directory of ``parent`` that a crashed writer left
    something of (a ``.NAME.old`` or ``.NAME.tmp-*`` sibling), e.g. before listing ``parent``."""
    if not parent.is_dir():
        return
    names = set()
    for hidden in parent.glob(".*"):
        name = hidden.name[1:]
        if name.endswith(".old"):
            names.add(name.removesuffix(".old"))
        elif ".tmp-" in name:
            names.add(name.split(".tmp-", 1)[0])
    for name in names:
        if name:
            recover_directory(parent / name)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 1) -> Path:
    """:func:`write_atomic` of JSON (NaN and infinity refused: they are not JSON)."""
    return write_atomic(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def link_root(directory: str | os.PathLike[str]) -> Path:
    """The folder the links of a checkpoint ``directory`` may lead into: the directory itself, or
    for a Hub snapshot (``.../models--ORG--NAME/snapshots/REVISION``) its repository's cache folder,
    where the links point into ``blobs/``."""
    directory = Path(directory).absolute()
    if directory.parent.name == "snapshots":
        return directory.parent.parent.resolve()
    return directory.resolve()


def checked_file(
    path: str | os.PathLike[str],
    *,
    what: str,
    error: type[LmzooError],
    within: str | os.PathLike[str] | None = None,
) -> os.stat_result:
    """The status of ``path`` when it is a regular file, or a link to one inside ``within``
    (default: :func:`link_root` of its folder); anything else (missing, a FIFO or device, a link
    leading out, a path the system refuses) is one ``error`` naming ``what`` it should have been."""
    path = Path(path)
    try:
        root = Path(within).resolve() if within is not None else link_root(path.parent)
        outside = _link_outside(path, root)
        if outside is not None:
            raise error(f"the {what} {path} is a link to {outside}, outside {root}; it is not read")
        info = path.stat()
    except OSError as err:
        raise error(f"cannot read the {what} {shown(path)}: {err.strerror}") from None
    except RuntimeError:  # a loop of links
        raise error(f"the {what} {path} is a loop of links") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"the {what} {path} is not a regular file")
    return info


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` for a message: at most 200 characters."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:200]}..."


def read_text(
    path: str | os.PathLike[str],
    *,
    what: str,
    error: type[LmzooError],
    limit: int = MAX_JSON_BYTES,
    within: str | os.PathLike[str] | None = None,
) -> str:
    """The text of a regular file of at most ``limit`` bytes (see :func:`checked_file`); a FIFO, a
    device, a link out or a huge file is refused before reading."""
    info = checked_file(path, what=what, error=error, within=within)
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
        raise error(f"the {what} {path} is not UTF-8 text") from None


def read_json(
    path: str | os.PathLike[str],
    *,
    what: str,
    error: type[LmzooError],
    limit: int = MAX_JSON_BYTES,
    within: str | os.PathLike[str] | None = None,
) -> Any:
    """The JSON value of a file (see :func:`read_text`); NaN, infinity and nesting deeper than
    Python's recursion limit are refused as ``error``."""
    text = read_text(path, what=what, error=error, limit=limit, within=within)
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
