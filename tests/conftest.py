from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"

# Commands under test find the real MNIST the way a user points at it, unless the caller chose another.
if SHARED_MNIST.is_dir():
    os.environ.setdefault("MNIST_EDGE_DATA", str(SHARED_MNIST))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = Path(os.environ.get("MNIST_EDGE_DATA", SHARED_MNIST))
    if not path.is_dir():
        pytest.skip("real MNIST not available (set MNIST_EDGE_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained, seeded `tiny` checkpoint (shared: do not modify the file)."""
    from checkpoints import seeded_checkpoint

    return seeded_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.pt")


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if LEFT_OUT:
        terminalreporter.write_line("torch-free run: left out " + ", ".join(
            f"{name} (needs {', '.join(sorted(missing))})" for name, missing in sorted(LEFT_OUT.items())))
