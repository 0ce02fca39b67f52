"""Time loading all 70k MNIST digits from the .gz files, checksums included (floor: 1.5 s on 2 cores).

usage: python tools/bench_data.py [DATA_DIR] [--runs N]
"""

from __future__ import annotations

import statistics
import time

from mnist_edge.train.data import load_mnist
from _toolcli import Parser, run, summary


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("data_dir", nargs="?", default=None, help="IDX folder (default: $MNIST_EDGE_DATA)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        data = load_mnist(args.data_dir)
        times.append(time.perf_counter() - start)
    n = len(data.train_images) + len(data.test_images)
    print(f"loaded {n} images, verified by SHA-256, over {args.runs} runs: "
          f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s")


if __name__ == "__main__":
    run(main)
