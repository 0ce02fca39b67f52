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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained, seeded `tiny` checkpoint (shared: do not modify the file)."""
    from checkpoints import seeded_checkpoint

    return seeded_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.pt")
