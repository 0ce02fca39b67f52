"""The edge side's Python API: `mnist_edge.load()` opens a model, `Model.predict` reads one image, `Model.predict_files`
reads files, folders and globs as `mnist-edge predict` does. The results are the objects `predict --json` prints
(`Prediction`, `Failure`; `as_dict()` gives the JSON), computed by the same code, so the two always agree.
Torch-free, like the rest of the edge package (docs/api.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.results import Failure, Prediction, Result
from mnist_edge.edge.manifest import default_model_path
from mnist_edge.edge.models import open_model
from mnist_edge.edge.predict import infer, predict_paths
from mnist_edge.edge.preprocess import preprocess, preprocess_image
from mnist_edge.spec import NUM_CLASSES

# What `Model.predict` takes: a file's path, a file's encoded bytes, a Pillow image or an array of pixels.
ImageInput = str | os.PathLike[str] | bytes | Image.Image | np.ndarray


class Model:
    """An exported model (ONNX, or LiteRT .tflite), opened once, that predicts digits in images."""

    def __init__(self, path: str | os.PathLike[str] | None = None, threads: int | None = None) -> None:
        """PATH: an .onnx or .tflite file; default: the model shipped with mnist-edge.
        THREADS: CPUs a big batch may use."""
        self.path = Path(path) if path is not None else default_model_path()
        self._model = open_model(self.path, threads)  # the runtime the file calls for

    @property
    def metadata(self) -> dict[str, str]:
        """What the exporter recorded in the file: architecture, quantization, test accuracy, checkpoint hash."""
        return dict(self._model.metadata)

    def predict(self, image: ImageInput, top: int = 3, raw: bool = False, name: str | None = None) -> Prediction:
        """The digit in IMAGE and the TOP most likely digits; raises MnistEdgeError for an image it cannot read.

        A path gives the result `mnist-edge predict PATH --json` prints. An array is grayscale [H,W] or colour
        [H,W,3|4]: uint8 (0-255) or float (0-1). RAW: IMAGE is already MNIST-form 28x28 white-on-black (as
        --raw). NAME: the `file` the result names (default: the path, else "<image>")."""
        _check_top(top)
        label = name if name is not None else str(Path(image)) if isinstance(image, (str, os.PathLike)) else "<image>"
        pixels = self._pixels(image, raw, label)
        result = infer(self._model, [label], [pixels], top)[0]
        if isinstance(result, Failure):
            raise MnistEdgeError(result.error)
        return result

    def predict_files(self, *paths: str | os.PathLike[str], top: int = 3, raw: bool = False) -> list[Result]:
        """A Prediction or a Failure for every image PATHS name (files, folders, glob patterns), in order, as
        `mnist-edge predict PATHS --json` lists them: one unreadable file never stops the rest."""
        _check_top(top)
        return list(predict_paths(self._model, [os.fspath(p) for p in paths], top=top, raw=raw))

    def _pixels(self, image: ImageInput, raw: bool, label: str) -> np.ndarray:
        if isinstance(image, (str, os.PathLike, bytes)):
            return preprocess(os.fspath(image) if not isinstance(image, bytes) else image, raw=raw, name=label)
        if isinstance(image, np.ndarray):
            image = _from_array(image, label)
        if not isinstance(image, Image.Image):
            kind = type(image).__name__
            raise MnistEdgeError(f"{label}: expected a path, bytes, a PIL image or a numpy array, not {kind}")
        return preprocess_image(image, raw=raw, name=label)

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r})"


def _from_array(pixels: np.ndarray, label: str) -> Image.Image:
    """A Pillow image of PIXELS: uint8 as it is, anything else gray as mode F (floats in [0,1]; 0-255 scaled)."""
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        shape = list(pixels.shape)
        raise MnistEdgeError(f"{label}: an array of shape {shape} is not an image: expected [H,W] or [H,W,3|4]")
    if pixels.dtype == np.uint8:
        return Image.fromarray(pixels)
    if pixels.ndim == 3:
        raise MnistEdgeError(f"{label}: a colour array must be uint8 (0-255), not {pixels.dtype}")
    if pixels.dtype.kind not in "biuf":  # bool, signed, unsigned, float
        raise MnistEdgeError(f"{label}: an array of {pixels.dtype} is not an image")
    return Image.fromarray(np.asarray(pixels, dtype=np.float32))  # mode F: preprocess scales it to [0,1]


def _check_top(top: int) -> None:
    if not isinstance(top, int) or not 1 <= top <= NUM_CLASSES:
        raise MnistEdgeError(f"top={top!r}: choose 1 to {NUM_CLASSES}")


def load(path: str | os.PathLike[str] | None = None, threads: int | None = None) -> Model:
    """The model at PATH (an exported .onnx or .tflite file), or the one shipped with mnist-edge, ready to predict."""
    return Model(path, threads)
