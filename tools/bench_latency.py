"""Batch-1 ONNX Runtime latency of several models side by side: fp32 and static int8, interleaved.

Each model is exported the way `mnist-edge export` does (fp32 ONNX, then static int8 calibrated on
training digits) and opened as `predict` opens it (runtime.OnnxModel: one thread). All files take
turns round by round, so a slow spell of the shared CPU hits every model alike; p50 and p99 per
file, and each model's p50 as a ratio to the first model's. Models are checkpoints, or `--arch NAME`
for seeded random weights (latency does not depend on the weights' values).

    python tools/bench_latency.py [CKPT ...] [--arch tiny --arch edgenet ...] [--rounds 20] [--runs 250]
                                  [--data-dir DIR]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mnist_edge.export import onnx_writer, quantize
from mnist_edge.export.verify import model_threshold
from mnist_edge.train.architectures import create_model
from mnist_edge.train.cost import count_macs, count_params
from mnist_edge.measure.benchmark import interleaved
from mnist_edge.train.checkpoint import load_checkpoint
from mnist_edge.train.data import load_mnist
from mnist_edge.edge.runtime import OnnxModel
from mnist_edge.export.publish import calibration_images
from mnist_edge.formats import CALIBRATION_SIZE
from mnist_edge.spec import THRESHOLD_KEY
from _toolcli import Parser, run, summary


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--arch", action="append", default=[], help="an architecture with seeded random weights")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=250, help="timed runs per file per round")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_latency"), help="where the ONNX files go")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {}
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        models[f"{ckpt.arch} ({path.name})"] = ckpt.model
    for arch in args.arch:
        torch.manual_seed(0)
        models[arch] = create_model(arch)
    if not models:
        parser.error("give checkpoints or --arch names")
    calibration = calibration_images(load_mnist(args.data_dir), CALIBRATION_SIZE)
    args.work.mkdir(parents=True, exist_ok=True)
    calls, sizes = {}, {}
    image = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    for i, (name, model) in enumerate(models.items()):
        fp32 = onnx_writer.onnx_proto(model.eval())
        for variant, proto in (("fp32", fp32), ("int8", quantize.onnx_static(fp32, calibration))):
            path = args.work / f"{i}-{variant}.onnx"
            # an open-set model's file must say where it refuses, or predict's runtime will not open it
            threshold = model_threshold(model)
            meta = {} if threshold is None else {THRESHOLD_KEY: repr(threshold)}
            onnx_writer.save(proto, path, meta)
            session = OnnxModel(path, threads=1)
            calls[(name, variant)] = lambda s=session: s.run(image)
            sizes[(name, variant)] = path.stat().st_size
    times = interleaved(calls, per_round=args.runs, rounds=args.rounds, warmup=200)
    p50 = {key: float(np.median(t)) / 1e3 for key, t in times.items()}
    first = next(iter(models))
    print(f"batch 1, one thread, {args.rounds} rounds x {args.runs} runs per file, interleaved")
    print(f"| model | params | MACs | file | size | p50 | p99 | p50 vs {first} |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for (name, variant), t in times.items():
        model = models[name]
        print(
            f"| {name} | {count_params(model):,} | {count_macs(model):,} | {variant} | "
            f"{sizes[(name, variant)] / 1e3:.1f} kB "
            f"| {p50[(name, variant)]:.1f} us | {np.percentile(t, 99) / 1e3:.1f} us | "
            f"{p50[(name, variant)] / p50[(first, variant)]:.2f}x |"
        )


if __name__ == "__main__":
    run(main)
