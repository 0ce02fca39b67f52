"""Calibration of what `predict` prints: the MNIST test digits written as PNGs, read back by `mnist-edge predict --raw
--json` (a whole process, as a user runs it), and the expected calibration error of the probabilities it printed
(15 equal-width bins, top-1), with its accuracy and how many it answered "not a digit".

usage: python tools/predict_ece.py [--model FILE] [--data-dir DIR] [--limit N]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_edge.train.data import load_mnist
from mnist_edge.measure.evaluate import expected_calibration_error
from _toolcli import Parser, run, summary


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--model", type=Path, help="ONNX file (default: the shipped default model)")
    parser.add_argument("--data-dir", type=Path, help="MNIST (default: $MNIST_EDGE_DATA, a local copy or a download)")
    parser.add_argument("--limit", type=int, help="the first N test digits only (default: all 10,000)")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    mnist = load_mnist(args.data_dir)
    images, labels = mnist.test_images[: args.limit], mnist.test_labels[: args.limit]
    with tempfile.TemporaryDirectory(prefix="mnist-edge-ece-") as tmp:
        names = [Path(tmp, f"{i:05d}.png") for i in range(len(images))]
        for name, image in zip(names, images):
            Image.fromarray(image).save(name)
        model = ["--model", str(args.model)] if args.model else []
        cmd = [sys.executable, "-m", "mnist_edge", "predict", "--raw", "--json", "--top", "1", *model, tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(
            f"error: predict failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        )
    rows = json.loads(done.stdout)
    answered = [(r["digit"], r["probability"], int(Path(r["file"]).stem)) for r in rows if r.get("digit") is not None]
    refused = len(rows) - len(answered)
    # the refused are scored by the digit they resemble most, with its probability: every image counts
    scored = [(r["top"][0]["digit"], r["top"][0]["probability"], int(Path(r["file"]).stem)) for r in rows]
    digits = np.array([d for d, _, _ in scored])
    confidence = np.array([p for _, p, _ in scored])
    truth = labels[[i for _, _, i in scored]]
    correct = digits == truth
    print(f"{len(rows):,} MNIST test digits through `mnist-edge predict --raw --json`"
          + (f" --model {args.model}" if args.model else " (the shipped default)"))
    print(f"accuracy {100 * correct.mean():.2f}%, mean stated probability {100 * confidence.mean():.2f}%, "
          f"ECE {expected_calibration_error(confidence, correct):.2f}% (15 bins); answered 'not a digit': {refused}")


if __name__ == "__main__":
    run(main)
