"""Run an exported ONNX model with ONNX Runtime: the torch-free edge path.

`OnnxModel` opens a file, checks it has the interface every exported model shares (spec.py), and
turns [N,1,28,28] float32 pixels into logits. A large batch is split into chunks run at once, one per
CPU, on one single-threaded session: ONNX Runtime's own intra-op threads split each op of each image,
which for 28x28 digits is too little work per dispatch; its int8 convs ran no faster on two threads
than on one (tools/bench_quantize.py prints both ways). Never imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from mnist_edge.errors import MnistEdgeError, describe, one_line
from mnist_edge.edge.common import ctrl_c_ends_the_process, require_model_file, usable_cpus
from mnist_edge.spec import INPUT_NAME, INPUT_SHAPE, INPUT_SPEC, NUM_CLASSES, OUTPUT_NAME

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

# Smallest chunk worth a thread of its own: below it, handing work over costs more than it saves.
MIN_CHUNK = 16


def session_options() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # Tiny graphs: full graph fusion costs a few ms per start and pays back on every batch.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The graph is one chain of ops, so a second (inter-op) pool would only add threads.
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    # Each run stays on its calling thread: no pool threads to wake, or to spin on a Pi's few cores.
    opts.intra_op_num_threads = 1
    # Fatal only: ORT would log a failed run's error to stderr beside the one line that already says it.
    opts.log_severity_level = 4
    return opts


# ORT's exception text: "[ONNXRuntimeError] : 1 : FAIL : Load model from PATH failed:" then often its
# source location and a C++ signature, before the cause a user needs (IR version, opset, op, shape).
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .*? failed:)?")
_SOURCE_LOCATION = re.compile(r"\S+\.(?:cc|cpp|cu|h|hpp):\d+ ")
_FUNCTION_NAME = re.compile(r"[\w:<>,*&~ ]*::~?\w+")
_NODE_STATUS = re.compile(r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: ")


def _skip_signature(text: str) -> str:
    """TEXT without a leading C++ signature `ns::f(args, with (nested) parens) const`, if it starts with one."""
    start = text.find("(")
    if start <= 0 or not _FUNCTION_NAME.fullmatch(text[:start]):
        return text
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            rest = text[i + 1 :].lstrip()
            return rest[len("const") :].lstrip() if rest.startswith("const") else rest
    return text


def ort_message(exc: BaseException) -> str:
    """The cause ONNX Runtime gives, on one line, without its error-code prefix or its source paths."""
    text = _ORT_PREFIX.sub("", str(exc).strip())
    text = _NODE_STATUS.sub(lambda m: f"{m[1]} node{f' {m[2]!r}' if m[2] else ''}: ", text)
    while (loc := _SOURCE_LOCATION.search(text)) is not None:
        text = text[: loc.start()] + _skip_signature(text[loc.end() :])
    return one_line(text) or describe(exc)


def _describe(arg: ort.NodeArg) -> str:
    dims = ",".join("N" if not isinstance(d, int) else str(d) for d in arg.shape)
    return f"{arg.name!r} {arg.type} [{dims}]"


def _interface_problem(session: ort.InferenceSession) -> str | None:
    """What is wrong with the session's inputs/outputs compared with spec.py, or None."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        return f"expected 1 input and 1 output, found {len(inputs)} inputs and {len(outputs)} outputs"
    inp, out = inputs[0], outputs[0]
    batch_dynamic = bool(inp.shape) and not isinstance(inp.shape[0], int)
    if inp.name != INPUT_NAME or inp.type != "tensor(float)" or list(inp.shape[1:]) != list(INPUT_SHAPE) or not batch_dynamic:
        return f"input is {_describe(inp)}, expected {INPUT_SPEC}"
    if out.name != OUTPUT_NAME or out.type != "tensor(float)" or len(out.shape) != 2 or out.shape[1] != NUM_CLASSES:
        return f"output is {_describe(out)}, expected {OUTPUT_NAME!r} tensor(float) [N,{NUM_CLASSES}]"
    return None


class OnnxModel:
    """An exported MNIST model opened with ONNX Runtime on the CPU."""

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        """THREADS: how many chunks of a batch run at once; default one per usable CPU."""
        self.path = Path(path)
        self.threads = max(1, threads or usable_cpus())
        self._pool: ThreadPoolExecutor | None = None
        require_model_file(self.path)
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own classes (InvalidProtobuf, Fail, ...) not rooted in one base
            raise MnistEdgeError(f"{self.path}: not a usable ONNX model ({ort_message(exc)})") from None
        problem = _interface_problem(self.session)
        if problem:
            raise MnistEdgeError(f"{self.path}: wrong model interface: {problem}")
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, images: np.ndarray) -> np.ndarray:
        """Logits [N,10] float32 for float32 pixels [N,1,28,28] in [0,1], white digit on black.

        A model that fails inside ONNX Runtime, or returns anything but float32 [N,10], is a MnistEdgeError
        naming the file. The logits are returned as computed: they may hold NaN or inf (see predict)."""
        if images.ndim != 4 or images.shape[1:] != INPUT_SHAPE:
            raise MnistEdgeError(f"images have shape {list(images.shape)}, expected [N,{','.join(map(str, INPUT_SHAPE))}]")
        images = np.ascontiguousarray(images, dtype=np.float32)
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        with ctrl_c_ends_the_process():
            return self._run_chunks(images)

    def _run_chunks(self, images: np.ndarray) -> np.ndarray:
        chunks = min(self.threads, len(images) // MIN_CHUNK)
        if chunks < 2:
            return self._run(images)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # here: ~10 ms of imports a one-image run never needs

            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="mnist-edge-onnx")
        first, *rest = np.array_split(images, chunks)
        pending = [self._pool.submit(self._run, chunk) for chunk in rest]  # ORT sessions may run concurrently
        return np.concatenate([self._run(first), *(f.result() for f in pending)])

    def _run(self, images: np.ndarray) -> np.ndarray:
        try:
            logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
        except Exception as exc:  # the graph passed the interface check but fails on data: a bad index, a bad reshape
            raise MnistEdgeError(f"{self.path}: the model fails in ONNX Runtime ({ort_message(exc)})") from None
        expected = (len(images), NUM_CLASSES)
        if not isinstance(logits, np.ndarray) or logits.dtype != np.float32 or logits.shape != expected:
            got = f"{logits.dtype} {list(logits.shape)}" if isinstance(logits, np.ndarray) else type(logits).__name__
            raise MnistEdgeError(
                f"{self.path}: the model returned {got} for {len(images)} images, expected float32 {list(expected)}"
            )
        return logits
