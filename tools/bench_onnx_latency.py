"""Batch-1 latency of ONNX files side by side, as `predict` runs them (edge/runtime.py's session, one thread):
the files take turns in rounds, so a busy machine slows them alike, and the ratio of each to the first is printed.

usage: python tools/bench_onnx_latency.py FILE [FILE ...] [--runs 2000] [--rounds 5]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from mnist_edge.edge.runtime import OnnxModel
from mnist_edge.spec import INPUT_SHAPE
from _toolcli import Parser, run, summary


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("files", nargs="+", type=Path, help="ONNX model files; ratios are against the first")
    parser.add_argument("--runs", type=int, default=2000, help="timed runs per file and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of taking turns")
    args = parser.parse_args()
    if args.runs < 10 or args.rounds < 1:
        parser.error("--runs must be at least 10 and --rounds at least 1")
    models = [OnnxModel(path, threads=1) for path in args.files]
    image = np.random.default_rng(0).random((1, *INPUT_SHAPE), dtype=np.float32)
    timings: list[list[float]] = [[] for _ in models]
    for _ in range(args.rounds):
        for model, times in zip(models, timings):
            for _ in range(args.runs // 10):  # warm-up: caches and ONNX Runtime's arena
                model.outputs(image)
            for _ in range(args.runs):
                start = time.perf_counter()
                model.outputs(image)
                times.append(time.perf_counter() - start)
    first = statistics.median(timings[0])
    print(f"batch 1, one thread, {args.rounds} rounds x {args.runs} runs per file, interleaved")
    for path, times in zip(args.files, timings):
        p50 = statistics.median(times)
        p99 = float(np.percentile(times, 99))
        print(f"{path}: p50 {p50 * 1e6:.1f} us, p99 {p99 * 1e6:.1f} us, {p50 / first:.2f}x the first")


if __name__ == "__main__":
    run(main)
