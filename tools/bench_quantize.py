"""Side-by-side ONNX Runtime figures for a checkpoint's fp32, dynamic and static-int8 ONNX exports.

For each variant: file size and ratio to fp32, MNIST test accuracy, images/s at batch 256 with all
threads (variants interleaved round by round, so machine noise hits them alike), and the op types
ONNX Runtime actually runs after its graph optimizations (where int8 time goes).

    python tools/bench_quantize.py CKPT [CKPT...] [--rounds 5] [--data-dir DIR]
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

from mnist_edge import quantize
from mnist_edge.checkpoint import load_checkpoint
from mnist_edge.data import load_mnist
from mnist_edge.export import onnx_proto
from mnist_edge.spec import INPUT_NAME
from mnist_edge.evaluate import to_pixels, torch_logits_fn
from mnist_edge.verify import batched

BATCH = 256


def session(path: Path, optimized: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(optimized)  # the graph ORT really runs, for the op-type count
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calibration", type=int, default=1000)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    mnist = load_mnist(args.data_dir)
    test, labels = to_pixels(mnist.test_images), mnist.test_labels
    calib = to_pixels(mnist.train_images[np.random.default_rng(0).permutation(len(mnist.train_images))[: args.calibration]])
    batch = test[:BATCH]
    print(f"onnxruntime {ort.__version__}, batch {BATCH}, all threads, {args.rounds} interleaved rounds")
    for ckpt_path in args.checkpoints:
        ckpt = load_checkpoint(ckpt_path)
        torch_acc = 100 * float((batched(torch_logits_fn(ckpt.model), test).argmax(1) == labels).mean())
        fp32 = onnx_proto(ckpt.model)
        with tempfile.TemporaryDirectory() as work:
            variants = {"fp32": fp32, "dynamic": quantize.onnx_dynamic(fp32), "static": quantize.onnx_static(fp32, calib)}
            sessions, sizes, ops = {}, {}, {}
            for name, proto in variants.items():
                path, optimized = Path(work) / f"{name}.onnx", Path(work) / f"{name}.opt.onnx"
                onnx.save(proto, path)
                sizes[name] = path.stat().st_size
                sessions[name] = session(path, optimized)
                ops[name] = collections.Counter(n.op_type for n in onnx.load(optimized).graph.node)
            times = {name: [] for name in sessions}
            for name, sess in sessions.items():  # warm-up
                sess.run(None, {INPUT_NAME: batch})
            for _ in range(args.rounds):
                for name, sess in sessions.items():
                    start = time.perf_counter()
                    for _ in range(10):
                        sess.run(None, {INPUT_NAME: batch})
                    times[name].append((time.perf_counter() - start) / 10)
            print(f"\n{ckpt.arch} ({ckpt_path}), torch accuracy {torch_acc:.2f}%")
            print(f"  {'variant':<8} {'bytes':>10} {'size':>6} {'acc %':>7} {'img/s':>9} {'speed':>6}  ops ORT runs")
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
