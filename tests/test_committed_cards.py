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


@pytest.mark.parametrize("directory", ENTRIES, ids=[d.name for d in ENTRIES])
def test_a_committed_card_invents_nothing_and_says_how_it_was_measured_once(directory):
    """No URL or install command that does not exist; the Hub's pipeline_tag; which way is better on
    every plot of a metric; the thread count named once in the measurement line."""
    card = (directory / "README.md").read_text()
    assert "github.com/lmzoo" not in card and "pip install lmzoo" not in card
    assert "it is not on PyPI" in card
    task = read_config(directory)["task"]
    tag = {"classification": "image-classification", "denoising": "unconditional-image-generation"}[task]
    assert f"pipeline_tag: {tag}\n" in card
    if (directory / "frontier.png").is_file():
        better = "lower is better" if task == "denoising" else "higher is better"
        assert f", {better}, against measured speed-up" in card
    measured = next(line for line in card.splitlines() if line.startswith("measured with"))
    assert measured.count("thread") == 1


def test_a_card_names_the_machine_of_a_table_measured_elsewhere(tmp_path):
    """A plan fitted to one machine's latency table and timed on another: the card says where the
    table was measured; timed on the table's own machine, it says nothing more."""
    import json
    import shutil

    source = CARDS / "mobilenetv2-fmnist-layermerge-1.6x"
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    evaluation = json.loads((copy / "evaluation.json").read_text())
    table = evaluation["latency_card"]["predicted"]["table"]
    assert table["device_name"] == evaluation["latency_card"]["measurement"]["device_name"]
    assert "that table was measured on" not in card_from_checkpoint(copy)
    evaluation["latency_card"]["measurement"]["device_name"] = "Another CPU (2 threads)"
    (copy / "evaluation.json").write_text(json.dumps(evaluation))
    card = card_from_checkpoint(copy)
    assert f"; that table was measured on {table['device_name']} on {table['date'][:10]})," in card
    assert "Another CPU (2 threads)" in card
