"""What a build checks before its first stage runs: the Fréchet feature model of a DDPM recipe is
loaded for real (not only looked up), and the targets asked for are speed-ups; nothing is computed
and the work directory is not created when a check fails."""

import dataclasses

import pytest

import lmzoo
from lmzoo import pipeline
from lmzoo.checkpoint import INTEGRITY, read_config
from lmzoo.data import small_preprocessing
from lmzoo.pipeline.generation import check_feature_model, feature_weights_digest
from lmzoo.recipes import load_recipe
from lmzoo.testing import random_checkpoint

DDPM = "ddpm-fmnist-layermerge-1.2x"
FEATURES = "mobilenetv2-fmnist-layermerge-1.3x"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))
    return tmp_path / "store"


def _build(tmp_path, **kwargs):
    return pipeline.build(DDPM, profile="smoke", workdir=tmp_path / "work", progress=False, **kwargs)


def test_a_missing_feature_model_fails_before_any_stage(store, tmp_path):
    with pytest.raises(
        lmzoo.LmzooError, match=rf"evaluate.feature_model: {FEATURES} is a zoo entry but is not built"
    ):
        _build(tmp_path)
    assert not (tmp_path / "work").exists()


def test_a_damaged_feature_model_fails_before_any_stage(store, tmp_path):
    directory, _ = random_checkpoint(store / FEATURES, name=FEATURES)
    (directory / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(
        lmzoo.LmzooError,
        match=r"evaluate.feature_model: .*model.safetensors is not the file written with its config",
    ):
        _build(tmp_path)
    assert not (tmp_path / "work").exists()


def test_a_feature_model_must_classify_the_same_images(store, tmp_path):
    random_checkpoint(store / FEATURES, name=FEATURES, source="diffusers")  # a denoiser, 3x16x16
    with pytest.raises(
        lmzoo.LmzooError, match="must be 'inception' or a zoo classifier trained on fashion-mnist"
    ):
        _build(tmp_path)
    assert not (tmp_path / "work").exists()
    random_checkpoint(store / FEATURES, name=FEATURES)  # a Fashion-MNIST classifier of 32x32 images
    recipe, _ = load_recipe(DDPM, "smoke")
    check_feature_model(recipe, small_preprocessing("fashion-mnist", "symmetric", 32))
    with pytest.raises(
        lmzoo.LmzooError, match=r"takes \(1, 32, 32\) images, this recipe makes \(1, 28, 28\)"
    ):
        check_feature_model(recipe, small_preprocessing("fashion-mnist", "symmetric"))


def test_the_feature_model_is_named_by_its_weights(store):
    """The evaluate stages' keys and the Fréchet record carry the digest of the classifier's weights:
    the one its config recorded (and `load` checks), other weights under the same name another one."""
    recipe, _ = load_recipe(DDPM, "smoke")
    with pytest.raises(
        lmzoo.LmzooError, match=rf"evaluate.feature_model: {FEATURES} is a zoo entry but is not"
    ):
        feature_weights_digest(recipe)
    digests = []
    for seed in (0, 1):
        directory, _ = random_checkpoint(store / FEATURES, name=FEATURES, seed=seed)
        digests.append(feature_weights_digest(recipe))
        assert digests[-1] == read_config(directory)[INTEGRITY]["weights_sha256"]
    assert digests[0] != digests[1] and all(len(d) == 64 for d in digests)
    for other in ("inception", None):
        assert (
            feature_weights_digest(
                dataclasses.replace(
                    recipe, evaluate=dataclasses.replace(recipe.evaluate, feature_model=other)
                )
            )
            is None
        )


def test_targets_are_speedups(store, tmp_path):
    with pytest.raises(lmzoo.InvalidArgumentError, match=r"speed-ups \[0.5\]: each must be a number above 1"):
        pipeline.build("mobilenetv2-fmnist-layermerge", speedups=[0.5], workdir=tmp_path / "work")
    for speedups, message in (
        ([1e9], "at most 100"),
        ([1.23456789], "at most 6 significant digits"),
        ([1.6, 1.6], "two name the same entry"),
        (["2"], "each must be a number"),
    ):
        with pytest.raises(lmzoo.InvalidArgumentError, match=message):
            pipeline.build("mobilenetv2-fmnist-layermerge", speedups=speedups, workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_a_network_lmzoo_cannot_compress_fails_before_the_base_trains(store, tmp_path):
    """A recipe whose network has nothing to merge (a ViT) or cannot run on its images is refused
    after one trace of a random-weight network, not after the base has trained."""
    recipe = tmp_path / "vit.yaml"
    recipe.write_text(
        "name: vit-fmnist\n"
        "model: {source: timm, arch: vit_tiny_patch16_224, kwargs: {num_classes: 10, in_chans: 1}, "
        "input_size: 32}\n"
        "data: {dataset: fashion-mnist, pad_to: 32, limit_train: 64, limit_test: 64}\n"
        "solve: {speedups: [1.5]}\n"
    )
    with pytest.raises(lmzoo.InvalidArgumentError, match=r"model vit_tiny_patch16_224: .* no convolution"):
        pipeline.build(str(recipe), workdir=tmp_path / "work", progress=False)
    assert not list((tmp_path / "work").rglob("*.safetensors"))
