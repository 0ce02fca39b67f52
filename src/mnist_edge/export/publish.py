"""Export a checkpoint as deployable files, through the writers of formats.FORMATS: ONNX (the edge format), LiteRT
.tflite and TorchScript (legacy, for torch users), and publish them.

Every file has the interface in spec.py (input `image` [N,1,28,28] pixels in [0,1], output `logits`
[N,10], N dynamic, normalization inside the graph) and carries metadata: arch, labels, input spec,
test accuracy, the checkpoint's SHA-256 and the versions that produced it.

An export is all or nothing: every file is written under a temporary name and verified; only when all pass
are they renamed into place together with the updated manifest, under the manifest's lock. A refused file,
a write error or a malformed manifest publishes nothing. A file already in the folder is replaced only when
asked (force), and the report lists what was replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from mnist_edge import __version__
from mnist_edge.atomic import Staged, require_replaceable, staging
from mnist_edge.edge.manifest import LOCK, MANIFEST, file_sha256, manifest_lock, manifest_text, merged, read_manifest
from mnist_edge.export.artifacts import require_checkpoint
from mnist_edge.export.writers import writer_for
from mnist_edge.train.checkpoint import Checkpoint, load_checkpoint
from mnist_edge.train.data import MNIST
from mnist_edge.errors import MnistEdgeError
from mnist_edge.measure.evaluate import to_pixels, torch_logits_fn
from mnist_edge.formats import (
    CALIBRATION_SIZE, CHECKPOINT, DYNAMIC, NONE, ONNX, STATIC, artifact_name, quantizes, variants,
)
from mnist_edge.spec import INPUT_NAME, INPUT_SPEC, LABELS, NOT_DIGIT_NAME, OUTPUT_NAME, TEMPERATURE_KEY, THRESHOLD_KEY
from mnist_edge.export.verify import (
    Parity,
    ParityData,
    Tolerances,
    batched,
    check_artifact,
    default_tolerances,
    find_mnist,
    model_threshold,
    parity_data,
    parity_non_digits,
    runtime_parity,
    tolerances_for,
)

def artifact_metadata(ckpt: Checkpoint, checkpoint_sha256: str, quantization: str) -> dict[str, str]:
    """What a deployed file says about itself: strings only, as ONNX metadata_props require.

    Its test accuracy is its own, measured by the parity gate: export_artifact adds it (measured_accuracy).
    """
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "mnist_edge": __version__}
    if quantization != "none":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    model = ckpt.model
    open_set = {
        THRESHOLD_KEY: repr(float(model.not_digit_threshold)),
        TEMPERATURE_KEY: repr(float(model.temperature)),
        "not_digit_spec": f"{NOT_DIGIT_NAME}: float32 [N], probability the image is not a digit; "
        f"refused when >= {THRESHOLD_KEY}",
    } if model.open_set else {}
    return {
        "arch": ckpt.arch,
        "labels": json.dumps(list(LABELS)),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_spec": INPUT_SPEC,
        "output_spec": f"{OUTPUT_NAME}: float32 [N,{len(LABELS)}], logits (argmax is the digit"
        + ("; calibrated: their softmax is the digit's probability)" if model.open_set else ")"),
        **open_set,
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
    """Raised inside the staging block so that no file of a refused export reaches its final name."""


# When asked to set the default model, the smallest ONNX file that passed parity wins.
DEFAULT_PREFERENCE = (STATIC, DYNAMIC, NONE)
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
    name: str,
    stage: Callable[[str], Path],
    metadata: dict[str, str],
    reference: np.ndarray,
    data: ParityData,
    *,
    calibration: np.ndarray | None = None,
    tolerances: Tolerances | None = None,
    shared: dict[str, Any] | None = None,
) -> Exported:
    """Make file NAME, FORMAT/QUANTIZATION of CKPT's model, and run the parity gate on it against REFERENCE
    (the PyTorch model's logits on DATA). STAGE(NAME) says where to write its bytes (a temporary name when
    the caller publishes later); it is not called when there is nothing to make.

    SHARED: what the writers keep across one model's files (the fp32 ONNX graph every quantizer starts from).
    """
    result, writer = Exported(name, fmt, quantization), writer_for(fmt)
    shared = {} if shared is None else shared
    made = writer.make(ckpt.model, quantization, calibration, shared) if quantizes(fmt, quantization) else None
    if made is None:  # a mode the format lacks (formats.FORMATS), or nothing in this model that it quantizes
        result.note = "skipped: " + writer.NOTHING_TO_QUANTIZE[quantization].format(arch=ckpt.arch)
        return result
    path = stage(name)
    writer.save(made, path, metadata)
    result.size_bytes = path.stat().st_size  # a refused file's size is reported too
    tolerances, threshold = tolerances or default_tolerances(quantization), model_threshold(ckpt.model)
    result.parity = check_artifact(path, reference, data, tolerances, fmt, threshold)
    twin = getattr(made, "twin", None)  # a LiteRT int8 file's quantized graph as ONNX
    if result.parity.passed and twin is not None:
        runtimes = runtime_parity(path, twin, data, threshold)
        refusals = 100.0 if runtimes.refusal_agreement is None else runtimes.refusal_agreement
        result.parity.runtime_agreement = min(runtimes.agreement, refusals)
        result.parity.failures += [f"against ONNX Runtime on the same int8 graph: {f}" for f in runtimes.failures]
    if result.parity.passed:
        # Its accuracy is known only now that it ran: stamp it (metadata only; the model is the one verified).
        writer.save(made, path, {**metadata, **measured_accuracy(result.parity)})
        result.size_bytes = path.stat().st_size
    return result


@dataclass
class ExportReport:
    """What an export did: every file made (or refused, or skipped), what it replaced, whether it published."""

    out_dir: Path
    data: ParityData
    results: list[Exported]
    published: bool = False
    replaced: list[str] = field(default_factory=list)  # file names in OUT_DIR that the export overwrote
    default: str | None = None  # the manifest's default model after the export

    def as_dict(self) -> dict[str, Any]:
        def item(r: Exported) -> dict[str, Any]:
            return {
                "file": r.file, "format": r.format, "quantization": r.quantization, "size_bytes": r.size_bytes or None,
                "parity": r.parity.as_dict() if r.parity else None, "note": r.note,
            }

        return {
            "out": str(self.out_dir),
            "published": self.published,
            "parity_data": self.data.source,
            "written": [item(r) for r in self.results if r.passed and self.published],
            "refused": [item(r) for r in self.results if r.parity is not None and not r.passed],
            "not_written": [item(r) for r in self.results if r.parity is None or (r.passed and not self.published)],
            "replaced": self.replaced,
            "default": self.default,
        }


def _existing(out_dir: Path, names: list[str], force: bool) -> list[str]:
    """NAMES already in OUT_DIR; an error unless FORCE allows replacing them, and always for something that is no
    regular file (a folder, a FIFO): --force replaces files, nothing else."""
    for name in [*names, MANIFEST, LOCK]:
        require_replaceable(out_dir / name, "file")
    present = [n for n in names if os.path.lexists(out_dir / n)]
    if present and not force:
        listed = ", ".join(str(out_dir / n) for n in present)
        raise MnistEdgeError(
            f"{listed}: already exist{'s' if len(present) == 1 else ''}; pass --force to replace, or --out another "
            "folder"
        )
    return present


def _default_choice(entries: list[dict[str, Any]]) -> str | None:
    onnx_files = sorted(
        (DEFAULT_PREFERENCE.index(e["quantization"]), e["file"]) for e in entries if e["format"] == ONNX
    )
    return onnx_files[0][1] if onnx_files else None


def _plan(
    checkpoint_path: Path, out_dir: Path, planned: list[tuple[str, str]], make_default: bool, force: bool
) -> tuple[Checkpoint, list[tuple[str, str]], list[str]]:
    """The checkpoint, the (format, quantization) pairs and their file names, once everything that can be refused
    before the slow part is checked: the flags, the folder, its manifest, files replaced without --force."""
    require_checkpoint(checkpoint_path)
    ckpt = load_checkpoint(checkpoint_path)
    names = [artifact_name(checkpoint_path.stem, fmt, mode) for fmt, mode in planned]
    if make_default and not any(fmt == ONNX for fmt, _ in planned):
        raise MnistEdgeError("--make-default names an ONNX file as the default model: export --format onnx or all")
    if out_dir.exists() and not out_dir.is_dir():
        raise MnistEdgeError(f"{out_dir}: not a folder")
    read_manifest(out_dir)
    _existing(out_dir, names, force)
    return ckpt, planned, names


def export_checkpoint(
    checkpoint_path: Path | str,
    out_dir: Path | str,
    formats: list[str],
    quantizations: list[str],
    *,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    calibration_size: int = CALIBRATION_SIZE,
    tolerance_overrides: dict[str, float] | None = None,
    command: str = "",
    make_default: bool = False,
    force: bool = False,
) -> ExportReport:
    """Export a checkpoint in FORMATS, each unquantized plus every mode in QUANTIZATIONS; verify every file
    against the checkpoint's model; publish them all with their OUT_DIR manifest entries only if all pass
    (see the module docstring). Refused files come back with their failing parity; nothing is written then.
    """
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    ckpt, planned, names = _plan(checkpoint_path, out_dir, variants(formats, quantizations), make_default, force)
    sha = file_sha256(checkpoint_path)
    mnist, missing = find_mnist(data_dir)
    calibration = None
    if STATIC in quantizations:
        if mnist is None:
            raise MnistEdgeError(
                f"static quantization calibrates on MNIST training digits: pass --data-dir DIR ({missing})"
            )
        calibration = calibration_images(mnist, calibration_size)
    data = parity_data(mnist, limit, missing, parity_non_digits(ckpt.model))
    reference = batched(torch_logits_fn(ckpt.model), data.images)
    report = ExportReport(out_dir, data, [])

    def stage(name: str) -> Path:
        return staged.path(out_dir / name)

    try:
        with staging() as staged:  # each file under a temporary name until _publish renames them all, or none
            shared: dict[str, Any] = {}  # one fp32 ONNX export for every ONNX file
            fp32_size: dict[str, int] = {}
            for (fmt, mode), name in zip(planned, names):
                result = export_artifact(
                    ckpt, fmt, mode, name, stage,
                    artifact_metadata(ckpt, sha, mode), reference, data,
                    calibration=calibration, tolerances=tolerances_for(mode, tolerance_overrides), shared=shared,
                )
                fp32_size.setdefault(fmt, result.size_bytes)  # NONE comes first for each format
                result.fp32_size_bytes = fp32_size[fmt]
                report.results.append(result)
            if not all(r.passed for r in report.results if r.parity is not None):
                raise _Refused
            _publish(report, staged, ckpt, command, make_default, force)
    except _Refused:
        return report
    except OSError as exc:
        raise MnistEdgeError(
            f"{out_dir}: cannot write the export ({exc.strerror or exc}); nothing was published"
        ) from None
    return report


def _publish(
    report: ExportReport, staged: Staged, ckpt: Checkpoint, command: str, make_default: bool, force: bool
) -> None:
    """Under the manifest lock: check the folder again (another process may have written meanwhile), stage the
    new manifest, then publish the files and the manifest, all or none."""
    out_dir = report.out_dir
    passed = [r for r in report.results if r.passed]
    with manifest_lock(out_dir):
        manifest = read_manifest(out_dir)
        report.replaced = _existing(out_dir, [r.file for r in passed], force)
        entries = [_manifest_entry(r, ckpt, staged.temps[out_dir / r.file], command) for r in passed]
        updated = merged(out_dir, manifest, entries, _default_choice(entries) if make_default else None)
        staged.path(out_dir / MANIFEST).write_text(manifest_text(updated))
        staged.publish()  # the manifest last: it never names a file that is not in place
        report.published, report.default = True, updated["default"]


def _manifest_entry(result: Exported, ckpt: Checkpoint, path: Path, command: str) -> dict[str, Any]:
    """RESULT's manifest entry; PATH holds its bytes (under a temporary name until published)."""
    parity = result.parity.as_dict() if result.parity else {}
    return {
        **checkpoint_entry(path, ckpt, command, name=result.file),
        "format": result.format,
        "quantization": result.quantization,
        "test_accuracy": parity.get("artifact_accuracy"),
        "checkpoint_test_accuracy": ckpt.meta.get("test_accuracy"),
        "parity": {k: v for k, v in parity.items() if k != "failures"},
    }


def checkpoint_entry(path: Path, ckpt: Checkpoint, command: str, name: str | None = None) -> dict[str, Any]:
    """The manifest entry of a file at PATH (named NAME, default PATH's name) made from CKPT by COMMAND
    (the checkpoint itself, as is)."""
    return {
        "file": name or path.name,
        "format": CHECKPOINT,
        "quantization": NONE,
        "arch": ckpt.arch,
        "size_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "test_accuracy": ckpt.meta.get("test_accuracy"),
        "command": command,
    }
