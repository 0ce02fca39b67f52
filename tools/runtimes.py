"""Run the shipped ONNX files in every runtime a user might load them in, on the MNIST test digits, and print one
table: load time, max |logit difference| against ONNX Runtime, top-1 agreement with it, and accuracy.

usage: python tools/runtimes.py --data-dir DIR [--exported DIR] [--limit N] [--reference-limit N] [--markdown FILE]

The runtimes are optional imports, none of them a dependency of mnist-edge: install them beside the project in a
virtual environment of their own, e.g.
    python3 -m venv /tmp/runtimes && /tmp/runtimes/bin/pip install . onnx openvino opencv-python-headless tract
Each one missing is named; a runtime that cannot run a file gets 'fails: <why>' in its row. The settings each
runtime needs are in RUNTIMES below and in docs/runtimes.md.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mnist_edge.train.data import load_mnist
from mnist_edge.edge.manifest import read_manifest
from mnist_edge.edge.runtime import OnnxModel
from mnist_edge.spec import INPUT_NAME, INPUT_SHAPE
from _toolcli import Parser, run, summary

ROOT = Path(__file__).resolve().parent.parent
BATCH = 500
Runner = Callable[[np.ndarray], np.ndarray]  # float32 pixels [N,1,28,28] -> logits [N,10]


class NotApplicable(Exception):
    """This runtime version has no such setting: the row says so instead of 'fails'."""


def onnxruntime_runner(path: Path) -> Runner:
    return OnnxModel(path).run  # mnist-edge's own session settings: the reference every row is compared with


def reference_runner(path: Path) -> Runner:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(path))
    return lambda images: evaluator.run(None, {INPUT_NAME: images})[0]


def openvino_runner(config: dict[str, str]) -> Callable[[Path], Runner]:
    def load(path: Path) -> Runner:
        import openvino

        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        return lambda images: compiled(images)[0]

    return load


def opencv_runner(engine: str | None) -> Callable[[Path], Runner]:
    def load(path: Path) -> Runner:
        import cv2

        if engine is not None and not hasattr(cv2.dnn, engine):
            raise NotApplicable(f"OpenCV {cv2.__version__} has one engine, the classic one (the default row)")
        net = cv2.dnn.readNetFromONNX(str(path), **({} if engine is None else {"engine": getattr(cv2.dnn, engine)}))

        def run(images: np.ndarray) -> np.ndarray:
            net.setInput(images, INPUT_NAME)
            return net.forward()

        return run

    return load


def tract_runner(path: Path) -> Runner:
    import tract

    model = tract.onnx().load(str(path)).into_model().into_runnable()
    return lambda images: model.run([images])[0].to_numpy()


# (name, settings, module it needs, loader). OpenVINO's CPU plugin runs in bf16 where the CPU has it (AMX,
# AVX512-BF16) unless told f32; OpenCV 5's default engine is its new graph engine, 4.x has only the classic one.
RUNTIMES: list[tuple[str, str, str, Callable[[Path], Runner]]] = [
    ("ONNX Runtime", "mnist-edge's session options", "onnxruntime", onnxruntime_runner),
    ("onnx reference evaluator", "onnx.reference.ReferenceEvaluator", "onnx", reference_runner),
    ("OpenVINO", "default (CPU plugin)", "openvino", openvino_runner({})),
    ("OpenVINO", "INFERENCE_PRECISION_HINT=f32", "openvino", openvino_runner({"INFERENCE_PRECISION_HINT": "f32"})),
    ("OpenCV DNN", "default engine", "cv2", opencv_runner(None)),
    ("OpenCV DNN", "engine=ENGINE_CLASSIC", "cv2", opencv_runner("ENGINE_CLASSIC")),
    ("tract", "default", "tract", tract_runner),
]
DISTRIBUTIONS = {
    "onnx": "onnx", "openvino": "openvino", "cv2": "opencv-python-headless", "tract": "tract",
    "onnxruntime": "onnxruntime",
}


def version(module: str) -> str:
    mod = importlib.import_module(module)
    found = getattr(mod, "__version__", None) or getattr(mod, "version", None)
    return str(found() if callable(found) else found or "?").split("-")[0]


def run_all(runner: Runner, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.asarray(runner(images[i : i + BATCH]), dtype=np.float32) for i in range(0, len(images), BATCH)]
    )


def measure(
    load: Callable[[Path], Runner], path: Path, images: np.ndarray, labels: np.ndarray, reference: np.ndarray
) -> list[str]:
    """[load, max |dlogit|, top-1 agreement, accuracy, images] of one runtime on one file, or its failure."""
    try:
        started = time.perf_counter()
        runner = load(path)
        loaded = time.perf_counter() - started
        logits = run_all(runner, images)
    except NotApplicable as exc:
        return [f"n/a: {exc}", "", "", "", ""]
    except Exception as exc:  # any runtime's own error classes: the row says why
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = re.sub(r"/\S+/", "", reason)  # a runtime's build-machine source paths, down to the file name
        return [f"fails: {reason[:150]}", "", "", "", f"{len(images):,}"]
    if logits.shape != reference.shape:
        return [f"fails: logits of shape {list(logits.shape)}", "", "", "", f"{len(images):,}"]
    top1 = logits.argmax(1)
    return [
        f"{loaded * 1000:.1f} ms",
        f"{float(np.abs(logits - reference).max()):.1e}",
        f"{100 * float((top1 == reference.argmax(1)).mean()):.2f}%",
        f"{100 * float((top1 == labels).mean()):.2f}%",
        f"{len(images):,}",
    ]


def main() -> None:
    parser = Parser(description=summary(__doc__))
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX folder (default: $MNIST_EDGE_DATA or download)")
    parser.add_argument("--exported", type=Path, default=ROOT / "exported", help="folder of ONNX files with a manifest")
    parser.add_argument("--limit", type=int, help="only the first N test digits")
    parser.add_argument(
        "--reference-limit", type=int, default=1000,
        help="test digits for onnx's reference evaluator, a pure-numpy interpreter (minutes per 10,000); 0: all",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    mnist = load_mnist(args.data_dir)
    images = (mnist.test_images[: args.limit].astype(np.float32) / 255).reshape(-1, *INPUT_SHAPE)
    labels = mnist.test_labels[: args.limit]
    files = sorted(a["file"] for a in read_manifest(args.exported)["artifacts"] if a["format"] == "onnx")
    available = {}
    for module in dict.fromkeys(m for _, _, m, _ in RUNTIMES):
        try:
            available[module] = version(module)
        except ImportError:
            print(f"missing: {module} (pip install {DISTRIBUTIONS[module]}); its rows are left out")

    rows = [
        [
            "file", "runtime", "version", "settings", "load", "max \\|Δlogit\\| vs ORT", "top-1 agreement", "accuracy",
            "images",
        ]
    ]
    for file in files:
        path = args.exported / file
        reference = run_all(OnnxModel(path).run, images)
        for name, settings, module, load in RUNTIMES:
            if module not in available:
                continue
            count = (
                len(images)
                if name != "onnx reference evaluator" or not args.reference_limit
                else min(args.reference_limit, len(images))
            )
            row = measure(load, path, images[:count], labels[:count], reference[:count])
            rows.append([file, name, available[module], settings, *row])
            print(" | ".join(rows[-1]), flush=True)
    table = "\n".join("| " + " | ".join(r) + " |" for r in [rows[0], ["---"] * len(rows[0]), *rows[1:]])
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    run(main)
