import json

from typer.testing import CliRunner

from mnist_edge.cli import app

runner = CliRunner()


def test_models_json_lists_names_and_params():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["name"]: r["params"] for r in rows}["tiny"] == 12_364
    assert all(r["macs"] > 0 for r in rows)


def test_models_table():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    assert "inception" in result.output and "97,298" in result.output and "98.88%" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("mnist-edge ")


def test_wrong_flag_exits_nonzero_without_traceback():
    result = runner.invoke(app, ["models", "--no-such-flag"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
