"""Run an exported `.tflite` model with LiteRT (`ai-edge-litert`): the second torch-free edge runtime.

A `.tflite` file has static shapes, so export writes one signature per batch size (`batch_1` and `batch_64`,
sharing their weights); a batch runs as chunks through the smallest signature that holds what is left, the
last chunk padded with zeros. An int8 input is quantized, and int8 outputs come back dequantized, with their
scale and zero point. An open-set model's file has a second output, `not_digit` [N], and its threshold in
the metadata, as an ONNX file does.
The file's mnist-edge metadata is JSON in the flatbuffer's own `metadata` list, under formats.TFLITE_METADATA.
Never imports torch or ONNX Runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from mnist_edge.edge.model_checks import (
    crash_in_a_child,
    ctrl_c_ends_the_process,
    not_digit_threshold,
    require_model_file,
)
from mnist_edge.edge.manifest import verified_by_export
from mnist_edge.edge.results import usable_cpus
from mnist_edge.errors import MnistEdgeError, describe
from mnist_edge.formats import TFLITE_IDENTIFIER, TFLITE_METADATA
from mnist_edge.spec import INPUT_SHAPE, INPUT_SPEC, NOT_DIGIT_NAME, NUM_CLASSES, OUTPUT_NAME


def read_metadata(content: bytes) -> dict[str, str]:
    """The mnist-edge metadata stamped in a TFLite flatbuffer, {} when it has none."""
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == TFLITE_METADATA.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                found = json.loads(bytes(data)) if isinstance(data, np.ndarray) else {}
            except ValueError:
                return {}
            return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {}


class _Batch:
    """One static batch size of the model: how to run it, and how its input and outputs are (de)quantized."""

    def __init__(
        self, what: str, input_spec: dict, output_specs: list[dict], call: Callable[[np.ndarray], list[np.ndarray]]
    ) -> None:
        shape, dtype = tuple(int(d) for d in input_spec["shape"]), np.dtype(input_spec["dtype"])
        self.input_scale, self.input_zero_point = input_spec["quantization"]
        readable = _is_float32_or_quantized(dtype, self.input_scale)  # PT2E may quantize a first conv's input
        if not readable or len(shape) != 4 or shape[1:] != INPUT_SHAPE or shape[0] < 1:
            raise ValueError(f"{what} takes {dtype.name} {list(shape)}, expected {INPUT_SPEC}")
        self.input_dtype, self.batch = dtype, shape[0]
        for spec in output_specs:  # an integer output with no scale would read as zeros: every image a "0"
            out_dtype, out_scale = np.dtype(spec["dtype"]), spec["quantization"][0]
            if not _is_float32_or_quantized(out_dtype, out_scale):
                raise ValueError(f"{what} has an output of {out_dtype.name} (scale {out_scale}), expected float32 "
                                 "or quantized int8")
        # (scale, -zero_point * scale) of each output, for _as_float
        quantization = [spec["quantization"] for spec in output_specs]
        self.dequantize = [(np.float32(s), np.float32(-z * s)) for s, z in quantization]
        self.shapes = [tuple(int(d) for d in spec["shape"]) for spec in output_specs]
        self._call = call

    def run(self, chunk: np.ndarray) -> list[np.ndarray]:
        padded = chunk if len(chunk) == self.batch else np.concatenate(
            [chunk, np.zeros((self.batch - len(chunk), *INPUT_SHAPE), np.float32)]
        )
        found = self._call(self._input(padded))
        return [_as_float(values, *quantization)[: len(chunk)] for values, quantization in zip(found, self.dequantize)]

    def _input(self, images: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.float32:
            return images
        info = np.iinfo(self.input_dtype)
        quantized = np.round(images / np.float32(self.input_scale)) + self.input_zero_point
        return np.clip(quantized, info.min, info.max).astype(self.input_dtype)


def _is_float32_or_quantized(dtype: np.dtype, scale: float) -> bool:
    """Whether a tensor of DTYPE and SCALE is one _Batch reads and writes: float32, or int8/uint8 with a scale."""
    return dtype == np.float32 or (dtype in (np.int8, np.uint8) and scale > 0)


def _as_float(values: np.ndarray, scale: np.float32, offset: np.float32) -> np.ndarray:
    """VALUES as float32: an int8 output dequantized, (q - zero_point) * scale written as q * scale + offset."""
    return values if values.dtype == np.float32 else values * scale + offset


def _main_graph(interpreter: Interpreter) -> _Batch:
    """The interpreter's main graph, run through tensor indices: a signature runner re-allocates on every call,
    which cost about a tenth of an int8 image's time."""
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1:
        raise ValueError(f"it has {len(inputs)} inputs, expected 1: {INPUT_SPEC}")
    index, output_indices = inputs[0]["index"], [spec["index"] for spec in outputs]

    def call(images: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(index, images)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in output_indices]

    return _Batch("its main graph", inputs[0], outputs, call)


def _signature(interpreter: Interpreter, key: str) -> _Batch:
    runner = interpreter.get_signature_runner(key)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if len(inputs) != 1:
        raise ValueError(f"signature {key!r} has {len(inputs)} inputs, expected 1: {INPUT_SPEC}")
    (name, spec), = inputs.items()
    order = sorted(outputs, key=lambda n: (len(n), n))  # the converter's output_0, output_1, ...: the module's order

    def call(images: np.ndarray) -> list[np.ndarray]:
        found = runner(**{name: images})
        return [found[n] for n in order]

    return _Batch(f"signature {key!r}", spec, [outputs[n] for n in order], call)


class LiteRTModel:
    """An exported MNIST model opened with LiteRT on the CPU; the same `run` and `metadata` as OnnxModel."""

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        """THREADS: LiteRT's threads for a batch of more than one image (one image always runs on one)."""
        self.path = Path(path)
        self.threads = max(1, threads or usable_cpus())
        require_model_file(self.path)
        content = self.path.read_bytes()
        if content[4:8] != TFLITE_IDENTIFIER:
            raise MnistEdgeError(f"{self.path}: not a TFLite model (no TFL3 flatbuffer identifier)")
        # LiteRT segfaults on some malformed files (a signature naming no graph, a missing op input): a file export
        # did not verify is tried first in a forked child, which costs tens of milliseconds an open
        crash = None if verified_by_export(self.path, content) else crash_in_a_child(lambda: self._probe(content))
        if crash:
            raise MnistEdgeError(f"{self.path}: not a usable TFLite model (LiteRT {crash})")
        try:
            self._batches = self._open(content)  # first: LiteRT verifies the flatbuffer that read_metadata walks
            self.metadata: dict[str, str] = read_metadata(content)
        except MnistEdgeError:
            raise
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError; a corrupt flatbuffer, anything
            raise MnistEdgeError(f"{self.path}: not a usable TFLite model ({describe(exc)})") from None
        # An open-set model's refusal threshold; None: the model cannot say "not a digit"
        two = len(self._batches[0].shapes) == 2
        self.threshold = not_digit_threshold(self.metadata, str(self.path)) if two else None

    def _open(self, content: bytes) -> list[_Batch]:
        """The main graph and each signature of another batch size, smallest first, each on an interpreter of its
        own: batch 1 on one thread (waking a pool costs more than one image's work), bigger ones on THREADS."""
        probe = Interpreter(model_content=content, num_threads=1)
        main = _main_graph(probe)
        if main.batch > 1 and self.threads > 1:
            main = _main_graph(Interpreter(model_content=content, num_threads=self.threads))
        batches = {main.batch: main}
        for key in probe.get_signature_list():
            sig = _signature(Interpreter(model_content=content, num_threads=self.threads), key)
            if sig.batch == 1 and self.threads > 1:
                sig = _signature(Interpreter(model_content=content, num_threads=1), key)
            batches.setdefault(sig.batch, sig)
        for batch in batches.values():
            problem = _output_problem(batch)
            if problem:
                raise MnistEdgeError(f"{self.path}: wrong model interface: {problem}")
        return sorted(batches.values(), key=lambda b: b.batch)

    def _probe(self, content: bytes) -> None:
        """Open CONTENT as __init__ does and run zeros through every batch size: what crash_in_a_child tries."""
        for batch in self._open(content):
            batch.run(np.zeros((1, *INPUT_SHAPE), np.float32))

    def run(self, images: np.ndarray) -> np.ndarray:
        """Logits [N,10] float32 for float32 pixels [N,1,28,28] in [0,1], white digit on black (as OnnxModel.run)."""
        return self.outputs(images)[0]

    def outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits [N,10] float32 and, for an open-set model, not_digit [N] float32 (else None), as OnnxModel's."""
        found = self._outputs(images)
        return found[0], found[1] if len(found) > 1 else None

    def _outputs(self, images: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for IMAGES, in order: logits [N,10], then not_digit [N] if it has it."""
        if images.ndim != 4 or images.shape[1:] != INPUT_SHAPE:
            expected = ",".join(map(str, INPUT_SHAPE))
            raise MnistEdgeError(f"images have shape {list(images.shape)}, expected [N,{expected}]")
        images = np.ascontiguousarray(images, dtype=np.float32)
        if len(images) == 0:
            return [np.zeros((0, *shape[1:]), np.float32) for shape in self._batches[0].shapes]
        parts: list[list[np.ndarray]] = []
        with ctrl_c_ends_the_process():
            done = 0
            while done < len(images):
                left = len(images) - done
                fits = (b for b in self._batches if b.batch >= left)
                batch = self._batches[0] if left == 1 else next(fits, self._batches[-1])
                parts.append(self._run(batch, images[done : done + batch.batch]))
                done += batch.batch
        return parts[0] if len(parts) == 1 else [np.concatenate(column) for column in zip(*parts)]

    def _run(self, batch: _Batch, chunk: np.ndarray) -> list[np.ndarray]:
        try:
            return batch.run(chunk)
        except Exception as exc:  # LiteRT raises RuntimeError/ValueError from its C++ core
            raise MnistEdgeError(f"{self.path}: the model fails in LiteRT ({describe(exc)})") from None


def _output_problem(batch: _Batch) -> str | None:
    """What is wrong with a batch size's outputs: logits [B,10], then optionally not_digit [B]; else None."""
    shapes = batch.shapes
    if not shapes or len(shapes) > 2 or shapes[0] != (batch.batch, NUM_CLASSES):
        expected = f"{OUTPUT_NAME!r} [N,{NUM_CLASSES}], then optionally {NOT_DIGIT_NAME!r} [N]"
        return f"outputs are {[list(s) for s in shapes]}, expected {expected}"
    if shapes[1:] and shapes[1] != (batch.batch,):
        return f"second output is {list(shapes[1])}, expected {NOT_DIGIT_NAME!r}, one value per image ([N])"
    return None

