"""How `mnist-edge train` degrades when two runs share the machine: one run alone, then two at once.

    python tools/bench_concurrent_train.py [--data-dir DIR] [--limit 6000] [--rounds 2] [-- extra train flags]

Each round times one `mnist-edge train --arch tiny --epochs 1 --limit N` process alone, then two started
together (the slower one's wall time counts), as whole processes with their start-up. It prints every time
and the ratio two/one per round (ideal on a machine with free cores: 1; with the cores fully used by one run: 2),
then the median of those paired ratios.
Other load on the machine moves both figures: run it when the machine is quiet, and report the load average
it prints.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from mnist_edge.errors import MnistEdgeError
from _toolcli import Parser, run


def _start(args: argparse.Namespace, out: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "mnist_edge", "train", "--arch", args.arch, "--epochs", "1", "--limit", str(args.limit),
    ]
    cmd += ["--device", "cpu", "--out", str(out), "--overwrite", *extra]
    cmd += ["--data-dir", str(args.data_dir)] if args.data_dir else []  # else train finds MNIST as it always does
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise MnistEdgeError(f"train failed: {err.decode(errors='replace').strip()}")


def timed(args: argparse.Namespace, copies: int, folder: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    _wait([_start(args, folder / f"run{i}.pt", extra) for i in range(copies)])
    return time.perf_counter() - start


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX folder (default: $MNIST_EDGE_DATA or download)")
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--limit", type=int, default=6000, help="training and test images per run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of one run then two; the median of the per-round ratios"
    )
    parser.add_argument("extra", nargs="*", help="more `train` flags, after --")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    ones, twos = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            ones.append(timed(args, 1, Path(tmp), args.extra))
            twos.append(timed(args, 2, Path(tmp), args.extra))
            print(
                f"one run {ones[-1]:.1f}s | two at once {twos[-1]:.1f}s | ratio {twos[-1] / ones[-1]:.2f}", flush=True
            )
    ratios = sorted(two / one for one, two in zip(ones, twos))  # paired: load that drifts between rounds cancels
    print(
        f"median ratio two at once / one run: {ratios[len(ratios) // 2]:.2f} (ideal 1-2; rounds "
        f"{', '.join(f'{r:.2f}' for r in ratios)})"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    run(main)
