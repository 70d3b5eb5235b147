"""What a build reads besides its work directory: the base architecture (through its source), the
task it is trained for, and the data sets with the recipe's preprocessing and limits, constructed
once per build."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from lmzoo.errors import InvalidArgumentError, LmzooError
from lmzoo.importance.context import ImportanceData
from lmzoo.preprocessing import Preprocessing
from lmzoo.recipes import Recipe
from lmzoo.sources import get_source
from lmzoo.tasks import Task, make_task


class BuildInputs:
    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    @cached_property
    def task(self) -> Task:
        return make_task(self.recipe.model.architecture.task)

    def random_model(self) -> nn.Module:
        """The recipe's base architecture with random weights."""
        m = self.recipe.model
        try:
            get_source(m.source).import_own_code(m.arch)  # the user's own recipe may name their code
            return m.architecture.build()
        except LmzooError as err:
            raise InvalidArgumentError(f"{self.recipe.path}: {err}") from None

    def pretrained_model(self) -> nn.Module:
        """The base with the recipe's pretrained weights (``model.pretrained``)."""
        m = self.recipe.model
        assert m.pretrained is not None
        try:
            get_source(m.source).import_own_code(m.arch)
            return get_source(m.source).load_pretrained(m.pretrained, m.arch, m.kwargs)
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"{self.recipe.path}: {err}") from None

    @cached_property
    def datasets(self) -> tuple[Dataset[Any], Dataset[Any]]:
        """(training split, test split) with the recipe's preprocessing and limits."""
        import lmzoo.data as lmdata

        d = self.recipe.data
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
        elif d.dataset == "image-folder":
            assert d.root is not None
            folder = lmdata.ImageFolderSettings(
                root=d.root, image_size=self.recipe.model.input_size, **d.folder_settings()
            )
            train_set, test_set = lmdata.image_folder("train", folder), lmdata.image_folder("val", folder)
        else:
            size = self.recipe.model.input_size
            train_set = lmdata.imagenet("train", root=d.root, image_size=size, **d.folder_settings())
            test_set = lmdata.imagenet("val", root=d.root, image_size=size, **d.folder_settings())
        return _limit(train_set, d.limit_train, "limit_train"), _limit(test_set, d.limit_test, "limit_test")

    @property
    def preprocessing(self) -> Preprocessing:
        """The evaluation preprocessing of the test split (what the checkpoint records)."""
        dataset = self.test_set
        while isinstance(dataset, Subset):  # the limits
            dataset = dataset.dataset
        return dataset.preprocessing  # type: ignore[attr-defined]

    @property
    def train_set(self) -> Dataset[Any]:
        return self.datasets[0]

    @property
    def test_set(self) -> Dataset[Any]:
        return self.datasets[1]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """One training image (and a timestep for denoising): what the base network is traced with."""
        return self.task.example_inputs(self.train_set)

    def importance_data(self) -> ImportanceData:
        """The recipe's disjoint importance-train and held-out subsets of the training split."""
        from lmzoo.data import subsets

        imp = self.recipe.importance
        split = subsets(
            len(self.train_set),  # type: ignore[arg-type]
            train_fraction=imp.train_fraction,
            heldout_fraction=imp.heldout_fraction,
            seed=imp.seed,
        )
        return ImportanceData(
            train=Subset(self.train_set, split.train.tolist()),
            heldout=Subset(self.train_set, split.heldout.tolist()),
        )


def _limit(dataset: Dataset[Any], limit: int | None, key: str) -> Dataset[Any]:
    if limit is None:
        return dataset
    size = len(dataset)  # type: ignore[arg-type]
    if not 0 < limit <= size:
        raise InvalidArgumentError(f"data.{key} = {limit} does not fit the {size} examples available")
    return Subset(dataset, range(limit))
