"""Sources: where a base network comes from. Checkpoints of torchvision networks and of a user's
factory save and load exactly; a factory is imported for the user's own store only, never because a
checkpoint names it."""

import random
import sys

import pytest
import torch

import lmzoo
from lmzoo.checkpoint import CheckpointError, checkpoint_config, load_checkpoint, write_checkpoint
from lmzoo.rebuild import example_inputs
from lmzoo.sources import Architecture, get_source, registered_sources
from lmzoo.testing import random_plan, randomize_norms

FACTORY = """
import torch.nn as nn

def build(width=8, num_classes=10):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
    )
"""


def _checkpoint(directory, architecture, shape=(3, 32, 32), seed=0):
    torch.manual_seed(seed)
    model = randomize_norms(architecture.build()).eval()
    spec = lmzoo.trace(model, example_inputs(shape, "classification"))
    plan = random_plan(spec, lmzoo.candidates(spec), random.Random(seed))
    merged = lmzoo.merge(lmzoo.apply_plan(model, spec, plan)).eval()
    config = checkpoint_config(
        name=directory.name,
        architecture=architecture,
        input_shape=shape,
        task="classification",
        spec_fingerprint=spec.fingerprint,
        plan=plan,
    )
    return write_checkpoint(directory, merged, config), merged, plan


def test_the_registered_sources():
    assert set(registered_sources()) >= {"timm", "torchvision", "diffusers", "python"}
    assert get_source("torchvision").task("resnet18") == "classification"
    assert get_source("diffusers").task("UNet2DModel") == "denoising"


def test_a_torchvision_network_saves_and_loads_bit_exactly(tmp_path):
    architecture = Architecture("torchvision", "resnet18", {"num_classes": 10})
    directory, merged, plan = _checkpoint(tmp_path / "tv-entry", architecture)
    loaded = load_checkpoint(directory)
    assert len(plan) < 17  # the plan merged something: fewer blocks than convs
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), merged(x))
    assert loaded.state_dict().keys() == merged.state_dict().keys()


def test_a_users_factory_loads_from_their_store_and_only_if_imported_otherwise(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "lmzoo_user_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    architecture = Architecture("python", "lmzoo_user_nets:build", {"width": 8})
    get_source("python").import_own_code(architecture.arch)  # the user's own code, as a recipe build does
    directory, merged, _ = _checkpoint(tmp_path / "store" / "my-entry", architecture)
    x = torch.randn(2, 3, 32, 32)
    monkeypatch.delitem(sys.modules, "lmzoo_user_nets")
    # a checkpoint that is not the user's own build never imports the code it names
    with pytest.raises(
        CheckpointError, match="factory lmzoo_user_nets:build is not loaded: import lmzoo_user_nets"
    ):
        load_checkpoint(directory)
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))
    with torch.no_grad():
        assert torch.equal(lmzoo.load("my-entry")(x), merged(x))  # the local store: imported
    monkeypatch.delitem(sys.modules, "lmzoo_user_nets")
    monkeypatch.syspath_prepend(str(tmp_path / "nothing"))
    (tmp_path / "code" / "lmzoo_user_nets.py").unlink()
    with pytest.raises(CheckpointError, match="factory lmzoo_user_nets:build is not importable here"):
        lmzoo.load("my-entry")


@pytest.mark.parametrize(
    "source, arch, message",
    [
        ("python", "os.system", "must name a factory as package.module:function"),
        ("torchvision", "no_such_net", "not a torchvision classification model"),
        ("torchvision", "hf-hub:org/x", "must name a torchvision classification model"),
        ("timm", "hf-hub:timm/resnet18", "is a location, not an architecture name"),
    ],
)
def test_architectures_are_names_never_code_or_places(source, arch, message):
    with pytest.raises(lmzoo.LmzooError, match=message):
        Architecture(source, arch, {}).build()
