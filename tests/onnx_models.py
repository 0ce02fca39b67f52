"""Small ONNX files for the runtime and predict tests: real exports of the registry's models, and
deliberately wrong ones."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from mnist_edge.train.architectures import create_model
from mnist_edge.spec import INPUT_NAME, OUTPUT_NAME


def export_model(
    module: nn.Module,
    path: Path,
    input_shape: tuple[int, ...] = (2, 1, 28, 28),
    input_names: tuple[str, ...] = (INPUT_NAME,),
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
    dynamic_batch: bool = True,
) -> Path:
    module.eval()
    axes = {name: {0: "N"} for name in input_names + output_names} if dynamic_batch else None
    example = tuple(torch.rand(input_shape) for _ in input_names)
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated; fine for fixtures
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, example, str(path), input_names=list(input_names), output_names=list(output_names),
            dynamic_axes=axes, dynamo=False,
        )
    return path


def export_arch(arch: str, path: Path, seed: int = 0) -> tuple[nn.Module, Path]:
    """A random-weights ARCH exported to PATH, with the model it came from."""
    torch.manual_seed(seed)
    model = create_model(arch).eval()
    return model, export_model(model, path)
