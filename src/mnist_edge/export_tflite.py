"""Write a model as a LiteRT `.tflite` file with `litert-torch` (the [tflite] extra), fp32 or static int8.

LiteRT's files have static shapes and its converter could not lower a symbolic batch (torch.export's Dim),
and a batch-1 file cannot be resized (its Reshape has the batch built in). So each file holds two signatures
over the same weights, `batch_1` and `batch_64`; edge/litert.py runs a batch as chunks of them.

Static int8 is PT2E: the model is captured once with a dynamic batch, observed on the calibration images
(training digits, as for ONNX's static int8) in batches, then converted per signature. Per-channel symmetric
int8 weights, per-tensor int8 activations (litert-torch's symmetric config). The int8 model's outputs are
int8 with a scale and zero point; the runtime dequantizes them.

Every output the module returns (logits, then any per-image extras such as `not_digit`) becomes an output
of each signature, in order; the metadata names them (`output_names`). The metadata travels inside the
flatbuffer (its `metadata` list, entry METADATA_NAME, as JSON): LiteRT's own place for it.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_edge.atomic import write_bytes
from mnist_edge.edge.litert import METADATA_NAME
from mnist_edge.spec import INPUT_SHAPE, OUTPUT_NAME

BATCHES = (1, 64)  # the signatures: one image (predict's usual case) and predict's batch size
CALIBRATION_BATCH = 64
PARITY_BATCH = 1000
DEFAULT_OUTPUT_NAMES = (OUTPUT_NAME, "not_digit")  # a model returning a tuple returns them in this order


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


def tflite_model(model: nn.Module, quantization: str, calibration: np.ndarray | None = None) -> bytes:
    """MODEL (eval mode) as a TFLite flatbuffer with the BATCHES signatures: fp32 ("none") or "static" int8."""
    model.eval()
    if quantization == "none":
        return _convert(model)
    if quantization != "static" or calibration is None:
        # a bug in the caller
        raise ValueError(f"LiteRT export makes fp32 or calibrated static int8, not {quantization!r}")
    return _convert(*_quantized(model, calibration))


def output_names(model: nn.Module) -> list[str]:
    """The module's outputs as the metadata names them: the module's `output_names` attribute if it has one, else
    logits then the "not a digit" probability; any further ones output_2, output_3, ..."""
    with torch.no_grad():
        out = model(_zeros(1)[0])
    count = len(out) if isinstance(out, (tuple, list)) else 1
    names = list(getattr(model, "output_names", DEFAULT_OUTPUT_NAMES))[:count]
    return names + [f"output_{i}" for i in range(len(names), count)]


def extra_output_failures(model: nn.Module, path: Path, images: np.ndarray, max_abs_diff: float | None) -> list[str]:
    """The parity gate for the outputs after the logits (such as not_digit): each within MAX_ABS_DIFF of what
    MODEL computes on IMAGES (None: unchecked, as quantized logits are). The logits are check_artifact's."""
    from mnist_edge.edge.litert import LiteRTModel

    names = output_names(model)
    if max_abs_diff is None or len(names) < 2:
        return []
    file = LiteRTModel(path)
    worst = np.zeros(len(names) - 1)
    for i in range(0, len(images), PARITY_BATCH):
        batch = images[i : i + PARITY_BATCH]
        with torch.no_grad():
            expected = [t.float().numpy() for t in model(torch.from_numpy(batch))[1:]]
        got = file.outputs(batch)[1:]
        worst = np.maximum(worst, [np.abs(g.astype(np.float64) - e).max(initial=0) for g, e in zip(got, expected)])
    return [f"{name}: max abs diff {w:.3g} > {max_abs_diff:g}"
            for name, w in zip(names[1:], worst) if not w <= max_abs_diff]


def with_metadata(content: bytes, metadata: dict[str, str]) -> bytes:
    """CONTENT with METADATA as its METADATA_NAME entry (replacing any earlier one): JSON in a buffer of its own."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    kept = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def litert_metadata(model: nn.Module, metadata: dict[str, str]) -> dict[str, str]:
    """What a LiteRT file's metadata adds to export's METADATA: its outputs' names, its signatures, and the
    converter's and runtime's versions beside the others."""
    from importlib.metadata import version

    versions = json.loads(metadata.get("versions", "{}")) | {p: version(p) for p in ("litert-torch", "ai-edge-litert")}
    return {
        "output_names": json.dumps(output_names(model)),
        "signatures": json.dumps([signature_name(b) for b in BATCHES]),
        "versions": json.dumps(versions),
    }


def save_tflite(
    content: bytes, path: Path | str, metadata: dict[str, str], extra: dict[str, str] | None = None
) -> None:
    """Write CONTENT with METADATA and EXTRA stamped in, as one file (export stages it under a temporary name)."""
    write_bytes(path, with_metadata(content, {**metadata, **(extra or {})}))
