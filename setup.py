"""The wheel's layout, which pyproject.toml's setuptools tables cannot express: every package found under src/ with
all its files, plus exported/ (kept once, at the repo root) mapped into the package as mnist_edge/exported, with a
manifest that lists only the files the wheel carries. Metadata and dependencies live in pyproject.toml."""

from __future__ import annotations

import json
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

SHIPPED = "mnist_edge.exported"
# The shipped ONNX and LiteRT models and their manifest; the checkpoint and TorchScript files stay in the repo
# (torch users). A .tflite file runs only with the [litert] extra; the default is always an ONNX file.
SHIPPED_FILES = ["*.onnx", "*.tflite", "manifest.json"]


class BuildPy(build_py):
    """build_py that rewrites the copied manifest.json to describe the wheel, not the repo's exported/."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the checkout's exported/ as it is
            describe_carried_files(Path(self.build_lib, *SHIPPED.split(".")))


def describe_carried_files(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    artifacts = [a for a in manifest["artifacts"] if (folder / a["file"]).is_file()]
    onnx = [a["file"] for a in artifacts if a["format"] == "onnx"]
    if not onnx:
        raise SystemExit(f"{folder}: the wheel would carry no ONNX model")
    default = manifest.get("default") if manifest.get("default") in onnx else onnx[0]
    path = folder / "manifest.json"
    path.unlink()  # a new file, never a write through a link back to the source tree
    path.write_text(json.dumps({"default": default, "artifacts": artifacts}, indent=2) + "\n")


# Namespace packages too: a folder of data files (samples/, serve's static/) or a subpackage without __init__.py ships.
PACKAGES = find_namespace_packages("src", include=["mnist_edge*"], exclude=["*__pycache__"])


def data_files(package: str) -> list[str]:
    """Every file in PACKAGE's folder that is not Python source or bytecode: it ships as package data."""
    folder = Path("src", *package.split("."))
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc"))


setup(
    packages=[*PACKAGES, SHIPPED],
    package_dir={"": "src", SHIPPED: "exported"},
    package_data={**{p: files for p in PACKAGES if (files := data_files(p))}, SHIPPED: SHIPPED_FILES},
    cmdclass={"build_py": BuildPy},
)
