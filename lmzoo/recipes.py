"""Recipes (DESIGN §8): short, validated YAML files that say how a set of zoo entries is built.

A recipe file has a name (``mobilenetv2-fmnist-layermerge``); each target speed-up ``s`` in it
is one zoo entry ``<name>-<s>x``. Profiles (``smoke``, ...) are partial recipes merged over the
default. Validation is strict: an unknown key or a wrong type is an error naming the key and the
file. Recipes ship inside the package (``lmzoo/_recipes/``, a copy of the repository's
``recipes/``); ``LMZOO_RECIPES`` adds a directory searched first.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmzoo.core.candidates import DEFAULT_METHOD, METHODS, CandidateRules
from lmzoo.core.problem import DEFAULT_OBJECTIVE, METHOD_OBJECTIVES, OBJECTIVES, check_objective
from lmzoo.core.solver import DEFAULT_LEVELS, DEFAULT_UNREACHABLE, MAX_LEVELS, MAX_TOP, UNREACHABLE
from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.importance.registry import DEFAULT_ESTIMATOR
from lmzoo.importance.settings import REINIT_RULES, FinetuneSettings
from lmzoo.latency.setting import LatencySetting
from lmzoo.preprocessing import MAX_INPUT_CHANNELS, MAX_INPUT_SIDE
from lmzoo.sources import Architecture, get_source, migrate_legacy
from lmzoo.training.settings import OPTIMIZERS, TrainSettings

#: a recipe profile's name (it ends the names of its builds)
PROFILE_NAME = r"[a-z0-9][a-z0-9-]*"
#: ``<recipe>-<s>x``, and ``<recipe>-<s>x-<profile>`` for a build with a profile other than the default
ENTRY_NAME = re.compile(
    rf"^(?P<recipe>[a-z0-9][a-z0-9._-]*?)-(?P<speedup>\d+(?:\.\d+)?)x(?:-(?P<profile>{PROFILE_NAME}))?$"
)
DEFAULT_PROFILE = "default"
#: a recipe is a few kB; a larger file is not one (and is never read whole)
MAX_RECIPE_BYTES = 1024 * 1024
#: the values (mappings, lists, scalars) a recipe may hold once its YAML aliases are expanded: the
#: largest shipped recipe has about 150; an alias bomb has billions, and hashing it takes minutes
MAX_RECIPE_VALUES = 100_000
#: the largest target speed-up of an entry (the entry's name holds it: ``-1e+09x`` is no name)
MAX_SPEEDUP = 100.0

#: the range of each numeric recipe key, both ends included (a key means the same quantity in every
#: section it appears in: base, finetune and importance.train; latency; ...)
RANGES: dict[str, tuple[float, float]] = {
    "seed": (0, 2**32 - 1),  # numpy's seeds
    "seeds": (1, 100),  # each is one more fine-tune per entry
    "lr": (0, 10),
    "block_lr": (0, 10),
    "momentum": (0, 1),
    "weight_decay": (0, 1),
    "batch_size": (1, 2**16),
    "eval_batch_size": (1, 2**16),
    "block_batch_size": (1, 2**16),
    "epochs": (0, 10_000),
    "step_fraction": (0, 1),
    "warmup_steps": (0, 10**7),
    "label_smoothing": (0, 0.99),
    "distill_weight": (0, 1),  # the loss is (1 - w) x task + w x distillation
    "distill_temperature": (0.01, 100),
    "ema_decay": (0, 0.999999),
    "train_fraction": (0, 1),
    "heldout_fraction": (0, 1),
    "block_steps": (0, 10**6),
    "calibration_examples": (1, 10**7),
    "levels": (1, MAX_LEVELS),
    "refine_top": (1, MAX_TOP),
    "refine_epochs": (0.01, 1000),
    "max_kernel": (1, 255),
    "pad_to": (1, MAX_INPUT_SIDE),
    "input_size": (1, MAX_INPUT_SIDE),
    "limit_train": (1, 10**9),
    "limit_test": (1, 10**9),
    "sample_count": (1, 10_000),
    "sample_steps": (1, 10_000),
    "frechet_samples": (2, 10**6),
    "latency_runs": (1, 10**6),
    "latency_rounds": (1, 10**4),
    "threads": (1, 1024),
    "warmup": (0, 10**6),
    "runs": (1, 10**6),
    "passes": (1, 1000),
    "rounds": (1, 10**4),
}
#: integer keyword arguments of model.kwargs that lmzoo relies on, and their ranges
KWARG_RANGES: dict[str, tuple[int, int]] = {
    "in_chans": (1, MAX_INPUT_CHANNELS),
    "in_channels": (1, MAX_INPUT_CHANNELS),
    "num_classes": (1, 10**6),
}


class RecipeError(LmzooError):
    """A recipe is missing, unreadable or invalid."""


@dataclass(frozen=True)
class ModelSection:
    #: where the architecture comes from: a registered source (``lmzoo.sources``: timm, diffusers);
    #: recipes of earlier versions wrote ``family: timm | diffusers-unet2d`` instead (still read)
    source: str
    #: the architecture's name in its source (timm: mobilenetv2_100; diffusers: UNet2DModel)
    arch: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: pretrained weights: "hf-hub:ORG/REPO" (timm or diffusers layout) or null to train from scratch
    pretrained: str | None = None
    input_size: int = 224

    @property
    def architecture(self) -> Architecture:
        return Architecture(self.source, self.arch, dict(self.kwargs))


@dataclass(frozen=True)
class DataSection:
    #: fashion-mnist, cifar10, imagenet, or image-folder (a user's images: root/train/<class>/...)
    dataset: str
    root: str | None = None
    #: zero-pad the images to this square size
    pad_to: int | None = None
    #: "standard" (per-channel mean/std) or "symmetric" ([-1, 1], for DDPM)
    normalize: str = "standard"
    #: use only the first N training / test images (smoke profiles)
    limit_train: int | None = None
    limit_test: int | None = None
    #: image-folder (null: lmzoo.data.ImageFolderSettings' defaults): the training and evaluation
    #: folders under root, one subfolder per class; per-channel mean and std of the pixels in [0, 1];
    #: the channels the images are read with (3: RGB, 1: grayscale); the resize interpolation and
    #: the evaluation crop (resize to input_size / crop_pct, then centre-crop input_size: timm's);
    #: random-resized crops and flips on the training split (false: the evaluation transform)
    train_dir: str | None = None
    val_dir: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int | None = None
    interpolation: str | None = None
    crop_pct: float | None = None
    augment: bool | None = None

    def folder_settings(self) -> dict[str, Any]:
        """The image-folder fields the recipe sets (the others keep the data source's defaults)."""
        names = ("train_dir", "val_dir", "mean", "std", "channels", "interpolation", "crop_pct", "augment")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class TrainSection(TrainSettings):
    """A training schedule (:class:`lmzoo.training.settings.TrainSettings`) plus recipe-only options."""

    #: exponential moving average of the weights, left in the model at the end (0 = off; DDPM uses it)
    ema_decay: float = 0.0


_FINETUNE = FinetuneSettings()


@dataclass(frozen=True)
class ImportanceSection:
    estimator: str = DEFAULT_ESTIMATOR
    #: the paper's subsets: 4 % of the training split to recover on, a disjoint 4 % to measure
    train_fraction: float = 0.04
    heldout_fraction: float = 0.04
    seed: int = 0
    #: the recovery run of each entry (lmzoo.importance.settings.FinetuneSettings)
    train: TrainSection = field(default_factory=TrainSection)
    eval_batch_size: int = _FINETUNE.eval_batch_size
    block_steps: int = _FINETUNE.block_steps
    block_lr: float = _FINETUNE.block_lr
    block_batch_size: int = _FINETUNE.block_batch_size
    #: which conv an entry starts afresh (lmzoo.importance.settings.REINIT_RULES)
    reinit: str = _FINETUNE.reinit
    calibration_examples: int = _FINETUNE.calibration_examples

    def settings(self) -> FinetuneSettings:
        """The estimators' settings this section describes."""
        train = {f.name: getattr(self.train, f.name) for f in dataclasses.fields(TrainSettings)}
        return FinetuneSettings(
            **train,
            eval_batch_size=self.eval_batch_size,
            block_steps=self.block_steps,
            block_lr=self.block_lr,
            block_batch_size=self.block_batch_size,
            reinit=self.reinit,
            calibration_examples=self.calibration_examples,
        )


@dataclass(frozen=True)
class SolveSection:
    method: str = DEFAULT_METHOD
    speedups: tuple[float, ...] = ()
    #: a method's own targets where the recipe's do not suit it (a baseline whose fastest plan is
    #: below them): its entries, what ``lmzoo build --method M`` builds and ``lmzoo list`` shows
    method_speedups: dict[str, tuple[float, ...]] = field(default_factory=dict)
    levels: int = DEFAULT_LEVELS
    #: what the DP maximises: "sum" of I (the paper's) or "product" of I (sum of log I: blind to
    #: the block count; lmzoo.core.problem explains the difference)
    objective: str = DEFAULT_OBJECTIVE
    #: the objective of the layer-pruning baseline's entries: "kept" (its official code's knapsack
    #: over kept convs, lmzoo.core.problem), or "sum" / "product" as the other methods
    layer_objective: str = METHOD_OBJECTIVES["layer"]
    #: the objective of the depth-compression baseline's entries: "normalized[:ALPHA]" (Kim et al.
    #: 2023's official additive importance, lmzoo.core.problem), or "sum" / "product"
    depth_objective: str = METHOD_OBJECTIVES["depth"]
    #: depth compression chooses the activation at every linear position an activation can be
    #: inserted at (MobileNetV2's block outputs), each state measured as its own importance entry,
    #: as Kim et al. 2023's code does (lmzoo.core.activations; MobileNetV2: 315 entries for 171
    #: segments); false: lmzoo's fixed rule (ReLU6 after a merge there), no extra entries
    depth_states: bool = True
    #: re-rank the K most important distinct networks among the tables' best plans
    #: (lmzoo.top_plans) with a short recovery of each whole configured network (one epoch of
    #: importance-train at a tenth of the importance lr, BatchNorm re-estimated, measured on the
    #: held-out subset; lmzoo.pipeline.refine) and build the best; 1 builds the solver's optimum
    #: (the paper's). Off until the zoo evidence says otherwise
    refine_top: int = 1
    #: the refinement's budget: epochs of importance-train each of its networks recovers for
    #: (default: the importance recovery's); the whole refinement costs about refine_top times that
    refine_epochs: float | None = None
    #: a target beyond the latency table's fastest plan: "error" (stop, naming the reachable
    #: speed-up) or "fastest" (build the fastest plan and say so; smoke profiles, whose tiny
    #: timings move with the machine's load)
    unreachable: str = DEFAULT_UNREACHABLE
    #: the largest kernel a merge of two or more convs may have (null: no cap, the paper's); caps
    #: the merge memory of deep networks and the candidates both tables hold
    max_kernel: int | None = None

    @property
    def rules(self) -> CandidateRules:
        """The candidate rules of the tables and the solver."""
        return CandidateRules(max_kernel=self.max_kernel)

    def speedups_of(self, method: str) -> tuple[float, ...]:
        """The target speed-ups of ``method``'s entries."""
        return self.method_speedups.get(method, self.speedups)


@dataclass(frozen=True)
class EvaluateSection:
    #: DDPM: images generated for the card's sample grid, per network (base and merged)
    sample_count: int = 16
    #: DDPM: DDIM steps per sample
    sample_steps: int = 100
    #: DDPM: the features of the Fréchet distance between generated and real test images:
    #: "inception" (FID proper: pytorch-fid's Inception-v3, the fid extra and its weights), or a zoo
    #: classifier of the same data (its penultimate features; not Inception FID); none: no distance
    feature_model: str | None = None
    #: DDPM: generated (and real) images per network for the Fréchet distance
    frechet_samples: int = 500
    #: end-to-end timing of base and merged for the card: runs of each, split over interleaved
    #: rounds (None: the latency section's); more runs and rounds resist a noisy machine
    latency_runs: int | None = 200
    latency_rounds: int | None = None

    def latency_setting(self, latency: LatencySetting) -> LatencySetting:
        """The recipe's latency setting with this section's runs and rounds (the card's timing)."""
        return latency.replace(runs=self.latency_runs, rounds=self.latency_rounds)


@dataclass(frozen=True)
class HubSection:
    #: Hub organisation of the published entries: each entry's repo id is "<org>/<entry name>"
    org: str | None = None
    #: published entries, pinned: entry name -> commit sha (what `lmzoo.load(NAME)` downloads)
    revisions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSection
    data: DataSection
    description: str = ""
    license: str = "apache-2.0"
    seed: int = 0
    #: fine-tunes per entry, from seeds seed, seed + 1, ...: results and cards report their mean and
    #: standard deviation; the checkpoint is the first (never the best: no selection on the test set)
    seeds: int = 1
    #: training the base from scratch (ignored when model.pretrained is set)
    base: TrainSection = field(default_factory=TrainSection)
    latency: LatencySetting = field(default_factory=LatencySetting)
    importance: ImportanceSection = field(default_factory=ImportanceSection)
    solve: SolveSection = field(default_factory=SolveSection)
    finetune: TrainSection = field(default_factory=TrainSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    hub: HubSection = field(default_factory=HubSection)
    #: the profile this recipe was resolved with ("default" when none)
    profile: str = DEFAULT_PROFILE
    #: where the recipe came from (not part of its content)
    path: str = field(default="", compare=False, metadata={"key": False})

    def entry_name(self, speedup: float) -> str:
        """``<recipe>-<s>x``; a baseline method replaces the recipe's ``-layermerge`` suffix (or is
        appended): mobilenetv2-fmnist-depth-1.6x is the depth-compression baseline at 1.6x. A build
        with another profile than the default is not the zoo entry and says so in its name:
        mobilenetv2-fmnist-layermerge-1.6x-smoke (so it never replaces or is published as the entry)."""
        name = zoo_entry_name(self.name, self.solve.method, speedup)
        return name if self.profile == DEFAULT_PROFILE else f"{name}-{self.profile}"

    def with_method(self, method: str) -> Recipe:
        """This recipe solving with another selection method (the paper's baselines, the union);
        layer pruning with ``solve.layer_objective``, depth compression with ``solve.depth_objective``."""
        if method not in METHODS:
            raise RecipeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        changes: dict[str, Any] = {"method": method}
        if method == "layer":
            changes["objective"] = self.solve.layer_objective
        elif method == "depth":
            changes["objective"] = self.solve.depth_objective
        return dataclasses.replace(self, solve=dataclasses.replace(self.solve, **changes))

    def entries(self) -> list[str]:
        return [self.entry_name(s) for s in self.solve.speedups_of(self.solve.method)]

    def zoo_entries(self) -> dict[str, tuple[str, float]]:
        """The zoo entries this recipe defines: entry name -> (method, speed-up), for every target
        speed-up and every method (LayerMerge and its baselines), default profile."""
        return {
            zoo_entry_name(self.name, method, speedup): (method, speedup)
            for method in METHODS
            for speedup in self.solve.speedups_of(method)
        }

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("path")
        return _plain(data)


def zoo_entry_name(recipe_name: str, method: str, speedup: float) -> str:
    """The zoo entry of a recipe, method and target speed-up (default profile)."""
    return f"{baseline_stem(recipe_name, method)}-{speedup:g}x"


def baseline_stem(recipe_name: str, method: str) -> str:
    """The entry-name stem of ``recipe_name`` solved with ``method``."""
    if method == "layermerge":
        return recipe_name
    stem = recipe_name.removesuffix("-layermerge")
    return f"{stem}-{method}"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up, in order."""
    dirs = []
    if os.environ.get("LMZOO_RECIPES"):
        dirs.append(Path(os.environ["LMZOO_RECIPES"]))
    dirs.append(Path(__file__).parent / "_recipes")  # shipped in the wheel
    repo = Path(__file__).resolve().parent.parent / "recipes"
    if repo.is_dir():
        dirs.append(repo)  # a source checkout
    return dirs


def recipe_files() -> dict[str, Path]:
    """Recipe name -> file, first directory wins."""
    found: dict[str, Path] = {}
    for directory in recipe_dirs():
        for path in sorted(directory.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def load_recipe(
    name_or_path: str | os.PathLike[str],
    profile: str | None = None,
    *,
    method: str | None = None,
    extra_speedups: bool = False,
) -> tuple[Recipe, float | None]:
    """A recipe from a file path, a recipe name, or a zoo entry name (``<recipe>-<s>x``, or a
    baseline's ``<stem>-depth-<s>x`` / ``<stem>-layer-<s>x``, or ``<stem>-layermerge-union-<s>x``;
    ``-<profile>`` after it names a profile build, e.g. ``...-1.6x-smoke``).

    Returns the recipe resolved with ``profile`` (and ``method``, which a baseline's entry name
    implies) and, for an entry name, its target speed-up: one of the recipe's, or any speed-up
    above 1 with ``extra_speedups`` (a custom target of the same recipe).
    """
    text = str(name_or_path)
    speedup: float | None = None
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or os.sep in text):  # a name: never a stray file
        files = recipe_files()
        recipe_name, speedup, implied, implied_profile = _resolve_name(text, files)
        if recipe_name is None:
            import difflib

            known = sorted(files) + [e for f in files for e in _entry_names(files[f])]
            close = difflib.get_close_matches(text, known, n=3)
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else f"; known recipes: {', '.join(sorted(files))}"
            )
            raise RecipeError(f"no recipe named {text!r}{hint}")
        if implied is not None:
            if method not in (None, implied):
                raise RecipeError(f"{text!r} names the {implied} method, not {method}")
            method = implied
        if implied_profile is not None:
            if profile not in (None, implied_profile):
                raise RecipeError(f"{text!r} names the {implied_profile} profile, not {profile}")
            profile = implied_profile
        path = files[recipe_name]
    recipe = parse_recipe(path, profile)
    if method is not None:
        recipe = recipe.with_method(method)
    listed = speedup is None or any(
        abs(s - speedup) < 1e-9 for s in recipe.solve.speedups_of(recipe.solve.method)
    )
    if not listed and not extra_speedups:
        method_option = "" if recipe.solve.method == DEFAULT_METHOD else f" --method {recipe.solve.method}"
        raise RecipeError(
            f"{path}: {text!r} is not one of its entries ({', '.join(recipe.entries())}); build another "
            f"speed-up of it with `lmzoo build {recipe.name}{method_option} --speedup {speedup:g}`"
        )
    return recipe, speedup


def _resolve_name(
    text: str, files: dict[str, Path]
) -> tuple[str | None, float | None, str | None, str | None]:
    """(recipe name, entry speed-up, baseline method, profile) a recipe or entry name implies."""
    if text in files:
        return text, None, None, None
    match = ENTRY_NAME.match(text)
    if match is None:
        return None, None, None, None
    name, speedup, profile = match["recipe"], float(match["speedup"]), match["profile"]
    if name in files:
        return name, speedup, None, profile
    for method in METHODS:
        stem = name.removesuffix(f"-{method}")
        if method != "layermerge" and stem != name and f"{stem}-layermerge" in files:
            return f"{stem}-layermerge", speedup, method, profile
    return None, None, None, None


def _entry_names(path: Path) -> list[str]:
    try:
        return parse_recipe(path).entries()
    except RecipeError:
        return []


def parse_recipe(path: str | os.PathLike[str], profile: str | None = None) -> Recipe:
    from lmzoo.files import read_text

    path = Path(path)
    text = read_text(path, what="recipe", error=RecipeError, limit=MAX_RECIPE_BYTES)
    try:
        raw = yaml.load(text, Loader=_RecipeLoader)
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from None
    if _expanded_size(raw, MAX_RECIPE_VALUES) > MAX_RECIPE_VALUES:
        raise RecipeError(
            f"{path}: the recipe expands to more than {MAX_RECIPE_VALUES:,} values (YAML aliases?)"
        )
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys, got {type(raw).__name__}")
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise RecipeError(f"{path}: 'profiles' must map profile names to partial recipes")
    for name in profiles:  # a profile names its builds (<entry>-<profile>)
        if not isinstance(name, str) or name == DEFAULT_PROFILE or not re.fullmatch(PROFILE_NAME, name):
            raise RecipeError(
                f"{path}: profile name {name!r} must be lower-case letters, digits and - (and not 'default')"
            )
    if profile not in (None, DEFAULT_PROFILE) and profile not in profiles:
        known = ", ".join([DEFAULT_PROFILE, *profiles])
        raise RecipeError(f"{path}: no profile {profile!r}; this recipe has: {known}")
    resolved = {}
    for name in (DEFAULT_PROFILE, *profiles):  # every profile is checked, not only the one asked for
        merged = raw if name == DEFAULT_PROFILE else {**_deep_merge(raw, profiles[name]), "profile": name}
        recipe = _build(Recipe, _migrated(merged, path), "", path)
        _check_values(recipe, path)
        resolved[name] = dataclasses.replace(recipe, path=str(path))
    return resolved[profile or DEFAULT_PROFILE]


class _RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps
    the last one silently: a second ``solve:`` would replace the first whole)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: construct_mapping says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(value: Any, limit: int) -> int:
    """How many values ``value`` holds with shared (aliased) parts counted each time they appear;
    counting stops past ``limit``."""
    count = 0
    stack = [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _migrated(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A recipe of an earlier version, whose model section named a construction ``family``, with the
    source and architecture that family meant."""
    model = raw.get("model")
    if not isinstance(model, dict) or "family" not in model or "source" in model:
        return raw
    model = dict(model)
    family = model.pop("family")
    try:
        model["source"], model["arch"] = migrate_legacy(str(family), str(model.get("arch", "")))
    except LmzooError as err:
        raise RecipeError(f"{path}: model.family: {err}") from None
    return {**raw, "model": model}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls: type, raw: Any, where: str, path: Path) -> Any:
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: {where or 'the recipe'} must be a mapping, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("key", True)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise RecipeError(f"{path}: unknown key {key!r} (known here: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{path}: missing key {key!r}")
            continue
        values[name] = _convert(hints[name], raw[name], key, path)
        if name in RANGES:
            _check_range(values[name], RANGES[name], key, path)
    try:
        return cls(**values)
    except LmzooError as err:  # a section that validates itself (LatencySetting)
        raise RecipeError(f"{path}: {where or 'the recipe'}: {err}") from None


def _convert(hint: Any, value: Any, key: str, path: Path) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key, path)
            except RecipeError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, path)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list):
            raise RecipeError(f"{path}: {key!r} must be a list, got {_kind(value)}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_convert(item, v, f"{key}[{i}]", path) for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: {key!r} must be a mapping, got {_kind(value)}")
        key_type, value_type = typing.get_args(hint) or (str, Any)
        return {
            _convert(key_type, k, f"{key} key", path): _convert(value_type, v, f"{key}.{k}", path)
            for k, v in value.items()
        }
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: {key!r} must be true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{path}: {key!r} must be an integer, got {_kind(value)}")
        if abs(value) >= 2**63:
            raise RecipeError(f"{path}: {key!r} is too large, got {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{path}: {key!r} must be a number, got {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise RecipeError(f"{path}: {key!r} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{path}: {key!r} must be a string, got {_kind(value)}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"unsupported recipe field type {hint!r}")  # a bug in this module, not in the file


def check_speedups(recipe: Recipe, speedups: Sequence[Any]) -> list[float]:
    """``speedups`` as targets of ``recipe``, or one error saying why they cannot be (each must be
    a number in (1, MAX_SPEEDUP] that its entry name states exactly, and no two may name one entry)."""
    problem = _speedups_problem(recipe, speedups)
    if problem is not None:
        raise InvalidArgumentError(f"speed-ups {list(speedups)}: {problem}")
    return [float(s) for s in speedups]


def _speedups_problem(recipe: Recipe, speedups: Sequence[Any]) -> str | None:
    if not all(type(s) in (int, float) and 1 < s <= MAX_SPEEDUP for s in speedups):
        return f"each must be a number above 1 and at most {MAX_SPEEDUP:g}"
    if not all(float(f"{s:g}") == s for s in speedups):
        return "each has at most 6 significant digits (an entry's name states its speed-up)"
    names = [recipe.entry_name(float(s)) for s in speedups]
    if len(set(names)) != len(names):
        return f"two name the same entry ({', '.join(names)})"
    return None


def _check_range(value: Any, bounds: tuple[float, float], key: str, path: Path) -> None:
    low, high = bounds
    for item in value if isinstance(value, tuple) else (value,):
        if item is not None and not low <= item <= high:
            raise RecipeError(f"{path}: {key!r} must be from {low:g} to {high:g}, got {item!r}")


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:60]


def _objective_fits(objective: object, method: str) -> bool:
    try:
        check_objective(objective, method)
    except InvalidArgumentError:
        return False
    return True


def _check_values(recipe: Recipe, path: Path) -> None:
    from lmzoo.importance.registry import estimator_names

    estimators = estimator_names()
    speedups_problem = _speedups_problem(recipe, recipe.solve.speedups)
    own_speedups_problems = [
        f"solve.method_speedups.{method}: {problem}"
        for method, speedups in recipe.solve.method_speedups.items()
        if method in METHODS and (problem := _speedups_problem(recipe.with_method(method), speedups))
    ]
    try:
        get_source(recipe.model.source).check(recipe.model.arch, recipe.model.kwargs)
    except LmzooError as err:
        raise RecipeError(f"{path}: {err}") from None
    checks = [
        (recipe.data.dataset in DATASETS, f"data.dataset must be one of {', '.join(DATASETS)}"),
        (
            recipe.data.dataset != "image-folder" or bool(recipe.data.root),
            "data.root names the image folder (with data.train_dir and data.val_dir inside)",
        ),
        (recipe.data.channels in (None, 1, 3), "data.channels must be 1 (grayscale) or 3 (RGB)"),
        (
            recipe.data.interpolation in (None, "nearest", "bilinear", "bicubic"),
            "data.interpolation must be nearest, bilinear or bicubic",
        ),
        (recipe.data.crop_pct is None or 0 < recipe.data.crop_pct <= 1, "data.crop_pct must be in (0, 1]"),
        (
            all(
                len(v) == (recipe.data.channels or 3)
                for v in (recipe.data.mean, recipe.data.std)
                if v is not None
            ),
            "data.mean and data.std need one value per channel",
        ),
        (recipe.data.normalize in ("standard", "symmetric"), "data.normalize must be standard or symmetric"),
        (
            recipe.importance.estimator in estimators,
            f"importance.estimator must be one of {', '.join(estimators)}",
        ),
        (
            recipe.importance.reinit in REINIT_RULES,
            f"importance.reinit must be one of {', '.join(REINIT_RULES)}",
        ),
        (recipe.solve.method in METHODS, f"solve.method must be one of {', '.join(METHODS)}"),
        (
            _objective_fits(recipe.solve.objective, recipe.solve.method),
            f"solve.objective must be one of {', '.join(OBJECTIVES)} ('kept' for method layer only, "
            "'normalized[:ALPHA]' for method depth only, ALPHA from 0 to 100)",
        ),
        (
            _objective_fits(recipe.solve.layer_objective, "layer"),
            "solve.layer_objective must be kept, sum or product",
        ),
        (
            _objective_fits(recipe.solve.depth_objective, "depth"),
            "solve.depth_objective must be normalized[:ALPHA] (ALPHA from 0 to 100), sum or product",
        ),
        (
            recipe.solve.unreachable in UNREACHABLE,
            f"solve.unreachable must be one of {', '.join(UNREACHABLE)}",
        ),
        (speedups_problem is None, f"solve.speedups: {speedups_problem}"),
        (
            all(m in METHODS for m in recipe.solve.method_speedups),
            f"solve.method_speedups names methods: {', '.join(METHODS)}",
        ),
        (not own_speedups_problems, "; ".join(own_speedups_problems)),
        (
            recipe.importance.train_fraction + recipe.importance.heldout_fraction <= 1,
            "importance.train_fraction + importance.heldout_fraction must be at most 1 (disjoint subsets)",
        ),
        (
            all(s > 0 for s in recipe.data.std or ()),
            "data.std must be > 0 for every channel",
        ),
        (
            recipe.solve.max_kernel is None or recipe.solve.max_kernel >= 1,
            "solve.max_kernel must be a kernel size >= 1 (or null for no cap)",
        ),
        (
            bool(re.fullmatch(r"[a-z0-9][a-z0-9.-]*", recipe.name)),
            "name must be lower-case letters, digits, . and -",
        ),
        (
            recipe.hub.org is None or bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", recipe.hub.org)),
            "hub.org must be a Hub organisation or user name",
        ),
        (
            all(n in recipe.zoo_entries() for n in recipe.hub.revisions),
            f"hub.revisions may only pin this recipe's entries ({', '.join(recipe.zoo_entries())})",
        ),
        (
            all(re.fullmatch(r"[0-9a-f]{40}", r) for r in recipe.hub.revisions.values()),
            "hub.revisions pins commit shas (40 hex digits), so a published entry never changes under a user",
        ),
        (recipe.hub.org is not None or not recipe.hub.revisions, "hub.revisions needs hub.org"),
        (
            recipe.evaluate.sample_count > 0 and recipe.evaluate.sample_steps > 0,
            "evaluate.sample_* must be > 0",
        ),
        (
            recipe.evaluate.frechet_samples >= 2
            and (recipe.evaluate.latency_runs or 1) >= (recipe.evaluate.latency_rounds or 1) >= 1,
            "evaluate needs frechet_samples >= 2 and latency_runs >= latency_rounds >= 1",
        ),
    ]
    for key, (low, high) in KWARG_RANGES.items():
        value = recipe.model.kwargs.get(key)
        checks.append(
            (
                value is None or (type(value) is int and low <= value <= high),
                f"model.kwargs.{key} must be an integer from {low} to {high}",
            )
        )
    for section in (recipe.base, recipe.finetune, recipe.importance.train):
        checks.append((section.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"))
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"{path}: {message}")


DATASETS = ("fashion-mnist", "cifar10", "imagenet", "image-folder")
