"""The writer of each export format, found through formats.FORMATS: every writer module has the Writer interface,
and export and benchmark dispatch through it. A new format is one FORMATS entry and one writer module."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
from torch import nn

from mnist_edge.formats import FORMATS


@runtime_checkable  # tests hold each writer module to it
class Writer(Protocol):
    """What a writer module defines (onnx_writer, tflite_writer, torchscript_writer)."""

    # Quantization -> why it may make nothing, with {arch}: a mode the format lacks (formats.Format.quantizes), or one
    # that finds nothing to quantize in the model (make returns None then).
    NOTHING_TO_QUANTIZE: dict[str, str]

    def make(
        self, model: nn.Module, quantization: str, calibration: np.ndarray | None, shared: dict[str, Any], /
    ) -> Any:
        """MODEL in QUANTIZATION (calibrated on CALIBRATION for static int8), or None when there is nothing to
        quantize; SHARED is a dict the caller keeps across one model's files."""

    def save(self, made: Any, path: Path | str, metadata: dict[str, str], /) -> None:
        """Write what make made, with METADATA, at PATH as one file."""


def writer_for(fmt: str) -> Writer:
    """The writer module of export format FMT, imported on first use (only the formats asked for load)."""
    return cast(Writer, importlib.import_module(FORMATS[fmt].writer))
