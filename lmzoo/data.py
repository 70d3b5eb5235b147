"""Data sets for tables, fine-tuning and evaluation (DESIGN §6, §8).

- Fashion-MNIST from the standard idx ``.gz`` files: a given directory, ``$LMZOO_DATA``, the Debian
  package location (``apt-get install dataset-fashion-mnist``), or a torchvision download where a
  network exists;
- CIFAR-10 in torchvision's layout (``cifar-10-batches-py``), read with an unpickler that only admits
  numpy arrays and plain containers (the files are pickles; nothing else is ever unpickled);
- ImageNet in ImageFolder layout with the paper's preprocessing.

Importance tables use deterministic, disjoint subsets of the training split (``subsets``); final
numbers use the test split. Missing data raises DataNotFoundError naming where lmzoo looked and how
to get the data.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from lmzoo.errors import DataNotFoundError, InvalidArgumentError

#: where the Debian package dataset-fashion-mnist installs the idx files
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: per-channel statistics of the Fashion-MNIST training images (pixel values in [0, 1])
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: side of the stored images of the small data sets, before any ``pad_to``
NATIVE_SIZE = {"fashion-mnist": 28, "cifar10": 32}
_STATISTICS = {
    "fashion-mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
}
SPLITS = ("train", "test")


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """uint8 images (N, C, H, W) and integer labels in memory, normalised on access.

    ``pad_to`` zero-pads (after normalisation, so the border is the data mean) to a square size,
    e.g. 32 for a DDPM UNet on 28x28 Fashion-MNIST.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        pad_to: int | None = None,
        pad_value: float = 0.0,
        name: str = "images",
    ) -> None:
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
            raise InvalidArgumentError(f"{name}: expected uint8 images (N, C, H, W) and N labels")
        self.images = torch.from_numpy(np.array(images, copy=True, order="C"))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.pad_to = pad_to
        self.pad_value = pad_value
        self.name = name

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = (self.images[index].float() / 255.0 - self.mean) / self.std
        if self.pad_to is not None:
            extra_h, extra_w = self.pad_to - x.shape[-2], self.pad_to - x.shape[-1]
            x = torch.nn.functional.pad(
                x,
                (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2),
                value=self.pad_value,
            )
        return x, int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        x, _ = self[0]
        return (int(x.shape[0]), int(x.shape[1]), int(x.shape[2]))


# -- Fashion-MNIST --------------------------------------------------------------------------------


def fashion_mnist(
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    pad_to: int | None = None,
    normalize: str = "standard",
) -> ImageDataset:
    """Fashion-MNIST ``split`` ("train": 60,000 images, "test": 10,000), 1x28x28, 10 classes.

    ``normalize="standard"`` uses the data set's mean and std (padding is 0, the mean);
    ``"symmetric"`` maps pixels to [-1, 1] as DDPM expects (padding is -1, black)."""
    _check_split(split)
    images_name, labels_name = FASHION_MNIST_FILES[split]
    places = _fashion_mnist_places(root)
    for place in places:
        if (place / images_name).is_file() and (place / labels_name).is_file():
            images = read_idx(place / images_name)
            labels = read_idx(place / labels_name)
            mean, std, pad_value = normalization("fashion-mnist", normalize)
            return ImageDataset(
                images[:, None],
                labels,
                mean=mean,
                std=std,
                pad_to=pad_to,
                pad_value=pad_value,
                name=f"fashion-mnist/{split}",
            )
    if download:
        return _download_fashion_mnist(split, Path(root or _data_home() / "fashion-mnist"), pad_to, normalize)
    looked = ", ".join(str(p) for p in places)
    raise DataNotFoundError(
        f"Fashion-MNIST ({images_name}, {labels_name}) not found in: {looked}. Get it with "
        "`apt-get install dataset-fashion-mnist` (Debian, offline), put the four idx .gz files in a "
        "directory and pass it (or set LMZOO_DATA), or pass download=True where a network exists"
    )


def _fashion_mnist_places(root: str | os.PathLike[str] | None) -> list[Path]:
    places = []
    if root is not None:
        places += [Path(root), Path(root) / "fashion-mnist", Path(root) / "FashionMNIST" / "raw"]
    home = _data_home()
    places += [home / "fashion-mnist", home / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]
    return places


def normalization(dataset: str, normalize: str) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    """(mean, std, padding value) this module normalises ``dataset``'s images with under ``normalize``
    ("standard": the data set's statistics, padding with the mean, i.e. 0; "symmetric": [-1, 1],
    padding black)."""
    if dataset not in _STATISTICS:
        raise InvalidArgumentError(f"no image statistics for {dataset!r}; known: {', '.join(_STATISTICS)}")
    return _normalization(normalize, *_STATISTICS[dataset])


def _normalization(
    normalize: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    if normalize == "standard":
        return mean, std, 0.0
    if normalize == "symmetric":
        return (0.5,) * len(mean), (0.5,) * len(std), -1.0
    raise InvalidArgumentError(f"normalize must be 'standard' or 'symmetric', got {normalize!r}")


def _download_fashion_mnist(split: str, root: Path, pad_to: int | None, normalize: str) -> ImageDataset:
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(root), train=split == "train", download=True)
    except Exception as err:  # any network failure becomes one actionable error
        raise DataNotFoundError(
            f"downloading Fashion-MNIST into {root} failed ({err}); on Debian use "
            "`apt-get install dataset-fashion-mnist` instead"
        ) from None
    return fashion_mnist(split, root=root / "FashionMNIST" / "raw", pad_to=pad_to, normalize=normalize)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An idx file (optionally gzipped): magic (0, 0, type, ndim), big-endian dims, then data.
    Kept instead of torchvision.datasets.mnist's reader, which opens only uncompressed files (the
    Debian package ships .gz) and reports truncated or foreign files with bare assertions."""
    path = Path(path)
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataNotFoundError(f"cannot read {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataNotFoundError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if data.size != int(np.prod(dims)):
        raise DataNotFoundError(
            f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}"
        )
    return data.reshape(dims)


# -- CIFAR-10 -------------------------------------------------------------------------------------

_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def cifar10(
    split: str = "train", *, root: str | os.PathLike[str] | None = None, normalize: str = "standard"
) -> ImageDataset:
    """CIFAR-10 ``split`` from torchvision's layout (``ROOT/cifar-10-batches-py``), 3x32x32;
    ``normalize`` as for :func:`fashion_mnist` ("symmetric" for DDPM)."""
    mean, std, _ = normalization("cifar10", normalize)
    _check_split(split)
    candidates = [Path(root)] if root is not None else []
    candidates.append(_data_home())
    for place in candidates:
        folder = place / "cifar-10-batches-py" if (place / "cifar-10-batches-py").is_dir() else place
        files = [folder / name for name in _CIFAR_FILES[split]]
        if all(f.is_file() for f in files):
            batches = [_safe_unpickle(f.read_bytes(), f) for f in files]
            images = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
            labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
            return ImageDataset(
                images.reshape(-1, 3, 32, 32),
                labels,
                mean=mean,
                std=std,
                name=f"cifar10/{split}",
            )
    looked = ", ".join(str(p) for p in candidates)
    raise DataNotFoundError(
        f"CIFAR-10 ({split}) not found in: {looked}. Download and extract "
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into one of them (torchvision's "
        "layout: cifar-10-batches-py/), then pass root= or set LMZOO_DATA"
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and plain containers only: a CIFAR-10 batch cannot run code."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _safe_unpickle(blob: bytes, path: Path) -> dict[str, Any]:
    try:
        data = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataNotFoundError(f"{path} is not a CIFAR-10 batch file: {err}") from None
    if not isinstance(data, dict) or "data" not in data or "labels" not in data:
        raise DataNotFoundError(f"{path} is not a CIFAR-10 batch file (no data/labels)")
    return data


# -- ImageNet -------------------------------------------------------------------------------------


def imagenet(
    split: str = "train", *, root: str | os.PathLike[str] | None = None, image_size: int = 224
) -> Dataset[Any]:
    """ImageNet ``split`` ("train" or "val") in ImageFolder layout (ROOT/train/<wnid>/*.JPEG), with the
    paper's preprocessing: random-resized crop and flip for training, resize 256 + centre crop 224
    for evaluation (also used for held-out importance subsets, as in the official code)."""
    from torchvision import datasets, transforms

    if split not in ("train", "val"):
        raise InvalidArgumentError(f"ImageNet split must be 'train' or 'val', got {split!r}")
    base = Path(root) if root is not None else _data_home() / "imagenet"
    folder = base / split
    if not folder.is_dir() or not any(folder.iterdir()):
        raise DataNotFoundError(
            f"ImageNet {split} images not found in {folder} (ImageFolder layout: {folder}/<class>/<image>). "
            "ImageNet needs a licence from image-net.org; pass root= or set LMZOO_DATA"
        )
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if split == "train":
        transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
    else:
        resize = round(image_size * 256 / 224)
        transform = transforms.Compose(
            [transforms.Resize(resize), transforms.CenterCrop(image_size), transforms.ToTensor(), normalize]
        )
    return datasets.ImageFolder(str(folder), transform=transform)


# -- a user's image folder ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFolderSettings:
    """A user's images in ImageFolder layout (ROOT/TRAIN_DIR/<class>/<image>, the same classes under
    VAL_DIR) and timm-style transforms: evaluation resizes to ``image_size / crop_pct`` and crops the
    centre; training takes random-resized crops and flips (``augment``) or the evaluation transform."""

    root: str
    train_dir: str = "train"
    val_dir: str = "val"
    image_size: int = 224
    #: None: ImageNet's statistics (for 1 channel, their mean)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int = 3
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    augment: bool = True


def image_folder(split: str, settings: ImageFolderSettings) -> Dataset[Any]:
    """The ``"train"`` or ``"val"`` split of a user's image folder (checked: both folders exist, hold
    images, name the same classes, and their first images read)."""
    from torchvision import datasets
    from torchvision.transforms import v2 as transforms

    if split not in ("train", "val"):
        raise InvalidArgumentError(f"image-folder split must be 'train' or 'val', got {split!r}")
    root = Path(settings.root)
    folders = {name: root / getattr(settings, f"{name}_dir") for name in ("train", "val")}
    classes = {name: _class_folders(folder) for name, folder in folders.items()}
    if classes["train"] != classes["val"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        raise InvalidArgumentError(
            f"{folders['train']} and {folders['val']} must hold the same class folders; only in train: "
            f"{', '.join(only_train[:5]) or '-'}; only in val: {', '.join(only_val[:5]) or '-'}"
        )
    mean = settings.mean or (IMAGENET_MEAN if settings.channels == 3 else (sum(IMAGENET_MEAN) / 3,))
    std = settings.std or (IMAGENET_STD if settings.channels == 3 else (sum(IMAGENET_STD) / 3,))
    interpolation = transforms.InterpolationMode(settings.interpolation)
    size = settings.image_size
    tail = [
        transforms.ToImage(),
        transforms.ToDtype(torch.float32, scale=True),
        transforms.Normalize(mean, std),
    ]
    if split == "train" and settings.augment:
        head = [
            transforms.RandomResizedCrop(size, interpolation=interpolation),
            transforms.RandomHorizontalFlip(),
        ]
    else:
        head = [
            transforms.Resize(int(size / settings.crop_pct), interpolation=interpolation),
            transforms.CenterCrop(size),
        ]
    color = "L" if settings.channels == 1 else "RGB"

    def load(path: str) -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            with open(path, "rb") as handle:
                return Image.open(handle).convert(color)
        except (OSError, UnidentifiedImageError) as err:
            raise DataNotFoundError(
                f"the image {path} cannot be read ({err}); remove or replace it"
            ) from None

    dataset = datasets.ImageFolder(
        str(folders[split]), transform=transforms.Compose(head + tail), loader=load
    )
    for cls_index in range(len(dataset.classes)):  # the first image of every class reads, or fail now
        first = next(i for i, (_, label) in enumerate(dataset.samples) if label == cls_index)
        load(dataset.samples[first][0])
    return dataset


def _class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataNotFoundError(
            f"the image folder {folder} does not exist; lay the images out as {folder}/<class>/<image>"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    extensions = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
    empty = [c for c in classes if not any(f.suffix.lower() in extensions for f in (folder / c).iterdir())]
    if not classes or empty:
        raise DataNotFoundError(
            f"{folder} holds no images"
            + (f" in {', '.join(empty[:5])}" if empty else "")
            + f"; lay them out as {folder}/<class>/<image>"
        )
    return classes


# -- subsets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subsets:
    """Disjoint index sets of the training split: ``train`` (importance fine-tuning) and ``heldout``
    (importance measurement). Only held-out numbers feed the DP."""

    train: np.ndarray
    heldout: np.ndarray


def subsets(
    size: int, *, train_fraction: float, heldout_fraction: float | None = None, seed: int = 0
) -> Subsets:
    """Deterministic, disjoint subsets of ``range(size)`` (same seed → same indices on every machine).

    Paper defaults: 4 % each for classification, 1 % each for CIFAR-10 DDPM.
    """
    heldout_fraction = train_fraction if heldout_fraction is None else heldout_fraction
    for name, value in (("train_fraction", train_fraction), ("heldout_fraction", heldout_fraction)):
        if not 0 < value <= 1:
            raise InvalidArgumentError(f"{name} must be in (0, 1], got {value}")
    n_train, n_heldout = round(size * train_fraction), round(size * heldout_fraction)
    if n_train < 1 or n_heldout < 1 or n_train + n_heldout > size:
        raise InvalidArgumentError(
            f"subsets of {train_fraction:.2%} + {heldout_fraction:.2%} do not fit in {size} training examples"
        )
    order = np.random.Generator(np.random.PCG64(seed)).permutation(size)
    return Subsets(train=np.sort(order[:n_train]), heldout=np.sort(order[n_train : n_train + n_heldout]))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidArgumentError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def _data_home() -> Path:
    return Path(os.environ.get("LMZOO_DATA", Path.home() / ".cache" / "lmzoo" / "data"))
