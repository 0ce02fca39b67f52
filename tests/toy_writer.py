"""A format of the tests' own (test_export.py), as a new format would come: its writer module (this one, with the
interface of every writer module, export/writers.py) and its runtime class (`ToyModel`, an edge model the parity
gate opens it with). Its files are ONNX graphs under a suffix of their own, and it is fp32 only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mnist_edge.edge.runtime import OnnxModel
from mnist_edge.export import onnx_writer

NOTHING_TO_QUANTIZE = {"dynamic": "toy files are fp32 only", "static": "{arch} stays fp32 in a toy file"}
ASKED: list[str] = []  # the quantizations export asked make for
OPENED: list[Path] = []  # the files ToyModel opened


def make(model: nn.Module, quantization: str, calibration: np.ndarray | None, shared: dict[str, Any]) -> Any:
    ASKED.append(quantization)
    return onnx_writer.make(model, quantization, calibration, shared)


def save(made: Any, path: Path | str, metadata: dict[str, str]) -> None:
    onnx_writer.save(made, path, metadata)


class ToyModel(OnnxModel):
    """The toy format's runtime: ONNX Runtime, counting what it opens."""

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        OPENED.append(Path(path))
        super().__init__(path, threads)
