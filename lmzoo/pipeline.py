"""The build pipeline's stages (DESIGN §8), each cached under the work directory in a folder keyed
by the content that determines it, so a rerun resumes and other speed-ups reuse earlier stages.

    workdir/<recipe name>/base-<key>/         model.safetensors, metrics.json, train.state
    workdir/<recipe name>/latency-<key>/      latency.json, measurements.jsonl
    workdir/<recipe name>/importance-<key>/   importance.json, per-entry records
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from lmzoo.core.plan import Plan
from lmzoo.core.spec import Spec
from lmzoo.core.tables import ImportanceTable, LatencyTable, write_atomic
from lmzoo.errors import DataNotFoundError, InvalidArgumentError
from lmzoo.recipes import EvaluateSection, Recipe, TrainSection, load_recipe
from lmzoo.tasks import Denoising, Task, task_for
from lmzoo.training import TrainSettings, distributed, is_main_process, train

if TYPE_CHECKING:
    from lmzoo.importance import FinetuneSettings, ImportanceData
    from lmzoo.zoo import ZooEntry

T = TypeVar("T")

STAGES = ("base", "latency", "importance", "solve", "finetune", "merge", "evaluate", "card")


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

    def stage(self, name: str, key: str) -> Path:
        path = self.root / self.recipe.name / f"{name}-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path


# -- model and data ---------------------------------------------------------------------------------


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's base architecture with random weights."""
    from lmzoo.checkpoint import build_architecture

    m = recipe.model
    try:
        return build_architecture(m.family, m.arch, m.kwargs)
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"{recipe.source}: {err}") from None


def load_pretrained(recipe: Recipe) -> nn.Module:
    """Pretrained weights from the Hub (``hf-hub:ORG/REPO``); a clear error when unreachable."""
    name = recipe.model.pretrained
    assert name is not None
    repo = name.removeprefix("hf-hub:")
    try:
        if recipe.model.family == "timm":
            import timm

            return timm.create_model(f"hf-hub:{repo}", pretrained=True, **recipe.model.kwargs)
        from diffusers import UNet2DModel

        model = UNet2DModel.from_pretrained(repo, use_safetensors=True)  # never unpickle a download
    except (OSError, RuntimeError, ValueError) as err:
        raise DataNotFoundError(
            f"cannot get the pretrained weights {name} ({type(err).__name__}: {str(err)[:200]}); "
            "connect to the Hub (or set HF_ENDPOINT to a mirror), or pre-download them with "
            f"`hf download {repo}`"
        ) from None
    differ = {
        k: (v, model.config.get(k))
        for k, v in recipe.model.kwargs.items()
        if _plain_config(model.config.get(k)) != _plain_config(v)
    }
    if differ:
        key, (want, got) = next(iter(differ.items()))
        raise InvalidArgumentError(
            f"{recipe.source}: {name} has {key} = {got!r} but the recipe says {want!r}; fix model.kwargs"
        )
    return model


def _plain_config(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def datasets(recipe: Recipe) -> tuple[Dataset[Any], Dataset[Any]]:
    """(training split, test split) with the recipe's preprocessing and limits."""
    from lmzoo import data as lmdata

    d = recipe.data
    if d.dataset == "fashion-mnist":
        train_set: Dataset[Any] = lmdata.fashion_mnist(
            "train", root=d.root, pad_to=d.pad_to, normalize=d.normalize
        )
        test_set: Dataset[Any] = lmdata.fashion_mnist(
            "test", root=d.root, pad_to=d.pad_to, normalize=d.normalize
        )
    elif d.dataset == "cifar10":
        train_set = lmdata.cifar10("train", root=d.root, normalize=d.normalize)
        test_set = lmdata.cifar10("test", root=d.root, normalize=d.normalize)
    else:
        train_set = lmdata.imagenet("train", root=d.root, image_size=recipe.model.input_size)
        test_set = lmdata.imagenet("val", root=d.root, image_size=recipe.model.input_size)
    return _limit(train_set, d.limit_train, "limit_train"), _limit(test_set, d.limit_test, "limit_test")


def _limit(dataset: Dataset[Any], limit: int | None, key: str) -> Dataset[Any]:
    if limit is None:
        return dataset
    size = len(dataset)  # type: ignore[arg-type]
    if not 0 < limit <= size:
        raise InvalidArgumentError(f"data.{key} = {limit} does not fit the {size} examples available")
    return Subset(dataset, range(limit))


def train_settings(section: TrainSection) -> TrainSettings:
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in dataclasses.asdict(section).items() if k in fields})


def importance_settings(recipe: Recipe) -> FinetuneSettings:
    """The recipe's importance section as the estimators' settings."""
    from lmzoo.importance import FinetuneSettings

    imp = recipe.importance
    return FinetuneSettings(
        **dataclasses.asdict(train_settings(imp.train)),
        eval_batch_size=imp.eval_batch_size,
        block_steps=imp.block_steps,
        block_lr=imp.block_lr,
        block_batch_size=imp.block_batch_size,
    )


def importance_data(recipe: Recipe, train_set: Dataset[Any]) -> ImportanceData:
    """The recipe's disjoint importance-train and held-out subsets of the training split."""
    from lmzoo.data import subsets
    from lmzoo.importance import ImportanceData

    imp = recipe.importance
    split = subsets(
        len(train_set),  # type: ignore[arg-type]
        train_fraction=imp.train_fraction,
        heldout_fraction=imp.heldout_fraction,
        seed=imp.seed,
    )
    return ImportanceData(
        train=Subset(train_set, split.train.tolist()), heldout=Subset(train_set, split.heldout.tolist())
    )


# -- stages -----------------------------------------------------------------------------------------


def base_key(recipe: Recipe) -> str:
    if recipe.model.pretrained:
        return content_key("pretrained", recipe.model)
    return content_key("scratch", recipe.model, recipe.data, recipe.base, recipe.seed)


def base_stage(ws: Workspace, *, device: str = "cpu", progress: bool = True) -> nn.Module:
    """The base network: pretrained, or trained from scratch (resumable) and cached."""
    from safetensors.torch import load_file

    recipe = ws.recipe
    folder = ws.stage("base", base_key(recipe))
    weights = folder / "model.safetensors"
    if weights.is_file():
        model = build_model(recipe)
        model.load_state_dict(load_file(weights), strict=True)
        return model.eval()
    if recipe.model.pretrained:
        model = load_pretrained(recipe)
    else:
        torch.manual_seed(recipe.seed)
        model = build_model(recipe)
        train_set, test_set = datasets(recipe)
        task = task_for(model)
        settings = train_settings(recipe.base)
        summary = train(
            model,
            train_set,
            settings,
            task.loss(settings),
            seed=recipe.seed,
            device=device,
            state_path=folder / "train.state",
            progress=progress,
            desc=f"base {recipe.name}",
            ema_decay=recipe.base.ema_decay,
        )
        metrics = task.evaluate(model, test_set, batch_size=512, device=torch.device(device))
        write_atomic(folder / "metrics.json", json.dumps({**summary, **metrics, "split": "test"}, indent=2))
    model = model.cpu().eval()
    _finish_training(model, weights)
    return model


def _finish_training(model: nn.Module, weights: Path) -> None:
    """Write a trained stage's weights atomically, then drop the training state it resumed from."""
    from safetensors.torch import save_file

    tmp = weights.with_name(weights.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, weights)
    (weights.parent / "train.state").unlink(missing_ok=True)


def traced(model: nn.Module, task: Task, dataset: Dataset[Any]) -> tuple[Spec, tuple[torch.Tensor, ...]]:
    """The spec of ``model`` and the example inputs (one image of ``dataset``) it was traced with."""
    from lmzoo.engine import trace

    example = task.example_inputs(dataset)
    return trace(model, example), example


def latency_stage(
    ws: Workspace, model: nn.Module, spec: Spec, example: tuple[torch.Tensor, ...], *, progress: bool = True
) -> tuple[LatencyTable, Path]:
    """The latency table (cached, resumable) and its file."""
    from lmzoo.latency.table import latency_table

    lat = ws.recipe.latency
    folder = ws.stage("latency", content_key(spec.fingerprint, lat))
    out = folder / "latency.json"
    if out.is_file():
        return LatencyTable.load(out), out
    table = latency_table(
        spec,
        backend=lat.backend,
        device=lat.device,
        batch_size=lat.batch_size,
        dtype=lat.dtype,
        threads=lat.threads,
        warmup=lat.warmup,
        runs=lat.runs,
        passes=lat.passes,
        model=model,
        example_inputs=example,
        cache=folder / "measurements.jsonl",
        progress=progress,
    )
    table.save(out)
    return table, out


def importance_stage(
    ws: Workspace,
    model: nn.Module,
    spec: Spec,
    train_set: Dataset[Any],
    *,
    estimator: str | None = None,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    device: str = "cpu",
    progress: bool = True,
) -> tuple[ImportanceTable, Path]:
    """The importance table (cached; entries resumable and shardable) and its file."""
    from lmzoo.importance import importance_table

    imp = ws.recipe.importance
    estimator = estimator or imp.estimator
    settings = importance_settings(ws.recipe)
    folder = ws.stage(
        "importance",
        content_key(base_key(ws.recipe), spec.fingerprint, estimator, settings, imp.train_fraction,
                    imp.heldout_fraction, imp.seed),
    )  # fmt: skip
    out = folder / "importance.json"
    if out.is_file():
        return ImportanceTable.load(out), out
    table = importance_table(
        model,
        spec,
        importance_data(ws.recipe, train_set),
        estimator=estimator,
        settings=settings,
        workdir=folder,
        shard=shard,
        executor=executor,
        seed=imp.seed,
        device=device,
        progress=progress,
    )
    table.save(out)
    return table, out


def solve_stage(
    ws: Workspace, latency: LatencyTable, importance: ImportanceTable, speedup: float
) -> tuple[Plan, dict[str, Any]]:
    """The plan for one target speed-up (cached with its solver summary)."""
    from lmzoo.core.candidates import check_method
    from lmzoo.core.solver import check_objective, plan_importance, solve_reachable

    s = ws.recipe.solve
    key = content_key(latency.to_dict(), importance.to_dict(), s.method, s.levels, s.objective, speedup)
    folder = ws.stage("solve", key)
    out = folder / "plan.json"
    if out.is_file():
        record = json.loads(out.read_text())
        return Plan.from_dict(record["plan"]), record
    method, objective = check_method(s.method), check_objective(s.objective)
    # A feasible target gives the same plan under either `unreachable` setting, so it is not keyed.
    options: dict[str, Any] = dict(speedup=speedup, method=method, levels=s.levels, objective=objective)
    plan, max_speedup = solve_reachable(latency, importance, unreachable=s.unreachable, **options)
    unreachable = None if max_speedup is None else {"max_speedup": max_speedup}
    identity = Plan.identity(latency.spec) if latency.spec is not None else None
    record = {
        "target_speedup": speedup,
        "unreachable": unreachable,
        "method": s.method,
        "levels": s.levels,
        "objective": s.objective,
        "predicted_ms": latency.predict(plan),
        "predicted_base_ms": latency.predict(identity) if identity is not None else None,
        "importance": plan_importance(importance, plan, objective=objective),
        "plan": plan.to_dict(),
    }
    write_atomic(out, json.dumps(record, indent=1))
    return plan, record


def finetune_stage(
    ws: Workspace,
    model: nn.Module,
    spec: Spec,
    plan: Plan,
    train_set: Dataset[Any],
    *,
    name: str,
    device: str = "cpu",
    progress: bool = True,
) -> nn.Module:
    """The configured network for ``plan``, fine-tuned with the recipe's schedule (resumable),
    optionally distilled from the base."""
    from safetensors.torch import load_file

    from lmzoo.engine import apply_plan

    recipe = ws.recipe
    import torch.distributed as dist

    world = dist.get_world_size() if distributed() else 1  # DDP splits batches and BN statistics
    folder = ws.stage(
        "finetune", content_key(base_key(recipe), plan.to_dict(), recipe.finetune, recipe.seed, world)
    )
    weights = folder / "configured.safetensors"
    configured = apply_plan(model, spec, plan)
    if weights.is_file():
        configured.load_state_dict(load_file(weights), strict=True)
        return configured.eval()
    settings = train_settings(recipe.finetune)
    task = task_for(model)
    teacher = model if settings.distill_weight > 0 else None
    train(
        configured,
        train_set,
        settings,
        task.loss(settings, teacher),
        seed=recipe.seed,
        device=device,
        state_path=folder / "train.state",
        progress=progress,
        desc=f"fine-tune {name}",
        ema_decay=recipe.finetune.ema_decay,
    )
    configured = configured.cpu().eval()
    if is_main_process():
        _finish_training(configured, weights)
    return configured


def evaluate_stage(
    ws: Workspace,
    model: nn.Module,
    spec: Spec,
    plan: Plan,
    configured: nn.Module,
    test_set: Dataset[Any],
    latency: LatencyTable,
    *,
    name: str,
    device: str = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Merge, check the merge on test images, measure test metrics of base and merged, and time both
    end to end on the recipe's backend/device/batch. Returns the merged network and the record."""
    from lmzoo.engine import merge, tensor_output
    from lmzoo.latency.card import measure_plan

    recipe = ws.recipe
    task = task_for(model)
    merged = merge(configured).eval()
    folder = ws.stage(
        "evaluate",
        content_key(base_key(recipe), plan.to_dict(), recipe.finetune, recipe.latency, recipe.evaluate),
    )
    out = folder / "evaluation.json"
    if out.is_file():
        return merged, dict(json.loads(out.read_text()))
    probe = task.example_inputs(test_set, batch_size=min(8, len(test_set)))  # type: ignore[arg-type]
    with torch.no_grad():
        a, b = tensor_output(configured(*probe)), tensor_output(merged(*probe))
    merge_error = float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))
    dev = torch.device(device)
    metrics = task.evaluate(merged, test_set, batch_size=512, device=dev)
    # the base's metrics are the same for every plan: one cached record serves every entry
    base_file = ws.stage("evaluate-base", content_key(base_key(recipe), recipe.data, recipe.evaluate))
    base_file /= "evaluation.json"
    base_record = json.loads(base_file.read_text()) if base_file.is_file() else {}
    if "test" not in base_record:
        base_record["test"] = task.evaluate(model, test_set, batch_size=512, device=dev)
        write_atomic(base_file, json.dumps(base_record, indent=1))
    lat = recipe.latency
    card, _ = measure_plan(
        name,
        model.cpu(),
        spec,
        plan,
        task.example_inputs(test_set, batch_size=1),
        backend=lat.backend,
        device=lat.device,
        batch_size=lat.batch_size,
        dtype=lat.dtype,
        threads=lat.threads,
        runs=recipe.evaluate.latency_runs or lat.runs,
        rounds=recipe.evaluate.latency_rounds,
        table=latency,
        merged=merged.cpu(),
    )
    record = {
        "task": task.name,
        "test": metrics,
        "base_test": base_record["test"],
        "merge_relative_error": merge_error,
        "latency_card": card,
    }
    if isinstance(task, Denoising):
        record["samples"] = _sample_grid(
            task, model, merged, probe[0].shape[1:], folder / "samples.png", recipe.evaluate
        )
        if recipe.evaluate.feature_model:
            record["frechet"] = _frechet(task, model, merged, test_set, recipe, base_record.get("frechet"))
            if "frechet" not in base_record:
                base_record["frechet"] = record["frechet"]["base"]
                write_atomic(base_file, json.dumps(base_record, indent=1))
    write_atomic(out, json.dumps(record, indent=1, default=float))
    return merged, record


def _frechet(
    task: Denoising,
    base: nn.Module,
    merged: nn.Module,
    test_set: Dataset[Any],
    recipe: Recipe,
    base_distance: float | None = None,
) -> dict[str, Any]:
    """Fréchet distance between generated and real test images for the base and the merged network,
    in the features ``evaluate.feature_model`` names: Inception-v3 (FID proper) or the penultimate
    layer of a zoo classifier of the same data set (through the classifier's own input pipeline).
    ``base_distance``, when known (the samples are seeded, so it is the same for every plan), is
    taken instead of sampling the base again."""
    from lmzoo.frechet import frechet_distance

    settings = recipe.evaluate
    features, description = _frechet_features(recipe)
    count = min(settings.frechet_samples, len(test_set))  # type: ignore[arg-type]
    real = torch.stack([test_set[i][0] for i in range(count)])
    shape = tuple(real.shape[1:])
    reference = features(real)
    distances = {} if base_distance is None else {"base": base_distance}
    for label, net in (("base", base), ("merged", merged)):
        if label in distances:
            continue
        generated = torch.cat(
            [
                task.sample(net.cpu(), (min(256, count - i), *shape), steps=settings.sample_steps, seed=1 + i)
                * 2
                - 1
                for i in range(0, count, 256)
            ]
        )
        distances[label] = frechet_distance(features(generated), reference)
    return {
        **distances,
        "feature_model": settings.feature_model,
        "features": description,
        "samples": count,
        "sampler": f"DDIM, {settings.sample_steps} steps, eta 0",
        "reference": f"the first {count} test images",
    }


def check_feature_model(recipe: Recipe) -> None:
    """Fail before any training when ``evaluate.feature_model`` cannot be used: an unknown or
    wrong-data-set zoo name, or Inception without pytorch-fid or its weights (fetched if missing)."""
    from lmzoo.frechet import INCEPTION, check_inception

    name = recipe.evaluate.feature_model
    if name == INCEPTION:
        check_inception()
    elif name is not None:
        _feature_classifier(recipe)


def _feature_classifier(recipe: Recipe) -> ZooEntry:
    """The zoo entry ``evaluate.feature_model`` names, checked to be a classifier of this data set."""
    from lmzoo.frechet import INCEPTION
    from lmzoo.zoo import registry

    name = recipe.evaluate.feature_model
    entry = registry().get(name) if name is not None else None
    if entry is None or entry.dataset != recipe.data.dataset:
        raise InvalidArgumentError(
            f"evaluate.feature_model {name!r} must be {INCEPTION!r} or a zoo classifier trained on "
            f"{recipe.data.dataset}"
        )
    return entry


def _frechet_features(recipe: Recipe) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The feature map for images in [-1, 1], and how the record describes it."""
    import lmzoo
    from lmzoo.frechet import INCEPTION, classifier_features, inception_features, load_fid_inception

    if recipe.evaluate.feature_model == INCEPTION:
        inception = load_fid_inception()  # raises the same one-line errors as check_inception
        return (
            lambda images: inception_features(inception, (images.clamp(-1, 1) + 1) / 2),
            "Inception-v3 pool3 (2048-d), pytorch-fid's pt_inception-2015-12-05 weights: FID",
        )
    entry = _feature_classifier(recipe)
    feature_data = load_recipe(entry.recipe)[0].data
    classifier = lmzoo.load(entry.name)  # says how to build it when it is missing

    def features(images: torch.Tensor) -> torch.Tensor:
        return classifier_features(
            classifier, _classifier_input((images.clamp(-1, 1) + 1) / 2, recipe.data, feature_data)
        )

    return features, "penultimate layer (pooled, before the classifier); not Inception FID"


def _classifier_input(images01: torch.Tensor, own: Any, feature: Any) -> torch.Tensor:
    """Images in [0, 1] (padded to ``own.pad_to`` with black) as the feature classifier saw its
    training data: its normalisation, its padding value in the border."""
    from lmzoo import data as lmdata

    if own.pad_to != feature.pad_to:
        raise InvalidArgumentError(
            f"the feature model sees {feature.pad_to}-pixel images, this recipe makes {own.pad_to}-pixel ones"
        )
    mean, std, pad_value = lmdata.normalization(own.dataset, feature.normalize)
    x = (images01 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    border = ((own.pad_to or 0) - lmdata.NATIVE_SIZE.get(own.dataset, own.pad_to or 0)) // 2
    if border > 0:
        inner = x[..., border:-border, border:-border]
        x = torch.nn.functional.pad(inner, (border,) * 4, value=pad_value)
    return x


def _sample_grid(
    task: Denoising,
    base: nn.Module,
    merged: nn.Module,
    image_shape: tuple[int, ...],
    path: Path,
    settings: EvaluateSection,
) -> dict[str, Any]:
    """A PNG of DDIM samples of the base (left) and the merged network (right) from the same noise,
    so the two can be compared image by image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, count = settings.sample_steps, settings.sample_count
    side = math.ceil(math.sqrt(count))
    grids = []
    for net in (base, merged):
        images = task.sample(net.cpu(), (count, *image_shape), steps=steps, seed=0)
        images = torch.cat([images, torch.ones(side * side - count, *image_shape)])  # blank tail
        rows = [torch.cat(list(images[r * side : (r + 1) * side]), dim=2) for r in range(side)]
        grids.append(torch.cat(rows, dim=1).permute(1, 2, 0).squeeze(-1).numpy())
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, grid, title in zip(axes, grids, ("base", "merged"), strict=True):
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(f"{title} ({steps}-step DDIM, same noise)", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"path": str(path), "count": count, "sampler": f"DDIM, {steps} steps, eta 0", "seed": 0}


def publish_to_store(
    ws: Workspace,
    *,
    name: str,
    spec: Spec,
    plan: Plan,
    merged: nn.Module,
    evaluation: dict[str, Any],
    solve_record: dict[str, Any],
    latency: LatencyTable,
    importance: ImportanceTable,
    speedup: float,
    example: tuple[torch.Tensor, ...],
) -> Path:
    """The card stage: write the checkpoint directory (weights, config, card, latency card, plot,
    plan, recipe, tables) into the local store, atomically."""
    import shutil

    from lmzoo.cards import model_card
    from lmzoo.checkpoint import checkpoint_config, write_checkpoint
    from lmzoo.latency.card import plot_block_latency, write_card
    from lmzoo.zoo import entry_dir

    recipe = ws.recipe
    config = checkpoint_config(
        name=name,
        family=recipe.model.family,
        arch=recipe.model.arch,
        kwargs=recipe.model.kwargs,
        input_shape=tuple(example[0].shape[1:]),
        task=evaluation["task"],
        spec_fingerprint=spec.fingerprint,
        plan=plan,
        extra={"recipe": recipe.name, "profile": recipe.profile, "target_speedup": speedup},
    )
    card = model_card(
        name=name,
        recipe=recipe,
        spec=spec,
        plan=plan,
        evaluation=evaluation,
        target_speedup=speedup,
        solve_record=solve_record,
    )
    public = dict(evaluation)  # no paths of this machine in what is published
    if "samples" in public:
        public["samples"] = {
            **{k: v for k, v in public["samples"].items() if k != "path"},
            "file": "samples.png",
        }
    files = {
        "README.md": lambda p: p.write_text(card),
        "latency.json": lambda p: write_card(evaluation["latency_card"], p),
        "latency.png": lambda p: plot_block_latency(latency, spec, plan, p, title=name),
        "plan.json": lambda p: p.write_text(json.dumps(solve_record, indent=1)),
        "evaluation.json": lambda p: p.write_text(json.dumps(public, indent=1, default=float)),
        "recipe.yaml": lambda p: shutil.copyfile(recipe.source, p),
        "tables/latency.json": lambda p: latency.save(p),
        "tables/importance.json": lambda p: importance.save(p),
    }
    if "samples" in evaluation:  # the evaluate stage's grid, next to its record
        samples = Path(evaluation["samples"]["path"])
        files["samples.png"] = lambda p: shutil.copyfile(samples, p)
    return write_checkpoint(entry_dir(name), merged, config, files)


def build(
    recipe: Recipe,
    *,
    speedups: list[float] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    until: str = "card",
    device: str = "cpu",
    progress: bool = True,
    log: Any = None,
) -> list[Path]:
    """Run the stages up to ``until`` for each target speed-up; returns the checkpoint directories
    written to the local store. Every stage is cached, so a rerun resumes where it stopped."""
    if until not in STAGES:
        raise InvalidArgumentError(f"unknown stage {until!r}; choose one of {', '.join(STAGES)}")
    stop = STAGES.index(until)
    device = _init_distributed(device)
    main_process = is_main_process()
    say = (log if main_process else None) or (lambda message: None)
    progress = progress and main_process
    if distributed():
        import torch.distributed as dist

        say(f"DDP: {dist.get_world_size()} processes, {dist.get_backend()} backend, fine-tuning on {device}")
    if stop >= STAGES.index("evaluate"):
        check_feature_model(recipe)  # before hours of training, not after
    ws = Workspace.for_recipe(recipe, workdir)
    clock = _StageClock()
    model = _main_first(lambda: base_stage(ws, device=device, progress=progress))
    say(f"base: {ws.stage('base', base_key(recipe))} {clock.lap()}")
    if stop == 0:
        return []
    task = task_for(model)
    train_set, test_set = datasets(recipe)
    spec, example = traced(model, task, train_set)
    latency, latency_path = _main_first(lambda: latency_stage(ws, model, spec, example, progress=progress))
    say(f"latency table: {latency_path} {clock.lap()}")
    if latency.metadata.get("contended"):
        say(
            f"latency table: {len(latency.metadata['contended'])} measurements look contended (another "
            f"process was running); to re-measure, delete {latency_path.parent} and rerun on an idle machine"
        )
    if stop == 1:
        return []
    importance, importance_path = _main_first(
        lambda: importance_stage(ws, model, spec, train_set, device=device, progress=progress)
    )
    say(f"importance table: {importance_path} {clock.lap()}")
    if stop == 2:
        return []
    written = []
    for speedup in speedups or list(recipe.solve.speedups):
        name = recipe.entry_name(speedup)
        plan, record = _main_first(partial(solve_stage, ws, latency, importance, speedup))
        say(f"{name}: plan predicted at {record['predicted_ms']:.4g} ms {clock.lap()}")
        if record.get("unreachable"):
            say(
                f"{name}: {speedup:g}x is beyond the latency table (its fastest plan: "
                f"{record['unreachable']['max_speedup']:.3f}x); built that plan (solve.unreachable: fastest)"
            )
        if stop == 3:
            continue
        configured = finetune_stage(
            ws, model, spec, plan, train_set, name=name, device=device, progress=progress
        )
        say(f"{name}: fine-tuned {clock.lap()}")
        if stop <= 5 or not main_process:
            continue
        merged, evaluation = evaluate_stage(
            ws, model, spec, plan, configured, test_set, latency, name=name, device=device
        )
        say(
            f"{name}: measured speed-up {evaluation['latency_card']['speedup']:.2f}x, "
            f"test {evaluation['test']} {clock.lap()}"
        )
        if evaluation["latency_card"]["measurement"].get("contended"):
            say(
                f"{name}: the end-to-end timing looks contended; delete its evaluate-* stage, rerun when idle"
            )
        if stop == 6:
            continue
        written.append(
            publish_to_store(
                ws,
                name=name,
                spec=spec,
                plan=plan,
                merged=merged,
                evaluation=evaluation,
                solve_record=record,
                latency=latency,
                importance=importance,
                speedup=speedup,
                example=example,
            )
        )
        say(f"{name}: written to {written[-1]} {clock.lap()}")
    say(f"build finished in {clock.total()}")
    return written


class _StageClock:
    """Wall time of each stage for the build log ("(4 min 12 s)"; cached stages take ~0 s)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()

    @staticmethod
    def _format(seconds: float) -> str:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"

    def lap(self) -> str:
        now = time.perf_counter()
        lap, self.last = now - self.last, now
        return f"({self._format(lap)})"

    def total(self) -> str:
        return self._format(time.perf_counter() - self.started)


def _init_distributed(device: str) -> str:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group (gloo on CPU, NCCL on CUDA) and
    return this rank's device. Fine-tuning then runs as DDP; the other stages run on rank 0."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or distributed():
        return device
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def _main_first(stage: Callable[[], T]) -> T:
    """Run a cached stage on rank 0 first; the other ranks then read its cached result."""
    if not distributed():
        return stage()
    import torch.distributed as dist

    if is_main_process():
        result = stage()
        dist.barrier()
        return result
    dist.barrier()
    return stage()
