"""Shared fixtures. Torch is imported inside the fixtures that need it, so the torch-free tests collect and
run on the base install."""

from __future__ import annotations

import ast
import importlib.util
import os
import struct
import zlib
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from mnist_edge.train.data import DATA_ENV, WILD_ENV, local_dataset

ROOT = Path(__file__).resolve().parents[1]
# Found by the code's own rule (data.local_dataset): the variable, else shared/data above this checkout. Given
# the checkout, so an installed wheel under test (CI's lowest-versions run) finds the same copies.
MNIST_DIR = local_dataset("mnist", DATA_ENV, ROOT)
WILD_DIR = local_dataset("digits-in-the-wild", WILD_ENV, ROOT)  # 72 real digits, each named NNN_label-D.ext
DATA_SKIP = "data missing: "  # the reason's prefix for a skip that hides real coverage: reported loudly

# Commands under test (subprocesses, an installed wheel) find the same copies through the variables.
for _env, _found in ((DATA_ENV, MNIST_DIR), (WILD_ENV, WILD_DIR)):
    if _found is not None:
        os.environ.setdefault(_env, str(_found))


def skip_for_missing_data(what: str) -> None:
    """Skip (or fail under CI=true, where the data must be there) a test whose data is missing."""
    message = f"{what} not found (set {DATA_ENV} / {WILD_ENV}, or keep shared/data beside the checkout)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(DATA_SKIP + message)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if MNIST_DIR is None or not MNIST_DIR.is_dir():
        skip_for_missing_data(f"real MNIST ({MNIST_DIR or 'mnist'})")
    return MNIST_DIR


@pytest.fixture(scope="session")
def wild_dir() -> Path:
    if WILD_DIR is None or not WILD_DIR.is_dir():
        skip_for_missing_data(f"digits-in-the-wild ({WILD_DIR or 'digits-in-the-wild'})")
    return WILD_DIR


@pytest.fixture(scope="session")
def make_checkpoint() -> Callable[..., Path]:
    """checkpoints.seeded_checkpoint, for tests that need their own (another arch, seed, metadata or logit scale)."""
    from checkpoints import seeded_checkpoint

    return seeded_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained, seeded `tiny` checkpoint (shared: do not modify the file)."""
    from checkpoints import seeded_checkpoint

    return seeded_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A random-weights `tiny` (seed 0) and its ONNX export, shared by the session."""
    from onnx_models import export_arch

    return export_arch("tiny", tmp_path_factory.mktemp("tiny-onnx") / "tiny.onnx")


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 PNG whose header claims WIDTH x HEIGHT pixels: a decompression bomb, if anything decoded it."""
    from PIL import Image

    buffer = BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    png = buffer.getvalue()
    ihdr = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    path.write_bytes(png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:])
    return path


@pytest.fixture(scope="session")
def bomb_png() -> Callable[[Path, int, int], Path]:
    return png_claiming


# Without torch (a base install plus the test tools, as on a Pi or in CI's lowest-versions run) the suite runs
# its torch-free part: a test module is left out when it, or a test helper or mnist_edge module it imports at
# module level, imports a module that is not installed (derived from the imports, so no list needs keeping);
# a test in a torch-free module that reaches torch only through a command is marked `torch`.
def _module_file(name: str) -> Path | None:
    """The source file of a test helper or mnist_edge module, or None for a third-party module."""
    parts = name.split(".")
    base = ROOT / "src" if parts[0] == "mnist_edge" else ROOT / "tests"
    for candidate in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def missing_imports(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Third-party top-level modules that PATH needs at import time (through local modules too) and that are missing."""
    seen = set() if seen is None else seen
    if path in seen:
        return set()
    seen.add(path)
    missing: set[str] = set()
    for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            local = _module_file(name)
            if local is not None:
                missing |= missing_imports(local, seen)
            elif _module_file(name.split(".")[0]) is None and importlib.util.find_spec(name.split(".")[0]) is None:
                missing.add(name.split(".")[0])
    return missing


TORCH_FREE_RUN = importlib.util.find_spec("torch") is None
LEFT_OUT: dict[str, set[str]] = {}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not TORCH_FREE_RUN or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    missing = missing_imports(collection_path)
    if missing:
        LEFT_OUT[collection_path.name] = missing
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if TORCH_FREE_RUN:
        skip = pytest.mark.skip(reason="needs torch (the [train] extra)")
        for item in items:
            if item.get_closest_marker("torch"):
                item.add_marker(skip)


def data_skips(terminalreporter: pytest.TerminalReporter) -> list[str]:
    """The tests skipped because their data is missing: real coverage that did not run."""
    skipped = terminalreporter.stats.get("skipped", [])
    return [report.nodeid for report in skipped
            if isinstance(report.longrepr, tuple) and DATA_SKIP in str(report.longrepr[2])]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    missed = data_skips(terminalreporter)
    if missed:
        terminalreporter.write_sep("!", f"{len(missed)} TESTS DID NOT RUN: their data is missing", red=True, bold=True)
        for nodeid in missed:
            terminalreporter.write_line(f"  {nodeid}", red=True)
        terminalreporter.write_line(f"set {DATA_ENV} (MNIST's IDX files) and {WILD_ENV} (digits-in-the-wild), or keep "
                                    "shared/data beside the checkout; CI=true makes these failures", red=True)
    if LEFT_OUT:
        terminalreporter.write_line("torch-free run: left out " + ", ".join(
            f"{name} (needs {', '.join(sorted(missing))})" for name, missing in sorted(LEFT_OUT.items())))
