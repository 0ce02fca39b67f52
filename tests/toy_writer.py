"""The writer module of a format of the tests' own (test_export.py): its files are TorchScript archives under a
suffix of their own, and it is fp32 only. It has the interface of every writer module (export/writers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mnist_edge.export import torchscript_writer

NOTHING_TO_QUANTIZE = {"dynamic": "toy files are fp32 only", "static": "{arch} stays fp32 in a toy file"}
ASKED: list[str] = []  # the quantizations export asked make for


def make(model: nn.Module, quantization: str, calibration: np.ndarray | None, shared: dict[str, Any]) -> Any:
    ASKED.append(quantization)
    return torchscript_writer.make(model, quantization, calibration, shared)


def save(made: Any, path: Path | str, metadata: dict[str, str]) -> None:
    torchscript_writer.save(made, path, metadata)
