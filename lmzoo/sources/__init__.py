"""Sources (DESIGN §12): where a network comes from, and how it is built again at load time.

A *family* (``lmzoo.adapters``) knows a network's structure; a *source* knows its origin: the
library that constructs it (``timm``, ``diffusers``, ...). Per source, one registered class says how
to build an architecture by name and keyword arguments (random weights), load pretrained weights
(safetensors only), name it in cards, which task it is trained for, wrap a loaded merged network
(e.g. as a diffusers model class), and check a recipe's model section.

A checkpoint's ``config.json`` records the source, the architecture name and its arguments, never
code: loading a downloaded checkpoint uses registered sources only. Built-in sources are the modules
of this package (imported on first use); others register through the ``lmzoo.sources`` entry-point
group. Importing this package imports neither torch nor the source libraries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lmzoo.errors import InvalidArgumentError, UnsupportedModelError
from lmzoo.registry import Registry, submodules

if TYPE_CHECKING:
    from torch import nn

#: prefixes of places to fetch a network from; an architecture name (in a recipe's ``model.arch`` or
#: a checkpoint's ``base.arch``) is never one, so loading a checkpoint never contacts the Hub
REMOTE_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
#: the tasks a source's networks are trained for (lmzoo.tasks implements them)
TASKS = ("classification", "denoising")

#: ``base.family`` / ``model.family`` of configs and recipes written before sources existed:
#: old name -> (source, architecture name used when the old record left it empty)
LEGACY_FAMILIES: Mapping[str, tuple[str, str | None]] = {
    "timm": ("timm", None),
    "diffusers-unet2d": ("diffusers", "UNet2DModel"),
}


@dataclass(frozen=True)
class Architecture:
    """What to build: a source, an architecture name in it, and the constructor's keyword arguments."""

    source: str
    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "arch": self.arch, "kwargs": dict(self.kwargs)}

    def build(self) -> nn.Module:
        """The architecture with random weights."""
        return get_source(self.source).build(self.arch, self.kwargs)

    @property
    def display_name(self) -> str:
        return get_source(self.source).display_name(self.arch)

    @property
    def task(self) -> str:
        return get_source(self.source).task(self.arch)


def migrate_legacy(family: str, arch: str) -> tuple[str, str]:
    """(source, arch) for a record of an earlier lmzoo that named a construction family."""
    if family not in LEGACY_FAMILIES:
        raise InvalidArgumentError(
            f"unknown model family {family!r}; name a source instead ({', '.join(source_names())})"
        )
    source, default_arch = LEGACY_FAMILIES[family]
    return source, arch or default_arch or ""


class Source(ABC):
    """One origin of networks. Subclasses import their library inside the methods, so that listing
    and validating recipes stays free of heavy imports."""

    #: the name recipes and checkpoint configs use
    name: ClassVar[str]
    #: what the source builds, for messages and ``lmzoo info``
    description: ClassVar[str]

    @abstractmethod
    def check(self, arch: str, kwargs: Mapping[str, Any]) -> None:
        """Raise InvalidArgumentError naming the problem when a recipe's model section cannot be
        built by this source (cheap: no network is constructed)."""

    @abstractmethod
    def build(self, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        """The architecture with random weights (InvalidArgumentError for unknown names or bad
        arguments)."""

    @abstractmethod
    def load_pretrained(self, reference: str, arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
        """The architecture with pretrained weights from ``reference`` (e.g. ``hf-hub:ORG/REPO``),
        read from safetensors only; DataNotFoundError when they cannot be reached."""

    def import_own_code(self, arch: str) -> None:  # noqa: B027 - most sources build from a library
        """Import what ``arch`` needs from the user's own code (a factory's module). Called only for
        the user's own recipes and local store, never for downloaded checkpoints."""

    def display_name(self, arch: str) -> str:
        """The base network's name in cards and results."""
        return arch

    def task(self, arch: str) -> str:
        """What the architecture is trained for (one of TASKS)."""
        return "classification"

    def owns(self, model: nn.Module) -> bool:
        """Whether ``model`` was built by this source (used when only a module is at hand)."""
        return False

    def wrap(self, merged: nn.Module, config: Mapping[str, Any]) -> nn.Module:
        """The loaded merged network as users get it (a checkpoint's ``config``); itself by default."""
        return merged

    def checkpoint_layout(self, merged: nn.Module, config: Mapping[str, Any]) -> CheckpointLayout:
        """How a checkpoint of a merged network of this source is laid out: lmzoo's own
        (``model.safetensors`` holding the merged network's state) by default; a source whose
        library loads checkpoints of its own (diffusers pipelines) lays the weights out for it."""
        return CheckpointLayout()


@dataclass(frozen=True)
class CheckpointLayout:
    """What a source adds to a checkpoint directory: the weights file, when it is not
    ``model.safetensors``, then holding the state of the *wrapped* network (:meth:`Source.wrap`),
    and extra files by name, each written by a function of its path."""

    weights: str | None = None
    files: Mapping[str, Callable[[Path], object]] = field(default_factory=dict)


SOURCES: Registry[type[Source]] = Registry(
    "model source",
    builtins=submodules(__name__, packages=True),  # every module and package here is one source
    entry_point_group="lmzoo.sources",
    error=InvalidArgumentError,
)
#: class decorator adding a source to the registry, under its name
register_source = SOURCES.decorator(lambda cls: cls.name)


def source_names() -> tuple[str, ...]:
    """The names of every registered source, sorted."""
    return tuple(sorted(SOURCES.names()))


def registered_sources() -> dict[str, str]:
    """Source name -> description."""
    return {name: cls.description for name, cls in sorted(SOURCES.items())}


def get_source(name: str) -> Source:
    """The registered source ``name``; an error listing the registered ones otherwise."""
    return SOURCES.get(name)()


def safetensors_state(reference: str) -> dict[str, Any]:
    """The tensors of pretrained weights stored as safetensors: ``hf-hub:ORG/REPO`` (its
    ``model.safetensors``, or ``hf-hub:ORG/REPO/FILE.safetensors``) or a local ``.safetensors`` file.
    Never a pickle; DataNotFoundError when the file cannot be reached."""
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lmzoo.errors import DataNotFoundError

    if reference.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        parts = reference.removeprefix("hf-hub:").split("/")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or "model.safetensors"
        if not filename.endswith(".safetensors"):
            raise InvalidArgumentError(
                f"{reference}: lmzoo loads pretrained weights from .safetensors files only"
            )
        try:
            path = hf_hub_download(repo, filename)
        except Exception as err:  # every network and Hub failure: one message
            raise DataNotFoundError(
                f"cannot get the pretrained weights {reference} ({type(err).__name__}: {str(err)[:160]}); "
                "connect to the Hub (or set HF_ENDPOINT to a mirror), or pre-download them with "
                f"`hf download {repo}`"
            ) from None
    else:
        path = reference
        if not reference.endswith(".safetensors"):
            raise InvalidArgumentError(
                f"{reference}: lmzoo loads pretrained weights from .safetensors files only"
            )
        if not Path(path).is_file():
            raise DataNotFoundError(f"the pretrained weights {reference} do not exist")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise DataNotFoundError(f"{reference} is not a readable safetensors file ({err})") from None


def load_state(model: nn.Module, state: dict[str, Any], reference: str) -> nn.Module:
    """``model`` with ``state`` loaded strictly; an error naming the first keys that do not fit."""
    result = model.load_state_dict(state, strict=False)
    problems = [*result.missing_keys[:2], *result.unexpected_keys[:2]]
    if problems:
        raise InvalidArgumentError(
            f"{reference} does not fit the architecture (missing or unexpected: {', '.join(problems)}); "
            "check model.arch and model.kwargs"
        )
    return model


def source_of(model: nn.Module) -> Source:
    """The registered source that built ``model``."""
    for _, cls in SOURCES.items():
        source = cls()
        if source.owns(model):
            return source
    raise UnsupportedModelError(
        f"{type(model).__name__} comes from none of the registered sources ({', '.join(source_names())})"
    )


def task_for(model: nn.Module) -> str:
    """The task ``model`` is trained for, by the source that built it (classification when no
    registered source claims it: a user's own classifier)."""
    try:
        source = source_of(model)
    except UnsupportedModelError:
        return "classification"
    return source.task(type(model).__name__)


__all__ = [
    "LEGACY_FAMILIES",
    "TASKS",
    "Architecture",
    "Source",
    "get_source",
    "migrate_legacy",
    "register_source",
    "registered_sources",
    "source_names",
    "source_of",
    "task_for",
]
