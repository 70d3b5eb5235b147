"""The preprocessing a checkpoint records is the one its data was evaluated with, and timm's own helpers
rebuild it from the loaded model: ``create_transform(**resolve_data_config(model=model))`` turns the
raw images into exactly lmzoo's tensors, so it gives the same accuracy."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.data import create_transform, resolve_data_config
from torch.utils.data import Subset

import lmzoo
from lmzoo import data
from lmzoo.checkpoint import CheckpointError
from lmzoo.preprocessing import Preprocessing, PreprocessingError
from lmzoo.tasks import make_task
from lmzoo.testing import random_checkpoint


def _timm_tensors(dataset, indices, config):
    transform = create_transform(**config)
    return torch.stack([transform(dataset.image(i)) for i in indices])


@settings(max_examples=25, deadline=None)
@given(
    dataset=st.sampled_from(["fashion-mnist", "cifar10"]),
    extra=st.integers(0, 13),
    normalize=st.sampled_from(["standard", "symmetric"]),
    seed=st.integers(0, 2**16),
)
def test_the_data_sets_tensors_are_timms_transform_of_their_images(dataset, extra, normalize, seed):
    """Bit for bit, for padded and unpadded sizes (odd paddings included): timm's eval transform of
    the recorded config, applied to the PIL images, gives the tensors lmzoo trains and evaluates on."""
    native, mean, _, _ = data.SMALL_DATASETS[dataset]
    preprocessing = data.small_preprocessing(dataset, normalize, native + extra)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (6, len(mean), native, native), dtype=np.uint8)
    images[:, :, :2] = 0  # black rows: a DDPM's black border and the mean colour must not be mixed up
    ds = data.ImageDataset(images, rng.integers(0, 10, 6), preprocessing)
    ours = torch.stack([ds[i][0] for i in range(6)])
    assert ours.shape[1:] == preprocessing.input_size
    if preprocessing.timm_reproduces:
        timm = _timm_tensors(ds, range(6), resolve_data_config(pretrained_cfg=preprocessing.timm_config()))
        assert torch.equal(ours, timm)
    else:  # symmetric with padding: the border is black, i.e. -1, which timm's mean-colour pad is not
        assert normalize == "symmetric" and extra > 0
        assert bool((ours[..., 0, :] == -1).all())


def test_fashion_mnist_records_what_the_card_states():
    test = data.fashion_mnist("test", pad_to=32)
    p = test.preprocessing
    assert p.input_size == (1, 32, 32) and p.mean == (0.2860,) and p.std == (0.3530,)
    assert p.crop_mode == "border" and p.fill == (73,) and p.native_size == 28 and p.num_classes == 10
    assert p.label_names[0] == "T-shirt/top" and test.classes[9] == "Ankle boot"
    assert p.describe().startswith("1 channel, 28×28 images padded to 32×32 with pixel value 73")
    assert Preprocessing.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_a_loaded_classifier_carries_its_preprocessing_for_timms_helpers(tmp_path):
    """The merged network's pretrained_cfg is the checkpoint's preprocessing (not timm's inherited
    ImageNet one), and timm's pipeline over raw test images gives lmzoo's evaluation, to the image."""
    directory, _ = random_checkpoint(tmp_path / "entry")
    model = lmzoo.load(f"local-dir:{directory}")
    config = resolve_data_config(model=model)
    assert config == {
        "input_size": (1, 32, 32),
        "interpolation": "bilinear",
        "mean": (0.2860,),
        "std": (0.3530,),
        "crop_pct": config["crop_pct"],
        "crop_mode": "border",
    }
    assert model.pretrained_cfg["num_classes"] == 10 and model.pretrained_cfg["label_names"][1] == "Trouser"
    assert "hf_hub_id" not in model.pretrained_cfg and model.default_cfg is model.pretrained_cfg
    test = data.fashion_mnist("test", pad_to=32)
    subset = range(96)
    timm_inputs = _timm_tensors(test, subset, config)
    labels = torch.tensor([test[i][1] for i in subset])
    with torch.no_grad():
        timm_predictions = model(timm_inputs).argmax(1)
    ours = make_task("classification").evaluate(model, Subset(test, list(subset)), device=torch.device("cpu"))
    assert ours["accuracy"] == pytest.approx(100.0 * float((timm_predictions == labels).float().mean()))


def test_a_malformed_or_inconsistent_preprocessing_is_a_checkpoint_error(tmp_path):
    directory, _ = random_checkpoint(tmp_path / "entry")
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    for damage, message in (
        ({"mean": "grey"}, "mean and std are lists of numbers"),
        ({"input_size": [1, 28, 28]}, "differs from 'input_size'"),
        ({"crop_mode": "zoom"}, "crop_mode must be one of center, border"),
        ({"extra": 1}, "unknown key 'extra'"),
    ):
        config_path.write_text(json.dumps({**config, "preprocessing": {**config["preprocessing"], **damage}}))
        with pytest.raises(CheckpointError, match=message):
            lmzoo.load(f"local-dir:{directory}")
    older = {k: v for k, v in config.items() if k not in ("preprocessing", "integrity")}  # an earlier version
    config_path.write_text(json.dumps(older))
    assert not hasattr(lmzoo.load(f"local-dir:{directory}"), "lmzoo_preprocessing")


def test_preprocessing_records_are_validated():
    with pytest.raises(PreprocessingError, match="one value per channel"):
        Preprocessing((3, 8, 8), (0.5,), (0.5,))
    with pytest.raises(PreprocessingError, match="one name per class"):
        Preprocessing((1, 8, 8), (0.5,), (0.5,), num_classes=3, label_names=("a",))


@pytest.mark.parametrize("interpolation", [None, "bicubic"])
def test_imagenet_evaluation_is_the_recorded_config(tmp_path, interpolation):
    """ImageNet's evaluation transform is timm's transform of the config the checkpoint records: the
    paper's bilinear resize 256 + centre crop 224 by default, the recipe's interpolation when set."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            (tmp_path / split / cls).mkdir(parents=True)
            pixels = rng.integers(0, 256, (260, 300, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / split / cls / "a.png")
    overrides = {"interpolation": interpolation} if interpolation else {}
    val = data.imagenet("val", root=tmp_path, **overrides)
    assert val.preprocessing.interpolation == (interpolation or "bilinear")
    assert val.preprocessing.crop_pct == 0.875 and val.preprocessing.label_names == ("n01", "n02")
    config = resolve_data_config(pretrained_cfg=val.preprocessing.timm_config())
    assert config["interpolation"] == (interpolation or "bilinear")
    with Image.open(tmp_path / "val" / "n02" / "a.png") as image:
        expected = create_transform(**config)(image.convert("RGB"))
    assert torch.equal(val[1][0], expected)
