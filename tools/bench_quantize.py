"""Side-by-side ONNX Runtime figures for fp32, dynamic and static-int8 ONNX exports of each model.

For each variant: file size and ratio to fp32, MNIST test accuracy, images/s at batch 256 and its
ratio to fp32, and the op types ONNX Runtime actually runs after its graph optimizations. Variants
are interleaved round by round and each ratio is the median of per-round ratios, so a slow spell of
the shared CPU hits both sides of it alike. Models are checkpoints, or `--arch NAME` for seeded
random weights (speed and size only: their accuracy means nothing).

Speed is measured the way `predict` runs a batch (runtime.OnnxModel: chunks of the batch at once,
one single-threaded session) and, for comparison, with ONNX Runtime's own intra-op thread pool on
the same number of threads. `--profile` adds each variant's slowest ops (ONNX Runtime's profiler, one
thread): where the int8 time goes.

    python tools/bench_quantize.py [CKPT ...] [--arch tiny ...] [--rounds 15] [--threads N] [--profile] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mnist_edge.export import quantize
from mnist_edge.train.architectures import create_model, list_models
from mnist_edge.measure.benchmark import interleaved
from mnist_edge.train.checkpoint import load_checkpoint
from mnist_edge.train.data import load_mnist
from mnist_edge.measure.evaluate import split_outputs, to_pixels, torch_logits_fn
from mnist_edge.export.onnx_writer import onnx_proto
from mnist_edge.edge.results import usable_cpus
from mnist_edge.edge.runtime import OnnxModel, session_options
from mnist_edge.spec import INPUT_NAME
from mnist_edge.export.verify import batched
from _toolcli import Parser, run, summary

BATCH = 256
RUNS_PER_ROUND = 5


def intra_op_session(path: Path, threads: int) -> ort.InferenceSession:
    """The same options as `predict`'s session, but ONNX Runtime's own pool splits each op over THREADS."""
    opts = session_options()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ops_run(path: Path, work: Path) -> collections.Counter[str]:
    """Op types in the graph ONNX Runtime really runs, after its optimizations."""
    opts = session_options()
    opts.optimized_model_filepath = str(work / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


def slowest_ops(path: Path, work: Path, batch: np.ndarray, runs: int = 20, top: int = 8) -> list[tuple[float, str]]:
    """Mean microseconds per batch of the TOP slowest nodes, on one thread, from ONNX Runtime's profiler."""
    opts = session_options()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / path.stem)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {INPUT_NAME: batch})
    per_node: dict[str, float] = collections.defaultdict(float)
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[f"{event['args']['op_name']} {event['name'].removesuffix('_kernel_time')}"] += event["dur"]
    return sorted(((us / runs, node) for node, us in per_node.items()), reverse=True)[:top]


def models(args: argparse.Namespace) -> list[tuple[str, torch.nn.Module]]:
    found = [(str(path), load_checkpoint(path).model) for path in args.checkpoints]
    for arch in args.arch:
        torch.manual_seed(0)
        found.append(("random weights", create_model(arch).eval()))
    return found


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument(
        "--arch", action="append", default=[], choices=list_models(), help="random-weights model (repeatable)"
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="threads per batch; 0: one per usable CPU")
    parser.add_argument("--calibration", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="also print each variant's slowest ops (one thread)")
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    threads = args.threads or usable_cpus()
    mnist = load_mnist(args.data_dir)
    test, labels = to_pixels(mnist.test_images), mnist.test_labels
    calib = to_pixels(
        mnist.train_images[np.random.default_rng(0).permutation(len(mnist.train_images))[: args.calibration]]
    )
    batch = test[:BATCH]
    print(
        f"onnxruntime {ort.__version__}, batch {BATCH}, {threads} threads; speed: median over {args.rounds} "
        "interleaved rounds of images/s and of the ratio to fp32 in the same round. chunks: the batch split over "
        f"{threads} single-threaded runs at once, as `predict` runs it; intra-op: ONNX Runtime's pool splitting each op"
    )
    for source, model in models(args):
        torch_acc = 100 * float((split_outputs(batched(torch_logits_fn(model), test))[0].argmax(1) == labels).mean())
        fp32 = onnx_proto(model)
        variants = {"fp32": fp32, "dynamic": quantize.onnx_dynamic(fp32), "static": quantize.onnx_static(fp32, calib)}
        print(f"\n{model.arch} ({source}), torch accuracy {torch_acc:.2f}%")
        print(
            f"  {'variant':<8} {'bytes':>10} {'size':>6} {'acc %':>7} {'chunks img/s':>13} {'ratio':>6} "
            f"{'intra-op img/s':>15} {'ratio':>6}  ops ORT runs"
        )
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            paths = {}
            for name, proto in variants.items():
                if proto is None:
                    print(f"  {name:<8} skipped: no MatMul/Gemm (Linear) layer to quantize")
                    continue
                paths[name] = work / f"{name}.onnx"
                onnx.save(proto, paths[name])
            calls: dict[str, Callable[[], object]] = {}
            for name, path in paths.items():
                chunked, pooled = OnnxModel(path, threads=threads), intra_op_session(path, threads)
                calls[f"{name} chunks"] = lambda m=chunked: m.run(batch)
                calls[f"{name} intra-op"] = lambda s=pooled: s.run(None, {INPUT_NAME: batch})
            # seconds per call in each round: interleaved() gives every call's nanoseconds, round after round
            per_call = interleaved(calls, RUNS_PER_ROUND, args.rounds, warmup=1)
            times = {k: v.reshape(args.rounds, RUNS_PER_ROUND).mean(1) / 1e9 for k, v in per_call.items()}
            for name, path in paths.items():
                acc = 100 * float((batched(OnnxModel(path).run, test).argmax(1) == labels).mean())
                size, fp32_size = path.stat().st_size, paths["fp32"].stat().st_size
                cells = []
                for way in ("chunks", "intra-op"):
                    mine, base = times[f"{name} {way}"], times[f"fp32 {way}"]
                    speed = BATCH / statistics.median(mine)
                    ratio = statistics.median(b / m for b, m in zip(base, mine, strict=True))
                    cells.append(f"{speed:>{13 if way == 'chunks' else 15},.0f} {ratio:>5.2f}x")
                op_text = ", ".join(f"{op}x{n}" for op, n in sorted(ops_run(path, work).items()))
                print(f"  {name:<8} {size:>10,} {size / fp32_size:>5.2f}x {acc:>7.2f} {cells[0]} {cells[1]}  {op_text}")
            if args.profile:
                for name, path in paths.items():
                    print(f"  {name}: slowest ops, microseconds per batch of {BATCH} on one thread")
                    for us, node in slowest_ops(path, work, batch):
                        print(f"    {us:>9,.0f}  {node}")


if __name__ == "__main__":
    run(main)
