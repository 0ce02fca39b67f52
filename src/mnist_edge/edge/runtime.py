"""Run an exported ONNX model with ONNX Runtime: the torch-free edge path.

`OnnxModel` opens a file, checks it has the interface every exported model shares (spec.py), and
turns [N,1,28,28] float32 pixels into logits. A large batch is split into chunks run at once, one per
CPU, on one single-threaded session: ONNX Runtime's own intra-op threads split each op of each image,
which for 28x28 digits is too little work per dispatch; its int8 convs ran no faster on two threads
than on one (tools/bench_quantize.py prints both ways). Never imports torch.
"""

from __future__ import annotations

import re
import shlex
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from mnist_edge.errors import MnistEdgeError, describe, one_line
from mnist_edge.edge.external_data import external_bytes
from mnist_edge.edge.model_checks import (
    MAX_MODEL_BYTES, ctrl_c_ends_the_process, not_digit_threshold, require_model_file,
)
from mnist_edge.edge.results import usable_cpus
from mnist_edge.spec import INPUT_NAME, INPUT_SHAPE, INPUT_SPEC, NOT_DIGIT_NAME, NUM_CLASSES, OUTPUT_NAME

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

# Smallest chunk worth a thread of its own: below it, handing work over costs more than it saves.
MIN_CHUNK = 16
NOT_UTF8 = "a name or metadata entry in it is not valid UTF-8"
# Telemetry events off too, for a caller that imported ONNX Runtime before mnist_edge (see mnist_edge/__init__.py).
ort.disable_telemetry_events()


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
# source location and a C++ signature, before the cause a user needs (IR version, opset, op, shape). A failure
# inside a subgraph or a nested load carries another such prefix in the middle of the text.
_ORT_PREFIX = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .*? failed:)?")
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


# Leading bytes of files mistaken for an ONNX model, and what to say about each.
_SIGNATURES = (
    (0, b"\x89PNG", "an image, not a model: give images as PATH, the model with --model"),
    (0, b"\xff\xd8\xff", "an image, not a model: give images as PATH, the model with --model"),
    (4, b"TFL3", "a TensorFlow Lite model: mnist-edge runs ONNX files (mnist-edge export writes them)"),
    (0, b"\x89HDF\r\n\x1a\n", "an HDF5 (Keras) file: mnist-edge runs ONNX files (mnist-edge export writes them)"),
)
# Pickle protocols 2-5 start with PROTO and the version: torch.save's legacy (pre-zip) format.
_PICKLE = re.compile(rb"\x80[\x02-\x05]")


def not_onnx(path: Path) -> str | None:
    """What PATH is when ONNX Runtime cannot open it and it is a known other kind of file (by content, not by
    name): a PyTorch checkpoint, a TorchScript archive, a TFLite or Keras model, an image. None: unknown."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        names = zipfile.ZipFile(path).namelist() if head.startswith(b"PK\x03\x04") else None
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    export_it = f"not an ONNX model: export it first (mnist-edge export {shlex.quote(str(path))})"
    if names is not None:
        if any("/code/" in name or name.endswith("/constants.pkl") for name in names):
            return "a TorchScript file, not an ONNX model: use the .onnx file `mnist-edge export CHECKPOINT` writes"
        if any(name.endswith("/data.pkl") for name in names):
            return f"a PyTorch checkpoint, {export_it}"
        return "a zip archive, not an ONNX model"
    if _PICKLE.match(head):
        return f"a PyTorch checkpoint (or another pickle), {export_it}"
    return next((say for at, magic, say in _SIGNATURES if head[at:].startswith(magic)), None)


def _describe(arg: ort.NodeArg) -> str:
    dims = ",".join("N" if not isinstance(d, int) else str(d) for d in arg.shape)
    return f"{arg.name!r} {arg.type} [{dims}]"


def _interface_problem(session: ort.InferenceSession) -> str | None:
    """What is wrong with the session's inputs/outputs compared with spec.py, or None."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) not in (1, 2):
        return f"expected 1 input and 1 or 2 outputs, found {len(inputs)} inputs and {len(outputs)} outputs"
    inp, out = inputs[0], outputs[0]
    batch_dynamic = bool(inp.shape) and not isinstance(inp.shape[0], int)
    if (
        inp.name != INPUT_NAME
        or inp.type != "tensor(float)"
        or list(inp.shape[1:]) != list(INPUT_SHAPE)
        or not batch_dynamic
    ):
        return f"input is {_describe(inp)}, expected {INPUT_SPEC}"
    if out.name != OUTPUT_NAME or out.type != "tensor(float)" or len(out.shape) != 2 or out.shape[1] != NUM_CLASSES:
        return f"output is {_describe(out)}, expected {OUTPUT_NAME!r} tensor(float) [N,{NUM_CLASSES}]"
    if len(outputs) == 2 and (
        outputs[1].name != NOT_DIGIT_NAME or outputs[1].type != "tensor(float)" or len(outputs[1].shape) != 1
    ):
        return f"second output is {_describe(outputs[1])}, expected {NOT_DIGIT_NAME!r} tensor(float) [N]"
    return None


class OnnxModel:
    """An exported MNIST model opened with ONNX Runtime on the CPU."""

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        """THREADS: how many chunks of a batch run at once; default one per usable CPU."""
        self.path = Path(path)
        self.threads = max(1, threads or usable_cpus())
        self._pool: ThreadPoolExecutor | None = None
        size = require_model_file(self.path)
        if (size := size + external_bytes(self.path)) > MAX_MODEL_BYTES:  # what ORT would load besides the file
            raise MnistEdgeError(f"{self.path}: {size:,} bytes with its external data is over the "
                                 f"{MAX_MODEL_BYTES:,}-byte limit for a model (not an MNIST model)")
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own classes (InvalidProtobuf, Fail, ...) not rooted in one base
            what = not_onnx(self.path) or f"not a usable ONNX model ({ort_message(exc)})"
            raise MnistEdgeError(f"{self.path}: {what}") from None
        try:
            problem = _interface_problem(self.session)
            self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        except UnicodeDecodeError:  # ONNX Runtime decodes every name as UTF-8 when Python asks for it
            raise MnistEdgeError(f"{self.path}: not a usable ONNX model ({NOT_UTF8})") from None
        if problem:
            raise MnistEdgeError(f"{self.path}: wrong model interface: {problem}")
        self.output_names = [o.name for o in self.session.get_outputs()]
        # An open-set model's refusal threshold; None: the model cannot say "not a digit"
        self.threshold = not_digit_threshold(self.metadata, str(self.path)) if len(self.output_names) == 2 else None

    def run(self, images: np.ndarray) -> np.ndarray:
        """Logits [N,10] float32 for float32 pixels [N,1,28,28] in [0,1], white digit on black."""
        return self.outputs(images)[0]

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits [N,10] float32 and, for an open-set model, not_digit [N] float32 (else None), for float32
        pixels [N,1,28,28] in [0,1], white digit on black.

        A model that fails inside ONNX Runtime, or returns anything but those, is a MnistEdgeError naming the
        file. The outputs are returned as computed: they may hold NaN or inf (see predict)."""
        if images.ndim != 4 or images.shape[1:] != INPUT_SHAPE:
            raise MnistEdgeError(
                f"images have shape {list(images.shape)}, expected [N,{','.join(map(str, INPUT_SHAPE))}]"
            )
        images = np.ascontiguousarray(images, dtype=np.float32)
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32), None if self.threshold is None else np.zeros(0, np.float32)
        with ctrl_c_ends_the_process():
            results = self._run_chunks(images)
        return results[0], results[1] if len(results) > 1 else None

    def _run_chunks(self, images: np.ndarray) -> list[np.ndarray]:
        chunks = min(self.threads, len(images) // MIN_CHUNK)
        if chunks < 2:
            return self._run(images)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # here: ~10 ms of imports a one-image run never needs

            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="mnist-edge-onnx")
        first, *rest = np.array_split(images, chunks)
        pending = [self._pool.submit(self._run, chunk) for chunk in rest]  # ORT sessions may run concurrently
        parts = [self._run(first), *(f.result() for f in pending)]
        return [np.concatenate(output) for output in zip(*parts)]

    def _run(self, images: np.ndarray) -> list[np.ndarray]:
        try:
            results = self.session.run(self.output_names, {INPUT_NAME: images})
        except Exception as exc:  # the graph passed the interface check but fails on data: a bad index, a bad reshape
            raise MnistEdgeError(f"{self.path}: the model fails in ONNX Runtime ({ort_message(exc)})") from None
        for result, expected in zip(results, [(len(images), NUM_CLASSES), (len(images),)]):
            if not isinstance(result, np.ndarray) or result.dtype != np.float32 or result.shape != expected:
                got = (
                    f"{result.dtype} {list(result.shape)}" if isinstance(result, np.ndarray) else type(result).__name__
                )
                raise MnistEdgeError(
                    f"{self.path}: the model returned {got} for {len(images)} images, expected float32 {list(expected)}"
                )
        return list(results)
