"""The parity gate: an exported file counts only if it computes what the PyTorch model computes.

Both run on real digits (the MNIST test set) and are compared by max abs logit difference, top-1
agreement and accuracy. A seeded synthetic batch stands in only when asked (`verify --synthetic`), or when no MNIST
is configured and none can be downloaded: then the report says "NOT checked on MNIST" and `verify` fails, since
random pixels prove neither accuracy nor agreement on digits. Opening the files is artifacts.py's job.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_edge.export.artifacts import open_artifact, require_checkpoint
from mnist_edge.train.data import MNIST, download_mnist, load_mnist, local_mnist
from mnist_edge.errors import MnistEdgeError
from mnist_edge.measure.evaluate import LogitsFn, percent, split_outputs, to_pixels, torch_logits_fn
from mnist_edge.formats import ONNX, TFLITE
from mnist_edge.spec import INPUT_SHAPE, THRESHOLD_KEY

if TYPE_CHECKING:
    import onnx

    from mnist_edge.train.architectures import MnistClassifier

BATCH = 1000
SYNTHETIC_IMAGES = 512
# Generated non-digits added to the parity images of an open-set model, so that its refusals are compared too
PARITY_NON_DIGITS = 500


@dataclass(frozen=True)
class Tolerances:
    max_abs_diff: float | None  # None: not checked (quantized logits legitimately move)
    min_agreement: float  # percent of images whose top-1 digit matches the PyTorch model's; also of "not a digit"
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
    images: np.ndarray  # float32 [N,1,28,28] in [0,1]: the digits, then any generated non-digits
    labels: np.ndarray | None  # of the first len(labels) images; None for the synthetic batch
    source: str
    non_digits: int = 0  # the last images: generated non-digits, whose top digit means nothing

    @property
    def digits(self) -> int:
        return len(self.images) - self.non_digits


@dataclass
class Parity:
    images: int  # digits compared (generated non-digits, compared for refusals, are named in the source)
    source: str
    max_abs_diff: float
    agreement: float  # percent
    reference_accuracy: float | None  # percent; None without labels
    artifact_accuracy: float | None
    failures: list[str] = field(default_factory=list)
    refusal_agreement: float | None = None  # percent of images both refuse or both answer (open-set models)
    refused: float | None = None  # percent of the digits the file answers "not a digit" (open-set models)
    # A LiteRT int8 file: percent of images (digits and refusals) where it answers as ONNX Runtime running the same
    # quantized graph (runtime_parity); anything below 100 fails.
    runtime_agreement: float | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def on_mnist(self) -> bool:
        """Whether the figures come from MNIST digits (with labels), not a synthetic batch."""
        return self.reference_accuracy is not None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: a non-finite difference (NaN logits) is None, never a bare NaN/Infinity."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}

    def summary(self) -> str:
        text = "" if self.on_mnist else "NOT checked on MNIST: "
        text += (
            f"{self.images} images ({self.source}): max |dlogit| {self.max_abs_diff:.2e}, agreement "
            f"{self.agreement:.2f}%"
        )
        if self.refusal_agreement is not None:
            text += f", not-a-digit agreement {self.refusal_agreement:.2f}%"
        if self.reference_accuracy is not None:
            text += f", accuracy {self.reference_accuracy:.2f}% (torch) vs {self.artifact_accuracy:.2f}%"
        if self.runtime_agreement is not None:
            text += f", same answers as ONNX Runtime on its int8 graph {self.runtime_agreement:.2f}%"
        return text


def find_mnist(data_dir: Path | str | None) -> tuple[MNIST | None, str]:
    """MNIST, or None and why not.

    A configured source (DATA_DIR, else $MNIST_EDGE_DATA, else a local copy: data.local_dataset) and the
    download cache are read or fail: a missing, corrupt or tampered folder is an error, never a silent synthetic
    stand-in. Only when nothing is configured and no download can be had (offline, or no torchvision) does the
    gate fall back to synthetic images.
    """
    configured = data_dir or local_mnist()
    if configured:
        return load_mnist(configured), ""
    try:
        folder = download_mnist()
    except MnistEdgeError as exc:
        return None, str(exc)
    return load_mnist(folder), ""


def parity_data(mnist: MNIST | None, limit: int | None = None, missing: str = "", non_digits: int = 0) -> ParityData:
    """The MNIST test set (its first LIMIT images), or a seeded synthetic batch without MNIST (MISSING: why; empty
    when the synthetic batch was asked for); then NON_DIGITS
    generated non-digits (seeded), for a model that can refuse them."""
    if mnist is None:
        rng = np.random.default_rng(0)
        images = rng.random((limit or SYNTHETIC_IMAGES, *INPUT_SHAPE), dtype=np.float32)
        why = f"no MNIST found ({missing})" if missing else "as asked"
        data = ParityData(images, None, f"synthetic seeded batch, {why}; accuracy not checked")
    else:
        digits, labels = mnist.test_images[:limit], mnist.test_labels[:limit]
        source = "MNIST test set" if limit is None else f"first {len(digits)} MNIST test images"
        data = ParityData(to_pixels(digits), labels, source)
    if not non_digits:
        return data
    from mnist_edge.train import synthetic

    others, _ = synthetic.non_digits(non_digits, 0, synthetic.fonts_for("held-out"))
    images = np.concatenate([data.images, to_pixels(others)])
    return ParityData(images, data.labels, f"{data.source} + {non_digits} generated non-digits", non_digits)


def parity_non_digits(model: MnistClassifier) -> int:
    """How many generated non-digits the parity images of MODEL include: only a model that refuses needs them."""
    return PARITY_NON_DIGITS if model.open_set else 0


def batched(fn: LogitsFn, images: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def compare(
    reference: np.ndarray, outputs: np.ndarray, data: ParityData, tolerances: Tolerances, threshold: float | None = None
) -> Parity:
    """Parity figures of OUTPUTS against the PyTorch model's REFERENCE outputs (logits, and an open-set model's
    not_digit column: evaluate.split_outputs), and the checks they fail. With a THRESHOLD, the two must also
    refuse the same images."""
    if outputs.shape != reference.shape:
        raise MnistEdgeError(
            f"artifact returned outputs of shape {list(outputs.shape)}, expected {list(reference.shape)}"
        )
    diff = float(np.abs(outputs.astype(np.float64) - reference).max()) if len(outputs) else 0.0
    if not np.isfinite(diff):
        diff = float("inf")
    (ref_logits, ref_nd), (logits, nd) = split_outputs(reference), split_outputs(outputs)
    ref_top, art_top = ref_logits[: data.digits].argmax(1), logits[: data.digits].argmax(1)
    agreement = percent(ref_top == art_top)
    ref_acc = art_acc = None
    if data.labels is not None:
        n = len(data.labels)
        ref_acc, art_acc = percent(ref_top[:n] == data.labels), percent(art_top[:n] == data.labels)
    failures = []
    if tolerances.max_abs_diff is not None and not diff <= tolerances.max_abs_diff:
        failures.append(f"max abs logit diff {diff:.3g} > {tolerances.max_abs_diff:g}")
    if agreement < tolerances.min_agreement:
        disagree = int((ref_top != art_top).sum())
        failures.append(
            f"top-1 agreement {agreement:.2f}% < {tolerances.min_agreement:g}% ({disagree} images disagree)"
        )
    if tolerances.max_accuracy_drop is not None and ref_acc is not None and art_acc is not None \
            and ref_acc - art_acc > tolerances.max_accuracy_drop:
        failures.append(
            f"accuracy drop {ref_acc - art_acc:.2f} points ({ref_acc:.2f}% -> {art_acc:.2f}%) > "
            f"{tolerances.max_accuracy_drop:g}"
        )
    refusal = refused = None
    if threshold is not None and ref_nd is not None and nd is not None:
        refused = percent(nd[: data.digits] >= threshold)
        same = (ref_nd >= threshold) == (nd >= threshold)
        refusal = percent(same)
        if refusal < tolerances.min_agreement:
            failures.append(
                f"not-a-digit agreement {refusal:.2f}% < {tolerances.min_agreement:g}% ({int((~same).sum())} images: "
                "one refuses what the other answers)"
            )
    return Parity(data.digits, data.source, diff, agreement, ref_acc, art_acc, failures, refusal, refused)


def model_threshold(model: MnistClassifier) -> float | None:
    """MODEL's "not a digit" threshold, None for a model that cannot refuse."""
    return float(model.not_digit_threshold) if model.open_set else None


def check_artifact(
    path: Path | str,
    reference: np.ndarray,
    data: ParityData,
    tolerances: Tolerances | None = None,
    fmt: str | None = None,
    threshold: float | None = None,
) -> Parity:
    """Run the file at PATH on DATA and compare it with REFERENCE (the PyTorch model's outputs on DATA), refusals
    at THRESHOLD included.

    Only for files this process wrote itself (export, benchmark): a TorchScript file is trusted."""
    artifact = open_artifact(path, fmt, trust_torchscript=True)
    tolerances = tolerances or default_tolerances(artifact.quantization)
    return compare(reference, batched(artifact.logits_fn, data.images), data, tolerances, threshold)


def runtime_parity(path: Path, twin: onnx.ModelProto, data: ParityData, threshold: float | None) -> Parity:
    """The LiteRT int8 file at PATH against ONNX Runtime running TWIN, the same quantized graph as ONNX, on DATA:
    one model in two runtimes must give the same answers (the fp32 tolerances, refusals included)."""
    from mnist_edge.export import onnx_writer  # torch: the torch-free tools import this module for batched()

    with tempfile.TemporaryDirectory(prefix="mnist-edge-twin-") as work:
        onnx_path = Path(work) / "twin.onnx"
        onnx_writer.save(twin, onnx_path, {} if threshold is None else {THRESHOLD_KEY: repr(threshold)})
        reference = batched(open_artifact(onnx_path, ONNX).logits_fn, data.images)
    return check_artifact(path, reference, data, FP32, TFLITE, threshold)


def verify_artifact(
    path: Path | str,
    checkpoint_path: Path | str,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    overrides: dict[str, float] | None = None,
    *,
    trust_torchscript: bool = False,
    synthetic: bool = False,
) -> Parity:
    """The `verify` command: the file at PATH against the checkpoint it claims to come from, on MNIST. SYNTHETIC:
    on a seeded batch of random pixels instead; without it, a run that finds no MNIST fails ("NOT checked")."""
    from mnist_edge.train.checkpoint import load_checkpoint
    from mnist_edge.edge.manifest import file_sha256

    artifact = open_artifact(path, trust_torchscript=trust_torchscript)
    require_checkpoint(Path(checkpoint_path))
    ckpt = load_checkpoint(checkpoint_path)
    tolerances = tolerances_for(artifact.quantization, overrides)
    mnist, missing = (None, "") if synthetic else find_mnist(data_dir)
    data = parity_data(mnist, limit, missing, parity_non_digits(ckpt.model))
    reference = batched(torch_logits_fn(ckpt.model), data.images)
    threshold = model_threshold(ckpt.model)
    parity = compare(reference, batched(artifact.logits_fn, data.images), data, tolerances, threshold)
    if mnist is None and not synthetic:
        advice = "pass --data-dir DIR, or --synthetic to accept a synthetic batch"
        parity.failures.insert(0, f"NOT checked on MNIST ({missing}): {advice}")
    claimed = artifact.metadata.get("checkpoint_sha256")
    if claimed and claimed != file_sha256(checkpoint_path):
        parity.failures.insert(
            0, f"artifact was exported from checkpoint sha256 {claimed[:12]}..., not from {checkpoint_path}"
        )
    stated = artifact.metadata.get(THRESHOLD_KEY)
    if threshold is not None and stated != repr(threshold):
        parity.failures.append(f"artifact states {THRESHOLD_KEY} {stated!r}, the checkpoint's is {threshold!r}")
    return parity
