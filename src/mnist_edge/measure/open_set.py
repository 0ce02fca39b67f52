"""Does a model answer real digits and refuse what is not one? The check behind tools/open_set.py.

Real digits: MNIST's test set clean and under each shift of robustness.py, the real photos of
digits-in-the-wild, and printed digits in fonts kept out of training and calibration (synthetic.py's held-out
split). For each: the share answered (not refused) and the share answered with the right digit.
Non-digits: generated in held-out fonts with a seed of their own, per kind; the share refused.
And the calibration error (ECE) of MNIST test's top-1 probabilities. No image here is trained or calibrated on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnist_edge.measure import robustness
from mnist_edge.train import synthetic
from mnist_edge.measure.evaluate import LogitsFn, expected_calibration_error, split_outputs, to_pixels
from mnist_edge.export.verify import batched

SEED = 20261207  # the generated sets' own: training uses the recipe's seed, calibration seed + 1


@dataclass(frozen=True)
class Model:
    logits_fn: LogitsFn
    threshold: float | None  # None: the model cannot refuse


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # "digits" or "non-digits"
    total: int
    answered: int
    right: int  # answered with the right digit (digits only)

    def cell(self) -> str:
        if not self.total:  # a kind a small --generated drew none of
            return "-"
        if self.kind == "non-digits":
            return f"refused {100 * (self.total - self.answered) / self.total:.1f}%"
        return f"{100 * self.answered / self.total:.2f}% / {100 * self.right / self.total:.2f}%"


def _run(model: Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top digit, its probability and whether it is answered, for uint8 or [0,1] float IMAGES [N,28,28]."""
    pixels = to_pixels(images) if images.dtype == np.uint8 else images[:, None].astype(np.float32)
    logits, not_digit = split_outputs(batched(model.logits_fn, pixels).astype(np.float64))
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    answered = (
        np.ones(len(images), bool) if not_digit is None or model.threshold is None else not_digit < model.threshold
    )
    return probs.argmax(1), probs.max(1), answered


def digit_row(model: Model, name: str, images: np.ndarray, labels: np.ndarray) -> Row:
    top, _, answered = _run(model, images)
    return Row(name, "digits", len(labels), int(answered.sum()), int((answered & (top == labels)).sum()))


def non_digit_rows(model: Model, images: np.ndarray, kinds: np.ndarray) -> list[Row]:
    _, _, answered = _run(model, images)
    rows = []
    for k, kind in enumerate(synthetic.NON_DIGIT_KINDS):
        mask = kinds == k
        rows.append(Row(kind, "non-digits", int(mask.sum()), int(answered[mask].sum()), 0))
    rows.append(Row("all non-digits", "non-digits", len(kinds), int(answered.sum()), 0))
    return rows


def ece(model: Model, images: np.ndarray, labels: np.ndarray) -> float:
    top, confidence, _ = _run(model, images)
    return expected_calibration_error(confidence, top == labels)


@dataclass(frozen=True)
class Sets:
    mnist: tuple[np.ndarray, np.ndarray]
    shifts: list[str]
    wild: robustness.WildSet | None
    printed: tuple[np.ndarray, np.ndarray]
    non_digits: tuple[np.ndarray, np.ndarray]


def make_sets(mnist_images: np.ndarray, mnist_labels: np.ndarray, shifts: list[str], wild: robustness.WildSet | None,
              generated: int) -> Sets:
    """The evaluation sets; GENERATED printed digits and as many non-digits, in held-out fonts."""
    fonts = synthetic.fonts_for("held-out")
    return Sets((mnist_images, mnist_labels), shifts, wild, synthetic.printed_digits(generated, SEED, fonts),
                synthetic.non_digits(generated, SEED, fonts))


def measure(model: Model, sets: Sets) -> tuple[list[Row], float]:
    """Every row of the check for MODEL, and its ECE on MNIST test."""
    images, labels = sets.mnist
    rows = [digit_row(model, "MNIST test" if s == "clean" else f"MNIST {s}", robustness.shifted(s, images), labels)
            for s in sets.shifts]
    if sets.wild is not None:
        rows.append(digit_row(model, "photos (digits-in-the-wild)", sets.wild.images, sets.wild.labels))
    rows.append(digit_row(model, "printed, held-out fonts", *sets.printed))
    rows += non_digit_rows(model, *sets.non_digits)
    return rows, ece(model, images, labels)


def format_table(results: dict[str, tuple[list[Row], float]]) -> str:
    """Markdown: a row per set, a column per model; digits as answered / answered-and-right, non-digits refused."""
    names = list(results)
    lines = ["| set | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, row in enumerate(next(iter(results.values()))[0]):
        lines.append(f"| {row.name} ({row.total:,}) | " + " | ".join(results[n][0][i].cell() for n in names) + " |")
    lines.append("| ECE, MNIST test (15 bins) | " + " | ".join(f"{results[n][1]:.2f}%" for n in names) + " |")
    return "\n".join(lines)
