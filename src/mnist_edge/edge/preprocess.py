"""Turn a real digit image (photo, scan, canvas drawing) into the 28x28 form MNIST digits have.

MNIST's recipe (LeCun's page): white digit on black, cropped to its bounding box, fitted into 20x20
keeping the aspect ratio with anti-aliasing, then placed in 28x28 so its center of mass is the
center. Real images first need a grayscale, a polarity and a background removed. numpy + Pillow only.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps

from mnist_edge.atomic import write_bytes
from mnist_edge.errors import MnistEdgeError
from mnist_edge.spec import DIGIT_BOX, IMAGE_SIZE

# Above any phone photo (50 MP), below Pillow's own bomb limits (89 MP warns, 179 MP refused): a bigger
# image would need gigabytes to decode, more than a Raspberry Pi may have.
MAX_PIXELS = 64_000_000
# Long side the image is reduced to before any per-pixel work: a digit spanning a tenth of the frame
# still keeps ~50 px, more than the 20 px it ends as.
WORK_SIZE = 512
# Ink must stand this far (on a 0-1 scale) above the background, or the image counts as blank.
MIN_CONTRAST = 0.08
# The bounding box ignores this share of ink mass at each side: specks and dust far from the digit.
TRIM_MASS = 0.005
# Median stroke width of MNIST's training digits in their 20x20 box, by _stroke_width on pixels > 0.5.
# Thin pens and 1-px canvas lines are thickened to it: a model trained on MNIST has never seen hairlines.
MNIST_STROKE_WIDTH = 2.0


# An image is a file or its encoded bytes (an upload); NAME labels errors about bytes.
Source = Path | str | bytes


def _label(source: Source, name: str | None) -> str:
    return name if name is not None else ("<image bytes>" if isinstance(source, bytes) else str(source))


def load_gray(source: Source, name: str | None = None) -> np.ndarray:
    """Decode SOURCE (EXIF-rotated, any mode, alpha flattened) to float32 grayscale in [0, 1]."""
    path = _label(source, name)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its two limits; the lower limit below applies, with the size named.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))  # reads the header only: nothing is decoded before the size check
        if img.width * img.height > MAX_PIXELS:
            raise MnistEdgeError(
                f"{path}: {img.width}x{img.height} pixels is over the {MAX_PIXELS:,}-pixel limit (a possible decompression bomb)"
            )
        img.draft("L", (WORK_SIZE, WORK_SIZE))  # JPEG only: decode at 1/2..1/8 scale, straight to gray
        return _to_gray(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise MnistEdgeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MnistEdgeError(f"{path}: is a folder, not an image") from None
    except Image.UnidentifiedImageError:
        raise MnistEdgeError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit: refused inside open()
        raise MnistEdgeError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except MemoryError:
        raise MnistEdgeError(f"{path}: too large to decode in the memory available") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data surfaces while decoding
        raise MnistEdgeError(f"{path}: unreadable image ({str(exc) or type(exc).__name__})") from None


def _to_gray(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I"):  # 16/32-bit: convert("L") would clip values to 255, not rescale them
        img = Image.fromarray((np.asarray(img.convert("I")) // 257).clip(0, 255).astype(np.uint8))
    has_alpha = "A" in img.getbands() or "transparency" in img.info
    img = img.convert("LA" if has_alpha else "L")
    factor = max(img.size) // WORK_SIZE
    if factor >= 2:
        img = img.reduce(factor)  # box average: anti-aliased and fast
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    if not has_alpha:
        return pixels
    gray, alpha = pixels[..., 0], pixels[..., 1]
    if alpha.min() == 1.0:
        return gray
    # Flatten onto the background that contrasts with the opaque strokes, whatever colour
    # a canvas app left under its transparent pixels.
    strokes = float((gray * alpha).sum() / max(alpha.sum(), 1e-6))
    background = 1.0 if strokes < 0.5 else 0.0
    return gray * alpha + background * (1.0 - alpha)


def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] on a zero background, whatever the polarity and lighting."""
    # A discrete method: exact enough here, and it skips the interpolation path's np.unique (and numpy.ma).
    low, background, high = np.percentile(gray, [0.5, 50, 99.5], method="lower")
    dark_ink = background - low > high - background
    ink = background - gray if dark_ink else gray - background
    if max(background - low, high - background) < MIN_CONTRAST:
        raise MnistEdgeError("no digit found: the image is blank or has almost no contrast")
    # Local background: the darkest ink level in each of 4x4 tiles, smoothed over the image, removes
    # shadows and uneven lighting that a single level would turn into ink.
    ink = ink - _tile_floor(ink, tiles=4)
    ink = np.clip(ink, 0.0, None)
    threshold = _otsu(ink)
    # MNIST strokes are saturated at their core: the typical ink pixel maps to 1.
    strong = ink[ink > threshold]
    if strong.size == 0:
        raise MnistEdgeError("no digit found: the image is blank or has almost no contrast")
    level = float(np.percentile(strong, 50, method="lower"))  # the median, without np.median's numpy.ma import
    return np.clip((ink - threshold) / max(level - threshold, 1e-6), 0.0, 1.0)


def _tile_floor(ink: np.ndarray, tiles: int) -> np.ndarray:
    h, w = ink.shape
    ny, nx = min(tiles, h), min(tiles, w)
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
    return float(centers[np.nanargmax(between[:-1])])


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
    ink = _ink(gray)
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
    # MNIST's digits have their mass at pixel (14, 14) (measured: median 14.0 on both axes), not at 13.5.
    center = IMAGE_SIZE / 2
    # Shift the center of mass to the center, but never push ink off the 28x28 field.
    top = int(np.clip(round(center - (ys * box).sum() / total), 0, IMAGE_SIZE - bh))
    left = int(np.clip(round(center - (xs * box).sum() / total), 0, IMAGE_SIZE - bw))
    out[top : top + bh, left : left + bw] = box
    return out


def raw_mnist(gray: np.ndarray, path: str) -> np.ndarray:
    """An image already in MNIST form, used as it is."""
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistEdgeError(f"{path}: --raw needs a {IMAGE_SIZE}x{IMAGE_SIZE} image, this one is {gray.shape[1]}x{gray.shape[0]}")
    return gray


def preprocess(source: Source, raw: bool = False, name: str | None = None) -> np.ndarray:
    """What the model sees for the image SOURCE (a path or encoded bytes): [28,28] float32, white digit on black."""
    path = _label(source, name)
    gray = load_gray(source, path)
    if raw:
        return raw_mnist(gray, path)
    try:
        return to_mnist(gray)
    except MnistEdgeError as exc:
        raise MnistEdgeError(f"{path}: {exc}") from None


def png_bytes(image: np.ndarray) -> bytes:
    """A [28,28] [0,1] image encoded as an 8-bit grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: np.ndarray, path: Path | str) -> None:
    """Write a [28,28] [0,1] image as an 8-bit grayscale PNG."""
    try:
        write_bytes(path, png_bytes(image))
    except OSError as exc:  # disk full, no permission: that image fails, the others go on
        raise MnistEdgeError(f"{path}: cannot write ({exc.strerror or exc})") from None
