"""Every numeric option of export, verify, evaluate and benchmark goes through one validator (schema.py's, through
cli/checks.py: the same checks train's flags and checkpoints use): non-finite and out-of-range values are refused while
parsing, before any work or any file."""

import math

import pytest
from hypothesis import given, strategies as st
from typer.testing import CliRunner

from mnist_edge.cli.commands import app
from mnist_edge.errors import MnistEdgeError
from mnist_edge.schema import integer, number

runner = CliRunner()

REFUSED = {
    "--min-agreement": ["nan", "inf", "-inf", "-1", "100.5"],
    "--max-accuracy-drop": ["nan", "-5", "inf", "101"],
    "--max-abs-diff": ["nan", "-1", "inf"],
    "--limit": ["0", "-3", "10001", str(2**70)],
    "--calibration-size": ["0", "60001", str(2**70)],
    "--runs": ["9", str(2**70)],
}
COMMANDS = {
    "export": ["export", "x.pt"],
    "verify": ["verify", "x.onnx", "--checkpoint", "x.pt"],
    "evaluate": ["evaluate", "x.onnx"],
    "benchmark": ["benchmark", "x.pt"],
}
TAKES = {
    "--min-agreement": ("export", "verify"),
    "--max-accuracy-drop": ("export", "verify"),
    "--max-abs-diff": ("export", "verify"),
    "--limit": ("export", "verify", "evaluate", "benchmark"),
    "--calibration-size": ("export",),
    "--runs": ("benchmark",),
}
CASES = [(c, flag, v) for flag, values in REFUSED.items() for c in TAKES[flag] for v in values]


def _text(output: str) -> str:
    """The message without the frame typer may draw around usage errors."""
    return " ".join(output.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


@pytest.mark.parametrize("command, flag, value", CASES)
def test_bad_numbers_are_refused_at_parse_time(command, flag, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # x.pt and x.onnx do not exist: the number is refused before anything is opened
    result = runner.invoke(app, [*COMMANDS[command], flag, value])
    text = _text(result.output).lower()
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"invalid value for '{flag}'" in text and (
        "must be a finite number" in text or "must be a whole number" in text
    )
    assert list(tmp_path.iterdir()) == []


@given(
    value=st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.booleans(), lo=st.floats(-1e6, 1e6),
    span=st.floats(0, 1e6),
)
def test_number_accepts_exactly_the_finite_numbers_in_range(value, lo, span):
    hi = lo + span
    inside = not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi
    try:
        assert number("--x", value, lo, hi) == value and inside
    except MnistEdgeError as exc:
        assert not inside and str(exc).startswith(f"--x {value!r}: must be a finite number")


@given(
    value=st.integers() | st.floats(allow_nan=True) | st.booleans(),
    lo=st.integers(-(10**6), 10**6),
    span=st.integers(0, 10**6),
)
def test_integer_accepts_exactly_the_whole_numbers_in_range(value, lo, span):
    inside = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= lo + span
    try:
        assert integer("--n", value, lo, lo + span) == value and inside
    except MnistEdgeError as exc:
        assert not inside and "must be a whole number" in str(exc)


def test_export_benchmark_and_the_manifest_name_formats_and_quantizations_alike():
    from mnist_edge.edge.manifest import validate_manifest
    from mnist_edge.formats import FORMATS, QUANTIZATIONS, export_formats

    def choices(command: str, flag: str) -> list[str]:
        import typer.main

        click_command = typer.main.get_command(app).commands[command]
        option = next(p for p in click_command.params if flag in p.opts)
        return list(option.type.choices)

    for command in ("export", "benchmark"):
        assert choices(command, "--format") == [*export_formats(), "all"]
        assert choices(command, "--quantize") == list(QUANTIZATIONS)
    for fmt in FORMATS:
        for quantization in QUANTIZATIONS:
            validate_manifest(
                {"default": None, "artifacts": [{"file": "a", "format": fmt, "quantization": quantization}]}, "m"
            )
