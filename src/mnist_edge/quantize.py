"""Quantize exported models: ONNX Runtime static (int8 QDQ) and dynamic, torch's for TorchScript.

Static int8 follows ONNX Runtime's recipe for CNNs: pre-process (shape inference, graph
optimization), then QDQ with per-channel weights calibrated on training digits.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from torch import nn

CALIBRATION_BATCH = 64


class _Calibration:
    """Feeds calibration images to ONNX Runtime's calibrator in batches."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = (
            {input_name: images[i : i + CALIBRATION_BATCH]} for i in range(0, len(images), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def onnx_static(fp32: onnx.ModelProto, images: np.ndarray) -> onnx.ModelProto:
    """int8 QDQ model of FP32, per-channel weights, activations calibrated on IMAGES (float32 pixels).

    Only Conv, Gemm and MatMul are quantized: they have fast int8 kernels in ONNX Runtime. An op
    without one (a BatchNormalization that cannot fold, as in `tiny`) stays float instead of paying
    a DequantizeLinear/QuantizeLinear pair around it on every batch.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="mnist-edge-quant-") as work:
        source, prepared, output = (Path(work) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(fp32, source)
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(output),
            _Calibration(fp32.graph.input[0].name, images),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return onnx.load(output)


def onnx_dynamic(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized on the fly per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="mnist-edge-quant-") as work:
        source, output = Path(work) / "fp32.onnx", Path(work) / "dynamic.onnx"
        onnx.save(fp32, source)
        quantize_dynamic(str(source), str(output), weight_type=QuantType.QInt8)
        return onnx.load(output)


def torch_dynamic(model: nn.Module) -> nn.Module | None:
    """torch's dynamic quantization, which only touches Linear layers; None when MODEL has none."""
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        return None
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice: TorchScript is legacy anyway
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def torch_static(model: nn.Module, images: np.ndarray) -> nn.Module:
    """torch FX graph-mode post-training int8 quantization (x86 backend), calibrated on IMAGES."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    tensors = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation notices of torch.ao.quantization
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("x86"), (tensors[:1],))
        for batch in tensors.split(CALIBRATION_BATCH):
            prepared(batch)
        return convert_fx(prepared)
