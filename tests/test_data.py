import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from lmzoo import data
from lmzoo.errors import DataNotFoundError, InvalidArgumentError


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion_mnist(folder, n=50, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for images, labels in data.FASHION_MNIST_FILES.values():
        _write_idx(folder / images, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / labels, rng.integers(0, 10, (n,)))


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setenv("LMZOO_DATA", str(tmp_path / "no-home"))


def test_fashion_mnist_from_a_directory(tmp_path, no_system_data):
    _fake_fashion_mnist(tmp_path / "fm", n=50)
    train = data.fashion_mnist("train", root=tmp_path / "fm")
    assert len(train) == 50 and train.sample_shape == (1, 28, 28)
    x, y = train[3]
    raw = torch.from_numpy(data.read_idx(tmp_path / "fm" / "train-images-idx3-ubyte.gz")[3]).float() / 255
    assert torch.allclose(x[0], (raw - 0.2860) / 0.3530) and 0 <= y < 10
    padded = data.fashion_mnist("test", root=tmp_path / "fm", pad_to=32)
    assert padded.sample_shape == (1, 32, 32)
    assert torch.allclose(
        padded[0][0][0, 2:30, 2:30], data.fashion_mnist("test", root=tmp_path / "fm")[0][0][0]
    )


def test_fashion_mnist_from_lmzoo_data(tmp_path, monkeypatch, no_system_data):
    _fake_fashion_mnist(tmp_path / "home" / "fashion-mnist", n=20)
    monkeypatch.setenv("LMZOO_DATA", str(tmp_path / "home"))
    assert len(data.fashion_mnist("test")) == 20


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_get_it(tmp_path, no_system_data):
    with pytest.raises(DataNotFoundError) as err:
        data.fashion_mnist("train", root=tmp_path / "empty")
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "no-debian" in message
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message


@pytest.mark.skipif(
    not data.DEBIAN_FASHION_MNIST.is_dir(), reason="the Debian dataset-fashion-mnist package is absent"
)
def test_real_fashion_mnist_from_the_debian_package():
    train, test = data.fashion_mnist("train"), data.fashion_mnist("test")
    assert (len(train), len(test), train.num_classes) == (60000, 10000, 10)
    mean = train.images[:5000].float().mean() / 255
    assert abs(mean - data.FASHION_MNIST_MEAN[0]) < 0.01


def test_corrupt_idx_files_are_clear_errors(tmp_path):
    _write_idx(tmp_path / "ok.gz", np.zeros((4, 2, 2)))
    truncated = gzip.decompress((tmp_path / "ok.gz").read_bytes())[:-3]
    (tmp_path / "short.gz").write_bytes(gzip.compress(truncated))
    with pytest.raises(DataNotFoundError, match="truncated"):
        data.read_idx(tmp_path / "short.gz")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(DataNotFoundError, match="not an idx file"):
        data.read_idx(tmp_path / "bad.gz")


def _fake_cifar(folder, n=10):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            "labels": list(rng.integers(0, 10, n)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar10_torchvision_layout(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    train = data.cifar10("train", root=tmp_path)
    assert len(train) == 50 and train.sample_shape == (3, 32, 32)
    assert len(data.cifar10("test", root=tmp_path)) == 10


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/lmzoo-pwned",))


def test_cifar10_files_cannot_run_code(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({"data": _Evil(), "labels": []})
    )
    with pytest.raises(DataNotFoundError, match=r"refusing to load posix\.system"):
        data.cifar10("test", root=tmp_path)
    assert not os.path.exists("/tmp/lmzoo-pwned")


def test_missing_cifar10_and_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("LMZOO_DATA", str(tmp_path / "home"))
    with pytest.raises(DataNotFoundError, match=r"cifar-10-python\.tar\.gz"):
        data.cifar10("train", root=tmp_path)
    with pytest.raises(DataNotFoundError, match="ImageFolder layout"):
        data.imagenet("val", root=tmp_path)


def test_imagenet_folder_with_the_papers_preprocessing(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (300, 260), color=(10, 200, 30)).save(tmp_path / split / cls / "a.png")
    val = data.imagenet("val", root=tmp_path)
    x, y = val[1]
    assert x.shape == (3, 224, 224) and y == 1


def test_subsets_are_deterministic_disjoint_and_checked():
    a = data.subsets(60000, train_fraction=0.04, seed=3)
    b = data.subsets(60000, train_fraction=0.04, seed=3)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.heldout, b.heldout)
    assert len(a.train) == len(a.heldout) == 2400 and not set(a.train) & set(a.heldout)
    assert not np.array_equal(a.train, data.subsets(60000, train_fraction=0.04, seed=4).train)
    with pytest.raises(InvalidArgumentError, match="do not fit"):
        data.subsets(100, train_fraction=0.6)
    with pytest.raises(InvalidArgumentError, match="must be in"):
        data.subsets(100, train_fraction=0.0)


def _image_folder(root, classes=("bag", "boot", "shirt"), per_class=4, size=20, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_an_image_folder_with_timm_style_transforms(tmp_path):
    root = _image_folder(tmp_path / "images")
    settings = data.ImageFolderSettings(
        root=str(root), image_size=16, mean=(0.5,), std=(0.25,), channels=1, crop_pct=0.8, augment=False
    )
    train, val = data.image_folder("train", settings), data.image_folder("val", settings)
    assert len(train) == len(val) == 12 and train.classes == ["bag", "boot", "shirt"]
    x, y = val[5]
    assert x.shape == (1, 16, 16) and y == 1
    from PIL import Image

    with Image.open(root / "val" / "boot" / "1.png") as image:  # resized to 16 / 0.8 = 20: unchanged
        pixels = torch.from_numpy(np.array(image, dtype=np.float32) / 255)
    expected = (pixels[2:18, 2:18] - 0.5) / 0.25  # the centre crop
    torch.testing.assert_close(x[0], expected, atol=1e-6, rtol=0)
    rgb = data.image_folder("train", data.ImageFolderSettings(root=str(root), image_size=16))
    assert rgb[0][0].shape == (3, 16, 16)


def test_bad_image_folders_say_what_is_wrong(tmp_path):
    settings = data.ImageFolderSettings(root=str(tmp_path / "none"))
    with pytest.raises(DataNotFoundError, match="does not exist; lay the images out as"):
        data.image_folder("train", settings)
    root = _image_folder(tmp_path / "a")
    (root / "val" / "bag").rename(root / "val" / "bags")
    with pytest.raises(InvalidArgumentError, match="only in train: bag; only in val: bags"):
        data.image_folder("train", data.ImageFolderSettings(root=str(root)))
    root = _image_folder(tmp_path / "b")
    for image in (root / "train" / "boot").iterdir():
        image.unlink()
    with pytest.raises(DataNotFoundError, match="holds no images in boot"):
        data.image_folder("train", data.ImageFolderSettings(root=str(root)))
    root = _image_folder(tmp_path / "c")
    (root / "train" / "shirt" / "0.png").write_bytes(b"not an image")
    with pytest.raises(DataNotFoundError, match=r"0\.png cannot be read"):
        data.image_folder("train", data.ImageFolderSettings(root=str(root)))
