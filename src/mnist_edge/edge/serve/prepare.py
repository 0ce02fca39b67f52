"""One uploaded image made into what the model sees, wherever that runs: in a worker, or in the server process
itself while every worker is busy (engine.py). numpy and Pillow only: the server process never loads ONNX Runtime."""

from __future__ import annotations

import traceback

import numpy as np

from mnist_edge.errors import MnistEdgeError, bug
from mnist_edge.edge.results import Failure
from mnist_edge.edge.preprocess import preprocess
from mnist_edge.edge.serve.protocol import Outcome, Upload


def prepare(upload: Upload) -> np.ndarray | Outcome:
    """[28,28] float32, white digit on black; or why not, as the image's Outcome."""
    if upload.pixels is not None:  # prepared already, by the server process
        return upload.pixels
    try:
        return preprocess(upload.data, raw=upload.raw, name=upload.name)
    except MnistEdgeError as exc:
        return Outcome(422, Failure(upload.name, str(exc)).as_dict())
    except Exception as exc:  # a decoder bug must cost this image, not the other requests in the batch
        traceback.print_exc()
        return Outcome(500, Failure(upload.name, bug(f"{upload.name}: failed", exc)).as_dict())
