"""Turn a real digit image (photo, scan, canvas drawing) into the 28x28 form MNIST digits have.

MNIST's recipe (LeCun's page): white digit on black, cropped to its bounding box, fitted into 20x20
keeping the aspect ratio with anti-aliasing, then placed in 28x28 so its center of mass is the
center. Real images first need a grayscale, a polarity and a background removed, and stray ink at the edge (a
ruled line, a neighbouring digit cut by the crop) dropped. numpy + Pillow only.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import ExifTags, Image
# The only decoders loaded: importing a plugin registers its format. Image.open is always given `formats=`, so
# Pillow never goes on to load the rest (EPS hands the bytes to Ghostscript, an interpreter).
from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin  # noqa: F401
from PIL import PpmImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401

from mnist_edge.atomic import fresh_temp
from mnist_edge.errors import MnistEdgeError, NotRegularFile, bug, debugging, describe, open_regular
from mnist_edge.spec import DIGIT_BOX, IMAGE_SIZE

# Above any phone photo (50 MP), below Pillow's own bomb limits (89 MP warns, 179 MP refused): a bigger
# image would need gigabytes to decode, more than a Raspberry Pi may have.
MAX_PIXELS = 64_000_000
# Pillow's own limit, set to ours and made an error (see _guarded): it applies to every image Pillow opens.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# The formats a digit arrives in (photos, scans, screenshots, canvas drawings), by Pillow's name, and the file
# suffixes a folder is searched for. No other format is ever read: not ICO (an icon holds no photo, and opening
# one decodes the PNG inside in full), not EPS/PDF (PostScript), nor Pillow's dozens of rarer ones. Each of these
# reads only a header when opened, which the server process relies on (header_pixels).
IMAGE_FORMATS = {
    "PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "GIF": (".gif",), "BMP": (".bmp",), "WEBP": (".webp",),
    "TIFF": (".tif", ".tiff"), "PPM": (".pgm", ".ppm", ".pbm", ".pnm"),
}
IMAGE_SUFFIXES = tuple(suffix for suffixes in IMAGE_FORMATS.values() for suffix in suffixes)
SUPPORTED = "supported: PNG, JPEG, GIF, BMP, WebP, TIFF, PPM/PGM/PBM"
# Long side the image is reduced to before any per-pixel work: a digit spanning a tenth of the frame
# still keeps ~50 px, more than the 20 px it ends as.
WORK_SIZE = 512
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


NO_DIGIT = "no digit found: the image is blank or has almost no contrast"
# Modes Pillow cannot turn into L or LA directly, and the mode that leads there.
NO_GRAY_CONVERSION = {"LAB": "RGB", "La": "LA"}
# Modes whose values a box average cannot mix as they are (bits, palette indices): converted before reducing.
NO_REDUCE = ("1", "P", "PA")
# EXIF orientation -> the turn that shows the image upright (ImageOps.exif_transpose's table, applied here
# to the reduced image rather than to the full-size one).
_EXIF_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# A side of a tile that estimates the local background: smaller tiles would be all ink on a tiny image.
MIN_TILE = 4


# An image is a file or its encoded bytes (an upload); NAME labels errors about bytes.
Source = Path | str | bytes


def _label(source: Source, name: str | None) -> str:
    return name if name is not None else ("<image bytes>" if isinstance(source, bytes) else str(source))


def load_gray(source: Source, name: str | None = None) -> np.ndarray:
    """Decode SOURCE (EXIF-rotated, any mode, alpha flattened) to float32 grayscale in [0, 1]."""
    path = _label(source, name)
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open_regular(Path(source)) as stream, _guarded():
            img = Image.open(stream, formats=tuple(IMAGE_FORMATS))  # reads the header only
            if img.width * img.height > MAX_PIXELS:
                raise MnistEdgeError(f"{path}: {img.width}x{img.height} pixels is over the {MAX_PIXELS:,}-pixel "
                                     "limit (a possible decompression bomb)")
            if img.width * img.height == 0:
                raise MnistEdgeError(f"{path}: the image has no pixels ({img.width}x{img.height})")
            img.draft("L", (WORK_SIZE, WORK_SIZE))  # JPEG only: decode at 1/2..1/8 scale, straight to gray
            try:
                return _to_gray(img)
            except MnistEdgeError as exc:  # the pixels' own problem (NaN in a float image): name the image
                raise MnistEdgeError(f"{path}: {exc}") from None
    except MnistEdgeError:
        raise
    except FileNotFoundError:
        raise MnistEdgeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MnistEdgeError(f"{path}: is a folder, not an image") from None
    except NotRegularFile as exc:  # a device, pipe or socket: never read
        raise MnistEdgeError(f"{path}: {exc}") from None
    except Image.UnidentifiedImageError:
        raise MnistEdgeError(f"{path}: not a supported image format ({SUPPORTED})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # refused inside open()
        size = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(size[1]):,} pixels" if size else "the image"
        raise MnistEdgeError(f"{path}: {pixels} is over the {MAX_PIXELS:,}-pixel limit "
                             "(a possible decompression bomb)") from None
    except MemoryError:
        raise MnistEdgeError(f"{path}: too large to decode in the memory available") from None
    except PermissionError as exc:
        raise MnistEdgeError(f"{path}: cannot read ({exc.strerror})") from None
    except Exception as exc:  # corrupt data makes a decoder raise anything: OSError, SyntaxError, struct.error...
        raise MnistEdgeError(f"{path}: unreadable image ({describe(exc)})") from None


@contextmanager
def _guarded() -> Iterator[None]:
    """Pillow's warnings as they should be taken here: a size over MAX_PIXELS (DecompressionBombWarning) an
    error, raised before anything is decoded; odd metadata (EXIF, TIFF tags) ignored, as noise beside the one
    line a bad image gets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def header_pixels(data: bytes) -> int | None:
    """How many pixels encoded image DATA says it has, from its header alone (nothing is decoded); None when
    that cannot be told without decoding (not an image in one of IMAGE_FORMATS). What
    decoding costs grows with the pixels, not with the bytes: 2 KB of WebP can hold 64 MP."""
    try:
        with _guarded(), Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS)) as img:
            return img.width * img.height
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return MAX_PIXELS + 1
    except Exception:  # not one of those formats, or a corrupt header: preprocess names the problem in a worker
        return None


def _to_gray(img: Image.Image) -> np.ndarray:
    # Reduced first, in the image's own mode where a box average means something, then converted and turned:
    # a large image is never copied at its full size (turning it, converting RGBA to LA took 4x the decoded
    # image's memory: 1.1 GB for 64 MP of RGBA). Bits, palette indices, 16-bit ints and a transparent colour
    # are converted first.
    orientation = img.getexif().get(ExifTags.Base.Orientation)
    turn = _EXIF_TURNS.get(orientation) if isinstance(orientation, int) else None  # a crafted tag may hold anything
    mode = img.mode
    if mode == "F" or mode.startswith("I"):  # 32-bit float, 16/32-bit int: no alpha, no 8-bit detour
        return _unit_range(_turned(_reduce(img.convert("F") if mode.startswith("I;") else img), turn).convert("F"),
                           mode)
    if mode not in NO_REDUCE and "transparency" not in img.info:  # reducing drops info, the transparent colour with it
        img = _reduce(img)
    if img.mode in NO_GRAY_CONVERSION:
        img = img.convert(NO_GRAY_CONVERSION[img.mode])
    has_alpha = "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info
    pixels = (np.asarray(_turned(_reduce(img.convert("LA" if has_alpha else "L")), turn), dtype=np.float32)
              / np.float32(255))
    if not has_alpha:
        return pixels
    gray, alpha = pixels[..., 0], pixels[..., 1]
    if alpha.min() == 1.0:
        return gray
    # Flatten onto the background that contrasts with the opaque strokes, whatever colour
    # a canvas app left under its transparent pixels.
    strokes = float((gray * alpha).sum() / max(alpha.sum(), 1e-6))
    background = 1.0 if strokes < 0.5 else 0.0
    return gray * alpha + np.float32(background) * (1.0 - alpha)


def _turned(img: Image.Image, turn: Image.Transpose | None) -> Image.Image:
    return img.transpose(turn) if turn is not None else img


def _reduce(img: Image.Image) -> Image.Image:
    factor = max(img.size) // WORK_SIZE
    return img.reduce(factor) if factor >= 2 else img  # box average: anti-aliased and fast


def _unit_range(img: Image.Image, mode: str) -> np.ndarray:
    """Pixels of a mode F image, converted from MODE, scaled to [0, 1]."""
    pixels = np.asarray(img, dtype=np.float64)
    if not np.isfinite(pixels).all():
        raise MnistEdgeError("the image has NaN or infinite pixel values")
    if mode != "F":  # 16-bit scans, and 16-bit PNGs that Pillow opens as 32-bit: a 16-bit range
        pixels = pixels.clip(0, 65535) / 65535
    elif pixels.min() < 0 or pixels.max() > 255:  # floats have no set range: stretch what is there
        low, high = pixels.min(), pixels.max()
        pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    elif pixels.max() > 1:
        pixels = pixels / 255
    return pixels.astype(np.float32)


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


def raw_mnist(gray: np.ndarray, path: str) -> np.ndarray:
    """An image already in MNIST form, used as it is."""
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistEdgeError(f"{path}: --raw needs a {IMAGE_SIZE}x{IMAGE_SIZE} image, this one is "
                             f"{gray.shape[1]}x{gray.shape[0]}")
    return gray


def preprocess(source: Source, raw: bool = False, name: str | None = None) -> np.ndarray:
    """What the model sees for the image SOURCE (a path or encoded bytes): [28,28] float32, white digit on black."""
    path = _label(source, name)
    return _model_input(load_gray(source, path), raw, path)


def preprocess_image(img: Image.Image, raw: bool = False, name: str = "<image>") -> np.ndarray:
    """What the model sees for an image already decoded by Pillow (the Python API's PIL images and arrays)."""
    if img.width * img.height > MAX_PIXELS:
        raise MnistEdgeError(f"{name}: {img.width}x{img.height} pixels is over the {MAX_PIXELS:,}-pixel limit")
    if img.width * img.height == 0:
        raise MnistEdgeError(f"{name}: the image has no pixels ({img.width}x{img.height})")
    try:
        with _guarded():
            gray = _to_gray(img)
    except MnistEdgeError as exc:
        raise MnistEdgeError(f"{name}: {exc}") from None
    except Exception as exc:  # a mode Pillow cannot convert to gray (complex layouts from fromarray)
        raise MnistEdgeError(f"{name}: cannot read this image ({describe(exc)})") from None
    return _model_input(gray, raw, name)


def _model_input(gray: np.ndarray, raw: bool, path: str) -> np.ndarray:
    """The [28,28] MNIST form of GRAY, named PATH in errors: as it is with RAW, else preprocessed."""
    if raw:
        return raw_mnist(gray, path)
    try:
        with np.errstate(all="ignore"):  # every step checks its own results; numpy's warnings would be stray lines
            return to_mnist(gray)
    except MnistEdgeError as exc:
        raise MnistEdgeError(f"{path}: {exc}") from None
    except MemoryError:
        raise MnistEdgeError(f"{path}: too large to process in the memory available") from None
    except Exception as exc:  # a case the steps above missed fails this image only, saying what happened
        if debugging():
            raise
        raise MnistEdgeError(bug(f"{path}: cannot prepare this image", exc)) from None


def png_bytes(image: np.ndarray) -> bytes:
    """A [28,28] [0,1] image encoded as an 8-bit grayscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: np.ndarray, names: Iterable[Path]) -> Path:
    """Write a [28,28] [0,1] image as an 8-bit grayscale PNG under the first of NAMES that no file has, even one
    another process created a moment ago: never overwrites. The name it got; a MnistEdgeError when it cannot."""
    names = iter(names)
    first = next(names)
    try:
        return _write_new(first, names, png_bytes(image))
    except FileExistsError:
        raise MnistEdgeError(f"{first}: exists, and so does every other name tried: not overwritten") from None
    except OSError as exc:  # disk full, no permission: that image fails, the others go on
        raise MnistEdgeError(f"{first}: cannot write ({exc.strerror or exc})") from None


def _write_new(first: Path, others: Iterator[Path], data: bytes) -> Path:
    """Write DATA as a new file, all or nothing: written beside FIRST, then hard-linked to FIRST or else each of
    OTHERS in turn. A link (unlike a rename) fails when the name exists, even if it was taken a moment ago."""
    tmp = fresh_temp(first)  # atomic.py's name: a killed run's temporary file is removed by the next one
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for path in itertools.chain([first], others):
            try:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise
                except OSError:  # no hard links here (FAT, some network shares): claim the name first, then fill it
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                    os.replace(tmp, path)
                return path
            except FileExistsError:
                continue  # taken: by this run's other images, or another process writing the same folder
        raise FileExistsError(first)
    finally:
        tmp.unlink(missing_ok=True)
