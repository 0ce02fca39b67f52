"""The wheel carries what a torch-free install needs, derived from the tree, and describes itself truthfully."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

import mnist_edge
from repo_tools import tool

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mnist_edge"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return zipfile.ZipFile(tool("build_wheel").build_wheel(tmp_path_factory.mktemp("dist")))


def test_every_file_of_every_subpackage_under_src_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    files = {
        p.relative_to(PACKAGE.parent).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    folders = {f.rsplit("/", 1)[0] for f in files}
    assert {"mnist_edge", "mnist_edge/edge", "mnist_edge/samples"} <= folders  # modules, a subpackage, data files
    assert files <= names, sorted(files - names)


def test_the_wheel_carries_the_shipped_onnx_and_tflite_models_and_a_manifest_of_them(wheel: zipfile.ZipFile) -> None:
    repo = json.loads((ROOT / "exported" / "manifest.json").read_text())
    shipped = {a["file"]: a for a in repo["artifacts"] if a["format"] in ("onnx", "tflite")}
    carried = {n.removeprefix("mnist_edge/exported/") for n in wheel.namelist() if n.startswith("mnist_edge/exported/")}
    assert carried == {*shipped, "manifest.json"}
    manifest = json.loads(wheel.read("mnist_edge/exported/manifest.json"))
    assert {a["file"]: a for a in manifest["artifacts"]} == shipped
    assert manifest["default"] == repo["default"] and shipped[manifest["default"]]["format"] == "onnx"
    for name, entry in shipped.items():
        assert hashlib.sha256(wheel.read(f"mnist_edge/exported/{name}")).hexdigest() == entry["sha256"]


def test_no_torch_files_and_the_license_and_version_are_declared(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert not [n for n in names if n.endswith(".pt")]  # checkpoint and TorchScript stay in the repo
    (license_file,) = [n for n in names if ".dist-info/" in n and n.endswith("LICENSE")]
    assert wheel.read(license_file).decode().startswith("MIT License")
    metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"\nVersion: {mnist_edge.__version__}\n" in metadata and "\nLicense-Expression: MIT\n" in metadata
    entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "mnist-edge = mnist_edge.cli.runtime:main" in entry_points
