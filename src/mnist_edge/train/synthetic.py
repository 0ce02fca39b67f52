"""Generated training and evaluation images beside MNIST: printed digits, and things that are not digits.

Both go through the edge side's own `to_mnist`, the step every real photo, scan and drawing goes through at
predict time, so the model learns from what it will be shown. Everything is drawn from a seeded numpy
generator and the fonts installed on the machine (Debian's fonts-* packages), never downloaded.

Printed digits come from typefaces. Fonts are split by a hash of their family name into training fonts,
calibration fonts (to choose the operating point on) and held-out fonts (for the final check alone), so an
evaluation on held-out fonts measures typefaces the model never saw. Non-digits are the
kinds a digit reader meets: letters and symbols that do not look like digits, drawn shapes (hearts, stars,
spirals, arrows, houses, smileys), scribbles, textures and smudges on paper. Characters that can pass for a
digit (O, l, I, S, Z, B, g, q, ...) are never used as non-digits.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, features

from mnist_edge.edge.mnist_form import to_mnist
from mnist_edge.errors import MnistEdgeError

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".pfb")
# Fonts whose letters are pictures or whose digits are not the ordinary ones.
NOT_TEXT_FONTS = ("symbol", "dingbat", "d050000l", "math", "emoji", "icon", "awesome", "music", "braille", "sign",
                  "keyboard")  # keycaps: each digit drawn inside a key
SPLITS = ("train", "calibration", "held-out")
SPLIT_BUCKETS = 5  # by family-name hash: bucket 0 held out for the final check, 1 for calibration, the rest train
CANVAS = 96
# OpenType figure styles a typeface may offer beside its default: old-style figures (a 1 like a small capital I,
# a 3, 4, 5, 7 or 9 below the line), lining ones, a slashed or dotted zero. A font without one draws its default.
FIGURE_STYLES = ("onum", "lnum", "zero")
FIGURE_STYLE_SHARE = 0.4
# Pillow lays out OpenType features only through libraqm; without it every font draws its default figures.
RAQM = features.check_feature("raqm")
# Letters and symbols that look like no digit. Left out on purpose: O o Q D (0); I l i j J | ! / \ ( ) [ ] (1);
# Z z (2); S s $ (5); b G (6); B (8); g q (9).
NON_DIGIT_CHARS = "ACEFHKMNPRTUVWXYacdefhkmnprtuvwxy#%&@*+=?<>~^€£¥§¶©®™→←↑↓♥★☺✓✗∞√πΩµ"


@dataclass(frozen=True)
class Font:
    path: Path
    family: str  # the family alone ("DejaVu Sans"), so every style of a typeface lands in one split

    @property
    def split(self) -> str:
        bucket = int(hashlib.sha256(self.family.encode()).hexdigest(), 16) % SPLIT_BUCKETS
        return {0: "held-out", 1: "calibration"}.get(bucket, "train")


def _font_files() -> Iterator[Path]:
    for folder in FONT_DIRS:
        if folder.is_dir():
            for root, _dirs, files in os.walk(folder):
                for name in sorted(files):
                    if name.lower().endswith(FONT_SUFFIXES):
                        yield Path(root, name)


def _digit_signature(font: ImageFont.FreeTypeFont) -> bytes | None:
    """A hash of how FONT draws 0-9, or None when it has no ordinary digits (missing glyphs draw alike)."""
    masks = []
    for ch in "0123456789":
        mask = font.getmask(ch)
        if mask.getbbox() is None:
            return None
        masks.append(bytes(mask) + bytes(str(mask.size), "ascii"))
    if len(set(masks)) < 10:
        return None
    return hashlib.sha256(b"".join(masks)).digest()


@lru_cache(maxsize=1)
def find_fonts() -> tuple[Font, ...]:
    """Installed text fonts with real digits, one per distinct design of 0-9, sorted by path."""
    seen: set[bytes] = set()
    fonts = []
    for path in sorted(set(_font_files())):
        try:
            font = ImageFont.truetype(str(path), 40)
        except OSError:
            continue
        family = font.getname()[0] or path.stem
        if any(word in f"{family} {path.name}".lower() for word in NOT_TEXT_FONTS):
            continue
        signature = _digit_signature(font)
        if signature is None or signature in seen:
            continue
        seen.add(signature)
        fonts.append(Font(path, family))
    return tuple(fonts)


def fonts_for(split: str) -> list[Font]:
    """The fonts of SPLIT (see SPLITS); Pillow's own font where none of that split is installed, so training and
    its tests run on any machine (the figures then say little about typefaces)."""
    return [f for f in find_fonts() if f.split == split] or [Font(Path(""), "Pillow default")]


@lru_cache(maxsize=256)
def _truetype(path: Path, size: int) -> ImageFont.FreeTypeFont:
    if not str(path):
        return ImageFont.load_default(size)  # type: ignore[return-value]
    return ImageFont.truetype(str(path), size)  # laid out by libraqm where Pillow finds it


# --- drawing ------------------------------------------------------------------------------------------------


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (CANVAS, CANVAS), 0)
    return img, ImageDraw.Draw(img)


def _text(rng: np.random.Generator, text: str, fonts: list[Font]) -> Image.Image:
    font = fonts[rng.integers(len(fonts))]
    size = int(rng.integers(36, 64))
    face = _truetype(font.path, size)
    img, draw = _canvas()
    stroke = int(rng.choice([0, 0, 0, 1, 2]))
    # the style is drawn with or without libraqm, so a seed makes the same images but for the styles
    style = str(rng.choice(FIGURE_STYLES)) if rng.random() < FIGURE_STYLE_SHARE else None
    styles = [style] if style and RAQM and str(font.path) else None
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face, stroke_width=stroke, features=styles)
    x = (CANVAS - (right - left)) / 2 - left
    y = (CANVAS - (bottom - top)) / 2 - top
    draw.text((x, y), text, fill=255, font=face, stroke_width=stroke, stroke_fill=255, features=styles)
    return img.rotate(float(rng.uniform(-6, 6)), resample=Image.Resampling.BICUBIC)


def _width(rng: np.random.Generator) -> int:
    return int(rng.integers(2, 9))


def _points(xy: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in xy]


def _place(rng: np.random.Generator, unit: np.ndarray) -> np.ndarray:
    """Points in [-1,1]^2 scaled, stretched, turned and moved onto the canvas."""
    angle = rng.uniform(-math.pi, math.pi) if rng.random() < 0.5 else rng.uniform(-0.3, 0.3)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    stretch = np.array([rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)])
    return (unit * stretch) @ rot.T * (CANVAS * rng.uniform(0.28, 0.4)) + CANVAS / 2


def _heart(t: np.ndarray) -> np.ndarray:
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], 1) / 17


def _star(rng: np.random.Generator) -> np.ndarray:
    tips = int(rng.integers(5, 9))
    angles = np.arange(2 * tips) * math.pi / tips - math.pi / 2
    radii = np.where(np.arange(2 * tips) % 2 == 0, 1.0, rng.uniform(0.35, 0.55))
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _spiral(rng: np.random.Generator) -> np.ndarray:
    turns = rng.uniform(2.2, 4.5)
    t = np.linspace(0, 2 * math.pi * turns, 400)
    r = t / t[-1]
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _shape(rng: np.random.Generator) -> Image.Image:
    img, draw = _canvas()
    kind = int(rng.integers(9))
    width = _width(rng)
    fill = 255 if rng.random() < 0.3 else None
    if kind == 0:
        pts = _place(rng, _heart(np.linspace(0, 2 * math.pi, 120)))
        draw.polygon(_points(pts), fill=fill, outline=255, width=width)
    elif kind == 1:
        pts = _place(rng, _star(rng))
        draw.polygon(_points(pts), fill=fill, outline=255, width=width)
    elif kind == 2:
        draw.line(_points(_place(rng, _spiral(rng))), fill=255, width=width, joint="curve")
    elif kind == 3:  # an arrow
        shaft = np.array([[-1, 0], [1, 0]])
        head = np.array([[0.45, -0.45], [1, 0], [0.45, 0.45]])
        pts = _place(rng, np.concatenate([shaft, head]))
        draw.line(_points(pts[:2]), fill=255, width=width)
        draw.line(_points(pts[2:]), fill=255, width=width, joint="curve")
    elif kind == 4:  # a house: a square under a roof
        pts = _place(rng, np.array([[-0.7, 1], [-0.7, -0.1], [0, -0.9], [0.7, -0.1], [0.7, 1], [-0.7, 1],
                                    [0.7, -0.1], [-0.7, -0.1]]))
        draw.line(_points(pts), fill=255, width=width, joint="curve")
    elif kind == 5:  # a smiley: a face with eyes and a mouth
        r = CANVAS * rng.uniform(0.3, 0.42)
        c = CANVAS / 2
        draw.ellipse((c - r, c - r, c + r, c + r), outline=255, width=width)
        for dx in (-0.35, 0.35):
            e = max(2.0, r * 0.1)
            draw.ellipse((c + dx * r - e, c - 0.3 * r - e, c + dx * r + e, c - 0.3 * r + e), fill=255)
        draw.arc((c - 0.55 * r, c - 0.3 * r, c + 0.55 * r, c + 0.55 * r), 20, 160, fill=255, width=width)
    elif kind == 6:  # a sun: a disc with rays
        r = CANVAS * rng.uniform(0.12, 0.2)
        c = CANVAS / 2
        draw.ellipse((c - r, c - r, c + r, c + r), outline=255, fill=fill, width=width)
        rays = int(rng.integers(6, 13))
        for k in range(rays):
            a = 2 * math.pi * k / rays
            draw.line([(c + 1.4 * r * math.cos(a), c + 1.4 * r * math.sin(a)),
                       (c + 2.3 * r * math.cos(a), c + 2.3 * r * math.sin(a))], fill=255, width=width)
    elif kind == 7:  # a polygon: triangle to hexagon, or a cross
        if rng.random() < 0.3:
            pts = _place(rng, np.array([[-1, -1], [1, 1]]))
            draw.line(_points(pts), fill=255, width=width)
            pts = _place(rng, np.array([[-1, 1], [1, -1]]))
            draw.line(_points(pts), fill=255, width=width)
        else:
            sides = int(rng.integers(3, 7))
            angles = np.arange(sides) * 2 * math.pi / sides
            corners = np.stack([np.cos(angles), np.sin(angles)], 1)
            draw.polygon(_points(_place(rng, corners)), fill=fill, outline=255, width=width)
    else:  # a flower: petals round a centre
        petals = int(rng.integers(4, 9))
        c, r = CANVAS / 2, CANVAS * rng.uniform(0.12, 0.18)
        for k in range(petals):
            a = 2 * math.pi * k / petals
            px, py = c + 1.6 * r * math.cos(a), c + 1.6 * r * math.sin(a)
            draw.ellipse((px - r, py - r, px + r, py + r), outline=255, width=max(2, width // 2))
    return img


def _scribble(rng: np.random.Generator) -> Image.Image:
    img, draw = _canvas()
    strokes = int(rng.integers(1, 4))
    for _ in range(strokes):
        n = int(rng.integers(6, 16))
        ctrl = rng.uniform(-1, 1, (n, 2))
        t = np.linspace(0, n - 1, 30 * n)
        smooth = np.stack([np.interp(t, np.arange(n), ctrl[:, i]) for i in (0, 1)], 1)
        kernel = np.ones(15) / 15
        smooth = np.stack([np.convolve(np.pad(smooth[:, i], 7, mode="edge"), kernel, "valid") for i in (0, 1)], 1)
        draw.line(_points(_place(rng, smooth)), fill=255, width=_width(rng), joint="curve")
    return img


def _texture(rng: np.random.Generator) -> Image.Image:
    kind = int(rng.integers(4))
    if kind == 0:  # blotchy noise
        small = rng.random((int(rng.integers(3, 12)),) * 2) * 255
        return Image.fromarray(small.astype(np.uint8)).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    img, draw = _canvas()
    if kind == 1:  # hatching or a grid
        step = int(rng.integers(8, 20))
        for k in range(-CANVAS, 2 * CANVAS, step):
            draw.line([(k, 0), (k + CANVAS * rng.uniform(-0.5, 0.5), CANVAS)], fill=255, width=_width(rng) // 2 + 1)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.TRANSPOSE)
            draw = ImageDraw.Draw(img)
            for k in range(0, CANVAS, step):
                draw.line([(0, k), (CANVAS, k)], fill=255, width=2)
    elif kind == 2:  # dots
        for _ in range(int(rng.integers(8, 40))):
            x, y, r = rng.uniform(5, CANVAS - 5), rng.uniform(5, CANVAS - 5), rng.uniform(1.5, 5)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    else:  # a smudge: a soft blob, perhaps with a ring round it (a cup's stain)
        x, y = rng.uniform(30, 66, 2)
        r = rng.uniform(10, 30)
        draw.ellipse((x - r, y - r, x + r * rng.uniform(0.6, 1.4), y + r), fill=int(rng.integers(90, 255)))
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(2, 6)))
    return img


def _letters(rng: np.random.Generator, fonts: list[Font]) -> Image.Image:
    k = 1 if rng.random() < 0.8 else int(rng.integers(2, 4))
    chars = NON_DIGIT_CHARS
    return _text(rng, "".join(chars[i] for i in rng.integers(len(chars), size=k)), fonts)


def _as_photo(rng: np.random.Generator, img: Image.Image) -> np.ndarray:
    """IMG (white ink on black) as gray pixels in [0,1], sometimes as dark ink on lit, noisy paper."""
    ink = np.asarray(img, np.float32) / 255
    if rng.random() < 0.5:
        return ink
    paper = rng.uniform(0.6, 0.95) + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, CANVAS)[None, :]
    gray = paper - ink * rng.uniform(0.4, paper.min())
    return np.clip(gray + rng.normal(0, rng.uniform(0, 0.03), gray.shape), 0, 1).astype(np.float32)


def _prepared(rng: np.random.Generator, draw: Callable[[], Image.Image]) -> np.ndarray | None:
    """The 28x28 uint8 image predict would make of a drawing, or None when it sees no digit-sized ink."""
    try:
        return np.round(to_mnist(_as_photo(rng, draw())) * 255).astype(np.uint8)
    except MnistEdgeError:  # blank or contrast-less: predict answers those with their own error
        return None


NON_DIGIT_KINDS = ("letters", "shapes", "scribbles", "textures")


def non_digits(n: int, seed: int, fonts: list[Font]) -> tuple[np.ndarray, np.ndarray]:
    """N non-digit images uint8 [N,28,28] and their kind (an index into NON_DIGIT_KINDS)."""
    rng = np.random.default_rng([seed, 1])
    draws: list[Callable[[], Image.Image]] = [
        lambda: _letters(rng, fonts), lambda: _shape(rng), lambda: _scribble(rng), lambda: _texture(rng)
    ]
    shares = np.array([0.4, 0.25, 0.2, 0.15])
    images: list[np.ndarray] = []
    kinds: list[int] = []
    while len(images) < n:
        kind = int(rng.choice(len(draws), p=shares))
        image = _prepared(rng, draws[kind])
        if image is not None:
            images.append(image)
            kinds.append(kind)
    return np.stack(images), np.array(kinds, np.int64)


def printed_digits(n: int, seed: int, fonts: list[Font]) -> tuple[np.ndarray, np.ndarray]:
    """N printed digits uint8 [N,28,28] in FONTS, each digit equally often, and their labels."""
    rng = np.random.default_rng([seed, 2])
    images: list[np.ndarray] = []
    labels: list[int] = []
    while len(images) < n:
        digit = len(images) % 10
        image = _prepared(rng, lambda: _text(rng, str(digit), fonts))  # noqa: B023 - called before the next digit
        if image is not None:
            images.append(image)
            labels.append(digit)
    return np.stack(images), np.array(labels, np.int64)
