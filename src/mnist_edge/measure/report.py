"""Evaluation pictures drawn with Pillow: a confusion matrix, a grid of the misclassified digits and a reliability
diagram (does the stated probability match the accuracy?)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from mnist_edge.atomic import staging
from mnist_edge.errors import MnistEdgeError
from mnist_edge.measure.evaluate import ECE_BINS, Evaluation, expected_calibration_error
from mnist_edge.spec import LABELS

CELL = 44  # confusion-matrix cell, pixels
MARGIN = 56  # room for the axis titles and digit labels
DIGIT_ZOOM = 3
GRID_COLUMNS = 10
MAX_MISTAKES = 200  # more would make an unreadable picture; the JSON has every count


def _png(image: Image.Image, description: str) -> bytes:
    """IMAGE as PNG bytes, with DESCRIPTION (what the picture shows) as its Description text chunk."""
    info = PngInfo()
    info.add_text("Description", description)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def confusion_png(confusion: np.ndarray) -> bytes:
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
    title = f"accuracy {accuracy:.2f}% of {int(confusion.sum())}"
    draw.text((MARGIN, size + 4), title, fill="black", font=font)
    return _png(image, f"confusion matrix: rows true digit, columns predicted; {title}")


def mistakes_legend(shown: int, total: int) -> str:
    """What the grid of mistakes shows: all of them or the first SHOWN of TOTAL, and how to read a caption."""
    if total == 0:
        return "no misclassified digits"
    count = (
        f"all {total} misclassified digits"
        if shown == total
        else f"{shown} of {total} misclassified digits shown (the first, in test-set order)"
    )
    return f"{count}; caption under each: true -> predicted"


LEGEND = 16  # pixels above the grid for the legend


def mistakes_png(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> tuple[bytes, str]:
    """A grid of misclassified digits (at most MAX_MISTAKES), each captioned 'true -> predicted', under a legend
    saying how many of the mistakes it shows; returns the PNG and the legend."""
    all_wrong = np.flatnonzero(predictions != labels)
    wrong = all_wrong[:MAX_MISTAKES]
    legend = mistakes_legend(len(wrong), len(all_wrong))
    side = images.shape[-1] * DIGIT_ZOOM
    caption = 14
    cols = GRID_COLUMNS
    rows = -(-len(wrong) // cols)
    image = Image.new("L", (cols * (side + 4), LEGEND + rows * (side + caption + 4)), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((4, 2), legend, fill=0, font=font)
    for k, i in enumerate(wrong):
        x0, y0 = (k % cols) * (side + 4) + 2, LEGEND + (k // cols) * (side + caption + 4) + 2
        digit = Image.fromarray(images[i]).resize((side, side), Image.Resampling.NEAREST)
        image.paste(digit, (x0, y0))
        draw.text(
            (x0 + side / 2, y0 + side + caption / 2), f"{labels[i]} -> {predictions[i]}", fill=0, font=font, anchor="mm"
        )
    return _png(image, legend), legend


def reliability_png(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> tuple[bytes, str]:
    """A reliability diagram: per confidence bin, a bar as high as the accuracy of the answers in it, against the
    diagonal a calibrated model follows; each bar's width shows its share of the answers (on a log scale)."""
    size, pad = 420, 48
    image = Image.new("RGB", (size + 2 * pad, size + 2 * pad), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    width = size / bins
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        share = np.log1p(inside.sum()) / np.log1p(len(confidence))
        x0 = pad + b * width + width * (1 - share) / 2
        top = pad + size * (1 - float(correct[inside].mean()))
        draw.rectangle([x0, top, x0 + width * share, pad + size], fill=(120, 150, 230), outline=(40, 60, 140))
    draw.line([(pad, pad + size), (pad + size, pad)], fill=(200, 40, 40), width=2)  # perfect calibration
    draw.rectangle([pad, pad, pad + size, pad + size], outline="black")
    for t in range(0, 11, 2):
        draw.text((pad + size * t / 10, pad + size + 10), f"{t / 10:.1f}", fill="black", font=font, anchor="mm")
        draw.text((pad - 16, pad + size * (1 - t / 10)), f"{t / 10:.1f}", fill="black", font=font, anchor="mm")
    draw.text(
        (pad + size / 2, pad + size + 28), "stated probability of the top digit", fill="black", font=font, anchor="mm"
    )
    draw.text((pad, pad - 30), "accuracy", fill="black", font=font)
    title = (
        f"ECE {expected_calibration_error(confidence, correct, bins):.2f}% over {len(confidence)} images, {bins} bins"
    )
    draw.text((pad + size / 2, pad - 12), title, fill="black", font=font, anchor="mm")
    return _png(image, f"reliability diagram: {title}; red diagonal = calibrated"), title


REPORT_FILES = ("confusion_matrix.png", "misclassified.png", "reliability.png")


def write_report(result: Evaluation, images: np.ndarray, labels: np.ndarray, out_dir: Path) -> dict[Path, str]:
    """Write confusion_matrix.png and misclassified.png into OUT_DIR, both or neither (see atomic.Staged: a file
    replaced before a failure is put back); returns each path with what it shows."""
    mistakes, legend = mistakes_png(images, labels, result.predictions)
    pictures = {
        out_dir / REPORT_FILES[0]: (confusion_png(result.confusion), "rows true, columns predicted"),
        out_dir / REPORT_FILES[1]: (mistakes, legend),
        out_dir / REPORT_FILES[2]: reliability_png(result.confidence, result.correct),
    }
    try:
        with staging() as staged:
            for path, (data, _) in pictures.items():
                staged.path(path).write_bytes(data)
            staged.publish()
    except OSError as exc:
        raise MnistEdgeError(f"{out_dir}: cannot write the report ({exc.strerror or exc})") from None
    return {path: what for path, (_, what) in pictures.items()}


def evaluate_file(model: Path, data_dir: Path | None, limit: int | None, report_dir: Path | None,
                  trust_torchscript: bool = False) -> tuple[str, Evaluation, dict[Path, str]]:
    """`mnist-edge evaluate`: MODEL's architecture, its evaluation on the first LIMIT MNIST test digits, and the
    report files written into REPORT_DIR (none without one)."""
    from mnist_edge.export.artifacts import open_artifact, threshold_of
    from mnist_edge.measure.evaluate import evaluate
    from mnist_edge.train.data import load_mnist

    opened = open_artifact(model, trust_torchscript=trust_torchscript)
    data = load_mnist(data_dir)
    images, labels = data.test_images[:limit], data.test_labels[:limit]
    result = evaluate(opened.logits_fn, images, labels, threshold=threshold_of(opened))
    written = write_report(result, images, labels, report_dir) if report_dir is not None else {}
    return opened.metadata.get("arch", "unknown architecture"), result, written
