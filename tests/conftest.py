from __future__ import annotations

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
