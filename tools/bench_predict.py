"""Benchmark `mnist-edge predict` as whole processes, side by side with a minimal ONNX Runtime script and
the torch path, and its throughput on 1,000 images in one call.

Floors (issue 5, this 2-core machine): `mnist-edge predict one.png` <= 0.25 s median wall and <= 80 MiB
peak RSS, >= 8x faster than the torch path (import torch + a TorchScript model); 1,000 images in one call
>= 1,000 images/s end to end. The variants run interleaved, round after round, so a busy machine slows them
alike; the figures are medians. Exits 1 when a floor is missed.

usage: python tools/bench_predict.py [--model FILE] [--image FILE] [--runs N] [--images N]
                                     [--torchscript FILE] [--data-dir DIR] [--base-python PY]
Run it with the full install (the torch path needs torch); --base-python points the predict and minimal runs at a
base install's interpreter, so they are measured with the dependencies a user gets (e.g. typer<0.29).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mnist_edge.train.data import local_mnist
from mnist_edge.edge.manifest import default_model_path, read_manifest
from mnist_edge.edge.runtime import OnnxModel
from _toolcli import Parser, run, summary

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "src" / "mnist_edge" / "samples"
MIB = 1024 * 1024
FLOOR_WALL_S, FLOOR_RSS_MIB, FLOOR_SPEEDUP, FLOOR_IMAGES_PER_S = 0.25, 80, 8.0, 1000

# The least a script can do to predict one image: what `predict` is measured against.
MINIMAL = """
import sys, numpy as np, onnxruntime as ort
from PIL import Image
session = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
x = np.asarray(Image.open(sys.argv[1]).convert("L").resize((28, 28)), np.float32)[None, None] / 255
print(int(session.run(None, {session.get_inputs()[0].name: x})[0].argmax()))
"""
# The same with torch: the path a Pi user would otherwise take.
TORCH = """
import sys, numpy as np, torch
from PIL import Image
model = torch.jit.load(sys.argv[2]).eval()
x = np.asarray(Image.open(sys.argv[1]).convert("L").resize((28, 28)), np.float32)[None, None] / 255
with torch.no_grad():
    out = model(torch.from_numpy(x))
    print(int((out[0] if isinstance(out, tuple) else out).argmax()))
"""


# Runs argv[2:], times it, writes [seconds, peak RSS KiB] to argv[1]; exits with the command's status.
LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    json.dump([seconds, usage.ru_maxrss], f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Sample:
    seconds: float
    rss_mib: float
    stdout: str


def measure(cmd: list[str]) -> Sample:
    """Wall time and peak RSS of one whole process, started from a small launcher: Linux counts the RSS of
    the process that exec'd into a child in the child's peak, and this benchmark is far bigger than `predict`."""
    with (
        tempfile.NamedTemporaryFile("w+") as report, tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        proc = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, report.name, *cmd], stdout=out, stderr=err, text=True
        )
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"bench_predict: {' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-2000:]}")
        seconds, maxrss_kib = json.loads(report.read())
        return Sample(seconds, maxrss_kib / 1024, out.read())


def cli_command(python: str) -> list[str]:
    """PYTHON's installed console script, as a user runs it; `python -m mnist_edge` when there is none."""
    script = Path(python).parent / "mnist-edge"
    return [str(script)] if script.is_file() else [python, "-m", "mnist_edge"]


def torchscript_model(model: Path, given: Path | None, scratch: Path) -> tuple[Path, str]:
    """The TorchScript twin of MODEL: given, else the manifest's fp32 TorchScript of the same arch, else a
    freshly scripted model of that arch (untrained: the timing does not depend on the weights)."""
    if given is not None:
        return given, str(given)
    arch = OnnxModel(model).metadata.get("arch", "tiny")
    for item in read_manifest(model.parent)["artifacts"]:  # validated: every entry has file, format, quantization
        if item["format"] == "torchscript" and item.get("arch") == arch and item["quantization"] == "none" \
                and (model.parent / item["file"]).is_file():
            return model.parent / item["file"], str(model.parent / item["file"])
    import torch

    from mnist_edge.train.architectures import create_model

    path = scratch / f"{arch}.torchscript.pt"
    torch.jit.script(create_model(arch).eval()).save(str(path))
    return path, f"{arch} scripted afresh (no TorchScript file beside the model)"


def write_images(folder: Path, count: int, data_dir: str | None) -> str:
    """COUNT PNG digits in FOLDER: MNIST test digits when the data is at hand, else the shipped samples cycled."""
    try:
        from mnist_edge.train.data import load_mnist

        digits = load_mnist(data_dir).test_images[:count]
        source = f"the first {count} MNIST test digits (28x28 PNGs)"
    except Exception:  # no data here: the samples still give a fair per-image cost
        digits = [Image.open(p) for p in sorted(SAMPLES.glob("*.png"))]
        source = f"the {len(digits)} shipped samples cycled to {count} files"
    for i in range(count):
        digit = digits[i % len(digits)]
        (digit if isinstance(digit, Image.Image) else Image.fromarray(digit)).save(folder / f"{i:05d}.png")
    return source


def median_of(samples: list[Sample]) -> tuple[float, float, float]:
    walls = [s.seconds for s in samples]
    return statistics.median(walls), statistics.median(s.rss_mib for s in samples), max(s.rss_mib for s in samples)


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--model", type=Path, help="ONNX model (default: the shipped default model)")
    parser.add_argument(
        "--image", type=Path, default=SAMPLES / "mnist-7.png", help="the one image (default: a shipped sample)"
    )
    parser.add_argument("--runs", type=int, default=15, help="rounds of the single-image comparison (default 15)")
    parser.add_argument("--images", type=int, default=1000, help="images in the one-call throughput run (default 1000)")
    parser.add_argument("--throughput-runs", type=int, default=5)
    parser.add_argument("--torchscript", type=Path, help="TorchScript file for the torch path (default: found or made)")
    parser.add_argument("--data-dir", default=local_mnist(),
                        help="MNIST IDX folder for the throughput images (default: a local copy)")
    parser.add_argument(
        "--base-python",
        default=sys.executable,
        help="interpreter of a base (torch-free) install for the predict and minimal runs (default: this one)",
    )
    args = parser.parse_args()
    model = (args.model or default_model_path()).resolve()
    image = args.image.resolve()

    with tempfile.TemporaryDirectory(prefix="bench_predict.") as scratch_dir:
        scratch = Path(scratch_dir)
        torchscript, torch_source = torchscript_model(model, args.torchscript, scratch)
        variants = {
            "mnist-edge predict": cli_command(args.base_python) + ["predict", "--model", str(model), str(image)],
            "minimal ORT script": [args.base_python, "-c", MINIMAL, str(image), str(model)],
            "torch path": [sys.executable, "-c", TORCH, str(image), str(torchscript)],
        }
        print(
            f"model {model}\npredict and minimal script: {args.base_python}; torch path: {sys.executable} with "
            f"{torch_source}\nimage {image}; {args.runs} interleaved rounds, whole processes, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
        )
        for cmd in variants.values():  # warm the file cache; not timed
            measure(cmd)
        samples: dict[str, list[Sample]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, cmd in variants.items():
                samples[name].append(measure(cmd))
        # The CLI prints "FILE: D (P%) ...", the scripts just D.
        digits = {name: re.search(r"(?:^|: )(\d)\b", s[-1].stdout).group(1) for name, s in samples.items()}

        print(f"\n{'':<20}{'median wall s':>14}{'min s':>8}{'median RSS MiB':>16}{'max RSS MiB':>13}")
        stats = {}
        for name, runs in samples.items():
            wall, rss, rss_max = median_of(runs)
            stats[name] = (wall, rss_max)
            print(f"{name:<20}{wall:>14.3f}{min(s.seconds for s in runs):>8.3f}{rss:>16.1f}{rss_max:>13.1f}")
        cli_wall, cli_rss = stats["mnist-edge predict"]
        speedup = stats["torch path"][0] / cli_wall
        print(f"ratios: torch path / predict = {speedup:.1f}x wall, {stats['torch path'][1] / cli_rss:.1f}x RSS; "
              f"predict / minimal script = {cli_wall / stats['minimal ORT script'][0]:.2f}x wall, "
              f"{cli_rss / stats['minimal ORT script'][1]:.2f}x RSS")
        print(f"predicted digits: {digits}")

        folder = scratch / "images"
        folder.mkdir()
        source = write_images(folder, args.images, args.data_dir)
        batch_cmd = cli_command(args.base_python) + ["predict", "--json", "--model", str(model), str(folder)]
        rows = json.loads(measure(batch_cmd).stdout)  # warm-up, and a check that every image was predicted
        if len(rows) != args.images:
            sys.exit(f"bench_predict: predicted {len(rows)} of {args.images} images")
        batch = [measure(batch_cmd) for _ in range(args.throughput_runs)]
        batch_wall, _, batch_rss = median_of(batch)
        rate = args.images / batch_wall
        print(f"\n{args.images} images in one call ({source}), {args.throughput_runs} runs: median {batch_wall:.3f} s "
              f"= {rate:,.0f} images/s end to end (start-up included), peak RSS {batch_rss:.1f} MiB")

    checks = [
        (f"predict median wall {cli_wall:.3f} s <= {FLOOR_WALL_S} s", cli_wall <= FLOOR_WALL_S),
        (f"predict peak RSS {cli_rss:.1f} MiB <= {FLOOR_RSS_MIB} MiB", cli_rss <= FLOOR_RSS_MIB),
        (f"torch path / predict {speedup:.1f}x >= {FLOOR_SPEEDUP}x", speedup >= FLOOR_SPEEDUP),
        (f"{rate:,.0f} images/s >= {FLOOR_IMAGES_PER_S:,}", rate >= FLOOR_IMAGES_PER_S),
    ]
    print()
    for text, ok in checks:
        print(f"{'ok    ' if ok else 'MISSED'} {text}")
    if not all(ok for _, ok in checks):
        sys.exit(1)


if __name__ == "__main__":
    run(main)
