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

LogitsFn = Callable[[np.ndarray], Any]  # float32 [N,1,28,28] in [0,1] -> array-like logits [N,10]


@dataclass(frozen=True)
class Evaluation:
    accuracy: float  # percent
    loss: float  # mean cross-entropy of the logits
    confusion: np.ndarray  # [true, predicted] counts, int64 [10, 10]
    predictions: np.ndarray  # int64 [N]

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Percent of each digit's images classified right; None for a digit with no images."""
        totals = self.confusion.sum(axis=1)
        return [ratio_percent(int(self.confusion[c, c]), int(totals[c])) if totals[c] else None for c in range(NUM_CLASSES)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "errors": int((self.confusion.sum() - np.trace(self.confusion))),
            "images": int(self.confusion.sum()),
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


def evaluate(logits_fn: LogitsFn, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> Evaluation:
    """Run LOGITS_FN over uint8 IMAGES [N,28,28] in batches and score it against LABELS [N]."""
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    predictions = np.empty(len(images), dtype=np.int64)
    loss_sum = 0.0
    for start in range(0, len(images), batch_size):
        y = labels[start : start + batch_size]
        logits = np.asarray(logits_fn(to_pixels(images[start : start + batch_size])), dtype=np.float64)
        if logits.shape != (len(y), NUM_CLASSES):
            raise MnistEdgeError(f"the model returned logits of shape {list(logits.shape)} for {len(y)} images, expected [{len(y)},{NUM_CLASSES}]")
        if not np.isfinite(logits).all():
            raise MnistEdgeError(f"the model returned non-finite logits (NaN or infinity) for test images {start}..{start + len(y) - 1}")
        shifted = logits - logits.max(axis=1, keepdims=True)  # stable log-softmax
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum -= float(log_probs[np.arange(len(y)), y].sum())
        predictions[start : start + len(y)] = logits.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    accuracy = percent(predictions == labels)
    return Evaluation(accuracy, loss_sum / len(images), confusion, predictions)


def torch_logits_fn(model: torch.nn.Module, device: torch.device | str = "cpu") -> LogitsFn:
    """Wrap a PyTorch model (put in eval mode) as a logits_fn."""
    import torch

    model.eval()

    def logits_fn(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(pixels).to(device))
            logits = out[0] if isinstance(out, (tuple, list)) else out  # a model may return more after its logits
            return logits.float().cpu().numpy()

    return logits_fn


def format_evaluation(result: Evaluation) -> str:
    """Human-readable accuracy and per-class accuracy."""
    d = result.as_dict()
    lines = [f"accuracy {result.accuracy:.2f}% ({d['errors']} errors in {d['images']} images), loss {result.loss:.4f}"]
    lines.append("per class: " + "  ".join(f"{c}: " + ("-" if acc is None else f"{acc:.2f}%") for c, acc in d["per_class_accuracy"].items()))
    return "\n".join(lines)
