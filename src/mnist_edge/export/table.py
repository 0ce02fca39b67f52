"""The export formats (ONNX, LiteRT, TorchScript), one entry each: how its model is made for a quantization, how it is written, and why a
quantization may make nothing. Export, verify and benchmark dispatch through it; formats.py names the formats
(torch-free, for the manifest and the CLI). A new format is one entry here, one there, and one writer module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mnist_edge.export import onnx_writer, tflite_writer, torchscript_writer
from mnist_edge.formats import ONNX, TFLITE, TORCHSCRIPT


@dataclass(frozen=True)
class Writer:
    # (model, quantization, calibration images, a dict shared by one model's files) -> what save writes, or None
    make: Callable[[nn.Module, str, np.ndarray | None, dict[str, Any]], Any]
    save: Callable[[Any, Path, dict[str, str]], None]  # (made, path, metadata)
    nothing_to_quantize: dict[str, str]  # quantization -> why it may make nothing, with {arch}


WRITERS: dict[str, Writer] = {
    ONNX: Writer(onnx_writer.make, onnx_writer.save_onnx, onnx_writer.NOTHING_TO_QUANTIZE),
    TFLITE: Writer(tflite_writer.make, tflite_writer.save, tflite_writer.NOTHING_TO_QUANTIZE),
    TORCHSCRIPT: Writer(torchscript_writer.make, torchscript_writer.save, torchscript_writer.NOTHING_TO_QUANTIZE),
}
