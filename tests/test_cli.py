import json

import pytest
from click.testing import CliRunner

import lmzoo
from lmzoo.cli import main
from tests.test_committed_cards import CARDS


def test_inspect_prints_a_spec_summary_and_checks_plans():
    result = CliRunner().invoke(
        main, ["inspect", "mobilenetv2_035", "--input-size", "64", "--check-plans", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["family"] == "timm-mobilenetv2"
    assert summary["units"] == 50
    assert len(summary["plan_checks"]) == 2
    assert all(c["relative_error"] < 1e-4 for c in summary["plan_checks"])


def test_inspect_unknown_model_is_one_clean_line():
    result = CliRunner().invoke(main, ["inspect", "no_such_net"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: 'no_such_net' is not a timm model name (see timm.list_models())"
    ]


def test_inspect_unsupported_family_is_one_clean_line():
    result = CliRunner().invoke(main, ["inspect", "vit_tiny_patch16_224", "--input-size", "64"])
    assert result.exit_code == 1
    assert "no convolution lmzoo can merge (patch_embed.proj" in result.output
    assert "Traceback" not in result.output


def _tables(tmp_path, method="layermerge"):
    import random

    import timm
    import torch

    import lmzoo
    from lmzoo.tables import ImportanceTable, LatencyTable

    spec = lmzoo.trace(timm.create_model("mobilenetv2_035").eval(), torch.randn(1, 3, 64, 64))
    cands = set(lmzoo.candidates(spec)) | set(lmzoo.candidates(spec, method=method))
    rng = random.Random(0)
    LatencyTable(
        {c: rng.uniform(0.01, 0.1) * c.kernel for c in cands}, fixed_ms=0.5, spec_fingerprint=spec.fingerprint
    ).save(tmp_path / "lat.json")
    ImportanceTable({c: rng.uniform(0.95, 1.0) for c in cands}, spec_fingerprint=spec.fingerprint).save(
        tmp_path / "imp.json"
    )
    return str(tmp_path / "lat.json"), str(tmp_path / "imp.json")


def test_solve_writes_plans_and_summarises_them(tmp_path):
    import lmzoo

    lat, imp = _tables(tmp_path)
    result = CliRunner().invoke(
        main, ["solve", lat, imp, "--speedup", "1.5", "--speedup", "2", "--budget-ms", "3"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["method"] == "layermerge" and len(out["plans"]) == 3
    for record in out["plans"]:
        plan = lmzoo.Plan.from_dict(record["plan"])
        assert record["depth"] == sum(1 for b in plan if b.kept) < 50
    # budgets first, then speed-ups, each in the order given
    assert out["plans"][0]["predicted_ms"] - out["plans"][0]["fixed_ms"] <= 3
    assert out["plans"][1]["predicted_speedup"] >= 1.5 and out["plans"][2]["predicted_speedup"] >= 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("budget 3 ms: ")
    assert (
        lines[1].startswith("target 1.5x: ") and "activations kept" in lines[1] and "depth 50 -> " in lines[1]
    )


def test_solve_frontier_for_a_baseline_to_a_file(tmp_path):
    lat, imp = _tables(tmp_path, method="depth")
    out_path = tmp_path / "frontier.json"
    result = CliRunner().invoke(
        main, ["solve", lat, imp, "--frontier", "--method", "depth", "--levels", "500", "-o", str(out_path)]
    )
    assert result.exit_code == 0, result.output
    plans = json.loads(out_path.read_text())["plans"]
    assert len(plans) > 3
    speedups = [p["predicted_speedup"] for p in plans]
    assert speedups == sorted(speedups, reverse=True)


def test_solve_top_outputs_the_k_best_plans_ranked(tmp_path):
    lat, imp = _tables(tmp_path)
    result = CliRunner().invoke(main, ["solve", lat, imp, "--speedup", "1.3", "--top", "4"])
    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)["plans"]
    assert [p["rank"] for p in plans] == [1, 2, 3, 4]
    values = [p["importance"] for p in plans]
    assert values == sorted(values, reverse=True) and len({json.dumps(p["plan"]) for p in plans}) == 4
    assert all(p["predicted_speedup"] >= 1.3 * (1 - 1e-9) for p in plans)
    assert result.stderr.splitlines()[1].startswith("target 1.3x: #2: ")
    best = CliRunner().invoke(main, ["solve", lat, imp, "--speedup", "1.3"])
    assert json.loads(best.stdout)["plans"][0]["importance"] == values[0]


def test_solve_top_marks_plans_that_repeat_a_better_ranked_network():
    """MobileNetV2's committed tables: among the 18 best 1.6x plans some only merge 1x1 convs
    differently from a better-ranked one (the same function, another latency)."""
    from lmzoo.tables import LatencyTable

    tables = CARDS / "mobilenetv2-fmnist-layermerge-1.6x" / "tables"
    lat, imp = str(tables / "latency.json"), str(tables / "importance.json")
    result = CliRunner().invoke(
        main, ["solve", lat, imp, "--speedup", "1.6", "--top", "18", "--objective", "product"]
    )
    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)["plans"]
    spec = LatencyTable.load(lat).spec
    repeats = [p for p in plans if "same_network_as" in p]
    assert repeats
    for p in plans:
        configuration = lmzoo.Plan.from_dict(p["plan"]).configuration(spec)
        earlier = [
            q["rank"] for q in plans if lmzoo.Plan.from_dict(q["plan"]).configuration(spec) == configuration
        ]
        assert p.get("same_network_as", p["rank"]) == min(earlier)
    line = result.stderr.splitlines()[repeats[0]["rank"] - 1]
    assert f"the network of #{repeats[0]['same_network_as']}, other merges" in line


def test_solve_unreachable_fastest_outputs_the_fastest_plan(tmp_path):
    import lmzoo
    from lmzoo.core import solver

    lat, imp = _tables(tmp_path)
    latency, importance = lmzoo.LatencyTable.load(lat), lmzoo.ImportanceTable.load(imp)
    with pytest.raises(lmzoo.InfeasibleBudgetError) as caught:
        solver.solve(latency, importance, speedup=50)
    result = CliRunner().invoke(
        main, ["solve", lat, imp, "--speedup", "50", "--speedup", "1.5", "--unreachable", "fastest"]
    )
    assert result.exit_code == 0, result.output
    far, near = json.loads(result.stdout)["plans"]
    assert far["speedup"] == 50 and far["unreachable"] == {"max_speedup": caught.value.max_speedup}
    fastest = solver.solve(latency, importance, budget_ms=caught.value.min_budget_ms)
    assert lmzoo.Plan.from_dict(far["plan"]) == fastest
    # a reachable target is solved as without the option, and says nothing of reach
    assert "unreachable" not in near
    assert lmzoo.Plan.from_dict(near["plan"]) == solver.solve(latency, importance, speedup=1.5)
    first, second = result.stderr.strip().splitlines()
    reach = caught.value.max_speedup
    assert first.startswith(f"target 50x: beyond the table (its fastest plan: {reach:.3f}x)")
    assert "beyond" not in second


def test_solve_bad_input_is_one_clean_line(tmp_path):
    lat, imp = _tables(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "lmzoo.importance-table/1", "entries": [}')
    cases = [
        (["solve", lat, str(broken), "--speedup", "1.5"], "is not a valid JSON importance table"),
        (["solve", lat, imp], "give --budget-ms / --speedup (repeatable), or --frontier"),
        (["solve", imp, lat, "--speedup", "1.5"], "not an lmzoo latency table"),
        (["solve", lat, imp, "--speedup", "50"], "ask for at least"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert message in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_bench_compares_base_and_merged_and_writes_a_latency_card(tmp_path):
    import timm
    import torch

    import lmzoo

    model = timm.create_model("mobilenetv2_035").eval()
    spec = lmzoo.trace(model, torch.randn(1, 3, 64, 64))
    table = lmzoo.latency_table(spec, warmup=0, runs=2, passes=1, progress=False)
    table.save(tmp_path / "lat.json")
    importance = lmzoo.ImportanceTable({c: 1.0 for c in table.entries}, spec=spec)
    importance.save(tmp_path / "imp.json")
    plan_file = tmp_path / "plans.json"
    args = [
        "solve",
        str(tmp_path / "lat.json"),
        str(tmp_path / "imp.json"),
        "--speedup",
        "1.3",
        "-o",
        str(plan_file),
    ]
    assert CliRunner().invoke(main, args).exit_code == 0
    card_file = tmp_path / "card" / "latency.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "mobilenetv2_035",
            "--plan",
            str(plan_file),
            "--latency-table",
            str(tmp_path / "lat.json"),
            "--input-size",
            "64",
            "--runs",
            "4",
            "--rounds",
            "2",
            "--card",
            str(card_file),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "speed-up:" in result.stdout and "predicted:" in result.stdout
    card = json.loads(card_file.read_text())
    assert card["format"] == "lmzoo.latency-card/1"
    for key in ("backend", "versions", "device_name", "batch_size", "dtype", "threads", "date", "runs"):
        assert key in card["measurement"]
    assert card["speedup"] == card["base"]["median_ms"] / card["merged"]["median_ms"]
    assert card["predicted"]["speedup"] > 1.29
    assert card_file.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    other = CliRunner().invoke(
        main, ["bench", "resnet18", "--latency-table", str(tmp_path / "lat.json"), "--input-size", "64"]
    )
    assert other.exit_code == 1 and "measured for another network" in other.stderr


@pytest.fixture
def card_entry(tmp_path):
    """A committed card as a local checkpoint directory: config, plan, latency card and tables, no
    weights (bench times random weights)."""
    import shutil

    entry = tmp_path / "entry"
    shutil.copytree(CARDS / "mobilenetv2-fmnist-layermerge-1.6x", entry)
    return entry


def _quick_bench(entry, *, batch_size):
    """`lmzoo bench` of ``entry`` on one thread, two runs in one round."""
    return [
        "bench",
        f"local-dir:{entry}",
        "--batch-size",
        str(batch_size),
        "--threads",
        "1",
        "--runs",
        "2",
        "--rounds",
        "1",
    ]


def test_bench_takes_a_zoo_entry_and_says_when_its_table_was_measured_otherwise(card_entry):
    """A checkpoint's base, plan, table and latency setting; a table measured at batch 64 on 2
    threads, timed here at batch 1 on 1 thread, gives a warning instead of a +456 % "error"."""
    entry = card_entry
    args = _quick_bench(entry, batch_size=1)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"plan: the one local-dir:{entry} was built with" in result.stderr
    assert "AMD" in result.stdout or "thread)" in result.stdout  # 1 thread, singular
    assert "(1 thread)" in result.stdout and "(1 threads)" not in result.stdout
    assert "error" not in result.stdout and "not comparable" in result.stdout
    assert "warning: the latency table was measured with batch 64, here 1; threads 2, here 1" in result.stderr
    # the entry's own plan.json names what it holds
    plan_file = entry / "plan.json"
    again = CliRunner().invoke(main, [*args, "--plan", str(plan_file)])
    assert again.exit_code == 0 and f"plan: the solve record {plan_file} (target 1.6x)" in again.stderr
    index = CliRunner().invoke(main, [*args, "--plan", str(plan_file), "--plan-index", "2"])
    assert index.exit_code == 1 and "holds one plan; drop --plan-index" in index.stderr


def test_bench_repeats_report_the_spread_of_the_speedup_and_the_median_card(card_entry):
    """--repeat N measures N independent comparisons: the JSON holds every speed-up and their
    summary, and the card is the repeat whose speed-up is the median."""
    common = _quick_bench(card_entry, batch_size=2)
    result = CliRunner().invoke(main, [*common, "--repeat", "3", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    repeats = record["repeats"]
    speedups = repeats["speedups"]
    assert len(speedups) == 3 and all(s > 0 for s in speedups)
    assert record["speedup"] == sorted(speedups)[1] == repeats["median"]
    assert (repeats["min"], repeats["max"]) == (min(speedups), max(speedups))
    assert repeats["relative_range"] == pytest.approx((max(speedups) - min(speedups)) / sorted(speedups)[1])

    text = CliRunner().invoke(main, [*common, "--repeat", "2"])
    assert text.exit_code == 0, text.output
    assert "repeat of median speed-up (1 of 2 by speed-up)" in text.stdout
    assert "median of 2 repeats (min " in text.stdout
    once = CliRunner().invoke(main, [*common, "--json"])
    assert once.exit_code == 0 and "repeats" not in json.loads(once.stdout)
    zero = CliRunner().invoke(main, [*common, "--repeat", "0"])
    assert zero.exit_code == 2 and "0 is not in the range x>=1" in zero.output


def test_common_options_are_choices_and_quiet_silences_progress(tmp_path):
    dtype = CliRunner().invoke(main, ["bench", "resnet18", "--dtype", "float64"])
    assert dtype.exit_code == 2 and "'float64' is not one of 'float32', 'float16', 'bfloat16'" in dtype.output
    for command in ("build", "tables"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        assert "--quiet" in text and "No progress bars" in text
    both = CliRunner().invoke(main, ["build", "mobilenetv2-fmnist-layermerge-1.6x", "--speedup", "1.7"])
    assert both.exit_code == 1 and "give the recipe name with --speedup" in both.stderr
    low = CliRunner().invoke(main, ["build", "mobilenetv2-fmnist-layermerge", "--speedup", "0.9"])
    assert low.exit_code == 2 and "0.9" in low.output


@pytest.mark.integration
def test_tables_builds_both_tables_from_the_smoke_recipe_and_reuses_them(tmp_path):
    import lmzoo
    from lmzoo.tables import ImportanceTable, LatencyTable

    runner = CliRunner()
    args = ["mobilenetv2-fmnist-layermerge-1.6x", "--profile", "smoke", "--workdir", str(tmp_path)]
    latency = runner.invoke(main, ["tables", "latency", *args])
    assert latency.exit_code == 0, latency.output
    lat = LatencyTable.load(latency.stdout.strip())
    # calibrated against the base network (the fixed cost itself may clamp to 0 on a loaded machine)
    assert lat.metadata["batch_size"] == 32 and "context_scale" in lat.metadata["calibration"]
    assert lat.fixed_ms >= 0
    out = tmp_path / "imp.json"
    importance = runner.invoke(main, ["tables", "importance", *args, "--out", str(out)])
    assert importance.exit_code == 0, importance.output
    imp = ImportanceTable.load(out)
    assert imp.spec == lat.spec and imp.metadata["estimator"] == "bn-recalibration"
    assert set(imp.entries) == {c for m in lmzoo.METHODS for c in lmzoo.candidates(imp.spec, method=m)}
    plan = lmzoo.solve(lat, imp, speedup=1.3)  # the two tables fit together
    assert lat.predict(plan) < lat.predict(lmzoo.Plan.identity(lat.spec))
    stages = sorted(p.name.split("-")[0] for p in (tmp_path / "mobilenetv2-fmnist-layermerge").iterdir())
    assert stages == ["base", "importance", "latency"]
    again = runner.invoke(main, ["tables", "latency", *args])
    assert again.exit_code == 0 and again.stdout == latency.stdout  # cached: the same file


def test_tables_bad_input_is_one_clean_line(tmp_path):
    runner = CliRunner()
    for args, message, status in [
        (["importance", "no-such-recipe"], "no recipe named 'no-such-recipe'", 1),
        (["importance", "mobilenetv2-fmnist-layermerge", "--profile", "fast"], "no profile 'fast'", 1),
        (["importance", "mobilenetv2-fmnist-layermerge", "--shard", "2/2"], "expected i/n", 2),  # usage
    ]:
        result = runner.invoke(main, ["tables", *args, "--workdir", str(tmp_path)])
        assert result.exit_code == status, result.output
        assert message in result.output and "Traceback" not in result.output
