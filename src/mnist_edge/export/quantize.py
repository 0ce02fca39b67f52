"""Quantize exported models: ONNX Runtime static (int8 QDQ) and dynamic, torch's for TorchScript.

Static int8 follows ONNX Runtime's recipe for CNNs: pre-process (shape inference, graph
optimization), then QDQ with per-channel weights calibrated on training digits. Three measured choices
make it faster than fp32 rather than slower (tools/bench_quantize.py prints the figures):

- MaxPool moves ahead of the per-channel monotone ops before it (ReLU, a BatchNormalization with
  non-negative scale; exact, since max commutes with them), so they touch 4x fewer values.
- A BatchNormalization that cannot fold into a conv (conv -> ReLU -> BN) becomes the depthwise 1x1
  conv it equals. ONNX Runtime runs that as an int8 QLinearConv in the NHWC layout of its neighbours;
  left float, each BN cost a DequantizeLinear, two Transposes to NCHW and back and a QuantizeLinear.
- A conv reading a single channel (the image), and a narrow conv (fewer than 16 output channels)
  ahead of every int8 conv, stays float: 9-25 multiplies per output do not repay quantizing and
  requantizing the activations, and int8 GEMM kernels work on 16 output channels at a time (on
  `tiny` an 8 -> 8 conv at 28x28 was slower in int8 than in fp32). A narrow conv after int8 ones stays
  int8: a float conv between them would cost a dequantize, a requantize and two layout changes.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

if TYPE_CHECKING:  # torch only for the TorchScript quantizers, imported inside them: ONNX-only work never loads it
    from torch import nn

CALIBRATION_BATCH = 64
# Ops with int8 kernels in ONNX Runtime's CPU provider worth their Quantize/Dequantize pairs. A ReLU
# after a quantized conv folds into the conv's output range.
STATIC_OPS = ["Conv", "Gemm", "MatMul", "Relu"]
# Fewer output channels than one int8 GEMM kernel's width leave it partly idle (see the docstring).
MIN_INT8_CONV_CHANNELS = 16
# Dynamic quantization only pays where weights dominate: ConvInteger with per-batch activation
# quantization was much slower than fp32 on `tiny` (tools/bench_quantize.py measures), so convs keep float
# and only Linear layers go int8.
DYNAMIC_OPS = ["MatMul", "Gemm"]


class _Calibration:
    """Feeds calibration images to ONNX Runtime's calibrator in batches."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = (
            {input_name: images[i : i + CALIBRATION_BATCH]} for i in range(0, len(images), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _pre_processed(fp32: onnx.ModelProto, work: Path) -> onnx.ModelProto:
    """ONNX Runtime's quantization pre-processing: shape inference and graph optimization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, prepared = work / "fp32.onnx", work / "pre-processed.onnx"
    onnx.save(fp32, source)
    quant_pre_process(str(source), str(prepared))
    return without_unused_opsets(onnx.load(prepared))


def _domains_used(graph: onnx.GraphProto) -> set[str]:
    """The operator domains GRAPH's nodes use, subgraphs (If/Loop/Scan bodies) included."""
    used = set()
    for node in graph.node:
        used.add(node.domain)
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs]:
                used |= _domains_used(subgraph)
    return used


def without_unused_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop opset imports no node uses (in place): ONNX Runtime's pre-processing adds every domain it knows
    (ai.onnx.ml, training, preview, its own), and a runtime that does not know one may refuse the file."""
    used = _domains_used(model.graph) | {"", "ai.onnx"}
    for function in model.functions:
        used |= {function.domain} | {node.domain for node in function.node}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _commutes_with_max(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """max(f(x)) == f(max(x)) for f applied per channel and non-decreasing."""
    if node.op_type == "Relu":
        return True
    if node.op_type == "BatchNormalization" and node.input[1] in initializers:
        return bool((numpy_helper.to_array(initializers[node.input[1]]) >= 0).all())
    return False


def pool_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move each MaxPool ahead of the ReLU / BatchNormalization chain feeding it (in place; exact)."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    moved = True
    while moved:
        moved = False
        producers = {out: node for node in graph.node for out in node.output}
        uses: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                uses[name] = uses.get(name, 0) + 1
        for pool in graph.node:
            before = producers.get(pool.input[0]) if pool.op_type == "MaxPool" and len(pool.output) == 1 else None
            if before is None or uses[before.output[0]] != 1 or not _commutes_with_max(before, initializers):
                continue
            # before: a -> b, pool: b -> c   becomes   pool: a -> b, before: b -> c (b now has the pooled shape)
            a, b, c = before.input[0], before.output[0], pool.output[0]
            pool.input[0], pool.output[0], before.input[0], before.output[0] = a, b, b, c
            nodes = [n for n in graph.node if n is not pool]
            nodes.insert(nodes.index(before), pool)
            del graph.node[:]
            graph.node.extend(nodes)
            kept = [v for v in graph.value_info if v.name != b]  # its old, unpooled shape
            del graph.value_info[:]
            graph.value_info.extend(kept)
            moved = True
            break
    return model


def batchnorm_as_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each 4-D BatchNormalization by the depthwise 1x1 Conv computing the same (in place)."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model).graph  # pool_first dropped the shapes it changed
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*inferred.value_info, *inferred.input]}
    nodes = list(graph.node)
    for index, node in enumerate(nodes):
        if (
            node.op_type != "BatchNormalization"
            or len(node.output) != 1
            or ranks.get(node.input[0]) != 4
            or not all(name in initializers for name in node.input[1:5])
        ):
            continue
        gamma, beta, mean, var = (
            numpy_helper.to_array(initializers[name]).astype(np.float64) for name in node.input[1:5]
        )
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + epsilon)  # y = scale * x + shift, per channel
        shift = beta - mean * scale
        weight, bias = f"{node.output[0]}_depthwise_weight", f"{node.output[0]}_depthwise_bias"
        graph.initializer.extend(
            [
                numpy_helper.from_array(scale.reshape(-1, 1, 1, 1).astype(np.float32), weight),
                numpy_helper.from_array(shift.astype(np.float32), bias),
            ]
        )
        nodes[index] = onnx.helper.make_node(
            "Conv",
            [node.input[0], weight, bias],
            list(node.output),
            name=f"{node.output[0]}_depthwise",
            group=len(scale),
            kernel_shape=[1, 1],
        )
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]  # the BatchNormalizations' own tensors
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def _float_convs(model: onnx.ModelProto) -> list[str]:
    """Convs int8 would slow down: those reading a single channel, and narrow ones (fewer than
    MIN_INT8_CONV_CHANNELS outputs) ahead of every int8 conv. Narrow convs further on stay int8: a
    float conv between int8 ones would cost a dequantize, a requantize and two layout changes."""
    weights = {t.name: t.dims for t in model.graph.initializer}
    after_int8: set[str] = set()  # tensors computed from an int8 conv's output
    found = []
    for node in model.graph.node:  # topologically sorted, as ONNX requires
        dims: tuple[int, ...] = tuple(weights.get(node.input[1], ())) if node.op_type == "Conv" else ()
        downstream = any(name in after_int8 for name in node.input)
        if len(dims) == 4:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if (dims[1] == 1 and group == 1) or (dims[0] < MIN_INT8_CONV_CHANNELS and not downstream):
                found.append(node.name)  # depthwise convs also read 1 channel per group: not "single channel"
            else:
                downstream = True
        if downstream:
            after_int8.update(node.output)
    return found


def required(calibration: np.ndarray | None) -> np.ndarray:
    if calibration is None:
        raise ValueError("static quantization needs calibration images")  # a bug in the caller
    return calibration


def onnx_static(fp32: onnx.ModelProto, images: np.ndarray) -> onnx.ModelProto:
    """int8 QDQ model of FP32, per-channel weights, activations calibrated on IMAGES (float32 pixels)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="mnist-edge-quant-") as work:
        prepared, output = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        model = batchnorm_as_conv(pool_first(_pre_processed(fp32, Path(work))))
        onnx.save(model, prepared)
        quantize_static(
            str(prepared),
            str(output),
            _Calibration(fp32.graph.input[0].name, images),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=STATIC_OPS,
            nodes_to_exclude=_float_convs(model),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return without_unused_opsets(onnx.load(output))


def has_linear_ops(model: onnx.ModelProto) -> bool:
    return any(n.op_type in DYNAMIC_OPS for n in model.graph.node)


def onnx_dynamic(fp32: onnx.ModelProto) -> onnx.ModelProto | None:
    """ONNX Runtime dynamic quantization of the Linear layers (int8 weights, activations quantized per
    batch); None when FP32 has none, rather than a copy that only claims to be quantized."""
    if not has_linear_ops(fp32):
        return None
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="mnist-edge-quant-") as work:
        prepared, output = Path(work) / "prepared.onnx", Path(work) / "dynamic.onnx"
        onnx.save(_pre_processed(fp32, Path(work)), prepared)
        quantize_dynamic(str(prepared), str(output), op_types_to_quantize=DYNAMIC_OPS, weight_type=QuantType.QInt8)
        return without_unused_opsets(onnx.load(output))


def torch_dynamic(model: nn.Module) -> nn.Module | None:
    """torch's dynamic quantization, which only touches Linear layers; None when MODEL has none."""
    import torch
    from torch import nn
    from torch.ao.quantization import quantize_dynamic

    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice: TorchScript is legacy anyway
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def torch_static(model: nn.Module, images: np.ndarray) -> nn.Module:
    """torch FX graph-mode post-training int8 quantization (x86 backend), calibrated on IMAGES.

    Works on a copy: FX fuses and swaps submodules, and MODEL is still the parity reference.
    """
    import copy

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    tensors = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation notices of torch.ao.quantization
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (tensors[:1],))
        for batch in tensors.split(CALIBRATION_BATCH):
            prepared(batch)
        return convert_fx(prepared)
