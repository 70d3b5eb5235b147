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
from lmzoo.preprocessing import Preprocessing

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
FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
)  # fmt: skip
CIFAR10_LABELS = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)  # fmt: skip
#: the small data sets: (side of the stored images, mean, std, class names)
SMALL_DATASETS = {
    "fashion-mnist": (28, FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_LABELS),
    "cifar10": (32, CIFAR10_MEAN, CIFAR10_STD, CIFAR10_LABELS),
}
SPLITS = ("train", "test")


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """uint8 images (N, C, H, W) and integer labels in memory, prepared on access exactly as
    ``preprocessing`` says: padded to its input size with its fill colour ("border"), scaled to
    [0, 1] and normalised. These are the tensors timm's transform of the same record
    (:meth:`lmzoo.preprocessing.Preprocessing.transform`) makes from the PIL images, bit for bit."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        preprocessing: Preprocessing,
        *,
        name: str = "images",
    ) -> None:
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
            raise InvalidArgumentError(f"{name}: expected uint8 images (N, C, H, W) and N labels")
        channels, height, width = preprocessing.input_size
        if images.shape[1] != channels or images.shape[2] > height or images.shape[3] > width:
            raise InvalidArgumentError(
                f"{name}: images of shape {images.shape[1:]} do not fit the input {preprocessing.input_size}"
            )
        if images.shape[2:] != (height, width) and preprocessing.crop_mode != "border":
            raise InvalidArgumentError(f"{name}: smaller images need a border preprocessing to pad them")
        self.images = torch.from_numpy(np.array(images, copy=True, order="C"))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.preprocessing = preprocessing
        self.mean = torch.tensor(preprocessing.mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(preprocessing.std, dtype=torch.float32).view(-1, 1, 1)
        self.name = name
        extra_h, extra_w = height - images.shape[2], width - images.shape[3]
        self._top, self._left = extra_h // 2, extra_w // 2  # timm's center_crop_or_pad split
        self._canvas = torch.tensor(preprocessing.fill or (0,) * channels, dtype=torch.uint8).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        channels, height, width = self.preprocessing.input_size
        if image.shape[1:] != (height, width):
            canvas = self._canvas.expand(channels, height, width).clone()
            canvas[:, self._top : self._top + image.shape[1], self._left : self._left + image.shape[2]] = (
                image
            )
            image = canvas
        # ToTensor then Normalize, the same operations in the same order as torchvision's
        x = image.to(dtype=torch.float32).div(255).sub_(self.mean).div_(self.std)
        return x, int(self.labels[index])

    @property
    def classes(self) -> list[str]:
        names = self.preprocessing.label_names
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    @property
    def num_classes(self) -> int:
        return self.preprocessing.num_classes or int(self.labels.max()) + 1

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.preprocessing.input_size

    def image(self, index: int) -> Any:
        """Image ``index`` as the PIL image a user of the raw data set would hold (for timm's
        transforms; tests compare them with this data set's tensors)."""
        from PIL import Image

        array = self.images[index].numpy()
        return Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0))


# -- Fashion-MNIST --------------------------------------------------------------------------------


def fashion_mnist(
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    pad_to: int | None = None,
    normalize: str = "standard",
) -> ImageDataset:
    """Fashion-MNIST ``split`` ("train": 60,000 images, "test": 10,000), 1x28x28, 10 classes;
    ``pad_to`` and ``normalize`` as :func:`small_preprocessing` says."""
    _check_split(split)
    images_name, labels_name = FASHION_MNIST_FILES[split]
    places = _fashion_mnist_places(root)
    for place in places:
        if (place / images_name).is_file() and (place / labels_name).is_file():
            images = read_idx(place / images_name)
            labels = read_idx(place / labels_name)
            preprocessing = small_preprocessing("fashion-mnist", normalize, pad_to)
            return ImageDataset(images[:, None], labels, preprocessing, name=f"fashion-mnist/{split}")
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


def small_preprocessing(
    dataset: str, normalize: str = "standard", pad_to: int | None = None
) -> Preprocessing:
    """The preprocessing of Fashion-MNIST or CIFAR-10 images (:mod:`lmzoo.preprocessing`).

    ``normalize="standard"``: the data set's mean and std; ``pad_to`` pads the images to that square
    size with the mean colour (timm's "border" crop mode, so timm's transform reproduces it).
    ``"symmetric"``: pixels mapped to [-1, 1] as DDPM expects, padding black."""
    if dataset not in SMALL_DATASETS:
        raise InvalidArgumentError(f"no image statistics for {dataset!r}; known: {', '.join(SMALL_DATASETS)}")
    native, mean, std, labels = SMALL_DATASETS[dataset]
    if normalize == "symmetric":
        mean, std, fill = (0.5,) * len(mean), (0.5,) * len(std), (0,) * len(mean)
    elif normalize == "standard":
        fill = None  # the mean colour
    else:
        raise InvalidArgumentError(f"normalize must be 'standard' or 'symmetric', got {normalize!r}")
    size = max(native, pad_to or native)
    return Preprocessing.padded(
        native,
        (len(mean), size, size),
        mean,
        std,
        fill=fill,
        num_classes=len(labels),
        label_names=labels,
    )


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
    preprocessing = small_preprocessing("cifar10", normalize)
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
            return ImageDataset(images.reshape(-1, 3, 32, 32), labels, preprocessing, name=f"cifar10/{split}")
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
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int = 224,
    **settings: Any,
) -> Dataset[Any]:
    """ImageNet ``split`` ("train" or "val") in ImageFolder layout (ROOT/train/<wnid>/*.JPEG), with the
    paper's preprocessing (:class:`ImageFolderSettings`' defaults: random-resized crop and flip for
    training; resize 256, centre crop 224, bilinear, for evaluation, also used for held-out importance
    subsets as in the official code). ``settings``: other ImageFolderSettings fields (interpolation,
    crop_pct, mean, std)."""
    if split not in ("train", "val"):
        raise InvalidArgumentError(f"ImageNet split must be 'train' or 'val', got {split!r}")
    base = Path(root) if root is not None else _data_home() / "imagenet"
    folder_settings = ImageFolderSettings(root=str(base), image_size=image_size, **settings)
    for folder in (base / folder_settings.train_dir, base / folder_settings.val_dir):
        if not folder.is_dir() or not any(folder.iterdir()):
            raise DataNotFoundError(
                f"ImageNet images not found in {folder} (ImageFolder layout: {folder}/<class>/<image>). "
                "ImageNet needs a licence from image-net.org; pass root= or set LMZOO_DATA"
            )
    return image_folder(split, folder_settings)


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
    #: the paper's ImageNet evaluation (torchvision's Resize(256) + CenterCrop(224))
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    augment: bool = True

    def preprocessing(self, label_names: Sequence[str]) -> Preprocessing:
        """The evaluation preprocessing these settings describe (timm's centre-crop transform)."""
        mean = self.mean or (IMAGENET_MEAN if self.channels == 3 else (sum(IMAGENET_MEAN) / 3,))
        std = self.std or (IMAGENET_STD if self.channels == 3 else (sum(IMAGENET_STD) / 3,))
        return Preprocessing(
            input_size=(self.channels, self.image_size, self.image_size),
            mean=tuple(mean),
            std=tuple(std),
            interpolation=self.interpolation,
            crop_pct=self.crop_pct,
            num_classes=len(label_names),
            label_names=tuple(label_names),
        )


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
    preprocessing = settings.preprocessing(classes["val"])
    if split == "train" and settings.augment:
        transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(
                    settings.image_size, interpolation=transforms.InterpolationMode(settings.interpolation)
                ),
                transforms.RandomHorizontalFlip(),
                transforms.ToImage(),
                transforms.ToDtype(torch.float32, scale=True),
                transforms.Normalize(preprocessing.mean, preprocessing.std),
            ]
        )
    else:  # timm's evaluation transform of the recorded preprocessing: what a user of the model runs
        transform = preprocessing.transform()
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

    dataset = datasets.ImageFolder(str(folders[split]), transform=transform, loader=load)
    dataset.preprocessing = preprocessing
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
