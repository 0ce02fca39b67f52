"""A robustness benchmark: accuracy on MNIST's test digits under the shifts real inputs have, and on real images.

MNIST's test digits share writers, pens and scanner with its training digits; real users' digits do not.
Each shift below turns the uint8 test digits [N,28,28] into shifted ones at one documented severity, with
numpy and Pillow only, deterministically (a fixed seed per shift): the same digits for every model, on
every run. The shifts act on digits already in MNIST form, which is what a model sees after `predict`'s
preprocessing; the real images (digits-in-the-wild) go through that preprocessing itself.

Torch-free: ONNX files run on ONNX Runtime; checkpoints and TorchScript files import torch when given.
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from mnist_edge.errors import MnistEdgeError
from mnist_edge.measure.evaluate import split_outputs, to_pixels

SEED = 2026
ROTATE_DEGREES = 15.0
SCALES = (0.8, 1.2)
BLUR_SIGMA = 1.0
LOWRES_SIZE = 12
ELASTIC_ALPHA, ELASTIC_SIGMA = 34.0, 4.0  # Simard et al. 2003's elastic distortion
JPEG_QUALITY = 20
NOISE_STD = 0.2  # of the full [0, 1] range

Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _pad(images: np.ndarray, r: int, mode: Any = "constant", **kwargs: int) -> np.ndarray:
    return np.pad(images, ((0, 0), (r, r), (r, r)), mode=mode, **kwargs)


def dilate(images: np.ndarray, _rng: np.random.Generator | None = None) -> np.ndarray:
    """Thicker strokes: grey dilation by a 3x3 square (a marker instead of a pen)."""
    return sliding_window_view(_pad(images, 1), (3, 3), axis=(1, 2)).max(axis=(-2, -1))


def erode(images: np.ndarray, _rng: np.random.Generator | None = None) -> np.ndarray:
    """Thinner strokes: grey erosion by a plus, the pixel and its 4 neighbours (a fine pen)."""
    p = _pad(images, 1, constant_values=255)  # outside the frame eats no ink
    return np.minimum.reduce([p[:, 1:-1, 1:-1], p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]])


def _gaussian_kernel(sigma: float) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    return k / k.sum()


def _smooth(x: np.ndarray, sigma: float, mode: str = "constant") -> np.ndarray:
    """Separable Gaussian filter over the last two axes of float X [N,H,W]."""
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    h, w = x.shape[1:]
    p = _pad(x, r, mode)
    rows = sum(k[i] * p[:, i : i + h, :] for i in range(len(k)))
    return sum(k[i] * rows[:, :, i : i + w] for i in range(len(k)))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def blur(images: np.ndarray, _rng: np.random.Generator | None = None) -> np.ndarray:
    """Out of focus: Gaussian blur, sigma {BLUR_SIGMA} pixels."""
    return _to_uint8(_smooth(images.astype(np.float64), BLUR_SIGMA))


def _per_image(images: np.ndarray, fn: Callable[[Image.Image, int], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(img), i), dtype=np.uint8) for i, img in enumerate(images)])


def lowres(images: np.ndarray, _rng: np.random.Generator | None = None) -> np.ndarray:
    """A low-resolution capture: box-averaged down to {LOWRES_SIZE} px square, bilinear back up to 28."""
    size = images.shape[1:][::-1]
    return _per_image(
        images,
        lambda im, _i: im.resize((LOWRES_SIZE,) * 2, Image.Resampling.BOX).resize(size, Image.Resampling.BILINEAR),
    )


def _sample(images: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear sampling of IMAGES [N,H,W] at float pixel coordinates [N,H,W], zero outside."""
    n, h, w = images.shape
    p = _pad(images.astype(np.float64), 1)  # a zero border: coordinates just outside blend with 0
    ys, xs = np.clip(ys + 1, 0, h + 1), np.clip(xs + 1, 0, w + 1)
    y0, x0 = np.minimum(np.floor(ys).astype(np.intp), h), np.minimum(np.floor(xs).astype(np.intp), w)
    fy, fx = ys - y0, xs - x0
    i = np.arange(n)[:, None, None]
    top = p[i, y0, x0] * (1 - fx) + p[i, y0, x0 + 1] * fx
    bottom = p[i, y0 + 1, x0] * (1 - fx) + p[i, y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def elastic(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another hand: a smooth random displacement field, uniform noise smoothed by a Gaussian of sigma
    {ELASTIC_SIGMA} and scaled by {ELASTIC_ALPHA} (Simard et al.'s parameters: about 1.7 px RMS displacement
    per axis)."""
    n, h, w = images.shape
    dy, dx = (ELASTIC_ALPHA * _smooth(rng.uniform(-1, 1, (n, h, w)), ELASTIC_SIGMA, "reflect") for _ in range(2))
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float64)
    return _to_uint8(_sample(images, grid_y + dy, grid_x + dx))


def _affine(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Warp each image by its 2x2 MATRIX about the image centre (output -> input map), bilinear."""
    n, h, w = images.shape
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    oy, ox = grid_y - cy, grid_x - cx
    m = matrices[:, :, :, None, None]
    return _to_uint8(_sample(images, cy + m[:, 0, 0] * oy + m[:, 0, 1] * ox, cx + m[:, 1, 0] * oy + m[:, 1, 1] * ox))


def rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slanted writing: rotated by {ROTATE_DEGREES} degrees, clockwise or anticlockwise at random."""
    angle = np.radians(ROTATE_DEGREES) * rng.choice([-1.0, 1.0], len(images))
    cos, sin = np.cos(angle), np.sin(angle)
    return _affine(images, np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1))


def scale(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smaller or larger writing: scaled about the centre by one of {SCALES} at random."""
    inverse = 1 / rng.choice(SCALES, len(images))
    zero = np.zeros_like(inverse)
    return _affine(images, np.stack([np.stack([inverse, zero], 1), np.stack([zero, inverse], 1)], 1))


def jpeg(images: np.ndarray, _rng: np.random.Generator | None = None) -> np.ndarray:
    """A compressed photo: a JPEG round trip at quality {JPEG_QUALITY}."""

    def roundtrip(im: Image.Image, _i: int) -> Image.Image:
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return Image.open(buffer).convert("L")

    return _per_image(images, roundtrip)


def noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy sensor: additive Gaussian noise, std {NOISE_STD} of the full range, clipped."""
    return _to_uint8(images + rng.normal(0.0, 255 * NOISE_STD, images.shape))


def clean(images: np.ndarray, _rng: np.random.Generator | None = None) -> np.ndarray:
    """MNIST's test digits as they are."""
    return images


SHIFTS: dict[str, Shift] = {
    "clean": clean,
    "thick": dilate,
    "thin": erode,
    "blur": blur,
    "lowres": lowres,
    "elastic": elastic,
    "rotate": rotate,
    "scale": scale,
    "jpeg": jpeg,
    "noise": noise,
}


def describe(name: str) -> str:
    """The shift's one-line description, with its severity filled in."""
    return " ".join(SHIFTS[name].__doc__.split()).format(**globals())  # type: ignore[union-attr]


def parse_shifts(text: str | None) -> list[str]:
    """A comma-separated list of shift names (None: all of them), checked."""
    names = [n.strip() for n in text.split(",")] if text is not None else list(SHIFTS)
    unknown = [n for n in names if n not in SHIFTS]
    if unknown or not names:
        raise MnistEdgeError(
            f"unknown shift {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(SHIFTS)}"
        )
    return names


def shifted(name: str, images: np.ndarray) -> np.ndarray:
    """IMAGES [N,28,28] uint8 under shift NAME, the same for every call (its own fixed seed)."""
    parse_shifts(name)
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    return SHIFTS[name](images, rng)


@dataclass(frozen=True)
class WildSet:
    images: np.ndarray  # float32 [N,28,28] in [0,1], exactly what `predict` feeds the model
    labels: np.ndarray  # int64 [N]
    files: list[str]


_LABEL_IN_NAME = re.compile(r"label-(\d)")


def wild_labels(folder: Path) -> dict[Path, int]:
    """Image -> digit, from labels.csv's `file,label` columns, else from `label-D` in each file name."""
    table = folder / "labels.csv"
    if table.is_file():
        with open(table, newline="") as f:
            try:
                return {folder / row["file"]: int(row["label"]) for row in csv.DictReader(f)}
            except (KeyError, TypeError, ValueError) as exc:
                raise MnistEdgeError(f"{table}: needs integer `label` and `file` columns ({exc})") from None
    labels = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        match = _LABEL_IN_NAME.search(path.stem)
        if match:
            labels[path] = int(match.group(1))
    return labels


def load_wild(folder: Path) -> WildSet:
    """The real images of FOLDER, each through `predict`'s preprocessing, as uint8 MNIST-form digits."""
    from mnist_edge.edge.preprocess import preprocess

    if not folder.is_dir():
        raise MnistEdgeError(f"{folder}: no such folder")
    labels = wild_labels(folder)
    if not labels:
        raise MnistEdgeError(f"{folder}: no labelled images (a labels.csv, or files named like 001_label-7.png)")
    images = np.stack([preprocess(path) for path in labels])
    return WildSet(images, np.array(list(labels.values()), dtype=np.int64), [p.name for p in labels])


@dataclass(frozen=True)
class Score:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / self.total


def score_models(
    models: dict[str, Callable[[np.ndarray], np.ndarray]],
    images: np.ndarray,
    labels: np.ndarray,
    shifts: list[str],
    wild: WildSet | None = None,
) -> dict[str, dict[str, Score]]:
    """{shift (and "wild"): {model: Score}} for each logits function of MODELS on IMAGES under each of SHIFTS.

    Each shift is computed once and shown to every model; the wild images go in as `predict` prepared them.
    """
    from mnist_edge.export.verify import batched

    def score(pixels: np.ndarray, truth: np.ndarray) -> dict[str, Score]:
        def correct(fn: Callable[[np.ndarray], np.ndarray]) -> int:
            return int((split_outputs(batched(fn, pixels))[0].argmax(1) == truth).sum())

        return {name: Score(correct(fn), len(truth)) for name, fn in models.items()}

    table = {name: score(to_pixels(shifted(name, images)), labels) for name in shifts}
    if wild is not None:
        table["wild"] = score(wild.images[:, None], wild.labels)
    return table


def format_table(table: dict[str, dict[str, Score]]) -> str:
    """A Markdown table: one row per shift, one column per model; accuracy in percent, the wild set in counts."""
    models = list(next(iter(table.values())))
    lines = ["| shift | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for shift, scores in table.items():
        cells = [f"{s.correct}/{s.total}" if shift == "wild" else f"{s.accuracy:.2f}%" for s in scores.values()]
        lines.append(f"| {shift} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
