import io
import os
import re
import struct
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_edge.train.data import load_mnist
from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.mnist_form import EDGE_FRAGMENT_SHARE, _otsu, _stroke_width, _without_edge_fragments, to_mnist
from mnist_edge.edge.preprocess import _to_gray, load_gray, preprocess

def seven(
    size: tuple[int, int] = (400, 300), at: tuple[int, int] = (250, 40), scale: int = 6, width: int = 4
) -> np.ndarray:
    """A dark '7' (top bar and a slanted stem) on white paper; uint8, H x W."""
    canvas = Image.new("L", size, 255)
    x, y = at
    pixels = canvas.load()
    for t in range(20 * scale):
        for w in range(width * scale // 2):
            pixels[x + t // 2, y + w] = 20  # bar
            stem_x = x + 10 * scale - t // 3 + w
            pixels[stem_x, y + t] = 20  # stem
    return np.asarray(canvas)


def save(array: np.ndarray, path: Path, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(image.shape)
    return (ys * image).sum() / image.sum(), (xs * image).sum() / image.sum()


def assert_mnist_form(image: np.ndarray) -> None:
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0, abs=1e-3)
    rows, cols = np.nonzero(image > 0.05)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in range(19, 24)  # fitted into the 20x20 box (plus anti-aliasing)
    cy, cx = center_of_mass(image)
    assert abs(cy - 14.0) <= 1.0 and abs(cx - 14.0) <= 1.0  # where MNIST puts its mass
    assert image[:2].max() == 0 and image[:, :2].max() == 0  # the margin stays black


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_small_off_centre_dark_digit_becomes_mnist_form(tmp_path):
    image = preprocess(save(seven(), tmp_path / "seven.png"))
    assert_mnist_form(image)


def test_polarity_does_not_matter(tmp_path):
    dark = preprocess(save(seven(), tmp_path / "dark.png"))
    light = preprocess(save(255 - seven(), tmp_path / "light.png"))
    assert similarity(dark, light) > 0.99
    for image in (dark, light):  # and both as MNIST has it, not the same wrong way twice: white strokes on black,
        assert_mnist_form(image)  # 2 px wide (MNIST's median is 1.8), where ink read as paper gives a filled shape
        assert _stroke_width(image > 0.5) < 3


def test_a_ruled_line_or_a_cut_neighbour_at_the_edge_is_dropped(tmp_path):
    alone = preprocess(save(seven(), tmp_path / "alone.png"))
    lined = seven().copy()
    lined[360:364, :] = 60  # a ruled line from edge to edge, below the digit
    fragment = seven().copy()
    fragment[:15, 20:60] = 30  # a piece of the neighbouring digit where the crop cut it
    for name, image in (("lined", lined), ("fragment", fragment)):
        seen = preprocess(save(image, tmp_path / f"{name}.png"))
        assert_mnist_form(seen)
        assert similarity(seen, alone) > 0.99, name


def test_a_digit_running_past_the_edge_or_a_heavy_edge_is_kept_whole():
    digit = np.zeros((100, 80), np.float32)
    digit[20:80, 30:36] = 1.0  # a 1, clear of the edge
    cut = np.roll(digit, -25, axis=0)  # the same 1 running off the top: it is all the ink there is
    assert np.array_equal(_without_edge_fragments(cut), cut)
    heavy = digit.copy()
    heavy[:, :4] = 1.0  # an edge carrying more than a quarter of the ink: not a fragment to drop
    assert np.array_equal(_without_edge_fragments(heavy), heavy)
    light = digit.copy()
    light[:, :1] = 1.0  # the same edge, lighter than a quarter: dropped, the digit untouched
    assert np.array_equal(_without_edge_fragments(light), digit)


@given(st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59), st.integers(1, 30), st.integers(1, 30)),
                min_size=1, max_size=6))
def test_dropping_edge_fragments_only_ever_removes_a_light_share_of_ink(boxes):
    ink = np.zeros((60, 60), np.float32)
    for y, x, h, w in boxes:
        ink[y : y + h, x : x + w] = 1.0
    kept = _without_edge_fragments(ink)
    assert ((kept == ink) | (kept == 0)).all()  # pixels are kept or dropped, never changed
    dropped = ink.sum() - kept.sum()
    assert dropped == 0 or (dropped <= EDGE_FRAGMENT_SHARE * ink.sum() and kept.sum() > 0)
    # when anything goes, all that touched the edge goes: whole pieces, never the edge half of one
    assert dropped == 0 or not (kept[0].any() or kept[-1].any() or kept[:, 0].any() or kept[:, -1].any())


def test_uneven_lighting_is_removed(tmp_path):
    clean = seven().astype(np.float32)
    shade = np.linspace(1.0, 0.55, clean.shape[1])[None, :] * np.linspace(1.0, 0.8, clean.shape[0])[:, None]
    shaded = preprocess(save((clean * shade).astype(np.uint8), tmp_path / "shaded.png"))
    assert_mnist_form(shaded)
    assert similarity(shaded, preprocess(save(seven(), tmp_path / "clean.png"))) > 0.95


def test_exif_rotation_is_applied(tmp_path):
    upright = preprocess(save(seven(), tmp_path / "upright.png"))
    # Stored turned 90 degrees clockwise, with orientation 8 telling viewers to turn it back.
    exif = Image.Exif()
    exif[0x0112] = 8
    turned = save(np.rot90(seven(), k=-1).copy(), tmp_path / "turned.jpg", exif=exif, quality=95)
    assert similarity(preprocess(turned), upright) > 0.97


def test_modes_agree(tmp_path):
    gray = seven()
    reference = preprocess(save(gray, tmp_path / "l.png"))
    rgb = save(np.stack([gray] * 3, axis=-1), tmp_path / "rgb.png")
    palette = Image.fromarray(gray).convert("P")
    palette.save(tmp_path / "p.png")
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)
    sixteen.save(tmp_path / "i16.png")
    # A canvas app's export: opaque black strokes, fully transparent background that is black underneath.
    alpha = 255 - gray
    rgba = save(np.dstack([np.zeros_like(gray)] * 3 + [alpha]), tmp_path / "rgba.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    for path in (rgb, tmp_path / "p.png", tmp_path / "i16.png", rgba):
        assert similarity(preprocess(path), reference) > 0.99, path.name


def test_hairline_strokes_are_thickened_to_mnist_width(tmp_path):
    outline = np.zeros((300, 200), np.uint8)
    outline[20, 20:180] = outline[280, 20:180] = 255
    outline[20:281, 20] = outline[20:281, 179] = 255  # a 1-px rectangle, like a thin canvas "0"
    image = preprocess(save(outline, tmp_path / "outline.png"))
    assert_mnist_form(image)
    assert _stroke_width(image > 0.5) >= 1.5


def test_mnist_digits_pass_through_nearly_unchanged(mnist_dir):
    digits = load_mnist(mnist_dir).test_images[:200].astype(np.float32) / 255
    scores = [similarity(to_mnist(d), d) for d in digits]
    assert np.median(scores) > 0.9 and min(scores) > 0.5


def test_raw_keeps_mnist_form_images_as_they_are(tmp_path):
    digit = np.zeros((28, 28), np.uint8)
    digit[5:20, 12:15] = 255
    np.testing.assert_array_equal(preprocess(save(digit, tmp_path / "d.png"), raw=True), digit / np.float32(255))
    with pytest.raises(MnistEdgeError, match=r"--raw needs a 28x28 image, this one is 400x300"):
        preprocess(save(seven(), tmp_path / "big.png"), raw=True)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_image_is_a_clear_error(tmp_path, value):
    path = save(np.full((64, 64), value, np.uint8), tmp_path / "blank.png")
    with pytest.raises(MnistEdgeError, match=f"{path}: no digit found"):
        preprocess(path)


def test_truncated_and_non_image_files(tmp_path):
    full = save(seven(), tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(MnistEdgeError, match="cut.png: unreadable image"):
        preprocess(tmp_path / "cut.png")
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(MnistEdgeError, match="notes.png: not a supported image format"):
        preprocess(tmp_path / "notes.png")
    with pytest.raises(MnistEdgeError, match="no such file"):
        load_gray(tmp_path / "missing.png")


@pytest.mark.parametrize(
    "width, height, message",
    [
        (9_000, 8_000, "72,000,000 pixels is over the 64,000,000-pixel limit"),  # Pillow warns (an error here)
        (12_000, 8_000, "96,000,000 pixels is over the 64,000,000-pixel limit"),
        (100_000, 100_000, "10,000,000,000 pixels is over the 64,000,000-pixel limit"),  # Pillow refuses in open()
    ],
)
def test_decompression_bomb_is_refused_before_decoding(tmp_path, width, height, message, bomb_png):
    path = bomb_png(tmp_path / f"bomb-{width}x{height}.png", width, height)
    with pytest.raises(MnistEdgeError) as err:
        preprocess(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_huge_but_allowed_photo_is_reduced_not_refused(tmp_path):
    page = np.full((4000, 6000), 230, np.uint8)  # a 24 MP scan with a small digit in one corner
    page[3000:3800, 4200:4800] = np.asarray(Image.fromarray(seven()).resize((600, 800)))
    assert_mnist_form(preprocess(save(page, tmp_path / "scan.png")))


def test_real_images_all_become_mnist_form(wild_dir):
    files = sorted(wild_dir.glob("*_label-*"))
    assert len(files) == 72 and all(re.search(r"_label-\d\.", f.name) for f in files)
    for path in files:
        assert_mnist_form(preprocess(path))


# Every mode Pillow has; some (La, RGBa, HSV, I;16N) no format stores, so they are also fed to the decoder's
# next step directly.
MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
         "I", "I;16", "I;16L", "I;16B", "I;16N", "F"]
FORMATS = [
    "PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP", "PPM", "ICO", "TGA", "PCX", "SGI", "SPIDER", "QOI", "MSP", "XBM",
]


def encodable(mode: str) -> list[str]:
    """The formats Pillow writes an image of MODE in."""
    found = []
    for fmt in FORMATS:
        try:
            Image.new(mode, (4, 4)).save(io.BytesIO(), format=fmt)
            found.append(fmt)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return found


ENCODABLE = {mode: encodable(mode) for mode in MODES}


@st.composite
def small_images(draw) -> Image.Image:
    """1..64 px a side, any mode, content from random bytes: noise, or few levels in blocks, or constant."""
    mode = draw(st.sampled_from(MODES))
    width, height = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    size = len(Image.new(mode, (width, height)).tobytes())
    style = draw(st.sampled_from(["noise", "blocks", "constant"]))
    if style == "noise":
        data = draw(st.binary(min_size=size, max_size=size))
    else:
        levels = draw(st.lists(st.binary(min_size=1, max_size=1), min_size=1, max_size=1 if style == "constant" else 3))
        block = draw(st.integers(1, 64))
        data = b"".join(levels[(i // block) % len(levels)] for i in range(size))
    return Image.frombytes(mode, (width, height), data)


def assert_model_input(image: np.ndarray) -> None:
    assert image.dtype == np.float32 and image.shape == (28, 28)
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


FAST = settings(max_examples=150, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(image=small_images(), pick=st.integers(0, 99), cut=st.none() | st.floats(0, 1), raw=st.booleans())
@example(
    image=Image.fromarray(np.repeat([[0], [255]], [2, 2], axis=0).repeat(4, axis=1).astype(np.uint8)), pick=0, cut=None,
    raw=False,
)
def test_any_small_image_in_any_format_is_an_image_or_a_mnist_edge_error(image, pick, cut, raw):
    formats = ENCODABLE[image.mode]
    assume(formats)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=formats[pick % len(formats)])
    except (OSError, ValueError):  # this size or content in this format (ICO, XBM limits): nothing to test
        assume(False)
    encoded = buffer.getvalue()
    if cut is not None:  # truncated, as an interrupted upload leaves it
        encoded = encoded[: int(cut * len(encoded))]
    try:
        result = preprocess(encoded, raw=raw, name="upload")
    except MnistEdgeError as exc:
        assert str(exc).startswith("upload: ") and "\n" not in str(exc)
        return
    assert_model_input(result)


@FAST
@given(image=small_images())
def test_every_mode_becomes_finite_gray_in_unit_range(image):
    try:
        gray = _to_gray(image)
        result = to_mnist(gray)
    except MnistEdgeError:
        return
    assert gray.dtype == np.float32 and gray.shape == (image.height, image.width)
    assert np.isfinite(gray).all() and gray.min() >= 0 and gray.max() <= 1
    assert_model_input(result)


def two_tone(shape: tuple[int, int], ink: tuple[slice, slice]) -> np.ndarray:
    image = np.zeros(shape, np.uint8)
    image[ink] = 255
    return image


@pytest.mark.parametrize(
    "pixels",
    [
        two_tone((4, 4), np.s_[:2, :]),  # the cases: a traceback (All-NaN slice) in Otsu before
        two_tone((3, 3), np.s_[1, 1]),
        two_tone((2, 500), np.s_[:, 200:260]),
        two_tone((500, 2), np.s_[100:400, 1]),
        two_tone((1, 1), np.s_[0, 0]),
        np.full((5, 7), 200, np.uint8),
    ],
    ids=["4x4", "3x3-dot", "500x2", "2x500", "1x1", "constant"],
)
def test_tiny_and_narrow_images_never_crash(tmp_path, pixels):
    path = save(pixels, tmp_path / "small.png")
    try:
        assert_model_input(preprocess(path))
    except MnistEdgeError as exc:
        assert str(exc).startswith(f"{path}: no digit found")


def test_otsu_without_any_split_is_no_digit():
    with pytest.raises(MnistEdgeError, match="no digit found"):
        _otsu(np.full((4, 4), 0.5, np.float32))


def test_float_images_with_nan_are_refused_and_others_scaled(tmp_path):
    values = np.zeros((40, 40), np.float32)
    values[10:30, 18:22] = 1000.0  # a bar far outside [0, 1]: stretched, not clipped to one level
    bar = preprocess(save(values, tmp_path / "f.tiff"))
    assert_model_input(bar)
    assert bar.max() == pytest.approx(1.0, abs=1e-3)
    values[0, 0] = np.nan
    with pytest.raises(MnistEdgeError, match="NaN or infinite pixel values"):
        preprocess(save(values, tmp_path / "nan.tiff"))


def test_a_path_with_a_nul_byte_is_an_error():
    with pytest.raises(MnistEdgeError, match="unreadable image"):
        preprocess("digit\x00.png")


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(MnistEdgeError, match="not a regular file"):
        preprocess(fifo)


def test_what_is_opened_is_checked_not_the_name(tmp_path):
    """A name can be swapped for a FIFO between a check of the name and the open (a folder someone else writes
    to). Simulated by a check that says "a regular file": the open itself must refuse, not block forever."""
    fifo = tmp_path / "swapped.png"
    os.mkfifo(fifo)
    code = ("import pathlib, sys; pathlib.Path.is_file = lambda self: True; pathlib.Path.exists = lambda self: True\n"
            "from mnist_edge.edge.preprocess import preprocess\npreprocess(sys.argv[1])")
    run = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=30)
    assert "MnistEdgeError" in run.stderr and "not a regular file" in run.stderr, run.stderr[-300:]


def test_an_unexpected_failure_is_this_images_error_unless_debugging(tmp_path, monkeypatch):
    from mnist_edge.edge import preprocess as module

    path = save(seven(), tmp_path / "seven.png")
    monkeypatch.setattr(module, "to_mnist", lambda gray: 1 / 0)
    with pytest.raises(
        MnistEdgeError, match=r"seven.png: cannot prepare this image \(ZeroDivisionError: .*this is a bug"
    ):
        preprocess(path)
    monkeypatch.setenv("MNIST_EDGE_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        preprocess(path)


def test_a_bomb_inside_an_icon_is_never_decoded(tmp_path, bomb_png):
    """Pillow opens an ICO by decoding the PNG inside it in full, before the ICO's size can be checked: ICO is
    not among the formats read, so the inner image is never touched."""
    from mnist_edge.edge.preprocess import header_pixels

    png = bomb_png(tmp_path / "inner.png", 9_000, 8_000).read_bytes()
    ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png
    with pytest.raises(MnistEdgeError, match=r"icon.ico: not a supported image format \(supported: PNG, "):
        preprocess(ico, name="icon.ico")
    assert header_pixels(ico) is None and header_pixels(png) > 64_000_000


def test_a_large_image_is_never_copied_at_full_size(tmp_path):
    """Decoded once, then reduced in its own mode before it is converted or turned. A 36 MP RGBA image
    (137 MiB decoded) took 552 MiB beyond its decode before (turned, then converted to LA at full size), 277
    after. In a child, as peak memory is per process; measured against the decode alone, in that child."""
    image = Image.new("RGBA", (6000, 6000), (255, 255, 255, 255))
    image.paste((0, 0, 0, 255), (2500, 1000, 3500, 5000))
    image.save(tmp_path / "big.png", compress_level=1)
    code = """if True:
        import resource, sys
        from PIL import Image
        from mnist_edge.edge.preprocess import preprocess
        with Image.open(sys.argv[1]) as image:
            image.load()
        decoded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        preprocess(sys.argv[1])
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - decoded)
    """
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big.png")], capture_output=True, text=True, check=True, timeout=120
    )
    assert int(run.stdout) < 3 * 6000 * 6000 * 4 / 2**20, run.stdout
