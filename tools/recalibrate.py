"""Fit a trained open-set checkpoint's temperature and "not a digit" threshold again, on the training digits its
recipe held out and on generated calibration images, as its last epoch did: after a change of the calibration
rule (src/mnist_edge/train/calibrate.py), without training again. The weights stay as they are; export it again after.

usage: python tools/recalibrate.py CHECKPOINT [CHECKPOINT ...] [--data-dir DIR]
"""

from __future__ import annotations

from pathlib import Path

from mnist_edge.train.open_set import recalibrate
from _toolcli import Parser, run, summary


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("checkpoints", nargs="+", type=Path, help="trained open-set checkpoints (edgenet)")
    parser.add_argument("--data-dir", type=Path, help="MNIST (default: $MNIST_EDGE_DATA, a local copy or a download)")
    args = parser.parse_args()
    for path in args.checkpoints:
        recalibrate(path, args.data_dir, log=lambda line, p=path: print(f"{p}: {line}"))


if __name__ == "__main__":
    run(main)
