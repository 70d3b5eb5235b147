"""What the evaluate stage adds for denoising networks: a grid of samples of the base and the merged
network from the same noise, and the Fréchet distance between generated and real test images, in
Inception-v3 features (FID proper) or in a zoo classifier's features (checked before training)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from lmzoo.checkpoint import read_config
from lmzoo.errors import InvalidArgumentError
from lmzoo.preprocessing import Preprocessing
from lmzoo.recipes import EvaluateSection, Recipe, load_recipe
from lmzoo.records import Frechet, SampleGrid
from lmzoo.tasks import Denoising


def frechet(
    task: Denoising,
    base: nn.Module,
    merged: nn.Module,
    test_set: Dataset[Any],
    recipe: Recipe,
    base_distance: float | None = None,
    feature_weights: str | None = None,
) -> Frechet:
    """Fréchet distance between generated and real test images for the base and the merged network,
    in the features ``evaluate.feature_model`` names: Inception-v3 (FID proper) or the penultimate
    layer of a zoo classifier of the same data set (through the classifier's own input pipeline).
    ``base_distance``, when known (the samples are seeded, so it is the same for every plan), is
    taken instead of sampling the base again. ``feature_weights``: the classifier's weights digest
    the caller keyed the stage by (``feature_weights_digest``), recorded with the distances."""
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
    assert settings.feature_model is not None
    return Frechet(
        feature_weights_sha256=feature_weights,
        base=distances["base"],
        merged=distances["merged"],
        feature_model=settings.feature_model,
        features=description,
        samples=count,
        sampler=f"DDIM, {settings.sample_steps} steps, eta 0",
        reference=f"the first {count} test images",
    )


def feature_weights_digest(recipe: Recipe) -> str | None:
    """The sha256 of the weights of the classifier ``evaluate.feature_model`` names, as its config
    records them (``load`` checks the file against it); None for Inception, no feature model, or a
    checkpoint written without digests. Part of the evaluate stages' keys: rebuilding the classifier
    under the same name re-measures the distances instead of reusing ones taken in other features."""
    from lmzoo.checkpoint import INTEGRITY
    from lmzoo.errors import LmzooError
    from lmzoo.frechet import INCEPTION
    from lmzoo.zoo import checkpoint_files

    name = recipe.evaluate.feature_model
    if name is None or name == INCEPTION:
        return None
    try:
        config = read_config(str(checkpoint_files(name)))
    except LmzooError as err:
        raise type(err)(f"evaluate.feature_model: {err}") from None
    digest = (config.get(INTEGRITY) or {}).get("weights_sha256")
    return str(digest) if digest else None


def check_feature_model(recipe: Recipe, own: Preprocessing) -> None:
    """Fail before any stage runs when ``evaluate.feature_model`` cannot be used, by loading it for
    real: Inception without pytorch-fid or without loadable weights (fetched if missing); a classifier
    that is not built, not published or damaged, of another data set, or taking other images than
    this recipe's (``own``: its preprocessing)."""
    from lmzoo.frechet import INCEPTION, check_inception, load_fid_inception

    name = recipe.evaluate.feature_model
    if name == INCEPTION:
        load_fid_inception(check_inception())
    elif name is not None:
        _, preprocessing = _feature_classifier(recipe)
        if preprocessing.input_size != own.input_size:
            raise InvalidArgumentError(
                f"evaluate.feature_model {name!r} takes {preprocessing.input_size} images, this recipe "
                f"makes {own.input_size} ones; name a classifier of the same images"
            )


def _feature_classifier(recipe: Recipe) -> tuple[nn.Module, Preprocessing]:
    """The classifier ``evaluate.feature_model`` names, loaded (zoo entry, profile build,
    ``hf-hub:`` or ``local-dir:``), checked to be a classifier of this data set, and the
    preprocessing its data had."""
    from lmzoo.errors import LmzooError
    from lmzoo.frechet import INCEPTION
    from lmzoo.recipes import RecipeError
    from lmzoo.zoo import load

    name = recipe.evaluate.feature_model
    assert name is not None
    wrong = InvalidArgumentError(
        f"evaluate.feature_model {name!r} must be {INCEPTION!r} or a zoo classifier trained on "
        f"{recipe.data.dataset}"
    )
    try:
        classifier = load(name)  # says how to build it when it is missing
    except LmzooError as err:
        raise type(err)(f"evaluate.feature_model: {err}") from None
    config = read_config(str(classifier.lmzoo_checkpoint))
    if config["task"] != "classification":
        raise wrong
    try:
        dataset = load_recipe(config.get("recipe") or name, extra_speedups=True)[0].data.dataset
    except RecipeError:
        dataset = None  # a checkpoint of no recipe this installation knows: its images are checked
    if dataset not in (None, recipe.data.dataset):
        raise wrong
    preprocessing = getattr(classifier, "lmzoo_preprocessing", None)
    if preprocessing is None:  # a checkpoint of an earlier version: its recipe's preprocessing
        from lmzoo.data import small_preprocessing

        data = load_recipe(config.get("recipe") or name, extra_speedups=True)[0].data
        preprocessing = small_preprocessing(data.dataset, data.normalize, data.pad_to)
    return classifier, preprocessing


def _frechet_features(recipe: Recipe) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The feature map for images in [-1, 1], and how the record describes it."""
    from lmzoo.frechet import INCEPTION, classifier_features, inception_features, load_fid_inception

    if recipe.evaluate.feature_model == INCEPTION:
        inception = load_fid_inception()  # raises the same one-line errors as check_inception
        return (
            lambda images: inception_features(inception, (images.clamp(-1, 1) + 1) / 2),
            "Inception-v3 pool3 (2048-d), pytorch-fid's pt_inception-2015-12-05 weights: FID",
        )
    classifier, preprocessing = _feature_classifier(recipe)

    def features(images: torch.Tensor) -> torch.Tensor:
        return classifier_features(
            classifier, _classifier_input((images.clamp(-1, 1) + 1) / 2, preprocessing)
        )

    return features, "penultimate layer (pooled, before the classifier); not Inception FID"


def _classifier_input(images01: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """Generated images in [0, 1] as the feature classifier's own preprocessing prepares its data:
    the native image in the centre, the classifier's border colour around it, its normalisation."""
    if tuple(images01.shape[1:]) != preprocessing.input_size:
        raise InvalidArgumentError(
            f"the feature model takes {preprocessing.input_size} images, this recipe makes "
            f"{tuple(images01.shape[1:])} ones"
        )
    x = images01
    native, size = preprocessing.native_size, preprocessing.input_size[1]
    if preprocessing.crop_mode == "border" and native < size:
        fill = torch.tensor(preprocessing.fill or (0,) * x.shape[1], dtype=x.dtype).view(1, -1, 1, 1) / 255
        top = (size - native) // 2
        canvas = fill.expand_as(x).clone()
        canvas[..., top : top + native, top : top + native] = x[..., top : top + native, top : top + native]
        x = canvas
    mean = torch.tensor(preprocessing.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def sample_grid(
    task: Denoising,
    base: nn.Module,
    merged: nn.Module,
    image_shape: tuple[int, ...],
    path: Path,
    settings: EvaluateSection,
) -> SampleGrid:
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
    return SampleGrid(file=path.name, count=count, sampler=f"DDIM, {steps} steps, eta 0", seed=0)
