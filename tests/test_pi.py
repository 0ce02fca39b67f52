"""The Raspberry Pi path: what a Pi installs (the base dependencies) and, under marker `pi`, tools/pi_check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


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
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "pi_check")], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "OK: same digits" in proc.stdout
    assert "qemu cortex-a72" in proc.stdout and "qemu cortex-a76" in proc.stdout
    assert "edgenet.int8.tflite" in proc.stdout  # LiteRT's files too, each held to its ONNX twin's digits
