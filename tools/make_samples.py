"""Write the sample digits shipped in src/mnist_edge/samples/ (run once; the PNGs are committed).

Five real MNIST test digits as they are (28x28, white on black), plus one made to look like a scan
of paper: dark ink on light paper with uneven lighting, larger and off-centre, so the README's first
command shows the preprocessing at work.

    python tools/make_samples.py [--data-dir DIR]
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_edge.atomic import write_bytes
from mnist_edge.train.data import load_mnist
from _toolcli import Parser, run, summary

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "mnist_edge" / "samples"
TEST_INDICES = (0, 1, 2, 3, 4)  # the first five MNIST test digits: 7, 2, 1, 0, 4
PAPER_INDEX = 30  # a 3
PAPER_SIZE = (320, 240)  # width, height
PAPER_SCALE = 5  # the 28x28 digit becomes 140x140
PAPER_TOP_LEFT = (150, 30)  # right of centre and high: preprocessing must find it


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def paper_digit(digit: np.ndarray) -> np.ndarray:
    """DIGIT as dark ink on greyish paper lit from the left, enlarged and off-centre."""
    width, height = PAPER_SIZE
    lighting = np.linspace(235, 190, width)[None, :].repeat(height, axis=0)
    size = digit.shape[0] * PAPER_SCALE
    ink = np.zeros((height, width))
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    left, top = PAPER_TOP_LEFT
    ink[top : top + size, left : left + size] = np.asarray(big) / 255.0
    pen = 40.0
    return np.round(lighting * (1 - ink) + pen * ink).astype(np.uint8)


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with the MNIST IDX files")
    args = parser.parse_args()
    mnist = load_mnist(args.data_dir)
    for index in TEST_INDICES:
        write_bytes(SAMPLES / f"mnist-{mnist.test_labels[index]}.png", png_bytes(mnist.test_images[index]))
    label = mnist.test_labels[PAPER_INDEX]
    write_bytes(SAMPLES / f"paper-{label}.png", png_bytes(paper_digit(mnist.test_images[PAPER_INDEX])))
    for path in sorted(SAMPLES.glob("*.png")):
        print(f"{path.relative_to(SAMPLES.parents[2])}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    run(main)
