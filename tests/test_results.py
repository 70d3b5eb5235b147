"""The results table's frontier plot: which lines it draws from which rows."""

from lmzoo.results import frontier_series, merge_results, plot_frontier


def _row(model, method, speedup, value, objective="product"):
    return {
        "model": model,
        "arch": "mobilenetv2_100",
        "dataset": "fashion-mnist",
        "metric": "top-1 accuracy (%)",
        "method": method,
        "objective": "" if method == "base" else objective,
        "measured_speedup": str(speedup),
        "value": str(value),
        "backend": "torch",
        "device": "cpu",
        "batch": "64",
    }


def test_one_line_per_method_and_per_objective_only_when_they_mix(tmp_path):
    rows = [
        _row("base", "base", 1, 88.9),
        _row("lm-2x", "layermerge", 2.0, 87.7),
        _row("lm-1.3x", "layermerge", 1.31, 89.4),
        _row("depth-2x", "depth", 2.18, 86.5),
    ]
    series = frontier_series(rows)
    assert series[("layermerge", "product")] == ("layermerge", [(1.31, 89.4, 0), (2.0, 87.7, 0)])
    assert series[("depth", "product")][0] == "depth"
    assert series[("base", "")] == ("base", [(1.0, 88.9, 0)])
    mixed_rows = [*rows, _row("lm-2x-sum", "layermerge", 1.95, 86.9, objective="sum")]
    mixed = frontier_series(mixed_rows)
    assert mixed[("layermerge", "sum")] == ("layermerge, sum of I", [(1.95, 86.9, 0)])
    assert mixed[("layermerge", "product")][0] == "layermerge, product of I"
    assert mixed[("base", "")][0] == "base"
    # rows written before the objective column existed count as the paper's sum
    legacy = [{k: v for k, v in r.items() if k != "objective"} for r in rows]
    assert set(frontier_series(legacy)) == {("base", ""), ("layermerge", "sum"), ("depth", "sum")}
    path = tmp_path / "frontier.png"
    assert plot_frontier(mixed_rows, path, group=("mobilenetv2_100", "fashion-mnist"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_frontier(rows[:1], tmp_path / "none.png", group=("mobilenetv2_100", "fashion-mnist"))


def test_entries_fine_tuned_from_several_seeds_plot_their_mean_and_sd(tmp_path):
    """Rows with value_mean / value_sd (lmzoo build --seeds) give the line their mean and an error
    bar; single-seed rows (value_sd empty) their value."""
    rows = [
        _row("base", "base", 1, 88.9),
        {**_row("lm-2x", "layermerge", 2.0, 87.7), "value_mean": "87.5", "value_sd": "0.3", "seeds": "3"},
        {**_row("lm-1.3x", "layermerge", 1.31, 89.4), "value_mean": "89.4", "value_sd": "", "seeds": "1"},
    ]
    assert frontier_series(rows)[("layermerge", "product")][1] == [(1.31, 89.4, 0.0), (2.0, 87.5, 0.3)]
    path = tmp_path / "frontier.png"
    assert plot_frontier(rows, path, entry="lm-2x")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merging_replaces_rows_of_the_same_model_dataset_and_profile_in_place():
    previous = [
        _row("ddpm-1.1x", "layermerge", 1.1, 0.04),
        _row("lm-2x", "layermerge", 2.0, 87.7),
        {**_row("lm-2x", "layermerge", 2.0, 80.0), "profile": "smoke"},
        {**_row("lm-2x", "layermerge", 2.0, 70.0), "dataset": "mnist"},
    ]
    current = [
        _row("lm-1.6x", "layermerge", 1.6, 88.9),
        {**_row("lm-2x", "layermerge", 2.0, 87.2), "profile": ""},  # an empty profile is the default
    ]
    merged = merge_results(previous, current)
    assert [r["model"] for r in merged] == ["ddpm-1.1x", "lm-2x", "lm-2x", "lm-2x", "lm-1.6x"]
    assert [r["value"] for r in merged] == ["0.04", "87.2", "80.0", "70.0", "88.9"]
    assert merge_results([], current) == current and merge_results(previous, []) == previous


def test_entries_of_two_bases_get_a_base_row_each(tmp_path):
    """A base row per base network, told apart by the base weights' digest the configs record: a
    retrained base's entries next to the old base's do not share (and misreport) one base row."""
    import json
    import shutil

    from lmzoo.results import results_rows
    from tests.test_committed_cards import CARDS

    directories = []
    for name, digest, base_value in (("lm-1.6x", "a" * 64, 89.0), ("lm-2x", "b" * 64, 91.0)):
        directory = tmp_path / name
        shutil.copytree(CARDS / f"mobilenetv2-fmnist-layermerge-{name[3:]}", directory)
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, "base_weights_sha256": digest}))
        evaluation = json.loads((directory / "evaluation.json").read_text())
        evaluation["base_test"]["accuracy"] = base_value
        (directory / "evaluation.json").write_text(json.dumps(evaluation))
        directories.append(directory)
    rows = results_rows(directories)
    bases = {r["base_weights_sha256"]: r["value"] for r in rows if r["method"] == "base"}
    assert bases == {"a" * 64: 89.0, "b" * 64: 91.0}
    entries = {r["base_weights_sha256"]: r["base_value"] for r in rows if r["method"] != "base"}
    assert entries == bases

    config = json.loads((directories[1] / "config.json").read_text())
    (directories[1] / "config.json").write_text(json.dumps({**config, "base_weights_sha256": "a" * 64}))
    shared = [r for r in results_rows(directories) if r["method"] == "base"]
    assert len(shared) == 1 and shared[0]["value"] == 89.0  # one base: its first entry's measurement
    # entries written before configs named their base: one base row per setting, as before
    for directory in directories:
        config = json.loads((directory / "config.json").read_text())
        del config["base_weights_sha256"]
        (directory / "config.json").write_text(json.dumps(config))
    legacy = [r for r in results_rows(directories) if r["method"] == "base"]
    assert len(legacy) == 1 and legacy[0]["base_weights_sha256"] is None
