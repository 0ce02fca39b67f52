"""Accuracy per shift, side by side for several models: MNIST's test digits under the shifts real inputs have
(src/mnist_edge/measure/robustness.py: thicker and thinner strokes, blur, low resolution, elastic distortion, rotation,
scale, JPEG, noise; each at a fixed seed and severity) and the real images of digits-in-the-wild through
`predict`'s preprocessing. A check, not a set to tune on.

Any model file: ONNX (ONNX Runtime, no torch), a checkpoint or TorchScript (torch). Prints a Markdown table and
what each shift does; `--json FILE` writes the counts too.

usage: python tools/robustness.py [MODEL ...] [--data-dir DIR] [--wild-dir DIR] [--limit N] [--shifts a,b]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mnist_edge.measure import robustness
from mnist_edge.train.data import load_mnist, local_wild
from mnist_edge.errors import MnistEdgeError
from mnist_edge.export.artifacts import open_artifact
from mnist_edge.edge.manifest import default_model_path
from _toolcli import Parser, run, summary

WILD = local_wild()  # $MNIST_EDGE_WILD, else shared/data/digits-in-the-wild beside the checkout


def main() -> int:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("models", nargs="*", type=Path,
                        help="ONNX files, checkpoints or TorchScript files (default: the shipped default model)")
    parser.add_argument("--data-dir", type=Path, help="MNIST (default: $MNIST_EDGE_DATA, a local copy or a download)")
    parser.add_argument("--wild-dir", type=Path, default=WILD, help=f"real labelled images (default: {WILD})")
    parser.add_argument("--no-wild", action="store_true", help="MNIST shifts only")
    parser.add_argument("--limit", type=int, help="the first N test digits only (default: all 10,000)")
    parser.add_argument("--shifts", help=f"comma-separated subset of: {', '.join(robustness.SHIFTS)}")
    parser.add_argument("--json", type=Path, help="also write the counts as JSON")
    args = parser.parse_args()
    try:
        shifts = robustness.parse_shifts(args.shifts)
        if args.limit is not None and args.limit < 1:
            raise MnistEdgeError("--limit must be at least 1")
        models = {}
        for path in args.models or [default_model_path()]:
            name = path.name if path.name not in models else str(path)
            models[name] = open_artifact(path).logits_fn
        mnist = load_mnist(args.data_dir)
        images, labels = mnist.test_images[: args.limit], mnist.test_labels[: args.limit]
        wild = None if args.no_wild else robustness.load_wild(args.wild_dir)
        started = time.perf_counter()
        table = robustness.score_models(models, images, labels, shifts, wild)
    except MnistEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{len(images):,} MNIST test digits per shift"
        + ("" if wild is None else f"; {len(wild.labels)} real images from {args.wild_dir}")
    )
    print(robustness.format_table(table))
    print()
    for name in shifts:
        print(f"- {name}: {robustness.describe(name)}")
    if wild is not None:
        print("- wild: the real images, through `predict`'s preprocessing")
    print(f"({time.perf_counter() - started:.1f}s)")
    if args.json:
        counts = {
            shift: {m: {"correct": s.correct, "total": s.total} for m, s in row.items()} for shift, row in table.items()
        }
        args.json.write_text(json.dumps(counts, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run(main)
