"""Build the project's wheel from a copy of the tree without what git ignores, so no build/ or egg-info is left
behind and no stale build/lib of an earlier build can slip a deleted module into it.

usage: python tools/build_wheel.py [--out DIR] [--exported DIR]   (pi_check and tests/test_wheel.py use build_wheel)

Offline: no build isolation, so the Python running it needs setuptools (pyproject.toml's build-system floor).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from _toolcli import Parser, run, summary

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out_dir: Path, exported: Path | None = None, python: Path | str = sys.executable) -> Path:
    """Build into OUT_DIR with PYTHON; EXPORTED replaces the tree's exported/ (the models the wheel ships)."""
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines() if line.strip()]
    ignore = shutil.ignore_patterns(".git", *ignored)
    with tempfile.TemporaryDirectory(prefix="mnist-edge-wheel.") as work:
        tree = Path(work) / "tree"
        shutil.copytree(ROOT, tree, ignore=ignore)
        if exported is not None and exported.resolve() != (ROOT / "exported").resolve():
            shutil.rmtree(tree / "exported")
            shutil.copytree(exported, tree / "exported", ignore=ignore)
        command = [
            str(python), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out_dir), str(tree),
        ]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"wheel build failed:\n{proc.stdout}{proc.stderr}")
    return max(Path(out_dir).glob("mnist_edge-*.whl"), key=lambda p: p.stat().st_mtime)


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the wheel goes (default: dist/)")
    parser.add_argument("--exported", type=Path, help="ship the models in this folder instead of exported/")
    args = parser.parse_args()
    print(build_wheel(args.out, args.exported))


if __name__ == "__main__":
    run(main)
