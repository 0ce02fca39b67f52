"""Open any model file as a logits function: an ONNX file, a TorchScript file or a training checkpoint.

What is safe to open from a stranger: ONNX files (ONNX Runtime runs a graph of known operators, never the
file's own code) and mnist-edge checkpoints (read with torch.load(weights_only=True): tensors and plain data
only). Not safe: TorchScript. A TorchScript archive *is* code: torch.jit.load compiles and runs the Python-like
source inside it (`forward`, `__setstate__`), which can read and write files. So a TorchScript file is opened
only when the caller says it trusts it (`--trust-torchscript` on the command line).
"""

from __future__ import annotations

import functools
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnist_edge.errors import MnistEdgeError, first_line, require_file
from mnist_edge.measure.evaluate import LogitsFn, torch_logits_fn
from mnist_edge.formats import CHECKPOINT, FORMATS, TORCHSCRIPT, runtime_format, runtime_model
from mnist_edge.spec import INPUT_SHAPE, INPUT_SPEC, NUM_CLASSES, THRESHOLD_KEY

if TYPE_CHECKING:
    from mnist_edge.edge.models import EdgeModel

TORCHSCRIPT_METADATA = "mnist_edge.json"  # the _extra_files entry of a TorchScript file that holds its metadata
TRUST_FLAG = "--trust-torchscript"


@dataclass(frozen=True)
class LoadedArtifact:
    format: str  # a formats.FORMATS name
    metadata: dict[str, str]
    logits_fn: LogitsFn

    @property
    def quantization(self) -> str:
        return self.metadata.get("quantization", "none")


def model_format(path: Path) -> str:
    """What kind of model file PATH is. A zip is TorchScript or a checkpoint by its content, whatever its name
    (a TorchScript archive renamed .onnx or .bin is still code), a TFLite flatbuffer by its content; anything else by
    the suffix of a format an edge runtime runs (.onnx, .tflite)."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = []  # load_checkpoint says what is wrong with it
        return TORCHSCRIPT if any(name.endswith("/constants.pkl") or "/code/" in name for name in names) else CHECKPOINT
    if fmt := runtime_format(path):
        return fmt
    if path.suffix in (".pt", ".pth"):
        return CHECKPOINT  # load_checkpoint says what it is instead
    raise MnistEdgeError(f"{path}: not a model file (expected .onnx, .tflite, a TorchScript .pt or a checkpoint .pt)")


def require_checkpoint(path: Path) -> None:
    """A MnistEdgeError saying what PATH is when it is a model file but not a training checkpoint."""
    require_file(path, "checkpoint")
    fmt = model_format(path) if zipfile.is_zipfile(path) or path.suffix == ".onnx" else CHECKPOINT
    if fmt != CHECKPOINT:
        raise MnistEdgeError(
            f"{path}: an exported {FORMATS[fmt].display} file, not a training checkpoint (`mnist-edge train` writes "
            "those)"
        )


def untrusted_torchscript(path: Path) -> MnistEdgeError:
    return MnistEdgeError(
        f"{path}: refused: a TorchScript file is code (loading it runs the code inside it, which can do anything "
        f"your account can); pass {TRUST_FLAG} only if you trust where it came from, or use the ONNX file"
    )


def open_artifact(path: Path | str, fmt: str | None = None, *, trust_torchscript: bool = False) -> LoadedArtifact:
    """Open a model file as a logits_fn: ONNX (ONNX Runtime), TFLite (LiteRT), TorchScript or a training checkpoint.

    FMT defaults to what the file is (model_format). A TorchScript file is refused unless TRUST_TORCHSCRIPT.
    Wrong files and wrong interfaces are MnistEdgeErrors.
    """
    path = Path(path)
    require_file(path, "file")
    fmt = fmt or model_format(path)
    if FORMATS[fmt].runtime:  # a format with an edge runtime: ONNX Runtime, LiteRT
        model = runtime_model(fmt)(path)
        return LoadedArtifact(fmt, model.metadata, functools.partial(_joined, model))
    if fmt == CHECKPOINT:
        from mnist_edge.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        meta = {"arch": ckpt.arch, "quantization": "none"}
        if ckpt.model.open_set:
            meta[THRESHOLD_KEY] = repr(float(ckpt.model.not_digit_threshold))
        return LoadedArtifact(CHECKPOINT, meta, torch_logits_fn(ckpt.model))
    if not trust_torchscript:
        raise untrusted_torchscript(path)
    return _open_torchscript(path)


def _joined(model: EdgeModel, images: np.ndarray) -> np.ndarray:
    """MODEL's outputs as one array, a logits_fn's form (evaluate.py): logits, then not_digit as a column."""
    logits, not_digit = model.outputs(images)
    return logits if not_digit is None else np.concatenate([logits, not_digit[:, None]], axis=1)


def _open_torchscript(path: Path) -> LoadedArtifact:
    import torch

    extra = {TORCHSCRIPT_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; we ship it as legacy
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise MnistEdgeError(f"{path}: not a loadable TorchScript file ({first_line(exc)})") from None
    try:
        metadata = json.loads(extra[TORCHSCRIPT_METADATA] or "{}")
    except ValueError:
        metadata = {}
    if not isinstance(metadata, dict):
        metadata = {}
    module.eval()
    logits_fn = torch_logits_fn(module)
    # TorchScript declares no input/output types an ONNX-style check could read: probe it instead.
    probe = np.zeros((2, *INPUT_SHAPE), np.float32)
    try:
        shape = tuple(np.asarray(logits_fn(probe)).shape)
    except Exception as exc:  # a foreign module can raise anything
        raise MnistEdgeError(f"{path}: wrong model interface: it fails on {INPUT_SPEC} ({first_line(exc)})") from None
    if shape not in ((2, NUM_CLASSES), (2, NUM_CLASSES + 1)):
        raise MnistEdgeError(
            f"{path}: wrong model interface: returns shape {list(shape)} for 2 images, expected [2,{NUM_CLASSES}]"
        )
    return LoadedArtifact(TORCHSCRIPT, {str(k): str(v) for k, v in metadata.items()}, logits_fn)


def threshold_of(artifact: LoadedArtifact) -> float | None:
    """The "not a digit" threshold ARTIFACT carries; None for a model that cannot refuse (or says nothing)."""
    text = artifact.metadata.get(THRESHOLD_KEY)
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0.0 <= value <= 1.0 else None
