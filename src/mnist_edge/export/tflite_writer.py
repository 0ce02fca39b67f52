"""The LiteRT writer: a model as a `.tflite` file with `litert-torch` (the [tflite] extra), fp32 or static int8.

LiteRT's files have static shapes and its converter could not lower a symbolic batch (torch.export's Dim),
and a batch-1 file cannot be resized (its Reshape has the batch built in). So each file holds two signatures
over the same weights, `batch_1` and `batch_64`; edge/litert.py runs a batch as chunks of them.

Static int8 is PT2E: the model is captured once with a dynamic batch, observed on the calibration images
(training digits, as for ONNX's static int8) in batches, then converted per signature. Per-channel symmetric
int8 weights, per-tensor int8 activations (litert-torch's symmetric config). The int8 model's outputs are
int8 with a scale and zero point; the runtime dequantizes them.

The file holds what every exported file computes (onnx_writer.deployable): an open-set model's `not_digit`
becomes a second output of each signature, after the logits; the metadata names them (`output_names`) and
carries the "not a digit" threshold, as an ONNX file's does. The metadata travels inside the flatbuffer (its
`metadata` list, entry formats.TFLITE_METADATA, as JSON): LiteRT's own place for it. Neither LiteRT package is
imported until a file is made or written, so export's other formats never need them.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from mnist_edge.atomic import write_bytes
from mnist_edge.export import quantize
from mnist_edge.export.onnx_writer import deployable, graph_proto, output_names
from mnist_edge.formats import DYNAMIC, NONE, STATIC, TFLITE_IDENTIFIER, TFLITE_METADATA
from mnist_edge.spec import INPUT_SHAPE

BATCHES = (1, 64)  # the signatures: one image (predict's usual case) and predict's batch size
CALIBRATION_BATCH = 64
NOTHING_TO_QUANTIZE = {DYNAMIC: "LiteRT files are quantized static int8 only (PT2E, calibrated); use --quantize static"}


@dataclass(frozen=True)
class Made:
    """A converted model: the flatbuffer, and its outputs' names for the metadata."""

    content: bytes
    output_names: list[str]
    # Static int8: the same quantized graph as ONNX (the same scales, zero points and int8 weights), so the gate can
    # hold LiteRT to ONNX Runtime's answers on one model; the file's own quantizer differs from export's ONNX int8.
    twin: onnx.ModelProto | None = None


def make(model: nn.Module, quantization: str, calibration: np.ndarray | None, _shared: dict[str, Any]) -> Made:
    """MODEL as a LiteRT flatbuffer in QUANTIZATION, fp32 or static int8 (what every exported file computes of it);
    export never asks for dynamic, which formats.FORMATS says LiteRT files do not have."""
    return flatbuffer(deployable(model), output_names(model), quantization, calibration)


def flatbuffer(module: nn.Module, names: list[str], quantization: str, calibration: np.ndarray | None = None) -> Made:
    """MODULE (what a file computes, outputs NAMES) as a flatbuffer with the BATCHES signatures: fp32 ("none") or
    "static" int8 calibrated on CALIBRATION, with its ONNX twin."""
    module.eval()
    if quantization == NONE:
        return Made(_convert(module), names)
    if quantization != STATIC:
        raise ValueError(f"LiteRT export makes fp32 or calibrated static int8, not {quantization!r}")  # a caller's bug
    converted, config = _quantized(module, quantize.required(calibration))
    return Made(_convert(converted, config), names, graph_proto(converted, names))


def save(made: Made, path: Path | str, metadata: dict[str, str]) -> None:
    """Write MADE with METADATA and what a LiteRT file adds to it stamped in, as one file."""
    write_bytes(path, with_metadata(made.content, {**metadata, **litert_metadata(made.output_names, metadata)}))


def signature_name(batch: int) -> str:
    return f"batch_{batch}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """litert-torch prints a progress tree and absl/XLA logs; export reports its own result line."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _zeros(batch: int) -> tuple[torch.Tensor]:
    return (torch.zeros(batch, *INPUT_SHAPE),)


def _convert(module: nn.Module, quant_config: object | None = None) -> bytes:
    import litert_torch

    converter = litert_torch.Converter()
    for batch in BATCHES:
        converter.signature(signature_name(batch), module, _zeros(batch))
    with _quiet(), torch.no_grad():
        return bytes(converter.convert(quant_config=quant_config).model_content())


def _quantized(model: nn.Module, calibration: np.ndarray) -> tuple[nn.Module, object]:
    """MODEL with PT2E int8 fake-quant ops calibrated on CALIBRATION, and the config the converter needs."""
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(config)
    with _quiet(), torch.no_grad():
        captured = torch.export.export(model, _zeros(2), dynamic_shapes=({0: torch.export.Dim("N")},)).module()
        prepared = quantize_pt2e.prepare_pt2e(captured, quantizer)
        for i in range(0, len(calibration), CALIBRATION_BATCH):
            prepared(torch.from_numpy(calibration[i : i + CALIBRATION_BATCH]))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(converted)  # a captured graph has no eval(); the converter warns of training mode
    return converted, quant_config.QuantConfig(pt2e_quantizer=quantizer)


def with_metadata(content: bytes, metadata: dict[str, str]) -> bytes:
    """CONTENT with METADATA as its TFLITE_METADATA entry (replacing any earlier one): JSON in a buffer of its own."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    kept = [m for m in (model.metadata or []) if m.name not in (TFLITE_METADATA, TFLITE_METADATA.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_METADATA, len(model.buffers) - 1
    model.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def litert_metadata(names: list[str], metadata: dict[str, str]) -> dict[str, str]:
    """What a LiteRT file's metadata adds to export's METADATA: its outputs' NAMES, its signatures, and the
    converter's and runtime's versions beside the others."""
    from importlib.metadata import version

    versions = json.loads(metadata.get("versions", "{}")) | {p: version(p) for p in ("litert-torch", "ai-edge-litert")}
    return {
        "output_names": json.dumps(names),
        "signatures": json.dumps([signature_name(b) for b in BATCHES]),
        "versions": json.dumps(versions),
    }
