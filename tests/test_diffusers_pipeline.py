"""A DDPM checkpoint is a diffusers pipeline directory: DDPMPipeline.from_pretrained loads the merged
UNet (lmzoo's ModelMixin class, named in model_index.json) and the training schedule's scheduler
with nothing but lmzoo installed, and lmzoo.load reads the same files."""

import json

import torch
from diffusers import DDPMPipeline, DDPMScheduler

import lmzoo
from lmzoo.tasks import DDPM_SCHEDULE
from lmzoo.testing import random_checkpoint


def test_ddpm_pipeline_from_pretrained_loads_the_merged_unet(tmp_path):
    directory, merged = random_checkpoint(tmp_path / "ddpm", source="diffusers", seed=4)
    index = json.loads((directory / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["unet"] == ["lmzoo", "LayerMergeUNet2DModel"]
    assert not (
        directory / "model.safetensors"
    ).exists()  # the weights are stored once, as diffusers reads them
    pipeline = DDPMPipeline.from_pretrained(directory)
    assert isinstance(pipeline.unet, lmzoo.LayerMergeUNet2DModel)
    assert isinstance(pipeline.scheduler, DDPMScheduler)
    assert {k: pipeline.scheduler.config[k] for k in DDPM_SCHEDULE} == DDPM_SCHEDULE  # the training schedule
    loaded = lmzoo.load(f"local-dir:{directory}")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        want = merged(x, t).sample
        assert torch.equal(pipeline.unet(x, t).sample, want) and torch.equal(loaded(x, t).sample, want)
    images = pipeline(
        batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert images.shape == (2, 16, 16, 3) and (images >= 0).all() and (images <= 1).all()
