"""Read a real digit image (photo, scan, canvas drawing) and turn it into the 28x28 form MNIST digits have.

Reading is where a stranger's file is met: only the listed formats' decoders are loaded, the pixel count is checked
before decoding, any mode becomes gray in [0, 1], EXIF turns are applied, and a large image is reduced first.
mnist_form.py then makes the MNIST form; save_png writes what the model saw. numpy + Pillow only.
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
from PIL import ExifTags, Image
# The only decoders loaded: importing a plugin registers its format. Image.open is always given `formats=`, so
# Pillow never goes on to load the rest (EPS hands the bytes to Ghostscript, an interpreter).
from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin  # noqa: F401
from PIL import PpmImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401

from mnist_edge.atomic import fresh_temp
from mnist_edge.errors import MnistEdgeError, NotRegularFile, bug, debugging, describe, open_regular
from mnist_edge.edge.mnist_form import to_mnist
from mnist_edge.spec import IMAGE_SIZE

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
