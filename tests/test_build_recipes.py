"""`lmzoo build` of the other embedded recipes (smoke profile): the DDPM UNet (denoising metrics, EMA
fine-tuning, a sample grid, a checkpoint that loads as LayerMergeUNet2DModel) and ResNet-34."""

import dataclasses
import json
import shutil

import pytest
import torch
from click.testing import CliRunner

import lmzoo
from lmzoo import pipeline
from lmzoo.checkpoint import INTEGRITY, read_config
from lmzoo.cli import main
from lmzoo.errors import DataNotFoundError
from lmzoo.recipes import load_recipe
from lmzoo.results import results_rows
from lmzoo.testing import random_checkpoint

pytestmark = [
    pytest.mark.integration,  # smoke builds, torchrun, olah and Ray: the integration tier
    pytest.mark.filterwarnings("ignore::lmzoo.ProfileBuildWarning"),  # smoke builds are not entries
]

ENTRY = "ddpm-fmnist-layermerge-1.2x"
BUILT = f"{ENTRY}-smoke"


def test_ddpm_smoke_build(tmp_path, monkeypatch, fid_weights_file):
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))
    # the recipe's Fréchet-distance feature model: a Fashion-MNIST classifier of the zoo (random here)
    feature_model = "mobilenetv2-fmnist-layermerge-1.3x"
    random_checkpoint(tmp_path / "store" / feature_model, source="timm", name=feature_model)
    result = CliRunner().invoke(
        main, ["build", ENTRY, "--profile", "smoke", "--workdir", str(tmp_path / "work")]
    )
    assert result.exit_code == 0, result.output
    directory = tmp_path / "store" / BUILT
    evaluation = json.loads((directory / "evaluation.json").read_text())
    assert (
        evaluation["task"] == "denoising"
        and evaluation["test"]["loss"] > 0
        and evaluation["base_test"]["loss"] > 0
    )
    assert evaluation["merge_relative_error"] < 1e-4
    assert evaluation["samples"] == {
        "count": 4,
        "sampler": "DDIM, 10 steps, eta 0",
        "seed": 0,
        "file": "samples.png",
    }
    assert (directory / "samples.png").stat().st_size > 1000
    frechet = evaluation["frechet"]
    assert frechet["feature_model"] == feature_model and frechet["samples"] == 8
    digest = read_config(tmp_path / "store" / feature_model)[INTEGRITY]["weights_sha256"]
    assert frechet["feature_weights_sha256"] == digest
    (row,) = [r for r in results_rows([directory]) if r["method"] != "base"]
    assert row["frechet_features"] == f"{feature_model}@sha256:{digest[:12]}"
    assert frechet["base"] > 0 and frechet["merged"] > 0 and "not Inception FID" in frechet["features"]
    card = (directory / "README.md").read_text()
    assert "(samples.png)" in card and "denoising loss" in card and "unconditional-image-generation" in card
    assert f"Fréchet distance, {feature_model} features" in card and "not Inception FID" in card
    assert "I = exp(−ΔL/L), ΔL the change of the held-out denoising loss L" in card
    assert "top-1" not in card and "accuracy change" not in card
    model = lmzoo.load(f"local-dir:{directory}")
    assert type(model).__name__ == "LayerMergeUNet2DModel"
    # the checkpoint is a diffusers DDPM pipeline directory, with the schedule it was trained with
    from diffusers import DDPMPipeline

    ddpm = DDPMPipeline.from_pretrained(directory)
    assert ddpm.scheduler.config["num_train_timesteps"] == 1000 and ddpm.scheduler.config["beta_end"] == 0.02
    x, t = torch.randn(1, 1, 32, 32), torch.tensor([250])
    pipe_state, own_state = ddpm.unet.state_dict(), model.state_dict()
    assert pipe_state.keys() == own_state.keys()
    assert all(torch.equal(pipe_state[k], own_state[k]) for k in own_state)  # the same weights, bit for bit
    with torch.no_grad():  # the same function; diffusers may pick another attention kernel (rounding)
        torch.testing.assert_close(ddpm.unet(x, t).sample, model(x, t).sample, rtol=1e-5, atol=1e-6)
    assert "DDPMPipeline.from_pretrained(lmzoo.store.entry_dir" in card

    # the base's held-out loss and Fréchet distance are the same for every plan: cached once, and
    # read back (here a planted record) when another plan is evaluated
    stages = tmp_path / "work" / "ddpm-fmnist-layermerge"
    (base_file,) = stages.glob("evaluate-base-*/evaluation.json")
    assert json.loads(base_file.read_text()) == {"test": evaluation["base_test"], "frechet": frechet["base"]}
    base_file.write_text(json.dumps({"test": {"loss": 123.0}, "frechet": 456.0}))
    for folder in stages.glob("evaluate-*"):
        if not folder.name.startswith("evaluate-base-"):
            shutil.rmtree(folder)
    result = CliRunner().invoke(
        main, ["build", ENTRY, "--profile", "smoke", "--workdir", str(tmp_path / "work")]
    )
    assert result.exit_code == 0, result.output
    again = json.loads((directory / "evaluation.json").read_text())
    assert again["base_test"] == {"loss": 123.0} and again["frechet"]["base"] == 456.0
    assert again["test"] == pytest.approx(evaluation["test"])
    assert again["frechet"]["merged"] == pytest.approx(frechet["merged"], rel=1e-5)
    # the feature classifier rebuilt under its name: both distances are measured again in its features
    # (the planted base record belongs to the old weights), and the record and card name the new ones
    random_checkpoint(tmp_path / "store" / feature_model, source="timm", name=feature_model, seed=1)
    digest = read_config(tmp_path / "store" / feature_model)[INTEGRITY]["weights_sha256"]
    assert digest != frechet["feature_weights_sha256"]
    result = CliRunner().invoke(
        main, ["build", ENTRY, "--profile", "smoke", "--workdir", str(tmp_path / "work")]
    )
    assert result.exit_code == 0, result.output
    rebuilt = json.loads((directory / "evaluation.json").read_text())
    assert rebuilt["frechet"]["feature_weights_sha256"] == digest and rebuilt["test"] == again["test"]
    assert rebuilt["frechet"]["base"] != 456.0 and rebuilt["frechet"]["merged"] != frechet["merged"]
    assert f"(weights sha256 `{digest[:12]}`;" in (directory / "README.md").read_text()
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 32, 32), torch.tensor([10, 500])).sample
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()

    # FID proper (evaluate.feature_model: inception): checked before any stage runs, then computed by
    # a rebuild that reuses every stage up to fine-tuning
    recipe, speedup = load_recipe(ENTRY, "smoke")
    fid_recipe = dataclasses.replace(
        recipe, evaluate=dataclasses.replace(recipe.evaluate, feature_model="inception")
    )
    monkeypatch.setenv("LMZOO_FID_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(DataNotFoundError, match="LMZOO_FID_WEIGHTS"):
        pipeline.build(fid_recipe, speedups=[speedup], workdir=tmp_path / "untouched", progress=False)
    assert not (tmp_path / "untouched").exists()
    monkeypatch.setenv("LMZOO_FID_WEIGHTS", str(fid_weights_file))
    stages: list[str] = []
    pipeline.build(
        fid_recipe, speedups=[speedup], workdir=tmp_path / "work", progress=False, log=stages.append
    )
    finetuned = next(line for line in stages if "fine-tuned" in line)
    assert float(finetuned.split("(")[1].removesuffix(" s)")) < 5, stages  # cached, not trained again
    fid = json.loads((directory / "evaluation.json").read_text())["frechet"]
    assert fid["feature_model"] == "inception" and fid["samples"] == 8 and "FID" in fid["features"]
    assert fid["base"] > 0 and fid["merged"] > 0
    card = (directory / "README.md").read_text()
    assert "| FID (8 samples) |" in card and "type: fid" in card and "Inception-v3 pool3" in card
    base_row, row = results_rows([directory])
    assert row["frechet"] == round(fid["merged"], 4) and base_row["frechet"] == round(fid["base"], 4)
    assert row["frechet_features"] == base_row["frechet_features"] == "inception"


def test_resnet34_smoke_build(tmp_path, monkeypatch):
    entry = "resnet34-fmnist-layermerge-1.6x-smoke"
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))
    result = CliRunner().invoke(main, ["build", entry, "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((tmp_path / "store" / entry / "evaluation.json").read_text())
    assert evaluation["merge_relative_error"] < 1e-4 and 0 <= evaluation["test"]["accuracy"] <= 100
    with pytest.warns(lmzoo.ProfileBuildWarning):
        model = lmzoo.load(entry)
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    # the layer-pruning baseline: ResNet-34's 3x3 convs inside basic blocks keep their shape
    baseline = "resnet34-fmnist-layer-1.3x-smoke"
    result = CliRunner().invoke(main, ["build", baseline, "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    plan = lmzoo.Plan.from_dict(
        json.loads((tmp_path / "store" / baseline / "config.json").read_text())["plan"]
    )
    assert all(b.length == 1 for b in plan) and not plan.linear and any(not b.kept for b in plan)


FOLDER_RECIPE = """
name: tvresnet18-folder-layermerge
description: torchvision resnet18 trained and compressed on a folder of images
model: {{source: torchvision, arch: resnet18, kwargs: {{num_classes: 10}}, input_size: 32}}
data:
  dataset: image-folder
  root: {root}
  mean: [0.286, 0.286, 0.286]
  std: [0.353, 0.353, 0.353]
  crop_pct: 1.0
  augment: false
base: {{epochs: 1, batch_size: 50, lr: 0.05}}
latency: {{runs: 6, warmup: 2, passes: 1, batch_size: 16}}
importance:
  estimator: bn-recalibration
  train_fraction: 0.25
  heldout_fraction: 0.25
  train: {{batch_size: 50}}
  eval_batch_size: 100
solve: {{speedups: [1.2], unreachable: fastest, max_kernel: 7}}
finetune: {{epochs: 1, batch_size: 50}}
evaluate: {{latency_runs: 6, latency_rounds: 2}}
"""


def test_a_torchvision_network_builds_on_a_users_image_folder(tmp_path, monkeypatch):
    """`lmzoo build my-recipe.yaml` on a user's images: a folder of Fashion-MNIST PNGs, ten classes."""
    from PIL import Image

    from lmzoo import data

    train = data.fashion_mnist("train")
    folder = tmp_path / "images"
    for split, count in (("train", 40), ("val", 10)):
        seen = dict.fromkeys(range(10), 0)
        for index in range(len(train)):
            label = int(train.labels[index])
            if seen[label] < count:
                target = folder / split / f"class{label}"
                target.mkdir(parents=True, exist_ok=True)
                Image.fromarray(train.images[index, 0].numpy()).save(target / f"{index}.png")
                seen[label] += 1
            if all(n == count for n in seen.values()):
                break
    recipe = tmp_path / "tvresnet18-folder-layermerge.yaml"
    recipe.write_text(FOLDER_RECIPE.format(root=folder))
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))
    result = CliRunner().invoke(main, ["build", str(recipe), "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    entry = tmp_path / "store" / "tvresnet18-folder-layermerge-1.2x"
    config = json.loads((entry / "config.json").read_text())
    assert config["base"] == {"source": "torchvision", "arch": "resnet18", "kwargs": {"num_classes": 10}}
    evaluation = json.loads((entry / "evaluation.json").read_text())
    assert evaluation["merge_relative_error"] < 1e-4 and evaluation["test"]["heldout"] == 100
    plan = lmzoo.Plan.from_dict(config["plan"])
    assert all(b.kernel <= 7 for b in plan)  # solve.max_kernel
    model = lmzoo.load("tvresnet18-folder-layermerge-1.2x")
    again = lmzoo.load(f"local-dir:{entry}")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x)) and model(x).shape == (2, 10)
    card = (entry / "README.md").read_text()
    assert "resnet18" in card and "Classes in output order: class0, class1" in card
    # the recorded preprocessing is the evaluation's: timm's pipeline on a raw image gives its tensor
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    val = data.image_folder(
        "val",
        data.ImageFolderSettings(
            root=str(folder), image_size=32, mean=(0.286,) * 3, std=(0.353,) * 3, crop_pct=1.0, augment=False
        ),
    )
    path, _ = val.samples[0]
    with Image.open(path) as image:
        assert torch.equal(
            create_transform(**resolve_data_config(model=model))(image.convert("RGB")), val[0][0]
        )
