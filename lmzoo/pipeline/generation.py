"""What the evaluate stage adds for denoising networks: a grid of samples of the base and the merged
network from the same noise, and the Fréchet distance between generated and real test images, in
Inception-v3 features (FID proper) or in a zoo classifier's features (checked before training)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from lmzoo.errors import InvalidArgumentError
from lmzoo.recipes import EvaluateSection, Recipe, load_recipe
from lmzoo.records import Frechet, SampleGrid
from lmzoo.tasks import Denoising

if TYPE_CHECKING:
    from lmzoo.zoo import ZooEntry


def frechet(
    task: Denoising,
    base: nn.Module,
    merged: nn.Module,
    test_set: Dataset[Any],
    recipe: Recipe,
    base_distance: float | None = None,
) -> Frechet:
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
    assert settings.feature_model is not None
    return Frechet(
        base=distances["base"],
        merged=distances["merged"],
        feature_model=settings.feature_model,
        features=description,
        samples=count,
        sampler=f"DDIM, {settings.sample_steps} steps, eta 0",
        reference=f"the first {count} test images",
    )


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
    from lmzoo.frechet import INCEPTION, classifier_features, inception_features, load_fid_inception
    from lmzoo.zoo import load

    if recipe.evaluate.feature_model == INCEPTION:
        inception = load_fid_inception()  # raises the same one-line errors as check_inception
        return (
            lambda images: inception_features(inception, (images.clamp(-1, 1) + 1) / 2),
            "Inception-v3 pool3 (2048-d), pytorch-fid's pt_inception-2015-12-05 weights: FID",
        )
    entry = _feature_classifier(recipe)
    feature_data = load_recipe(entry.recipe)[0].data
    classifier = load(entry.name)  # says how to build it when it is missing

    def features(images: torch.Tensor) -> torch.Tensor:
        return classifier_features(
            classifier, _classifier_input((images.clamp(-1, 1) + 1) / 2, recipe.data, feature_data)
        )

    return features, "penultimate layer (pooled, before the classifier); not Inception FID"


def _classifier_input(images01: torch.Tensor, own: Any, feature: Any) -> torch.Tensor:
    """Images in [0, 1] (padded to ``own.pad_to`` with black) as the feature classifier saw its
    training data: its normalisation, its padding value in the border."""
    import lmzoo.data as lmdata

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
