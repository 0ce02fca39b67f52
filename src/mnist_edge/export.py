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
from mnist_edge.errors import MnistEdgeError
from mnist_edge.evaluate import to_pixels, torch_logits_fn
from mnist_edge.manifest import file_sha256, update_manifest
from mnist_edge.spec import INPUT_NAME, INPUT_SHAPE, INPUT_SPEC, LABELS, OUTPUT_NAME
from mnist_edge.verify import (
    TORCHSCRIPT_METADATA,
    Parity,
    ParityData,
    batched,
    check_artifact,
    find_mnist,
    parity_data,
)

# 18 is the lowest opset the torch.export-based exporter emits; ONNX Runtime >= 1.14 runs it.
OPSET = 18
# ".torchscript.pt", not ".pt": the checkpoint it came from may sit in the same folder as ARCH.pt.
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
# The int8 file is named for what it holds; dynamic quantization keeps float activations.
VARIANTS = {"none": "", "dynamic": ".dynamic", "static": ".int8"}


def artifact_name(stem: str, fmt: str, quantization: str) -> str:
    return f"{stem}{VARIANTS[quantization]}{SUFFIXES[fmt]}"


def artifact_metadata(ckpt: Checkpoint, checkpoint_sha256: str, quantization: str) -> dict[str, str]:
    """What a deployed file says about itself: strings only, as ONNX metadata_props require."""
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "mnist_edge": __version__}
    if quantization != "none":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    accuracy = ckpt.meta.get("test_accuracy")
    return {
        "arch": ckpt.arch,
        "labels": json.dumps(list(LABELS)),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_spec": INPUT_SPEC,
        "output_spec": f"{OUTPUT_NAME}: float32 [N,{len(LABELS)}], raw logits (argmax is the digit)",
        "test_accuracy": "" if accuracy is None else f"{float(accuracy):.2f}",
        "checkpoint_sha256": checkpoint_sha256,
        "quantization": quantization,
        "versions": json.dumps(versions),
        "producer": f"mnist-edge {__version__}",
    }


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
    """Stamp METADATA on PROTO, check it fully (types and shapes included), write it as one file."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    write_bytes(path, proto.SerializeToString())


def export_onnx(model: nn.Module, path: Path | str, metadata: dict[str, str]) -> None:
    save_onnx(onnx_proto(model), path, metadata)


def export_torchscript(model: nn.Module, path: Path | str, metadata: dict[str, str]) -> None:
    """Trace MODEL (float or torch-quantized) to TorchScript, frozen, with METADATA as an extra file.

    Tracing is exact here: in eval mode the models have no data-dependent control flow.
    """
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream: we ship it as legacy
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


def _onnx_variant(fp32: onnx.ModelProto, mode: str, calibration: np.ndarray | None) -> onnx.ModelProto:
    if mode == "dynamic":
        return quantize.onnx_dynamic(fp32)
    if mode == "static":
        return quantize.onnx_static(fp32, calibration)
    return fp32


def _torch_variant(model: nn.Module, mode: str, calibration: np.ndarray | None) -> nn.Module | None:
    if mode == "dynamic":
        return quantize.torch_dynamic(model)
    if mode == "static":
        return quantize.torch_static(model, calibration)
    return model


def export_checkpoint(
    checkpoint_path: Path | str,
    out_dir: Path | str,
    formats: list[str],
    quantizations: list[str],
    *,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    calibration_size: int = 1000,
    command: str = "",
    make_default: bool = False,
) -> tuple[list[Exported], ParityData]:
    """Export a checkpoint in FORMATS, each unquantized plus every mode in QUANTIZATIONS; verify every
    file against the checkpoint's model before it gets its final name; record the passing ones in
    OUT_DIR's manifest. Refused files come back with their failing parity and are not written.
    """
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    ckpt = load_checkpoint(checkpoint_path)
    sha = file_sha256(checkpoint_path)
    mnist, missing = find_mnist(data_dir)
    data = parity_data(mnist, limit, missing)
    reference = batched(torch_logits_fn(ckpt.model), data.images)
    calibration = None
    if "static" in quantizations:
        if mnist is None:
            raise MnistEdgeError(f"static quantization calibrates on MNIST training digits: pass --data-dir DIR ({missing})")
        sample = np.random.default_rng(0).permutation(len(mnist.train_images))[:calibration_size]
        calibration = to_pixels(mnist.train_images[sample])
    modes = ["none"] + [q for q in quantizations if q != "none"]  # fp32 is the base every mode starts from
    results: list[Exported] = []
    for fmt in formats:
        fp32_proto = onnx_proto(ckpt.model) if fmt == "onnx" else None
        fp32_size = 0
        for mode in modes:
            result = Exported(artifact_name(checkpoint_path.stem, fmt, mode), fmt, mode)
            results.append(result)
            metadata = artifact_metadata(ckpt, sha, mode)
            if fmt == "onnx":
                proto = _onnx_variant(fp32_proto, mode, calibration)
                write = functools.partial(save_onnx, proto, metadata=metadata)
            else:
                module = _torch_variant(ckpt.model, mode, calibration)
                if module is None:
                    result.note = f"skipped: {ckpt.arch} has no Linear layer, and torch dynamic quantization only touches Linear layers"
                    continue
                write = functools.partial(export_torchscript, module, metadata=metadata)
            try:
                with atomic_path(out_dir / result.file) as tmp:
                    write(path=tmp)
                    result.size_bytes = tmp.stat().st_size
                    result.parity = check_artifact(tmp, reference, data, fmt=fmt)
                    if not result.parity.passed:
                        raise _Refused
            except _Refused:
                pass
            fp32_size = fp32_size or result.size_bytes
            result.fp32_size_bytes = fp32_size
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
        "file": result.file,
        "format": result.format,
        "quantization": result.quantization,
        "arch": ckpt.arch,
        "size_bytes": result.size_bytes,
        "sha256": file_sha256(out_dir / result.file),
        "test_accuracy": parity.get("artifact_accuracy"),
        "checkpoint_test_accuracy": ckpt.meta.get("test_accuracy"),
        "parity": {k: v for k, v in parity.items() if k != "failures"},
        "command": command,
    }
