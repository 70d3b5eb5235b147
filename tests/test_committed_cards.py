"""Every card committed under cards/ is what its checkpoint directory makes: its config (written by
earlier lmzoo versions too) rebuilds the merged network's structure with a matching spec
fingerprint, its README.md regenerates byte for byte from its records, and cards/results.csv is
the results of those directories."""

from pathlib import Path

import pytest
import torch

from lmzoo.cards import card_from_checkpoint
from lmzoo.checkpoint import architecture, merged_structure, read_config
from lmzoo.results import results_rows, write_results

CARDS = Path(__file__).resolve().parent.parent / "cards"
ENTRIES = sorted(p.parent for p in CARDS.glob("*/config.json"))


def test_the_zoo_has_committed_cards():
    assert len(ENTRIES) >= 19


@pytest.mark.parametrize("directory", ENTRIES, ids=[d.name for d in ENTRIES])
def test_a_committed_config_rebuilds_its_merged_structure(directory):
    config = read_config(directory)
    assert config["base"]["source"] in ("timm", "diffusers")
    merged = merged_structure(config, directory, weights=False)  # raises unless the fingerprint matches
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in merged.modules())
    assert convs > 0 and architecture(config).display_name in ("mobilenetv2_100", "resnet34", "UNet2DModel")


@pytest.mark.parametrize("directory", ENTRIES, ids=[d.name for d in ENTRIES])
def test_a_committed_card_regenerates_byte_for_byte(directory):
    assert card_from_checkpoint(directory) == (directory / "README.md").read_text()


def test_the_committed_results_are_the_cards_results(tmp_path):
    write_results(results_rows(ENTRIES), tmp_path / "results.csv")
    assert (tmp_path / "results.csv").read_text() == (CARDS / "results.csv").read_text()
