"""The ONNX writer (the edge format): a model exported once with torch.export, quantized by ONNX Runtime's tools,
and written checked, with its metadata, in the one opset and IR version every file is in."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from mnist_edge.atomic import write_bytes
from mnist_edge.export import quantize
from mnist_edge.formats import DYNAMIC, STATIC
from mnist_edge.spec import INPUT_NAME, INPUT_SHAPE, NOT_DIGIT_NAME, OUTPUT_NAME
from mnist_edge.train.architectures import Deployed, MnistClassifier

# The ONNX format every file is written in, chosen for the runtimes users load them in (docs/runtimes.md;
# tools/runtimes.py measures them): opset 19 is the lowest whose DequantizeLinear onnx's reference evaluator
# implements, and OpenVINO, OpenCV and tract run it; ONNX Runtime runs it from 1.16 (1.15 lacks Reshape-19 and
# QuantizeLinear-19). IR 9 is the version opset 19 needs; the exporter's default IR 10 would need ONNX Runtime >= 1.18.
OPSET = 19
IR_VERSION = 9
# Why a quantization may leave nothing to write (with the architecture's name).
NOTHING_TO_QUANTIZE = {
    DYNAMIC: "{arch} has no Linear (MatMul/Gemm) layer, and dynamic quantization here only quantizes those "
    "(ONNX Runtime's ConvInteger ran slower than fp32); use --quantize static",
}


def example_input(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))


def deployable(model: nn.Module) -> nn.Module:
    """What a file holds of MODEL: an open-set MnistClassifier as Deployed (calibrated logits and not_digit), any
    other as it is (the same graph, parameter names included, as before open-set models existed)."""
    return Deployed(model) if isinstance(model, MnistClassifier) and model.open_set else model


def output_names(model: nn.Module) -> list[str]:
    open_set = isinstance(model, MnistClassifier) and model.open_set
    return [OUTPUT_NAME, NOT_DIGIT_NAME] if open_set else [OUTPUT_NAME]


def make(
    model: nn.Module, quantization: str, calibration: np.ndarray | None, shared: dict[str, Any]
) -> onnx.ModelProto | None:
    """MODEL as an ONNX proto in QUANTIZATION, None when there is nothing to quantize. The fp32 proto is exported
    once per SHARED (a dict the caller keeps for one model): every quantizer starts from it."""
    if "onnx" not in shared:
        shared["onnx"] = onnx_proto(model)
    fp32 = shared["onnx"]
    if quantization == DYNAMIC:
        return quantize.onnx_dynamic(fp32)
    if quantization == STATIC:
        return quantize.onnx_static(fp32, quantize.required(calibration))
    return fp32


def onnx_proto(model: nn.Module) -> onnx.ModelProto:
    """Export MODEL (in eval mode) with the torch.export-based exporter, the default since torch 2.9.

    It traces through torch.export (no Python control flow lost), constant-folds and simplifies
    with onnxscript's optimizer, and keeps every weight inside the proto.
    """
    return graph_proto(deployable(model).eval(), output_names(model))


def graph_proto(module: nn.Module, names: list[str]) -> onnx.ModelProto:
    """MODULE (deployable, in eval mode; a PT2E int8 graph too) as an ONNX proto with outputs NAMES."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter about its own internals, not about our model
        program = torch.onnx.export(
            module,
            (example_input(),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes=({0: torch.export.Dim("N")},),
            opset_version=OPSET,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    if program is None:  # only the legacy exporter (dynamo=False) returns nothing
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    return _without_debug_info(program.model_proto)


def _without_debug_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node stack traces and intermediate shape annotations.

    They would ship the build machine's file paths and make the file ~40% larger (tiny: 87 kB -> 57 kB);
    ONNX Runtime infers the shapes itself.
    """
    graph = proto.graph
    for item in (*graph.node, *graph.input, *graph.output, *graph.initializer):
        del item.metadata_props[:]
    del graph.value_info[:]
    return proto


def save(proto: onnx.ModelProto, path: Path | str, metadata: dict[str, str]) -> None:
    """Stamp METADATA on PROTO, check it fully (types and shapes included), write it as one file in the
    chosen format (OPSET, IR_VERSION)."""
    opsets = {o.domain: o.version for o in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        # a bug in the exporter or quantizer
        raise ValueError(f"expected ONNX opset {OPSET}, the graph imports {opsets}")
    stamped = onnx.ModelProto()
    stamped.CopyFrom(proto)  # PROTO may be the fp32 graph the quantizers reuse: it is never changed
    stamped.ir_version = IR_VERSION
    del stamped.metadata_props[:]
    for key, value in metadata.items():
        stamped.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(stamped, full_check=True)
    write_bytes(path, stamped.SerializeToString())
