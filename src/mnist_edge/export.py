"""Write a model as deployable files: ONNX (the edge format) and TorchScript (legacy, for torch users).

Every file has the interface in spec.py (input `image` [N,1,28,28] pixels in [0,1], output `logits`
[N,10], N dynamic, normalization inside the graph) and carries metadata: arch, labels, input spec,
test accuracy, the checkpoint's SHA-256 and the versions that produced it.
"""

from __future__ import annotations

import functools
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from mnist_edge import __version__, quantize
from mnist_edge.atomic import atomic_path, write_bytes
from mnist_edge.checkpoint import Checkpoint, load_checkpoint
from mnist_edge.data import MNIST
from mnist_edge.errors import MnistEdgeError
from mnist_edge.evaluate import to_pixels, torch_logits_fn
from mnist_edge.edge.manifest import file_sha256, read_manifest, update_manifest
from mnist_edge.spec import INPUT_NAME, INPUT_SHAPE, INPUT_SPEC, LABELS, OUTPUT_NAME
from mnist_edge.verify import (
    TORCHSCRIPT_METADATA,
    Parity,
    ParityData,
    Tolerances,
    batched,
    check_artifact,
    default_tolerances,
    find_mnist,
    parity_data,
    tolerances_for,
)

# The ONNX format every file is written in, chosen for the runtimes users load them in (README, "Other runtimes";
# tools/runtimes.py measures them): opset 19 is the lowest whose DequantizeLinear onnx's reference evaluator
# implements, and OpenVINO, OpenCV and tract run it; ONNX Runtime runs it from 1.16 (1.15 lacks Reshape-19 and
# QuantizeLinear-19). IR 9 is the version opset 19 needs; the exporter's default IR 10 would need ONNX Runtime >= 1.18.
OPSET = 19
IR_VERSION = 9
# ".torchscript.pt", not ".pt": the checkpoint it came from may sit in the same folder as ARCH.pt.
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
# The int8 file is named for what it holds; dynamic quantization keeps float activations.
VARIANTS = {"none": "", "dynamic": ".dynamic", "static": ".int8"}


def artifact_name(stem: str, fmt: str, quantization: str) -> str:
    return f"{stem}{VARIANTS[quantization]}{SUFFIXES[fmt]}"


def artifact_metadata(ckpt: Checkpoint, checkpoint_sha256: str, quantization: str) -> dict[str, str]:
    """What a deployed file says about itself: strings only, as ONNX metadata_props require.

    Its test accuracy is its own, measured by the parity gate: export_artifact adds it (measured_accuracy).
    """
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "mnist_edge": __version__}
    if quantization != "none":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return {
        "arch": ckpt.arch,
        "labels": json.dumps(list(LABELS)),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_spec": INPUT_SPEC,
        "output_spec": f"{OUTPUT_NAME}: float32 [N,{len(LABELS)}], raw logits (argmax is the digit)",
        "checkpoint_sha256": checkpoint_sha256,
        "quantization": quantization,
        "versions": json.dumps(versions),
        "producer": f"mnist-edge {__version__}",
    }


def measured_accuracy(parity: Parity) -> dict[str, str]:
    """The file's own accuracy as the parity gate measured it, and on what; empty without labels."""
    if parity.artifact_accuracy is None:
        return {"test_accuracy": ""}
    return {"test_accuracy": f"{parity.artifact_accuracy:.2f}", "test_accuracy_on": parity.source}


def _example_input(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))


def onnx_proto(model: nn.Module) -> onnx.ModelProto:
    """Export MODEL (in eval mode) with the torch.export-based exporter, the default since torch 2.9.

    It traces through torch.export (no Python control flow lost), constant-folds and simplifies
    with onnxscript's optimizer, and keeps every weight inside the proto.
    """
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter about its own internals, not about our model
        program = torch.onnx.export(
            model,
            (_example_input(),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("N")},),
            opset_version=OPSET,
            external_data=False,
            optimize=True,
            verbose=False,
        )
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


def save_onnx(proto: onnx.ModelProto, path: Path | str, metadata: dict[str, str]) -> None:
    """Stamp METADATA on PROTO, check it fully (types and shapes included), write it as one file in the
    chosen format (OPSET, IR_VERSION)."""
    opsets = {o.domain: o.version for o in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        raise ValueError(f"expected ONNX opset {OPSET}, the graph imports {opsets}")  # a bug in the exporter or quantizer
    proto.ir_version = IR_VERSION
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    write_bytes(path, proto.SerializeToString())


def export_torchscript(model: nn.Module, path: Path | str, metadata: dict[str, str]) -> None:
    """Trace MODEL (float or torch-quantized) to TorchScript, frozen, with METADATA as an extra file.

    Tracing is exact here: in eval mode the models have no data-dependent control flow.
    """
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream: we ship it as legacy
        # A torch-quantized model's scales and zero points become constants, which is what they are.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.freeze(torch.jit.trace(model, _example_input()))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(metadata)})
    write_bytes(path, buffer.getvalue())


@dataclass
class Exported:
    """One artifact an export produced, or refused (parity failed) or skipped (nothing to quantize)."""

    file: str
    format: str
    quantization: str
    size_bytes: int = 0
    fp32_size_bytes: int = 0  # the same format's unquantized file, for the size ratio
    parity: Parity | None = None
    note: str = ""  # why it was skipped

    @property
    def passed(self) -> bool:
        return self.parity is not None and self.parity.passed


class _Refused(Exception):
    """Raised inside atomic_path so a file that failed parity never reaches its final name."""


# When asked to set the default model, the smallest ONNX file that passed parity wins.
DEFAULT_PREFERENCE = ("static", "dynamic", "none")
NOTHING_TO_QUANTIZE = {
    "onnx": "{arch} has no Linear (MatMul/Gemm) layer, and dynamic quantization here only quantizes those "
    "(ONNX Runtime's ConvInteger ran slower than fp32); use --quantize static",
    "torchscript": "{arch} has no Linear layer, and torch dynamic quantization only touches Linear layers",
}


def _onnx_variant(fp32: onnx.ModelProto, mode: str, calibration: np.ndarray | None) -> onnx.ModelProto | None:
    if mode == "dynamic":
        return quantize.onnx_dynamic(fp32)
    if mode == "static":
        return quantize.onnx_static(fp32, _required(calibration))
    return fp32


def _torch_variant(model: nn.Module, mode: str, calibration: np.ndarray | None) -> nn.Module | None:
    if mode == "dynamic":
        return quantize.torch_dynamic(model)
    if mode == "static":
        return quantize.torch_static(model, _required(calibration))
    return model


def _required(calibration: np.ndarray | None) -> np.ndarray:
    if calibration is None:
        raise ValueError("static quantization needs calibration images")  # a bug in the caller
    return calibration


def calibration_images(mnist: MNIST, size: int) -> np.ndarray:
    """A seeded random sample of SIZE training digits (never test digits: parity is measured on those)."""
    if not 1 <= size <= len(mnist.train_images):
        raise MnistEdgeError(f"calibration size must be 1..{len(mnist.train_images)}, got {size}")
    sample = np.random.default_rng(0).permutation(len(mnist.train_images))[:size]
    return to_pixels(mnist.train_images[sample])


def export_artifact(
    ckpt: Checkpoint,
    fmt: str,
    quantization: str,
    path: Path | str,
    metadata: dict[str, str],
    reference: np.ndarray,
    data: ParityData,
    *,
    calibration: np.ndarray | None = None,
    tolerances: Tolerances | None = None,
    fp32_onnx: onnx.ModelProto | None = None,
) -> Exported:
    """Write one FORMAT/QUANTIZATION of CKPT's model to PATH, kept only if it passes the parity gate
    against REFERENCE (the PyTorch model's logits on DATA); a refused file never reaches PATH.

    FP32_ONNX saves re-exporting when several ONNX variants are made from one model.
    """
    path = Path(path)
    result = Exported(path.name, fmt, quantization)
    if fmt == "onnx":
        proto = _onnx_variant(fp32_onnx or onnx_proto(ckpt.model), quantization, calibration)
        write = None if proto is None else functools.partial(save_onnx, proto, metadata=metadata)
    else:
        module = _torch_variant(ckpt.model, quantization, calibration)
        write = None if module is None else functools.partial(export_torchscript, module, metadata=metadata)
    if write is None:
        result.note = "skipped: " + NOTHING_TO_QUANTIZE[fmt].format(arch=ckpt.arch)
        return result
    tolerances = tolerances or default_tolerances(quantization)
    try:
        with atomic_path(path) as tmp:
            write(path=tmp)
            result.size_bytes = tmp.stat().st_size  # a refused file's size is reported too
            result.parity = check_artifact(tmp, reference, data, tolerances, fmt)
            if not result.parity.passed:
                raise _Refused
            # Its accuracy is known only now that it ran: stamp it (metadata only; the graph is the one verified).
            write(path=tmp, metadata={**metadata, **measured_accuracy(result.parity)})
            result.size_bytes = tmp.stat().st_size
    except _Refused:
        pass
    return result


def export_checkpoint(
    checkpoint_path: Path | str,
    out_dir: Path | str,
    formats: list[str],
    quantizations: list[str],
    *,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    calibration_size: int = 1000,
    tolerance_overrides: dict[str, float] | None = None,
    command: str = "",
    make_default: bool = False,
) -> tuple[list[Exported], ParityData]:
    """Export a checkpoint in FORMATS, each unquantized plus every mode in QUANTIZATIONS; verify every
    file against the checkpoint's model before it gets its final name; record the passing ones in
    OUT_DIR's manifest. Refused files come back with their failing parity and are not written.
    """
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    ckpt = load_checkpoint(checkpoint_path)
    read_manifest(out_dir)  # a broken manifest stops the export before any file is written, not after
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistEdgeError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    sha = file_sha256(checkpoint_path)
    mnist, missing = find_mnist(data_dir)
    calibration = None
    if "static" in quantizations:
        if mnist is None:
            raise MnistEdgeError(f"static quantization calibrates on MNIST training digits: pass --data-dir DIR ({missing})")
        calibration = calibration_images(mnist, calibration_size)
    data = parity_data(mnist, limit, missing)
    reference = batched(torch_logits_fn(ckpt.model), data.images)
    modes = ["none"] + [q for q in dict.fromkeys(quantizations) if q != "none"]  # fp32 is the base every mode starts from
    results: list[Exported] = []
    for fmt in formats:
        fp32_onnx = onnx_proto(ckpt.model) if fmt == "onnx" else None
        fp32_size = 0
        for mode in modes:
            result = export_artifact(
                ckpt,
                fmt,
                mode,
                out_dir / artifact_name(checkpoint_path.stem, fmt, mode),
                artifact_metadata(ckpt, sha, mode),
                reference,
                data,
                calibration=calibration,
                tolerances=tolerances_for(mode, tolerance_overrides),
                fp32_onnx=fp32_onnx,
            )
            fp32_size = fp32_size or result.size_bytes  # modes start with "none"
            result.fp32_size_bytes = fp32_size
            results.append(result)
    entries = [_manifest_entry(r, ckpt, out_dir, command) for r in results if r.passed]
    default = None
    if make_default:
        onnx_files = sorted((DEFAULT_PREFERENCE.index(e["quantization"]), e["file"]) for e in entries if e["format"] == "onnx")
        default = onnx_files[0][1] if onnx_files else None
    if entries:
        update_manifest(out_dir, entries, default)
    return results, data


def _manifest_entry(result: Exported, ckpt: Checkpoint, out_dir: Path, command: str) -> dict[str, Any]:
    parity = result.parity.as_dict() if result.parity else {}
    return {
        **checkpoint_entry(out_dir / result.file, ckpt, command),
        "format": result.format,
        "quantization": result.quantization,
        "test_accuracy": parity.get("artifact_accuracy"),
        "checkpoint_test_accuracy": ckpt.meta.get("test_accuracy"),
        "parity": {k: v for k, v in parity.items() if k != "failures"},
    }


def checkpoint_entry(path: Path, ckpt: Checkpoint, command: str) -> dict[str, Any]:
    """The manifest entry of a file at PATH made from CKPT by COMMAND (the checkpoint itself, as is)."""
    return {
        "file": path.name,
        "format": "checkpoint",
        "quantization": "none",
        "arch": ckpt.arch,
        "size_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "test_accuracy": ckpt.meta.get("test_accuracy"),
        "command": command,
    }
