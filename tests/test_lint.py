"""The linter, the type checker and the size floors, so the README's test command checks what CI checks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "mnist_edge"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Over the floors, each to be split: none since issue 24, and the set may only shrink.
OVERSIZED: set[str] = set()


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="ruff is in the test extra")
    result = run("ruff", "check", "--no-cache", "src", "tests", "tools", "setup.py")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.torch  # the torch side is checked against torch's own types
def test_mypy_finds_nothing(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    result = run("mypy", "--cache-dir", str(tmp_path))  # files and settings: pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr


def oversized() -> set[str]:
    """Modules over MAX_MODULE_LINES lines, as 'path', and functions over MAX_FUNCTION_LINES, as 'path:name'."""
    found = set()
    for path in sorted(SOURCE.rglob("*.py")):
        name, text = path.relative_to(SOURCE).as_posix(), path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.add(name)
        functions = [n for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        found |= {f"{name}:{f.name}" for f in functions if (f.end_lineno or 0) - f.lineno + 1 > MAX_FUNCTION_LINES}
    return found


def test_no_module_or_function_grows_over_the_floors():
    found = oversized()
    assert found <= OVERSIZED, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function: {sorted(found - OVERSIZED)}"
    )
    assert found >= OVERSIZED, f"now within the floors: take {sorted(OVERSIZED - found)} off OVERSIZED"
