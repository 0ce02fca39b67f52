"""The TorchScript writer (legacy, for torch users): a model traced and frozen once, then written with its metadata
as an extra file, so the file published is the very trace the parity gate ran."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_edge.atomic import write_bytes
from mnist_edge.export import quantize
from mnist_edge.export.artifacts import TORCHSCRIPT_METADATA
from mnist_edge.export.onnx_writer import deployable, example_input
from mnist_edge.formats import DYNAMIC, STATIC

NOTHING_TO_QUANTIZE = {DYNAMIC: "{arch} has no Linear layer, and torch dynamic quantization only touches Linear layers"}


def make(
    model: nn.Module, quantization: str, calibration: np.ndarray | None, _shared: dict[str, Any]
) -> torch.jit.ScriptModule | None:
    """MODEL (quantized by torch in QUANTIZATION) traced and frozen; None when there is nothing to quantize."""
    model = deployable(model)
    if quantization == DYNAMIC:
        variant = quantize.torch_dynamic(model)
    elif quantization == STATIC:
        variant = quantize.torch_static(model, quantize.required(calibration))
    else:
        variant = model
    return None if variant is None else trace(variant)


def trace(model: nn.Module) -> torch.jit.ScriptModule:
    """MODEL (float or torch-quantized) traced and frozen. Tracing is exact here: in eval mode the models have no
    data-dependent control flow."""
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream: we ship it as legacy
        # A torch-quantized model's scales and zero points become constants, which is what they are.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.freeze(torch.jit.trace(model, example_input()))


def save(traced: torch.jit.ScriptModule, path: Path | str, metadata: dict[str, str]) -> None:
    """Write TRACED with METADATA as its extra file."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream: we ship it as legacy
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})
    write_bytes(path, buffer.getvalue())
