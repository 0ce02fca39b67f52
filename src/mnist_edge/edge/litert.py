"""Run an exported `.tflite` model with LiteRT (`ai-edge-litert`): the second torch-free edge runtime.

A `.tflite` file has static shapes, so export writes one signature per batch size (`batch_1` and `batch_64`,
sharing their weights); a batch runs as chunks through the smallest signature that holds what is left, the
last chunk padded with zeros. An int8 input is quantized, and int8 outputs come back dequantized, with their
scale and zero point.
The file's mnist-edge metadata is JSON in the flatbuffer's own `metadata` list, under METADATA_NAME.
Never imports torch or ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from mnist_edge.edge.common import ctrl_c_ends_the_process, require_model_file, usable_cpus
from mnist_edge.errors import MnistEdgeError, describe
from mnist_edge.formats import TFLITE_IDENTIFIER
from mnist_edge.spec import INPUT_SHAPE, INPUT_SPEC, NUM_CLASSES, OUTPUT_NAME

METADATA_NAME = "mnist_edge"  # the flatbuffer metadata entry holding the file's metadata as JSON


def read_metadata(content: bytes) -> dict[str, str]:
    """The mnist-edge metadata stamped in a TFLite flatbuffer, {} when it has none."""
    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                found = json.loads(bytes(data)) if isinstance(data, np.ndarray) else {}
            except ValueError:
                return {}
            return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {}


class _Signature:
    """One batch size of the model: its runner, input name, output names in order and their dequantization."""

    def __init__(self, interpreter: Interpreter, key: str) -> None:
        self.runner = interpreter.get_signature_runner(key)
        inputs, outputs = self.runner.get_input_details(), self.runner.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"signature {key!r} has {len(inputs)} inputs, expected 1: {INPUT_SPEC}")
        (self.input, spec), = inputs.items()
        shape, dtype = tuple(int(d) for d in spec["shape"]), np.dtype(spec["dtype"])
        self.input_scale, self.input_zero_point = spec["quantization"]
        quantized = dtype in (np.int8, np.uint8) and self.input_scale > 0  # PT2E may quantize a first conv's input
        if not (dtype == np.float32 or quantized) or len(shape) != 4 or shape[1:] != INPUT_SHAPE or shape[0] < 1:
            raise ValueError(f"signature {key!r} takes {dtype.name} {list(shape)}, expected {INPUT_SPEC}")
        self.input_dtype, self.batch = dtype, shape[0]
        # The converter names outputs output_0, output_1, ... in the order the torch module returns them.
        self.outputs = sorted(outputs, key=lambda name: (len(name), name))
        self.dequantize = {name: tuple(outputs[name]["quantization"]) for name in self.outputs}
        self.shapes = {name: tuple(int(d) for d in outputs[name]["shape"]) for name in self.outputs}

    def run(self, chunk: np.ndarray) -> list[np.ndarray]:
        padded = chunk if len(chunk) == self.batch else np.concatenate(
            [chunk, np.zeros((self.batch - len(chunk), *INPUT_SHAPE), np.float32)]
        )
        found = self.runner(**{self.input: self._input(padded)})
        return [self._float(name, found[name])[: len(chunk)] for name in self.outputs]

    def _input(self, images: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.float32:
            return images
        info = np.iinfo(self.input_dtype)
        quantized = np.round(images / np.float32(self.input_scale)) + self.input_zero_point
        return np.clip(quantized, info.min, info.max).astype(self.input_dtype)

    def _float(self, name: str, values: np.ndarray) -> np.ndarray:
        scale, zero_point = self.dequantize[name]
        if values.dtype == np.float32:
            return values
        return ((values.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)


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
        try:
            self._signatures = self._open(content)  # first: LiteRT verifies the flatbuffer that read_metadata walks
            self.metadata: dict[str, str] = read_metadata(content)
        except MnistEdgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError; a corrupt flatbuffer, anything
            raise MnistEdgeError(f"{self.path}: not a usable TFLite model ({describe(exc)})") from None
        self.output_names: list[str] = json.loads(self.metadata.get("output_names", "[]")) or [OUTPUT_NAME]

    def _open(self, content: bytes) -> list[_Signature]:
        """Each signature on an interpreter of its own: batch 1 on one thread (waking a pool costs more than one
        image's work), bigger batches on THREADS. Smallest batch first."""
        keys = list(Interpreter(model_content=content, num_threads=1).get_signature_list())
        if not keys:
            raise ValueError("it has no signature")
        signatures = []
        for key in keys:
            probe = _Signature(Interpreter(model_content=content, num_threads=1), key)
            threads = 1 if probe.batch == 1 else self.threads
            signatures.append(probe if threads == 1 else _Signature(Interpreter(model_content=content, num_threads=threads), key))
        signatures.sort(key=lambda s: s.batch)
        for sig in signatures:
            problem = _output_problem(sig)
            if problem:
                raise MnistEdgeError(f"{self.path}: wrong model interface: {problem}")
        return signatures

    def run(self, images: np.ndarray) -> np.ndarray:
        """Logits [N,10] float32 for float32 pixels [N,1,28,28] in [0,1], white digit on black (as OnnxModel.run)."""
        return self.outputs(images)[0]

    def outputs(self, images: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for IMAGES, in order: logits [N,10], then any others ([N] each)."""
        if images.ndim != 4 or images.shape[1:] != INPUT_SHAPE:
            raise MnistEdgeError(f"images have shape {list(images.shape)}, expected [N,{','.join(map(str, INPUT_SHAPE))}]")
        images = np.ascontiguousarray(images, dtype=np.float32)
        if len(images) == 0:
            return [np.zeros((0, *s.shapes[name][1:]), np.float32) for s in self._signatures[:1] for name in s.outputs]
        parts: list[list[np.ndarray]] = []
        with ctrl_c_ends_the_process():
            done = 0
            while done < len(images):
                left = len(images) - done
                sig = next((s for s in self._signatures if s.batch >= left), self._signatures[-1])
                parts.append(self._run(sig, images[done : done + sig.batch]))
                done += sig.batch
        return [np.concatenate(column) for column in zip(*parts)]

    def _run(self, sig: _Signature, chunk: np.ndarray) -> list[np.ndarray]:
        try:
            return sig.run(chunk)
        except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError from its C++ core
            raise MnistEdgeError(f"{self.path}: the model fails in LiteRT ({describe(exc)})") from None


def _output_problem(sig: _Signature) -> str | None:
    """What is wrong with a signature's outputs: logits [B,10] first, then optional [B] outputs; else None."""
    shapes = [sig.shapes[name] for name in sig.outputs]
    if not shapes or shapes[0] != (sig.batch, NUM_CLASSES):
        return f"output is {[list(s) for s in shapes]}, expected {OUTPUT_NAME!r} [N,{NUM_CLASSES}] first"
    if any(s != (sig.batch,) for s in shapes[1:]):
        return f"outputs after the logits are {[list(s) for s in shapes[1:]]}, expected one value per image ([N])"
    return None

