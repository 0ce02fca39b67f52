"""The scripts in tools/ (not a package), imported by file for the tests that check them."""

from __future__ import annotations

import csv
import importlib.machinery
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"
SAMPLES = TOOLS.parent / "src" / "mnist_edge" / "samples"


def tool(name: str) -> ModuleType:
    """tools/NAME.py, or tools/NAME for a script without the suffix (pi_check), imported as when it runs:
    with tools/ on sys.path, so its imports of the other tools resolve."""
    path = TOOLS / f"{name}.py"
    if not path.is_file():
        path = TOOLS / name
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None, name
    if str(TOOLS) not in sys.path:  # as `python tools/NAME.py` has it: the scripts import their helper, _toolcli
        sys.path.append(str(TOOLS))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(TOOLS))
    try:
        loader.exec_module(module)
    finally:
        sys.path.remove(str(TOOLS))
    return module


def wild_set(folder: Path) -> Path:
    """Three shipped sample digits as a digits-in-the-wild folder (tools/wild_accuracy.py's input): images and
    their labels.csv."""
    folder.mkdir()
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "kind"])
        for name in ("mnist-0.png", "mnist-7.png", "paper-3.png"):
            shutil.copy(SAMPLES / name, folder / name)
            writer.writerow([name, name[-5], "drawn"])
    return folder
