"""The MNIST form of a grayscale image of one digit: white ink on black, fitted into 20x20, centred by mass in 28x28.

MNIST's recipe (LeCun's page): white digit on black, cropped to its bounding box, fitted into 20x20 keeping the
aspect ratio with anti-aliasing, then placed in 28x28 so its center of mass is the center. A real image first
needs a polarity and a background removed (shadows and uneven light too), and stray ink at its edge dropped (a
ruled line, a neighbouring digit cut by the crop). numpy + Pillow only; preprocess.py reads the file.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from mnist_edge.errors import MnistEdgeError
from mnist_edge.spec import DIGIT_BOX, IMAGE_SIZE

# Ink must stand this far (on a 0-1 scale) above the background, or the image counts as blank.
MIN_CONTRAST = 0.08
# The bounding box ignores this share of ink mass at each side: specks and dust far from the digit.
TRIM_MASS = 0.005
# Ink touching the image's edge is dropped when it is at most this share of all ink and the rest stands clear of
# the edge: a ruled line, the paper's edge or a neighbouring digit cut by the crop, beside the digit. A digit
# that itself runs past the edge carries most of the ink and is kept whole.
EDGE_FRAGMENT_SHARE = 0.25
# Connectivity is judged on a grid of at most this many cells a side: fast on any image, and ink closer than a
# cell counts as touching, so the strokes of one digit are never split.
EDGE_GRID = 64
# Median stroke width of MNIST's training digits in their 20x20 box, by _stroke_width on pixels > 0.5.
# Thin pens and 1-px canvas lines are thickened to it: a model trained on MNIST has never seen hairlines.
MNIST_STROKE_WIDTH = 2.0
# A side of a tile that estimates the local background: smaller tiles would be all ink on a tiny image.
MIN_TILE = 4
NO_DIGIT = "no digit found: the image is blank or has almost no contrast"


def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] on a zero background, whatever the polarity and lighting."""
    # A discrete method: exact enough here, and it skips the interpolation path's np.unique (and numpy.ma).
    low, background, high = np.percentile(gray, [0.5, 50, 99.5], method="lower")
    dark_ink = background - low > high - background
    ink = background - gray if dark_ink else gray - background
    if max(background - low, high - background) < MIN_CONTRAST:
        raise MnistEdgeError(NO_DIGIT)
    # Local background: the darkest ink level in each of 4x4 tiles, smoothed over the image, removes
    # shadows and uneven lighting that a single level would turn into ink.
    ink = ink - _tile_floor(ink, tiles=4)
    ink = np.clip(ink, 0.0, None)
    if ink.max() < MIN_CONTRAST:  # all of the contrast was lighting: nothing stands above its surroundings
        raise MnistEdgeError(NO_DIGIT)
    threshold = _otsu(ink)
    # MNIST strokes are saturated at their core: the typical ink pixel maps to 1.
    strong = ink[ink > threshold]
    if strong.size == 0:
        raise MnistEdgeError(NO_DIGIT)
    level = float(np.percentile(strong, 50, method="lower"))  # the median, without np.median's numpy.ma import
    return np.clip((ink - threshold) / max(level - threshold, 1e-6), 0.0, 1.0)


def _without_edge_fragments(ink: np.ndarray) -> np.ndarray:
    """INK without the ink connected to the image's edge, when that is at most EDGE_FRAGMENT_SHARE of it."""
    h, w = ink.shape
    if not (ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any()):
        return ink  # nothing touches the edge: the common case, decided before any other work
    cell = -(-max(h, w) // EDGE_GRID)
    grid = np.zeros((-(-h // cell) * cell, -(-w // cell) * cell), np.float32)
    grid[:h, :w] = ink
    mass = grid.reshape(grid.shape[0] // cell, cell, grid.shape[1] // cell, cell).sum(axis=(1, 3))
    inked = mass > 0
    touching = np.zeros_like(inked)  # the cells holding ink on the image's edge
    touching[0] |= grid[0].reshape(-1, cell).any(axis=1)
    touching[(h - 1) // cell] |= grid[h - 1].reshape(-1, cell).any(axis=1)
    touching[:, 0] |= grid[:, 0].reshape(-1, cell).any(axis=1)
    touching[:, (w - 1) // cell] |= grid[:, w - 1].reshape(-1, cell).any(axis=1)
    while True:  # grow along the ink, 8-connected, until nothing more joins
        grown = _grown(touching) & inked
        if np.array_equal(grown, touching):
            break
        touching = grown
    if mass[touching].sum() > EDGE_FRAGMENT_SHARE * mass.sum():
        return ink
    keep = np.repeat(np.repeat(~touching, cell, axis=0), cell, axis=1)[:h, :w]
    return ink * keep


def _grown(mask: np.ndarray) -> np.ndarray:
    """MASK and its 8 neighbours: a 3x3 dilation, as two 1-D ones."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _tile_floor(ink: np.ndarray, tiles: int) -> np.ndarray:
    h, w = ink.shape
    ny, nx = max(1, min(tiles, h // MIN_TILE)), max(1, min(tiles, w // MIN_TILE))
    th, tw = h // ny, w // nx  # equal tiles, so one vectorized call; the few leftover edge pixels only lose a vote
    blocks = ink[: ny * th, : nx * tw].reshape(ny, th, nx, tw).swapaxes(1, 2).reshape(ny, nx, th * tw)
    # 5th percentile: the background unless a tile is nearly all ink, and robust to single dark pixels.
    grid = np.percentile(blocks, 5, axis=-1, method="lower").astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR))


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold between background and ink on a 256-bin histogram of [0, max]."""
    top = float(values.max()) or 1.0
    # np.histogram's binning by hand: bincount is ~10x faster, and this runs once per image.
    hist = np.bincount(np.minimum((values * (256 / top)).astype(np.intp), 255).ravel(), minlength=256)
    centers = (np.arange(256) + 0.5) * (top / 256)
    weight = np.cumsum(hist)
    mass = np.cumsum(hist * centers)
    total_w, total_m = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_m * weight - mass * total_w) ** 2 / (weight * (total_w - weight))
    between = np.where(np.isfinite(between[:-1]), between[:-1], -1.0)  # no split where a class is empty
    if between.max() < 0:  # every value in one bin: no ink to tell from a background
        raise MnistEdgeError(NO_DIGIT)
    return float(centers[np.argmax(between)])


def _bounding_box(ink: np.ndarray) -> tuple[slice, slice]:
    def span(profile: np.ndarray) -> slice:
        cum = np.cumsum(profile) / profile.sum()
        first = int(np.searchsorted(cum, TRIM_MASS))
        last = int(np.searchsorted(cum, 1.0 - TRIM_MASS))
        return slice(first, min(last, len(profile) - 1) + 1)

    return span(ink.sum(axis=1)), span(ink.sum(axis=0))


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: area over half the perimeter (a long L x w bar gives ~w)."""
    edges = np.count_nonzero(np.diff(mask, axis=0)) + np.count_nonzero(np.diff(mask, axis=1))
    return 2.0 * np.count_nonzero(mask) / max(edges, 1)


def _dilate(ink: np.ndarray, radius: int) -> np.ndarray:
    """Grayscale dilation by a (2r+1)-pixel square, on a canvas grown by r so nothing is cut."""
    out = np.pad(ink, 2 * radius)
    for axis in (0, 1):
        out = sliding_window_view(out, 2 * radius + 1, axis=axis).max(axis=-1)
    return out


def _thicken(digit: np.ndarray) -> np.ndarray:
    """Widen strokes thinner than MNIST's so that, once fitted into the box, they match it."""
    width = _stroke_width(np.pad(digit > 0.5, 1))
    target = MNIST_STROKE_WIDTH * max(digit.shape) / DIGIT_BOX
    if width >= target:
        return digit
    # Dilating by r widens strokes and the box alike by 2r: solve (width + 2r) / (length + 2r) = 2.0 / 20.
    radius = round((target - width) / (2 * (1 - MNIST_STROKE_WIDTH / DIGIT_BOX)))
    return _dilate(digit, radius) if radius > 0 else digit


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """MNIST form [28,28] float32 in [0,1] of a grayscale image of one digit."""
    ink = _without_edge_fragments(_ink(gray))
    rows, cols = _bounding_box(ink)
    digit = _thicken(ink[rows, cols])
    h, w = digit.shape
    scale = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Pillow's resize widens its filter when shrinking: the anti-aliasing MNIST's digits had.
    box = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BILINEAR))
    box = np.clip(box, 0.0, 1.0)
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    bh, bw = box.shape
    ys, xs = np.indices(box.shape)
    total = box.sum()
    if not total > 0:  # a speck that vanished when scaled into the box
        raise MnistEdgeError(NO_DIGIT)
    # MNIST's digits have their mass at pixel (14, 14) (measured: median 14.0 on both axes), not at 13.5.
    center = IMAGE_SIZE / 2
    # Shift the center of mass to the center, but never push ink off the 28x28 field.
    top = int(np.clip(round(center - (ys * box).sum() / total), 0, IMAGE_SIZE - bh))
    left = int(np.clip(round(center - (xs * box).sum() / total), 0, IMAGE_SIZE - bw))
    out[top : top + bh, left : left + bw] = box
    return out
