"""Honest test-set evaluation of any model given as a function from pixels to logits.

The core takes a `logits_fn(images) -> logits` over float32 [N,1,28,28] arrays of [0,1] pixels, so a
PyTorch checkpoint, an ONNX Runtime session or a TorchScript file are all evaluated by the same code.
It needs numpy only; torch is imported only to wrap a PyTorch model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_edge.errors import MnistEdgeError
from mnist_edge.spec import INPUT_SHAPE, NUM_CLASSES

if TYPE_CHECKING:
    import torch

# float32 [N,1,28,28] in [0,1] -> array-like outputs [N,10]: the logits, or [N,11] for an open-set model, whose
# eleventh column is its not_digit output (spec.py); split_outputs takes them apart
LogitsFn = Callable[[np.ndarray], Any]
ECE_BINS = 15


def split_outputs(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits [N,10] and the not-digit scores [N] (None for a model without them) of OUTPUTS [N,10 or 11]."""
    return outputs[:, :NUM_CLASSES], outputs[:, NUM_CLASSES] if outputs.shape[1] > NUM_CLASSES else None


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE in percent: the gap between stated confidence and accuracy, averaged over equal-width confidence bins
    weighted by how many answers fall in each (Guo et al. 2017)."""
    if not len(confidence):
        return 0.0
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.sum() * abs(float(correct[inside].mean()) - float(confidence[inside].mean()))
    return 100 * gap / len(confidence)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float  # percent
    loss: float  # mean cross-entropy of the logits
    confusion: np.ndarray  # [true, predicted] counts, int64 [10, 10]
    predictions: np.ndarray  # int64 [N]
    confidence: np.ndarray  # float64 [N]: the probability the model gives its predicted digit
    correct: np.ndarray  # bool [N]
    refused: np.ndarray | None = None  # bool [N]: answered "not a digit"; None for a model that cannot say so

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Percent of each digit's images classified right; None for a digit with no images."""
        totals = self.confusion.sum(axis=1)
        return [
            ratio_percent(int(self.confusion[c, c]), int(totals[c])) if totals[c] else None for c in range(NUM_CLASSES)
        ]

    @property
    def ece(self) -> float:
        """Expected calibration error (percent, ECE_BINS bins) of the top-1 probability."""
        return expected_calibration_error(self.confidence, self.correct)

    @property
    def refusal_rate(self) -> float | None:
        """Percent of the images answered "not a digit"; None for a model that cannot say so."""
        return None if self.refused is None else percent(self.refused)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "errors": int(self.confusion.sum() - np.trace(self.confusion)),
            "images": int(self.confusion.sum()),
            "ece": self.ece,
            "refused": None if self.refused is None else int(self.refused.sum()),
            "refusal_rate": self.refusal_rate,
            "per_class_accuracy": dict(zip(map(str, range(NUM_CLASSES)), self.per_class_accuracy)),
            "confusion": self.confusion.tolist(),
        }


def ratio_percent(part: int, whole: int) -> float:
    """100 * PART / WHOLE as one correctly rounded division of integers, so 9946 of 10000 is 99.46 exactly
    (100 * (9946 / 10000) is 99.46000000000001)."""
    return 100 * part / whole


def percent(hits: np.ndarray) -> float:
    """The share of true values in HITS, in percent (100 for none)."""
    return ratio_percent(int(hits.sum()), len(hits)) if len(hits) else 100.0


def to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,28,28] in [0,1], the layout every model takes."""
    return (images.astype(np.float32) / 255.0).reshape(len(images), *INPUT_SHAPE)


def evaluate(
    logits_fn: LogitsFn, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000, threshold: float | None = None
) -> Evaluation:
    """Run LOGITS_FN over uint8 IMAGES [N,28,28] in batches and score it against LABELS [N]. Accuracy counts every
    image's top digit, refused or not; with a THRESHOLD an open-set model's refusals are counted too."""
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    predictions = np.empty(len(images), dtype=np.int64)
    confidence = np.empty(len(images), dtype=np.float64)
    scores: list[np.ndarray] = []
    loss_sum = 0.0
    for start in range(0, len(images), batch_size):
        y = labels[start : start + batch_size]
        outputs = np.asarray(logits_fn(to_pixels(images[start : start + batch_size])), dtype=np.float64)
        if outputs.ndim != 2 or len(outputs) != len(y) or outputs.shape[1] not in (NUM_CLASSES, NUM_CLASSES + 1):
            raise MnistEdgeError(
                f"the model returned logits of shape {list(outputs.shape)} for {len(y)} images, expected "
                f"[{len(y)},{NUM_CLASSES}]"
            )
        if not np.isfinite(outputs).all():
            raise MnistEdgeError(
                f"the model returned non-finite logits (NaN or infinity) for test images {start}..{start + len(y) - 1}"
            )
        logits, not_digit = split_outputs(outputs)
        if not_digit is not None:
            scores.append(not_digit)
        shifted = logits - logits.max(axis=1, keepdims=True)  # stable log-softmax
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum -= float(log_probs[np.arange(len(y)), y].sum())
        predictions[start : start + len(y)] = logits.argmax(axis=1)
        confidence[start : start + len(y)] = np.exp(log_probs.max(axis=1))
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    correct = predictions == labels
    refused = np.concatenate(scores) >= threshold if scores and threshold is not None else None
    return Evaluation(percent(correct), loss_sum / len(images), confusion, predictions, confidence, correct, refused)


def torch_logits_fn(model: torch.nn.Module, device: torch.device | str = "cpu") -> LogitsFn:
    """Wrap a PyTorch model (put in eval mode) as a logits_fn of what its exported files compute: a MnistClassifier
    as Deployed, a loaded TorchScript module as it is (one output, or the pair an open-set model returns)."""
    import torch

    from mnist_edge.train.architectures import Deployed, MnistClassifier

    module = Deployed(model) if isinstance(model, MnistClassifier) else model
    module.eval()

    def logits_fn(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(pixels).to(device))
            if isinstance(out, (tuple, list)):
                out = torch.cat([out[0], out[1].reshape(-1, 1)], dim=1)
            return out.float().cpu().numpy()

    return logits_fn


def format_evaluation(result: Evaluation) -> str:
    """Human-readable accuracy and per-class accuracy."""
    d = result.as_dict()
    lines = [f"accuracy {result.accuracy:.2f}% ({d['errors']} errors in {d['images']} images), loss {result.loss:.4f}, "
             f"calibration error (ECE) {result.ece:.2f}%"]
    if result.refused is not None:
        lines.append(f"not a digit: {d['refused']} of {d['images']} refused ({result.refusal_rate:.2f}%)")
    lines.append(
        "per class: "
        + "  ".join(f"{c}: " + ("-" if acc is None else f"{acc:.2f}%") for c, acc in d["per_class_accuracy"].items())
    )
    return "\n".join(lines)
