import json

from click.testing import CliRunner

from lmzoo.cli import main


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
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: 'no_such_net' is not a timm model name (see timm.list_models())"
    ]


def test_inspect_unsupported_family_is_one_clean_line():
    result = CliRunner().invoke(main, ["inspect", "efficientnet_b0", "--input-size", "64"])
    assert result.exit_code == 2
    assert "squeeze-excite" in result.output
    assert "Traceback" not in result.output
