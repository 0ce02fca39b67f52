"""The edge package's boundary, read from the source: everything under mnist_edge/edge/ (and the shared modules it
uses) imports only the standard library, numpy, Pillow, ONNX Runtime, LiteRT, serve's ASGI stack and the project's
torch-free shared modules, anywhere in a file (imports inside functions count: they run too)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
EDGE = SRC / "mnist_edge" / "edge"
# starlette, uvicorn, python_multipart: serve only; ai_edge_litert: the [litert] extra's runtime for .tflite files
THIRD_PARTY = {"numpy", "PIL", "onnxruntime", "ai_edge_litert", "starlette", "uvicorn", "python_multipart"}
# torch-free, shared
SHARED = {"mnist_edge.spec", "mnist_edge.errors", "mnist_edge.atomic", "mnist_edge.formats", "mnist_edge.schema"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def module_file(name: str) -> Path:
    base = SRC.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def shared_modules_reached() -> set[str]:
    """The project's modules outside edge/ that edge/ imports, directly or through another of them."""
    files, seen, shared = sorted(EDGE.rglob("*.py")), set(), set()
    while files:
        path = files.pop()
        if path not in seen:
            seen.add(path)
            reached = {
                name
                for name in imports(path)
                if name.startswith("mnist_edge") and not name.startswith("mnist_edge.edge")
            }
            shared |= reached
            files += [module_file(name) for name in reached]
    return shared


def test_the_edge_package_names_every_shared_module_it_uses():
    import mnist_edge.edge

    assert shared_modules_reached() <= SHARED
    assert [name for name in sorted(SHARED) if f"`{name}`" not in (mnist_edge.edge.__doc__ or "")] == []


def test_the_edge_package_imports_only_what_a_device_installs():
    files = sorted(EDGE.rglob("*.py"))
    assert len(files) >= 5
    seen: set[Path] = set()
    stray: list[str] = []
    while files:
        path = files.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports(path):
            top = name.split(".")[0]
            if name.startswith("mnist_edge.edge") or name in SHARED:
                files.append(module_file(name))  # the shared modules' own imports are held to the same rule
            elif top in sys.stdlib_module_names or top in THIRD_PARTY or name == "__future__":
                continue
            else:
                stray.append(f"{path.relative_to(SRC)} imports {name}")
    assert stray == []
