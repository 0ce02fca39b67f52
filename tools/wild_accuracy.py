"""Accuracy of `predict` (preprocessing + model) on digits-in-the-wild: 72 real drawn, photographed and scanned
digits, by kind, with every miss listed. A check of the preprocessing, not a set to tune it on.

usage: python tools/wild_accuracy.py [DIR] [--model FILE] [--raw]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mnist_edge.train.data import local_wild
from mnist_edge.edge.predict import Failure, predict_paths
from mnist_edge.edge.manifest import default_model_path
from mnist_edge.edge.runtime import OnnxModel
from mnist_edge.errors import MnistEdgeError
from _toolcli import Parser, run, summary

WILD = local_wild()  # $MNIST_EDGE_WILD, else shared/data/digits-in-the-wild beside the checkout


def naive_copies(rows: dict[str, dict], folder: Path) -> dict[str, dict]:
    """What a script without preprocessing feeds the model: the image shrunk to 28x28, in MNIST polarity."""
    copies = {}
    for name, row in rows.items():
        gray = ImageOps.exif_transpose(Image.open(name)).convert("L").resize((28, 28))
        if np.asarray(gray).mean() > 127:  # light paper: invert to white on black
            gray = ImageOps.invert(gray)
        out = folder / f"{Path(name).stem}.png"
        gray.save(out)
        copies[str(out)] = row
    return copies


def labelled_images(folder: Path) -> dict[str, dict]:
    """FOLDER's labels.csv rows (file, label, kind) by image path."""
    if not (folder / "labels.csv").is_file():
        raise MnistEdgeError(f"{folder}: no labels.csv here: pass the digits-in-the-wild folder as DIR")
    with open(folder / "labels.csv", newline="") as f:
        rows = {str(folder / r["file"]): r for r in csv.DictReader(f)}
    if not rows or not {"file", "label", "kind"} <= set(next(iter(rows.values()))):
        raise MnistEdgeError(f"{folder / 'labels.csv'}: expected the columns file, label and kind, and a row per image")
    return rows


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--model", type=Path, help="ONNX model (default: the shipped default model)")
    parser.add_argument("dir", nargs="?", type=Path, help=f"the image set with labels.csv (default: {WILD})")
    parser.add_argument("--wild-dir", type=Path, help=argparse.SUPPRESS)  # the older spelling of DIR
    parser.add_argument("--raw", action="store_true", help="for comparison: no preprocessing, a naive 28x28 resize")
    args = parser.parse_args()
    rows = labelled_images(args.dir or args.wild_dir or WILD)
    model = OnnxModel(args.model or default_model_path())
    total, right = Counter(), Counter()
    misses = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.raw:
            rows = naive_copies(rows, Path(tmp))
        for result in predict_paths(model, list(rows), top=2, raw=args.raw):
            row = rows[result.file]
            total[row["kind"]] += 1
            if isinstance(result, Failure):
                misses.append(f"{Path(result.file).name} ({row['kind']}): {result.error}")
            elif result.digit == int(row["label"]):
                right[row["kind"]] += 1
            elif result.digit is None:  # refused: "not a digit" is a miss here too
                first = result.top[0]
                misses.append(
                    f"{Path(result.file).name} ({row['kind']}): label {row['label']}, not a digit "
                    f"(score {result.not_digit:.2f}; closest {first[0]})"
                )
            else:
                second = result.top[1]
                misses.append(
                    f"{Path(result.file).name} ({row['kind']}): label {row['label']}, predicted {result.digit} "
                    f"({result.probability:.0%}; then {second[0]} {second[1]:.0%})"
                )
    print(f"model {model.path} (arch {model.metadata.get('arch', '?')}, MNIST test accuracy "
          f"{model.metadata.get('test_accuracy', '?')}%); {'naive resize' if args.raw else 'preprocessed'}")
    for kind in sorted(total):
        print(f"{kind:<6} {right[kind]:>3}/{total[kind]:<3} {right[kind] / total[kind]:6.1%}")
    n, ok = sum(total.values()), sum(right.values())
    print(f"{'all':<6} {ok:>3}/{n:<3} {ok / n:6.1%}")
    for miss in misses:
        print(f"  miss: {miss}")


if __name__ == "__main__":
    run(main)
