"""`lmzoo build` end to end on the smoke profile of the embedded default recipe."""

import hashlib
import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

import lmzoo
from lmzoo.checkpoint import CheckpointError, load_checkpoint
from lmzoo.cli import main
from lmzoo.tables import ImportanceTable

pytestmark = [
    pytest.mark.integration,  # smoke builds, torchrun, olah and Ray: the integration tier
    pytest.mark.filterwarnings("ignore::lmzoo.ProfileBuildWarning"),  # smoke builds are not entries
]

ENTRY = "mobilenetv2-fmnist-layermerge-1.6x"
#: what a smoke build of ENTRY is called: never the zoo entry itself
BUILT = f"{ENTRY}-smoke"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    home, work = root / "store", root / "work"
    mp = pytest.MonkeyPatch()
    mp.setenv("LMZOO_HOME", str(home))
    result = CliRunner().invoke(main, ["build", ENTRY, "--profile", "smoke", "--workdir", str(work)])
    assert result.exit_code == 0, result.output
    yield home / BUILT, work, result
    mp.undo()


def test_build_writes_a_loadable_checkpoint_with_card_and_latency(built, monkeypatch):
    directory, work, result = built
    assert result.stdout.strip() == str(directory)
    names = {p.name for p in directory.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "README.md",
        "latency.json",
        "recipe.yaml",
        "plan.json",
    } <= names
    assert not (directory.parent / ENTRY).exists()  # the zoo entry's name stays free
    config = json.loads((directory / "config.json").read_text())
    assert config["name"] == BUILT and config["target_speedup"] == 1.6 and config["profile"] == "smoke"
    (base_weights,) = work.glob("mobilenetv2-fmnist-layermerge/base-*/model.safetensors")
    assert config["base_weights_sha256"] == hashlib.sha256(base_weights.read_bytes()).hexdigest()
    card = (directory / "README.md").read_text()
    assert "model-index" in card and "speedup" in card and f'lmzoo.load("{BUILT}")' in card
    assert f"# {BUILT}\n\n> **Not the zoo entry.** Built with the recipe's `smoke` profile" in card
    assert f"- name: {BUILT}\n" in card and "pipeline_tag: image-classification" in card
    assert "## Preprocessing\n\nInputs as evaluated: 1 channel, 28×28 images padded to 32×32" in card
    latency = json.loads((directory / "latency.json").read_text())
    # one results table: metric rows and the latency row without a break between them
    base_ms, merged_ms = latency["base"]["median_ms"], latency["merged"]["median_ms"]
    assert f" |\n| latency (median ms) | {base_ms:.4g} | {merged_ms:.4g} |\n" in card
    assert "| top-1 (%), test |" in card and "I = exp(Δ/100), Δ the change of held-out top-1" in card
    assert latency["measurement"]["backend"] == "torch" and latency["speedup"] > 0
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    with pytest.warns(lmzoo.ProfileBuildWarning):
        model = lmzoo.load(BUILT)
    again = load_checkpoint(directory)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    plan = lmzoo.Plan.from_dict(config["plan"])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(plan.kept_units) >= 1 and len(convs) < 52  # merged: fewer convs than the base network


def test_timms_own_pipeline_gives_the_cards_accuracy(built):
    """The preprocessing travels with the weights: timm's resolve_data_config + create_transform on
    the raw test images (PIL) give exactly the test accuracy the build evaluated (the smoke
    profile's first 256 test images)."""
    from timm.data import create_transform, resolve_data_config

    from lmzoo.data import fashion_mnist

    directory, _, _ = built
    model = load_checkpoint(directory)
    transform = create_transform(**resolve_data_config(model=model))
    test = fashion_mnist("test", pad_to=32)
    count = 256  # data.limit_test of the smoke profile
    images = torch.stack([transform(test.image(i)) for i in range(count)])
    labels = test.labels[:count]
    with torch.no_grad():
        accuracy = 100.0 * float((model(images).argmax(1) == labels).float().mean())
    evaluation = json.loads((directory / "evaluation.json").read_text())
    assert accuracy == pytest.approx(evaluation["test"]["accuracy"], abs=1e-9)


def test_a_speedup_the_recipe_does_not_list_reuses_its_base_and_tables(built, monkeypatch):
    directory, work, _ = built
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    args = ["build", "mobilenetv2-fmnist-layermerge", "--speedup", "1.45", "--profile", "smoke"]
    result = CliRunner().invoke(main, [*args, "--workdir", str(work), "--until", "solve", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "mobilenetv2-fmnist-layermerge-1.45x-smoke: plan predicted" in result.stderr
    assert "base: " in result.stderr and "(0." in result.stderr.split("base: ")[1].split("\n")[0]  # cached
    assert "importance table" in result.stderr and "%|" not in result.stderr  # --quiet: no progress bars


def test_a_rerun_reuses_every_stage(built, monkeypatch):
    directory, work, _ = built
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    stages_before = sorted(p.name for p in (work / "mobilenetv2-fmnist-layermerge").iterdir())
    result = CliRunner().invoke(main, ["build", ENTRY, "--profile", "smoke", "--workdir", str(work)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (work / "mobilenetv2-fmnist-layermerge").iterdir()) == stages_before
    assert "importance (" not in result.stderr and "base mobilenetv2" not in result.stderr  # nothing re-run


def test_load_errors(built, monkeypatch, tmp_path):
    directory, _, _ = built
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path))
    with pytest.raises(lmzoo.LmzooError, match=r"lmzoo build mobilenetv2-fmnist-layermerge-1\.3x"):
        lmzoo.load("mobilenetv2-fmnist-layermerge-1.3x")
    with pytest.raises(lmzoo.LmzooError, match="did you mean"):
        lmzoo.load("mobilenetv2-fmnist-layermerge-1.6")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        (broken / name).write_bytes((directory / name).read_bytes())
    data = (directory / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="its digest differs"):
        load_checkpoint(broken)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(broken, verify=False)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid JSON"):
        load_checkpoint(broken)


def test_finetune_runs_as_ddp_under_torchrun(built, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    _, work, _ = built
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "LMZOO_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--nproc-per-node", "2", "-m", "lmzoo.cli", "build", ENTRY]
    command += ["--profile", "smoke", "--workdir", str(work), "--until", "finetune"]
    before = set((work / "mobilenetv2-fmnist-layermerge").glob("finetune-*"))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    new = set((work / "mobilenetv2-fmnist-layermerge").glob("finetune-*")) - before
    assert len(new) == 1  # world size 2 is its own cached result
    (folder,) = new
    assert (folder / "configured.safetensors").is_file() and not (folder / "train.state").exists()
    assert "DDP: 2 processes, gloo backend" in done.stderr
    assert done.stderr.count("base:") == 1  # only rank 0 logs; the cached stages are not re-run


def test_card_regenerates_from_the_checkpoint_and_mirrors_without_weights(built, monkeypatch, tmp_path):
    directory, _, _ = built
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    written = (directory / "README.md").read_text()
    runner = CliRunner()
    result = runner.invoke(main, ["card", BUILT])
    assert result.exit_code == 0, result.output
    assert (directory / "README.md").read_text() == written  # the same card from what the checkpoint holds
    assert "![per-block latency of the base and the merged network" in written and "lmzoo build" in written
    results = tmp_path / "results.csv"
    rows = [
        "model,arch,dataset,method,target_speedup,measured_speedup,metric,value",
        "base,mobilenetv2_100,fashion-mnist,base,1,1,top-1,90.0",
        f"{BUILT},mobilenetv2_100,fashion-mnist,layermerge,1.6,1.7,top-1,88.0",
        "other,mobilenetv2_100,fashion-mnist,depth,1.6,1.5,top-1,87.0",
    ]
    results.write_text("\n".join(rows) + "\n")
    mirror = tmp_path / "cards" / BUILT
    result = runner.invoke(main, ["card", BUILT, "--results", str(results), "--out", str(mirror)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(mirror / "README.md")
    assert (directory / "frontier.png").stat().st_size > 1000 and (mirror / "frontier.png").is_file()
    assert "(frontier.png)" in (mirror / "README.md").read_text()
    assert not (mirror / "model.safetensors").exists() and (mirror / "latency.json").is_file()
    (directory / "frontier.png").unlink()
    runner.invoke(main, ["card", BUILT])  # back to the card without the frontier for the other tests


def test_show_loads_runs_and_prints_the_card(built, monkeypatch):
    directory, _, _ = built
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    result = CliRunner().invoke(main, ["show", BUILT])
    assert result.exit_code == 0, result.output
    assert result.stdout == (directory / "README.md").read_text() + "\n"
    assert f"loaded {BUILT}" in result.stderr and "output (1, 10)" in result.stderr
    missing = CliRunner().invoke(main, ["show", "mobilenetv2-fmnist-layermerge-2x"])
    assert missing.exit_code == 1 and "lmzoo build mobilenetv2-fmnist-layermerge-2x" in missing.stderr


def test_the_depth_baseline_reuses_base_and_tables_and_says_what_it_is(built, monkeypatch):
    """`lmzoo build <stem>-depth-<s>x` builds the paper's depth-compression baseline from the same
    base, tables and fine-tuning schedule: only solve, fine-tune, evaluate and card run, and the
    importance table gains depth compression's activation states (their records only)."""
    directory, work, _ = built
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    name = "mobilenetv2-fmnist-depth-1.6x-smoke"  # the baseline's entry name, with the profile's suffix
    stages = work / "mobilenetv2-fmnist-layermerge"
    before = {p.name for p in stages.iterdir()}
    result = CliRunner().invoke(main, ["build", name, "--workdir", str(work)])
    assert result.exit_code == 0, result.output
    new = {n.split("-")[0] for n in {p.name for p in stages.iterdir()} - before}
    # base and tables are reused; fine-tune and evaluate are keyed by the plan, so they are cached
    # too when the (noisy) smoke tables happen to give the LayerMerge plan
    assert "solve" in new and new <= {"solve", "finetune", "merge", "evaluate"}
    (extended,) = stages.glob("importance-*/importance-states.json")
    table = ImportanceTable.load(extended)
    assert (
        len(table.states) == 144
        and table.entries == ImportanceTable.load(extended.parent / "importance.json").entries
    )
    baseline = directory.parent / name
    assert json.loads((baseline / "plan.json").read_text())["method"] == "depth"
    plan = lmzoo.Plan.from_dict(json.loads((baseline / "config.json").read_text())["plan"])
    assert all(len(b.kept) == b.length for b in plan)  # depth compression prunes nothing
    card = (baseline / "README.md").read_text()
    assert "**baseline**" in card and "depth compression" in card
    assert "lmzoo build mobilenetv2-fmnist-depth-1.6x --profile smoke" in card
    assert "From the recipe `mobilenetv2-fmnist-layermerge`, written for LayerMerge: *" in card
    with pytest.warns(lmzoo.ProfileBuildWarning):
        model = lmzoo.load(name)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    (baseline / "README.md").unlink()
    assert CliRunner().invoke(main, ["card", name]).exit_code == 0
    assert (baseline / "README.md").read_text() == card


def test_the_objective_is_a_recipe_setting_keyed_into_the_solve_stage(built, tmp_path):
    """The embedded recipe maximises the product of I; `solve.objective: sum` (the paper's)
    re-solves from the cached tables and records its objective."""
    from lmzoo.core.solver import plan_importance
    from lmzoo.recipes import recipe_files
    from lmzoo.tables import ImportanceTable

    _, work, _ = built
    recipe = tmp_path / "mobilenetv2-fmnist-layermerge.yaml"
    text = recipe_files()["mobilenetv2-fmnist-layermerge"].read_text()
    assert "  objective: product " in text
    recipe.write_text(text.replace("  objective: product ", "  objective: sum "))
    stages = work / "mobilenetv2-fmnist-layermerge"
    before = {p.name for p in stages.iterdir()}
    args = ["build", str(recipe), "--profile", "smoke", "--workdir", str(work), "--until", "solve"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    new = sorted({p.name for p in stages.iterdir()} - before)
    assert new and all(n.startswith("solve-") for n in new)  # base and tables reused
    for name in new:
        record = json.loads((stages / name / "plan.json").read_text())
        assert record["objective"] == "sum"
        (table,) = stages.glob("importance-*/importance.json")
        importance = ImportanceTable.load(table)
        plan = lmzoo.Plan.from_dict(record["plan"])
        assert record["importance"] == plan_importance(importance, plan, objective="sum")


def test_refine_top_rebuilds_the_best_of_the_tables_top_plans_by_a_short_recovery(built, tmp_path):
    """`solve.refine_top: 3` scores the tables' 3 best plans by a short recovery of each whole
    configured network and builds the best; every score is kept, and a rerun measures nothing."""
    from lmzoo.cards import _refinement_text
    from lmzoo.pipeline import Build
    from lmzoo.pipeline.refine import distinct_networks
    from lmzoo.recipes import load_recipe, recipe_files
    from lmzoo.records import SolveRecord
    from lmzoo.tables import LatencyTable

    _, work, _ = built
    recipe = tmp_path / "mobilenetv2-fmnist-layermerge.yaml"
    text = recipe_files()["mobilenetv2-fmnist-layermerge"].read_text()
    recipe.write_text(
        text.replace("  objective: product ", "  refine_top: 3\n  refine_epochs: 2\n  objective: product ")
    )
    stages = work / "mobilenetv2-fmnist-layermerge"
    (table,) = stages.glob("latency-*/latency.json")
    (importance,) = stages.glob("importance-*/importance.json")
    latency, imp = LatencyTable.load(table), ImportanceTable.load(importance)
    fastest = lmzoo.frontier(latency, imp, objective="product")[0].speedup  # smoke timings move
    target = round(1 + (fastest - 1) / 2, 3)
    args = ["build", str(recipe), "--profile", "smoke", "--workdir", str(work), "--until", "solve"]
    args += ["--speedup", str(target)]
    before = {p.name for p in stages.iterdir()}
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "re-ranked the tables' 3 best plans" in result.output
    (refined,) = [
        stages / n
        for n in {p.name for p in stages.iterdir()} - before
        if (stages / n / "base.json").is_file()
    ]
    record = SolveRecord.load(refined / "plan.json")
    r = record.refinement
    smoke = Build(load_recipe(str(recipe), "smoke")[0], workdir=work)
    spec, _ = smoke.traced
    batches = math.ceil(
        len(smoke.inputs.importance_data().train) / smoke.recipe.importance.settings().batch_size
    )
    ranked = lmzoo.top_plans(latency, imp, k=6, speedup=target, objective="product")
    measured = distinct_networks(ranked, spec, latency)[:3]  # one plan per distinct network
    assert r is not None and r.k == 3 and [c["rank"] for c in r.candidates] == [rank for rank, _ in measured]
    assert len({p.plan.configuration(spec) for _, p in measured}) == len(measured) == 3
    base = json.loads((refined / "base.json").read_text())["accuracy"]
    for c in r.candidates:
        metrics = json.loads((refined / f"candidate-{int(c['rank'])}.json").read_text())
        assert c["score"] == pytest.approx(math.exp((metrics["accuracy"] - base) / 100))
        assert metrics["steps"] == 2 * batches and metrics["calibration_batches"] > 0  # refine_epochs: 2
    assert r.chosen_rank == max(r.candidates, key=lambda c: (c["score"], -c["rank"]))["rank"]
    assert record.plan == ranked[r.chosen_rank - 1].plan
    assert f"rank {r.chosen_rank} is built" in _refinement_text(record)
    stamps = {p.name: p.stat().st_mtime_ns for p in refined.iterdir()}
    assert CliRunner().invoke(main, args).exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in refined.iterdir()} == stamps


def test_results_collects_every_built_entry_with_how_it_was_measured(built, monkeypatch, tmp_path):
    directory, _, _ = built
    monkeypatch.setenv("LMZOO_HOME", str(directory.parent))
    out = tmp_path / "cards" / "results.csv"
    result = CliRunner().invoke(main, ["results", "--out", str(out)])
    assert result.exit_code == 0, result.output
    import csv

    rows = list(csv.DictReader(out.open()))
    by_model = {r["model"]: r for r in rows}
    entry = by_model[BUILT]
    assert entry["profile"] == "smoke"
    evaluation = json.loads((directory / "evaluation.json").read_text())
    assert float(entry["value"]) == pytest.approx(evaluation["test"]["accuracy"], abs=1e-4)
    assert float(entry["measured_speedup"]) == pytest.approx(evaluation["latency_card"]["speedup"], abs=1e-4)
    assert entry["method"] == "layermerge" and entry["objective"] == "product"
    assert entry["backend"] == "torch" and entry["batch"] == "32"
    assert entry["dataset"] == "fashion-mnist" and entry["metric"] == "top-1 accuracy (%)"
    base = by_model["mobilenetv2_100 (base)"]
    assert base["method"] == "base"
    assert float(base["value"]) == pytest.approx(evaluation["base_test"]["accuracy"], abs=1e-4)  # 4 decimals
    digest = json.loads((directory / "config.json").read_text())["base_weights_sha256"]
    assert entry["base_weights_sha256"] == base["base_weights_sha256"] == digest
    assert (out.parent / "frontier-mobilenetv2_100-fashion-mnist-smoke.png").stat().st_size > 1000
    assert not (out.parent / "frontier-mobilenetv2_100-fashion-mnist.png").exists()  # no default builds
    nothing = CliRunner().invoke(main, ["results", "nothing-*", "--out", str(out)])
    assert nothing.exit_code != 0 and "no built entries" in nothing.output

    # --update keeps the rows of entries the store lacks (published from elsewhere) and replaces the
    # store's own rows where they stood; without it the file holds the store's rows only
    elsewhere = {**entry, "model": "ddpm-fmnist-layermerge-1.1x", "arch": "UNet2DModel", "value": "0.0419"}
    stale = {**entry, "value": "1.0"}
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(entry))
        writer.writeheader()
        writer.writerows([elsewhere, stale])
    assert CliRunner().invoke(main, ["results", "--update", "--out", str(out)]).exit_code == 0
    updated = list(csv.DictReader(out.open()))
    others = [r["model"] for r in rows if r["model"] != BUILT]  # the base, and other tests' builds
    assert [r["model"] for r in updated] == ["ddpm-fmnist-layermerge-1.1x", BUILT, *others]
    assert updated[0] == elsewhere and updated[1] == entry
    assert CliRunner().invoke(main, ["results", "--out", str(out)]).exit_code == 0
    assert {r["model"] for r in csv.DictReader(out.open())} == set(by_model)


def test_a_contended_latency_table_is_reported_with_how_to_remeasure(built, monkeypatch, tmp_path):
    from lmzoo.latency.stats import LatencyStats

    _, work, _ = built
    stages = tmp_path / "work" / "mobilenetv2-fmnist-layermerge"
    stages.mkdir(parents=True)
    (base,) = (work / "mobilenetv2-fmnist-layermerge").glob("base-*")
    shutil.copytree(base, stages / base.name)  # the trained base; the latency table is measured anew
    monkeypatch.setattr(LatencyStats, "contended", property(lambda self: True))  # as if a job ran beside
    result = CliRunner().invoke(
        main,
        ["build", ENTRY, "--profile", "smoke", "--workdir", str(tmp_path / "work"), "--until", "latency"],
    )
    assert result.exit_code == 0, result.output
    (table,) = stages.glob("latency-*")
    assert json.loads((table / "latency.json").read_text())["metadata"]["contended"]
    assert f"look contended (another process was running); to re-measure, delete {table}" in result.stderr


def test_a_target_beyond_the_table_stops_or_builds_the_fastest_plan(built, tmp_path):
    """By default an unreachable speed-up is an error naming the reachable one; the smoke
    profiles' `solve.unreachable: fastest` builds the fastest plan instead, and says so."""
    from lmzoo.core.solver import solve
    from lmzoo.recipes import recipe_files
    from lmzoo.tables import ImportanceTable, LatencyTable

    _, work, _ = built
    text = recipe_files()["mobilenetv2-fmnist-layermerge"].read_text()
    assert "  speedups: [1.3, 1.6, 2.0]" in text and "solve: {unreachable: fastest}" in text
    # the largest target a recipe may name: far beyond any plan even when a contended smoke table
    # inflates a few entries many-fold
    text = text.replace("  speedups: [1.3, 1.6, 2.0]", "  speedups: [100]")
    recipe = tmp_path / "mobilenetv2-fmnist-layermerge.yaml"
    recipe.write_text(text.replace("solve: {unreachable: fastest}", "solve: {unreachable: error}"))
    args = ["build", str(recipe), "--profile", "smoke", "--workdir", str(work), "--until", "solve"]
    stopped = CliRunner().invoke(main, args)
    stages = work / "mobilenetv2-fmnist-layermerge"
    if stopped.exit_code == 0:  # only right when the table itself reaches 100x
        solved = [json.loads(p.read_text()) for p in stages.glob("solve-*/plan.json")]
        (reached,) = [r for r in solved if r["target_speedup"] == 100]
        assert reached["predicted_speedup"] >= 100 and not reached.get("unreachable"), stopped.output
        pytest.skip("this run's smoke latency table was contended enough to reach 100x")
    assert stopped.exit_code == 1 and "no layermerge plan fits" in stopped.stderr
    assert "Traceback" not in stopped.output

    recipe.write_text(text)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (latency_file,) = stages.glob("latency-*/latency.json")
    (importance_file,) = stages.glob("importance-*/importance.json")
    latency, importance = LatencyTable.load(latency_file), ImportanceTable.load(importance_file)
    record = next(
        r
        for r in (json.loads(p.read_text()) for p in stages.glob("solve-*/plan.json"))
        if r["target_speedup"] == 100
    )
    reachable = record["unreachable"]["max_speedup"]
    assert 1 < reachable < 100
    assert f"100x is beyond the latency table (its fastest plan: {reachable:.3f}x)" in result.stderr
    settings = {"method": "layermerge", "objective": "product", "levels": 10_000}
    with pytest.raises(lmzoo.InfeasibleBudgetError) as infeasible:
        solve(latency, importance, speedup=100, **settings)
    assert reachable == infeasible.value.max_speedup
    fastest = solve(latency, importance, budget_ms=infeasible.value.min_budget_ms, **settings)
    assert lmzoo.Plan.from_dict(record["plan"]) == fastest


def test_until_names_every_stage_and_stops_after_the_merge_stage(built, monkeypatch, tmp_path):
    from lmzoo.cli.build_commands import build
    from lmzoo.pipeline import STAGE_NAMES

    until = next(p for p in build.params if p.name == "until")
    assert tuple(until.type.choices) == STAGE_NAMES
    _, work, _ = built
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    stages = copy / "mobilenetv2-fmnist-layermerge"
    for folder in [*stages.glob("merge-*"), *stages.glob("evaluate-*")]:
        shutil.rmtree(folder)
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))
    args = ["build", ENTRY, "--profile", "smoke", "--workdir", str(copy), "--until", "merge"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (record,) = stages.glob("merge-*/merge.json")
    merge = json.loads(record.read_text())
    assert merge["format"] == "lmzoo.merge-record/1" and merge["relative_error"] < 1e-4
    assert "merged, relative output difference" in result.stderr
    assert not list(stages.glob("evaluate-*")) and not (tmp_path / "store").exists()


def test_a_damaged_cached_output_is_recomputed_not_trusted(built, monkeypatch, tmp_path, caplog):
    _, work, _ = built
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    stages = copy / "mobilenetv2-fmnist-layermerge"
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))
    for pattern, until in (("solve-*/plan.json", "solve"), ("latency-*/latency.json", "latency")):
        good = {p: p.read_text() for p in stages.glob(pattern)}
        for path, text in good.items():
            path.write_text(text[:100])  # truncated
        caplog.clear()
        args = ["build", ENTRY, "--profile", "smoke", "--workdir", str(copy), "--until", until]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        warned = " ".join(r.getMessage() for r in caplog.records)
        recomputed = [p for p in good if f"{p} does not validate" in warned]
        assert recomputed and "recomputing it" in warned  # the build's own files, and no others
        for path in recomputed:
            assert json.loads(path.read_text())["format"].startswith("lmzoo.")
            if until == "solve":  # same tables, same plan
                assert json.loads(path.read_text())["plan"] == json.loads(good[path])["plan"]


@pytest.mark.parametrize(
    "pattern, damage, until",
    [
        ("base-*/model.safetensors", lambda data: data[: len(data) // 2], "base"),
        ("finetune-*/configured.safetensors", lambda data: data[:1000], "finetune"),
        ("merge-*/merge.json", lambda data: b"{not json", "merge"),
        ("evaluate-*/evaluation.json", lambda data: b"{}", "evaluate"),
    ],
    ids=["base weights truncated", "fine-tuned weights truncated", "merge record not JSON", "evaluation {}"],
)
def test_damaged_weights_and_records_are_recomputed(
    built, monkeypatch, tmp_path, caplog, pattern, damage, until
):
    """Every kind of stage output — trained weights and records — is recomputed when it does not
    validate, with a warning naming it; never a traceback, never trusted."""
    _, work, _ = built
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    stages = copy / "mobilenetv2-fmnist-layermerge"
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))
    damaged = sorted(stages.glob(pattern))
    assert damaged
    for path in damaged:
        path.write_bytes(damage(path.read_bytes()))
    args = ["build", ENTRY, "--profile", "smoke", "--workdir", str(copy), "--until", until]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert any(f"{p} does not validate" in warned for p in damaged) and "recomputing it" in warned


def test_seeds_fine_tune_the_plan_again_and_report_mean_and_sd(built, monkeypatch, tmp_path):
    """--seeds 3: the plan fine-tuned from seeds 0, 1, 2 (0 is the checkpoint's, already built), each
    merged and tested; the evaluation, the card and the results carry mean and sd; a rerun reuses all."""
    import csv
    import statistics

    _, work, _ = built
    monkeypatch.setenv("LMZOO_HOME", str(tmp_path / "store"))  # the module's entry stays as it is
    args = ["build", ENTRY, "--profile", "smoke", "--workdir", str(work), "--seeds", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"{BUILT}: fine-tuned from 3 seeds" in result.stderr
    assert "over seeds 0, 1, 2" in result.stderr
    directory = tmp_path / "store" / BUILT
    evaluation = json.loads((directory / "evaluation.json").read_text())
    spread = evaluation["spread"]
    assert spread["seeds"] == [0, 1, 2] and spread["test"][0] == evaluation["test"]
    accuracies = [t["accuracy"] for t in spread["test"]]
    tested = sorted(work.glob("mobilenetv2-fmnist-layermerge/finetune-*/test.json"))
    assert len(tested) == 2  # seeds 1 and 2, next to their fine-tunes
    card = (directory / "README.md").read_text()
    mean, sd = statistics.mean(accuracies), statistics.stdev(accuracies)
    assert (
        f"mean ± sd of 3 fine-tunes (seeds 0, 1, 2; this checkpoint: seed 0) |  | {mean:.2f} ± {sd:.2f} |"
        in card
    )
    out = tmp_path / "results.csv"
    assert CliRunner().invoke(main, ["results", "--out", str(out)]).exit_code == 0
    row = next(r for r in csv.DictReader(out.open()) if r["model"] == BUILT)
    assert (row["seeds"], float(row["value_mean"]), float(row["value_sd"])) == (
        "3",
        pytest.approx(mean, abs=1e-4),
        pytest.approx(sd, abs=1e-4),
    )
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "fine-tune " not in again.stderr.replace(f"{BUILT}: fine-tuned", "")
    assert json.loads((directory / "evaluation.json").read_text())["spread"] == spread
