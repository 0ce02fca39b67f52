"""Evaluation pictures drawn with Pillow: a confusion matrix and a grid of the misclassified digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_edge.atomic import atomic_path
from mnist_edge.evaluate import Evaluation
from mnist_edge.spec import LABELS

CELL = 44  # confusion-matrix cell, pixels
MARGIN = 56  # room for the axis titles and digit labels
DIGIT_ZOOM = 3
GRID_COLUMNS = 10
MAX_MISTAKES = 200  # more would make an unreadable picture; the JSON has every count


def _save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def confusion_png(confusion: np.ndarray, path: Path) -> None:
    """Rows are true digits, columns predicted; shade by the row's share, count printed in each cell."""
    n = len(confusion)
    size = MARGIN + n * CELL + 8
    image = Image.new("RGB", (size, size + 20), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    row_totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    shares = confusion / row_totals
    for t in range(n):
        for p in range(n):
            x0, y0 = MARGIN + p * CELL, MARGIN + t * CELL
            share = float(shares[t, p])
            # diagonal cells in blue, mistakes in red, so errors stand out even when small
            strength = share if t == p else min(1.0, share * 20)
            tint = int(255 * (1 - strength))
            fill = (tint, tint, 255) if t == p else (255, tint, tint)
            draw.rectangle([x0, y0, x0 + CELL - 1, y0 + CELL - 1], fill=fill, outline=(200, 200, 200))
            text = str(int(confusion[t, p]))
            colour = "white" if t == p and strength > 0.5 else "black"
            draw.text((x0 + CELL / 2, y0 + CELL / 2), text, fill=colour, font=font, anchor="mm")
    for i, label in enumerate(LABELS[:n]):
        draw.text((MARGIN + i * CELL + CELL / 2, MARGIN - 10), label, fill="black", font=font, anchor="mm")
        draw.text((MARGIN - 12, MARGIN + i * CELL + CELL / 2), label, fill="black", font=font, anchor="mm")
    draw.text((MARGIN + n * CELL / 2, 14), "predicted", fill="black", font=font, anchor="mm")
    draw.text((4, MARGIN - 28), "true", fill="black", font=font)
    accuracy = 100.0 * np.trace(confusion) / max(confusion.sum(), 1)
    draw.text((MARGIN, size + 4), f"accuracy {accuracy:.2f}% of {int(confusion.sum())}", fill="black", font=font)
    _save_png(image, path)


def mistakes_png(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, path: Path) -> int:
    """A grid of misclassified digits, each captioned 'true -> predicted'; returns how many it shows."""
    wrong = np.flatnonzero(predictions != labels)[:MAX_MISTAKES]
    side = images.shape[-1] * DIGIT_ZOOM
    caption = 14
    cols = GRID_COLUMNS
    rows = max(1, -(-len(wrong) // cols))
    image = Image.new("L", (cols * (side + 4), rows * (side + caption + 4)), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for k, i in enumerate(wrong):
        x0, y0 = (k % cols) * (side + 4) + 2, (k // cols) * (side + caption + 4) + 2
        digit = Image.fromarray(images[i]).resize((side, side), Image.Resampling.NEAREST)
        image.paste(digit, (x0, y0))
        draw.text((x0 + side / 2, y0 + side + caption / 2), f"{labels[i]} -> {predictions[i]}", fill=0, font=font, anchor="mm")
    if not len(wrong):
        draw.text((4, 4), "no mistakes", fill=0, font=font)
    _save_png(image, path)
    return len(wrong)


def write_report(result: Evaluation, images: np.ndarray, labels: np.ndarray, out_dir: Path) -> list[Path]:
    """Write confusion_matrix.png and misclassified.png into OUT_DIR; returns their paths."""
    confusion_path, mistakes_path = out_dir / "confusion_matrix.png", out_dir / "misclassified.png"
    confusion_png(result.confusion, confusion_path)
    mistakes_png(images, labels, result.predictions, mistakes_path)
    return [confusion_path, mistakes_path]
