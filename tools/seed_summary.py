"""Several training runs of one recipe (different seeds) side by side: final MNIST test accuracy per run, their mean
and spread, and time-to-accuracy: the training time until each run's test accuracy first reached each threshold.

Reads only the checkpoints' own records (the per-epoch history `mnist-edge train` writes). Times are the training
loop's seconds summed over epochs (test passes and start-up excluded) and the run's whole wall time; on a shared
machine both are upper bounds.

usage: python tools/seed_summary.py CKPT [CKPT ...] [--thresholds 99.5,99.6]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from mnist_edge.train.checkpoint import load_checkpoint
from mnist_edge.errors import MnistEdgeError
from _toolcli import Parser, run, summary


def time_to(history: list[dict], threshold: float) -> tuple[int, float] | None:
    """(epoch, training seconds until its end) of the first epoch at or above THRESHOLD, or None."""
    seconds = 0.0
    for record in history:
        seconds += record["seconds"]
        if record.get("test_accuracy", 0.0) >= threshold:
            return record["epoch"], seconds
    return None


def main() -> int:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--thresholds", default="99.5,99.6", help="comma-separated test accuracies, percent")
    args = parser.parse_args()
    try:
        thresholds = [float(t) for t in args.thresholds.split(",")]
        runs = [(path, load_checkpoint(path).meta) for path in args.checkpoints]
    except ValueError:
        print(f"error: --thresholds {args.thresholds}: expected numbers like 99.5,99.6", file=sys.stderr)
        return 1
    except MnistEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    header = (
        "| checkpoint | arch | seed | epochs | test accuracy | train time | wall time | "
        + " | ".join(f"to {t:g}%" for t in thresholds)
        + " |"
    )
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(thresholds))
    finals = []
    for path, meta in runs:
        history = meta.get("history") or []
        if not history:
            print(f"error: {path}: holds no training history", file=sys.stderr)
            return 1
        finals.append(meta["test_accuracy"])
        cells = []
        for t in thresholds:
            hit = time_to(history, t)
            cells.append(f"epoch {hit[0]}, {hit[1] / 60:.1f} min" if hit else "not reached")
        train_s = sum(r["seconds"] for r in history)
        print(
            f"| {path.name} | {meta['arch']} | {meta['seed']} | {meta['epochs_done']} | {meta['test_accuracy']:.2f}% "
            f"| {train_s / 60:.1f} min | {meta['wall_time_s'] / 60:.1f} min | " + " | ".join(cells) + " |"
        )
    spread = (
        f", std {statistics.stdev(finals):.3f}, range {min(finals):.2f}-{max(finals):.2f}%" if len(finals) > 1 else ""
    )
    print(f"\nmean test accuracy {statistics.fmean(finals):.3f}% over {len(finals)} runs{spread}")
    return 0


if __name__ == "__main__":
    run(main)
