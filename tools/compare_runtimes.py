"""ONNX Runtime and LiteRT side by side, on the shipped files, in one run and torch-free (it runs on a Pi too).

usage: python tools/compare_runtimes.py [--data-dir DIR] [--exported DIR] [--arch edgenet] [--runs 4000]
                                       [--markdown FILE]

For each .onnx and .tflite file of ARCH in the folder's manifest: import + load in a fresh process, load alone
(in this process, mean of 5 after one), batch-1 p50/p99 on one thread and batch-256 throughput on every thread
(the files take turns round by round, garbage collector off), peak RSS and wall time of a cold
`mnist-edge predict --model FILE` on one sample image as a whole process (median of 5), accuracy on the test
digits, and parity (max |logit difference|, top-1 agreement) against the ONNX Runtime fp32 file. Then the ratio
the LiteRT issue set a floor on: LiteRT int8 batch-1 p50 / ONNX Runtime int8 batch-1 p50.
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist_edge.train.data import load_mnist
from mnist_edge.edge.manifest import read_manifest
from mnist_edge.edge.models import open_model
from _toolcli import Parser, run, summary

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "src" / "mnist_edge" / "samples"
ROUNDS = 10
COLD_RUNS = 5
# Import and open in a fresh process: what a one-shot command pays before its first image.
IMPORT_AND_LOAD = (
    "import sys, time; t = time.perf_counter(); from mnist_edge.edge.models import open_model; "
    "open_model(sys.argv[1]); print(time.perf_counter() - t)"
)


# One `predict` as a whole process: its wall time and its peak RSS (KiB on Linux).
COLD_PREDICT = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "subprocess.run([sys.executable, '-m', 'mnist_edge', 'predict', '--model', *sys.argv[1:]], check=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _times_ns(fn: Callable[[], object], n: int) -> list[int]:
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - start)
    return out


def interleaved(calls: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, np.ndarray]:
    """Each call timed RUNS times in all, the calls taking turns over ROUNDS, after WARMUP calls each."""
    for call in calls.values():
        _times_ns(call, warmup)
    times: dict[str, list[int]] = {k: [] for k in calls}
    gc.collect()
    gc.disable()
    try:
        for _ in range(ROUNDS):
            for key, call in calls.items():
                times[key] += _times_ns(call, -(-runs // ROUNDS))
    finally:
        gc.enable()
    return {k: np.asarray(v, np.float64) for k, v in times.items()}


def cold_predict(path: Path) -> tuple[float, float]:
    """Median wall seconds and peak RSS (MiB) of `mnist-edge predict --model PATH` on one sample, whole process.
    Started from a small Python of its own: a child forked from this big process would report this one's peak."""
    sample = sorted(SAMPLE.glob("*.png"))[0]
    runs = [subprocess.run([sys.executable, "-c", COLD_PREDICT, str(path), str(sample)], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(COLD_RUNS)]
    return statistics.median(float(wall) for wall, _ in runs), statistics.median(float(rss) / 1024 for _, rss in runs)


def import_and_load(path: Path) -> float:
    runs = [float(subprocess.run([sys.executable, "-c", IMPORT_AND_LOAD, str(path)], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(COLD_RUNS)]
    return statistics.median(runs)


def load_ms(path: Path) -> float:
    open_model(path, threads=1)
    start = time.perf_counter()
    for _ in range(5):
        open_model(path, threads=1)
    return (time.perf_counter() - start) * 1000 / 5


def runtime(path: Path) -> str:
    return "LiteRT" if path.suffix == ".tflite" else "ONNX Runtime"


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX folder (default: $MNIST_EDGE_DATA or download)")
    parser.add_argument("--exported", type=Path, default=ROOT / "exported", help="exported files and their manifest")
    parser.add_argument("--arch", default="edgenet")
    parser.add_argument("--runs", type=int, default=4000, help="timed batch-1 runs per file")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    mnist = load_mnist(args.data_dir)
    images = (mnist.test_images.astype(np.float32) / 255)[:, None]
    entries = [a for a in read_manifest(args.exported)["artifacts"]
               if a.get("arch") == args.arch and a["format"] in ("onnx", "tflite")]
    entries.sort(key=lambda e: (e["format"], e["quantization"]))
    files = {e["file"]: args.exported / e["file"] for e in entries}
    reference_file = next(e["file"] for e in entries if e["format"] == "onnx" and e["quantization"] == "none")
    single = {n: open_model(p, threads=1) for n, p in files.items()}
    many = {n: open_model(p) for n, p in files.items()}
    logits = {n: m.run(images) for n, m in many.items()}
    reference = logits[reference_file]

    print(f"timing batch 1 ({args.runs} runs each) and batch 256, interleaved ...", file=sys.stderr)
    one, batch = images[:1], images[:256]
    latency = interleaved({n: (lambda m=m: m.run(one)) for n, m in single.items()}, args.runs, 200)
    throughput = interleaved({n: (lambda m=m: m.run(batch)) for n, m in many.items()}, 50, 3)
    rows = [["file", "runtime", "import + load", "load", "batch-1 p50", "batch-1 p99", "batch-256", "cold predict",
             "predict peak RSS", "accuracy", "max \\|Δlogit\\| vs ORT fp32", "top-1 vs ORT fp32"]]
    figures: dict[str, dict[str, float]] = {}
    for name, path in files.items():
        print(f"cold processes for {name} ...", file=sys.stderr)
        wall, rss = cold_predict(path)
        p50, p99 = np.percentile(latency[name], [50, 99]) / 1000
        top1 = logits[name].argmax(1)
        figures[name] = {"p50_us": float(p50)}
        rows.append([
            name, runtime(path), f"{import_and_load(path) * 1000:.0f} ms", f"{load_ms(path):.1f} ms", f"{p50:.1f} us",
            f"{p99:.1f} us", f"{256 / (float(np.median(throughput[name])) / 1e9):,.0f}/s", f"{wall * 1000:.0f} ms",
            f"{rss:.0f} MiB", f"{100 * float((top1 == mnist.test_labels).mean()):.2f}%",
            f"{float(np.abs(logits[name] - reference).max()):.1e}",
            f"{100 * float((top1 == reference.argmax(1)).mean()):.2f}%",
        ])
    table = "\n".join("| " + " | ".join(r) + " |" for r in [rows[0], ["---"] * len(rows[0]), *rows[1:]])
    int8 = {runtime(files[n]): f["p50_us"] for n, f in figures.items() if ".int8." in n}
    if len(int8) == 2:
        ratio = int8["LiteRT"] / int8["ONNX Runtime"]
        table += f"\n\nLiteRT int8 batch-1 p50 / ONNX Runtime int8 batch-1 p50: {ratio:.2f}x"
    print(f"\n{args.arch}, {len(images):,} test digits, {os.cpu_count()} logical CPUs\n\n{table}")
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    run(main)
