"""The Raspberry Pi path: what a Pi installs (the base dependencies), tools/pi_check's parsing and comparison on
real `predict --json` output (every run), and under marker `pi` the whole emulated check (minutes)."""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from repo_tools import tool

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # pi_check's default


def _base_dependencies() -> dict[str, Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


def test_onnxruntime_range_excludes_the_build_that_dies_on_a_pi4() -> None:
    # 1.21.0's aarch64 wheel dies with "Illegal instruction" on a Pi 4 (Cortex-A72); 1.22 fixed it.
    spec = _base_dependencies()["onnxruntime"].specifier
    assert "1.21.0" not in spec
    assert "1.21.1" in spec and "1.22.0" in spec


def test_base_install_is_torch_free() -> None:
    # A Pi installs the base dependencies only: torch would add about a gigabyte and predict never needs it.
    assert not {"torch", "torchvision"} & _base_dependencies().keys()


@pytest.mark.pi
def test_predict_under_qemu_aarch64_matches_native() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "pi_check")], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "OK: same digits" in proc.stdout
    assert "qemu cortex-a72" in proc.stdout and "qemu cortex-a76" in proc.stdout
    assert "edgenet.int8.tflite" in proc.stdout  # LiteRT's files too, each held to its ONNX twin's digits


@functools.cache
def pi_check_module() -> ModuleType:
    return tool("pi_check")


@pytest.fixture
def pi_check() -> ModuleType:
    return pi_check_module()


@functools.cache
def predict_output() -> str:
    """What pi_check's native run prints: the real `predict --json --top 10` on the shipped samples."""
    samples = ROOT / "src" / "mnist_edge" / "samples"
    cmd = [sys.executable, "-m", "mnist_edge", "predict", "--json", "--top", "10", str(samples)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_pi_check_reads_the_digits_predict_prints(pi_check: ModuleType) -> None:
    # The crash of issue 23: `predict --json` gives each digit as a number, and the table joined them as strings.
    rows = pi_check.parse_predictions(predict_output(), "native")
    expected = "".join(Path(row["file"]).stem.split("-")[1] for row in rows)  # samples are named SOURCE-DIGIT.png
    assert pi_check.digits(rows) == expected and len(expected) == 6


def test_pi_check_refuses_output_that_is_not_predictions(pi_check: ModuleType) -> None:
    error_row = json.dumps([{"file": "a.png", "error": "a.png: the image is blank"}])
    for out in ("Traceback (most recent call last):", "[]", error_row):
        with pytest.raises(SystemExit, match="pi_check: FAILED: native"):
            pi_check.parse_predictions(out, "native")


def _rows(pi_check: ModuleType) -> list[dict]:
    return pi_check.by_label(pi_check.parse_predictions(predict_output(), "native"))


def test_pi_check_compares_within_the_tolerance(pi_check: ModuleType) -> None:
    native = _rows(pi_check)
    assert pi_check.compare(native, copy.deepcopy(native), TOLERANCE) == 0.0
    emulated = copy.deepcopy(native)
    emulated[2]["top"][5] += TOLERANCE / 2
    assert pi_check.compare(native, emulated, TOLERANCE) == pytest.approx(TOLERANCE / 2)
    emulated[2]["top"][5] += TOLERANCE
    with pytest.raises(SystemExit, match=r"\[2\]\.top\.5: native .* \(> 0.0001\)"):
        pi_check.compare(native, emulated, TOLERANCE)


@pytest.mark.parametrize("field", ["digit", "file"])
def test_pi_check_fails_on_another_answer(pi_check: ModuleType, field: str) -> None:
    native = _rows(pi_check)
    emulated = copy.deepcopy(native)
    emulated[0][field] = 9 if field == "digit" else "elsewhere.png"
    with pytest.raises(SystemExit, match=rf"\[0\]\.{field}: native"):
        pi_check.compare(native, emulated, TOLERANCE)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_pi_check_ignores_rank_swaps_and_noise_below_the_tolerance(data: st.DataObject) -> None:
    # Another CPU may order near-equal small probabilities differently and round the last decimals its own way.
    pi_check = pi_check_module()
    rows = pi_check.parse_predictions(predict_output(), "native")
    emulated = copy.deepcopy(rows)
    noise = 0.0
    for row in emulated:
        row["top"] = data.draw(st.permutations(row["top"]))
        for entry in row["top"]:
            delta = data.draw(st.floats(-TOLERANCE / 2, TOLERANCE / 2))
            entry["probability"] += delta
            noise = max(noise, abs(delta))
        row["probability"] = next(t["probability"] for t in row["top"] if t["digit"] == row["digit"])
    diff = pi_check.compare(pi_check.by_label(rows), pi_check.by_label(emulated), TOLERANCE)
    assert diff == pytest.approx(noise, abs=1e-12)


def test_pi_check_reads_a_version_from_a_dist_info_folder(pi_check: ModuleType) -> None:
    assert pi_check.dist_version("ai_edge_litert-2.3.0.dist-info") == "2.3.0"
    assert pi_check.dist_version("onnxruntime-1.18.1.dist-info") == "1.18.1"


def test_pi_check_asks_for_every_manylinux_tag_a_bookworm_pi_runs(pi_check: ModuleType) -> None:
    platforms = {pi_check.WHEEL_TARGET[i + 1] for i, arg in enumerate(pi_check.WHEEL_TARGET) if arg == "--platform"}
    # ai-edge-litert's aarch64 wheel is manylinux_2_27: a list of only 2014/2_17/2_28 found no wheel for it
    assert {"manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_36_aarch64"} <= platforms
    assert "manylinux_2_37_aarch64" not in platforms  # newer than bookworm's glibc 2.36: would not load
