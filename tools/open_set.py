"""Answers and refusals side by side for several models: real digits (MNIST test clean and shifted, real photos,
printed digits in held-out fonts) answered and answered right, generated non-digits refused per kind, and the
calibration error (src/mnist_edge/measure/open_set.py). Nothing here is trained or calibrated on.

Any model file: ONNX (ONNX Runtime, no torch), a checkpoint or TorchScript (torch). Default: the shipped model.

usage: python tools/open_set.py [MODEL ...] [--data-dir DIR] [--wild-dir DIR] [--limit N] [--generated N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mnist_edge.measure import open_set, robustness
from mnist_edge.export.artifacts import open_artifact, threshold_of
from mnist_edge.train.data import load_mnist, local_wild
from mnist_edge.edge.manifest import default_model_path
from mnist_edge.errors import MnistEdgeError
from _toolcli import Parser, run, summary

WILD = local_wild()  # $MNIST_EDGE_WILD, else shared/data/digits-in-the-wild beside the checkout


def main() -> int:
    parser = Parser(description=summary(__doc__))
    parser.add_argument(
        "models", nargs="*", type=Path, help="ONNX files, checkpoints or TorchScript (default: the shipped model)"
    )
    parser.add_argument("--data-dir", type=Path, help="MNIST (default: $MNIST_EDGE_DATA, a local copy or a download)")
    parser.add_argument("--wild-dir", type=Path, default=WILD, help=f"real labelled photos (default: {WILD})")
    parser.add_argument("--no-wild", action="store_true", help="leave the real photos out")
    parser.add_argument("--limit", type=int, help="the first N test digits only (default: all 10,000)")
    parser.add_argument(
        "--generated", type=int, default=2000, help="printed digits, and non-digits, to generate (each)"
    )
    parser.add_argument("--shifts", help=f"comma-separated subset of: {', '.join(robustness.SHIFTS)}")
    args = parser.parse_args()
    if (args.limit is not None and args.limit < 1) or args.generated < 10:
        parser.error("--limit must be at least 1 and --generated at least 10")
    try:
        started = time.perf_counter()
        models = {}
        for path in args.models or [default_model_path()]:
            artifact = open_artifact(path)
            models[path.name if path.name not in models else str(path)] = open_set.Model(
                artifact.logits_fn, threshold_of(artifact)
            )
        mnist = load_mnist(args.data_dir)
        wild = None if args.no_wild else robustness.load_wild(args.wild_dir)
        sets = open_set.make_sets(mnist.test_images[: args.limit], mnist.test_labels[: args.limit],
                                  robustness.parse_shifts(args.shifts), wild, args.generated)
        results = {name: open_set.measure(model, sets) for name, model in models.items()}
    except MnistEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("digits: answered / answered with the right digit; non-digits: refused")
    print(open_set.format_table(results))
    print(f"({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    run(main)
