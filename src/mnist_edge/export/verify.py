"""The parity gate: an exported file counts only if it computes what the PyTorch model computes.

Both run on real digits (the MNIST test set) and are compared by max abs logit difference, top-1
agreement and accuracy. Only when no MNIST is configured and none can be downloaded does a seeded synthetic
batch stand in, and the report says so. Opening the files is artifacts.py's job.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_edge.export.artifacts import open_artifact, require_checkpoint
from mnist_edge.train.data import DATA_ENV, MNIST, download_mnist, load_mnist
from mnist_edge.errors import MnistEdgeError
from mnist_edge.measure.evaluate import LogitsFn, percent, to_pixels, torch_logits_fn
from mnist_edge.spec import INPUT_SHAPE

BATCH = 1000
SYNTHETIC_IMAGES = 512


@dataclass(frozen=True)
class Tolerances:
    max_abs_diff: float | None  # None: not checked (quantized logits legitimately move)
    min_agreement: float  # percent of images whose top-1 digit matches the PyTorch model's
    max_accuracy_drop: float | None  # percentage points below the PyTorch model's accuracy


FP32 = Tolerances(max_abs_diff=1e-4, min_agreement=100.0, max_accuracy_drop=None)
QUANTIZED = Tolerances(max_abs_diff=None, min_agreement=99.5, max_accuracy_drop=0.3)


def default_tolerances(quantization: str) -> Tolerances:
    return FP32 if quantization == "none" else QUANTIZED


def tolerances_for(quantization: str, overrides: dict[str, float] | None = None) -> Tolerances:
    """The defaults for QUANTIZATION with the fields in OVERRIDES (the command-line flags) replaced."""
    return Tolerances(**{**asdict(default_tolerances(quantization)), **(overrides or {})})


@dataclass(frozen=True)
class ParityData:
    images: np.ndarray  # float32 [N,1,28,28] in [0,1]
    labels: np.ndarray | None  # None for the synthetic batch
    source: str


@dataclass
class Parity:
    images: int
    source: str
    max_abs_diff: float
    agreement: float  # percent
    reference_accuracy: float | None  # percent; None without labels
    artifact_accuracy: float | None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: a non-finite difference (NaN logits) is None, never a bare NaN/Infinity."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}

    def summary(self) -> str:
        text = f"{self.images} images ({self.source}): max |dlogit| {self.max_abs_diff:.2e}, agreement {self.agreement:.2f}%"
        if self.reference_accuracy is not None:
            text += f", accuracy {self.reference_accuracy:.2f}% (torch) vs {self.artifact_accuracy:.2f}%"
        return text


def find_mnist(data_dir: Path | str | None) -> tuple[MNIST | None, str]:
    """MNIST, or None and why not.

    A configured source (DATA_DIR, else $MNIST_EDGE_DATA) and the download cache are read or fail: a missing,
    corrupt or tampered folder is an error, never a silent synthetic stand-in. Only when nothing is configured
    and no download can be had (offline, or no torchvision) does the gate fall back to synthetic images.
    """
    configured = data_dir or os.environ.get(DATA_ENV)
    if configured:
        return load_mnist(configured), ""
    try:
        folder = download_mnist()
    except MnistEdgeError as exc:
        return None, str(exc)
    return load_mnist(folder), ""


def parity_data(mnist: MNIST | None, limit: int | None = None, missing: str = "") -> ParityData:
    """The MNIST test set (its first LIMIT images), or a seeded synthetic batch without MNIST."""
    if mnist is None:
        rng = np.random.default_rng(0)
        images = rng.random((limit or SYNTHETIC_IMAGES, *INPUT_SHAPE), dtype=np.float32)
        return ParityData(images, None, f"synthetic seeded batch, no MNIST found ({missing}); accuracy not checked")
    images, labels = mnist.test_images[:limit], mnist.test_labels[:limit]
    return ParityData(to_pixels(images), labels, "MNIST test set" if limit is None else f"first {len(images)} MNIST test images")


def batched(fn: LogitsFn, images: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def compare(reference: np.ndarray, logits: np.ndarray, data: ParityData, tolerances: Tolerances) -> Parity:
    """Parity figures of LOGITS against the PyTorch model's REFERENCE logits, and the checks they fail."""
    if logits.shape != reference.shape:
        raise MnistEdgeError(f"artifact returned logits of shape {list(logits.shape)}, expected {list(reference.shape)}")
    diff = float(np.abs(logits.astype(np.float64) - reference).max()) if len(logits) else 0.0
    if not np.isfinite(diff):
        diff = float("inf")
    ref_top, art_top = reference.argmax(1), logits.argmax(1)
    agreement = percent(ref_top == art_top)
    ref_acc = art_acc = None
    if data.labels is not None:
        ref_acc, art_acc = percent(ref_top == data.labels), percent(art_top == data.labels)
    failures = []
    if tolerances.max_abs_diff is not None and not diff <= tolerances.max_abs_diff:
        failures.append(f"max abs logit diff {diff:.3g} > {tolerances.max_abs_diff:g}")
    if agreement < tolerances.min_agreement:
        disagree = int((ref_top != art_top).sum())
        failures.append(f"top-1 agreement {agreement:.2f}% < {tolerances.min_agreement:g}% ({disagree} images disagree)")
    if tolerances.max_accuracy_drop is not None and ref_acc is not None and art_acc is not None \
            and ref_acc - art_acc > tolerances.max_accuracy_drop:
        failures.append(
            f"accuracy drop {ref_acc - art_acc:.2f} points ({ref_acc:.2f}% -> {art_acc:.2f}%) > {tolerances.max_accuracy_drop:g}"
        )
    return Parity(len(logits), data.source, diff, agreement, ref_acc, art_acc, failures)


def check_artifact(
    path: Path | str,
    reference: np.ndarray,
    data: ParityData,
    tolerances: Tolerances | None = None,
    fmt: str | None = None,
) -> Parity:
    """Run the file at PATH on DATA and compare it with REFERENCE (the PyTorch model's logits on DATA).

    Only for files this process wrote itself (export, benchmark): a TorchScript file is trusted."""
    artifact = open_artifact(path, fmt, trust_torchscript=True)
    tolerances = tolerances or default_tolerances(artifact.quantization)
    return compare(reference, batched(artifact.logits_fn, data.images), data, tolerances)


def verify_artifact(
    path: Path | str,
    checkpoint_path: Path | str,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    overrides: dict[str, float] | None = None,
    *,
    trust_torchscript: bool = False,
) -> Parity:
    """The `verify` command: the file at PATH against the checkpoint it claims to come from."""
    from mnist_edge.train.checkpoint import load_checkpoint
    from mnist_edge.edge.manifest import file_sha256

    artifact = open_artifact(path, trust_torchscript=trust_torchscript)
    require_checkpoint(Path(checkpoint_path))
    ckpt = load_checkpoint(checkpoint_path)
    tolerances = tolerances_for(artifact.quantization, overrides)
    mnist, missing = find_mnist(data_dir)
    data = parity_data(mnist, limit, missing)
    reference = batched(torch_logits_fn(ckpt.model), data.images)
    parity = compare(reference, batched(artifact.logits_fn, data.images), data, tolerances)
    claimed = artifact.metadata.get("checkpoint_sha256")
    if claimed and claimed != file_sha256(checkpoint_path):
        parity.failures.insert(0, f"artifact was exported from checkpoint sha256 {claimed[:12]}..., not from {checkpoint_path}")
    return parity
