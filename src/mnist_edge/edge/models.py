"""Open a model file with the runtime its content calls for: LiteRT for a TFLite flatbuffer, ONNX Runtime for
anything else. Only the chosen runtime is imported, so a `.tflite` run never loads ONNX Runtime and an `.onnx`
run never loads LiteRT, and a device needs only the one it uses."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from mnist_edge.formats import ONNX, runtime_format, runtime_model


class EdgeModel(Protocol):
    """What predict and serve need of a model, whichever runtime runs it."""

    path: Path
    metadata: dict[str, str]
    threshold: float | None  # an open-set model's "not a digit" threshold; None: it cannot refuse

    def run(self, images: np.ndarray) -> np.ndarray: ...

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


def open_model(path: Path | str, threads: int | None = None) -> EdgeModel:
    """PATH opened with LiteRT if it holds a TFLite flatbuffer (or is named .tflite), else with ONNX Runtime.
    THREADS as the runtime's own class takes it (default: one per usable CPU)."""
    path = Path(path)
    return runtime_model(runtime_format(path) or ONNX)(path, threads)  # imports that runtime alone
