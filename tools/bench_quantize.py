"""Side-by-side ONNX Runtime figures for fp32, dynamic and static-int8 ONNX exports of each model.

For each variant: file size and ratio to fp32, MNIST test accuracy, images/s at batch 256 (variants
interleaved round by round, so machine noise hits them alike) and the op types ONNX Runtime actually
runs after its graph optimizations (where int8 time goes). Models are checkpoints, or `--arch NAME`
for seeded random weights (speed and size only: their accuracy means nothing).

    python tools/bench_quantize.py [CKPT ...] [--arch tiny ...] [--rounds 7] [--threads N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mnist_edge import quantize
from mnist_edge.architectures import create_model, list_models
from mnist_edge.checkpoint import load_checkpoint
from mnist_edge.data import load_mnist
from mnist_edge.evaluate import to_pixels, torch_logits_fn
from mnist_edge.export import onnx_proto
from mnist_edge.spec import INPUT_NAME
from mnist_edge.verify import batched

BATCH = 256


def session(path: Path, optimized: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as runtime.OnnxModel runs them
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(optimized)  # the graph ORT really runs, for the op-type count
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def models(args: argparse.Namespace) -> list[tuple[str, torch.nn.Module]]:
    found = [(str(path), load_checkpoint(path).model) for path in args.checkpoints]
    for arch in args.arch:
        torch.manual_seed(0)
        found.append(("random weights", create_model(arch).eval()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--arch", action="append", default=[], choices=list_models(), help="random-weights model (repeatable)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: one per core")
    parser.add_argument("--calibration", type=int, default=1000)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    mnist = load_mnist(args.data_dir)
    test, labels = to_pixels(mnist.test_images), mnist.test_labels
    calib = to_pixels(mnist.train_images[np.random.default_rng(0).permutation(len(mnist.train_images))[: args.calibration]])
    batch = test[:BATCH]
    threads = args.threads or "all"
    print(f"onnxruntime {ort.__version__}, batch {BATCH}, {threads} threads, best of {args.rounds} interleaved rounds")
    for source, model in models(args):
        torch_acc = 100 * float((batched(torch_logits_fn(model), test).argmax(1) == labels).mean())
        fp32 = onnx_proto(model)
        variants = {"fp32": fp32, "dynamic": quantize.onnx_dynamic(fp32), "static": quantize.onnx_static(fp32, calib)}
        print(f"\n{model.arch} ({source}), torch accuracy {torch_acc:.2f}%")
        print(f"  {'variant':<8} {'bytes':>10} {'size':>6} {'acc %':>7} {'img/s':>9} {'speed':>6}  ops ORT runs")
        with tempfile.TemporaryDirectory() as work:
            sessions, sizes, ops = {}, {}, {}
            for name, proto in variants.items():
                if proto is None:
                    print(f"  {name:<8} skipped: no MatMul/Gemm (Linear) layer to quantize")
                    continue
                path, optimized = Path(work) / f"{name}.onnx", Path(work) / f"{name}.opt.onnx"
                onnx.save(proto, path)
                sizes[name] = path.stat().st_size
                sessions[name] = session(path, optimized, args.threads)
                ops[name] = collections.Counter(n.op_type for n in onnx.load(optimized).graph.node)
            times: dict[str, list[float]] = {name: [] for name in sessions}
            for sess in sessions.values():  # warm-up
                sess.run(None, {INPUT_NAME: batch})
            for _ in range(args.rounds):
                for name, sess in sessions.items():
                    start = time.perf_counter()
                    for _ in range(5):
                        sess.run(None, {INPUT_NAME: batch})
                    times[name].append((time.perf_counter() - start) / 5)
            base = BATCH / min(times["fp32"])
            for name, sess in sessions.items():
                acc = 100 * float((batched(lambda x: sess.run(None, {INPUT_NAME: x})[0], test).argmax(1) == labels).mean())
                speed = BATCH / min(times[name])
                op_text = ", ".join(f"{op}x{n}" for op, n in sorted(ops[name].items()))
                print(
                    f"  {name:<8} {sizes[name]:>10,} {sizes[name] / sizes['fp32']:>5.2f}x {acc:>7.2f} {speed:>9,.0f} "
                    f"{speed / base:>5.2f}x  {op_text}"
                )


if __name__ == "__main__":
    main()
