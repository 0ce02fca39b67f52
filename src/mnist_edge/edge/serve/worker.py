"""The image side of `mnist-edge serve`: a worker process holding the model (`python -m` this module MODEL SERVER_PID).

It answers calls from the server process (engine.py) one at a time over stdin/stdout. For a batch of
uploaded images (some perhaps prepared by the server already) it returns, per image, an HTTP status and the
object `mnist-edge predict --json` prints for it. A bad image fails alone (prepare.py); a call that fails
answers with a MnistEdgeError.
"""

from __future__ import annotations

import base64
import math
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from mnist_edge.errors import MnistEdgeError, bug, valid_unicode
from mnist_edge.edge.lifetime import die_with_parent
from mnist_edge.edge.manifest import file_sha256
from mnist_edge.edge.predict import Failure, infer
from mnist_edge.edge.preprocess import png_bytes
from mnist_edge.edge.models import EdgeModel, open_model
from mnist_edge.edge.serve.prepare import prepare
from mnist_edge.edge.serve.protocol import FRAME, Outcome, Upload, frame
from mnist_edge.spec import INPUT_SPEC, NUM_CLASSES

_model: EdgeModel | None = None
_problem: str | None = None  # why the model could not be opened, told to the server by model_facts()


def start(model_path: str) -> None:
    """Open the model; an error is kept and told by every call, so the server can report it."""
    global _model, _problem
    try:
        _model = open_model(model_path, threads=1)  # one per process: the processes are the parallelism
    except MnistEdgeError as exc:
        _problem = str(exc)


def _loaded() -> EdgeModel:
    if _model is None:
        raise MnistEdgeError(_problem or "the model is not loaded")
    return _model


def _number(text: str | None) -> float | None:
    """A metadata string as a finite number, else None (JSON has no NaN)."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def model_facts() -> dict:
    """The model's facts for GET /model: what the file says about itself, and its SHA-256."""
    model = _loaded()
    meta = model.metadata
    return {
        "file": valid_unicode(model.path.name),  # the name only: the server's folder layout is nobody's business
        "sha256": file_sha256(model.path),
        "size_bytes": model.path.stat().st_size,
        "arch": meta.get("arch"),
        "quantization": meta.get("quantization", "none"),
        "test_accuracy": _number(meta.get("test_accuracy")),
        "checkpoint_sha256": meta.get("checkpoint_sha256"),
        "input": meta.get("input_spec", INPUT_SPEC),
        "output": meta.get("output_spec"),
        "labels": list(range(NUM_CLASSES)),  # the digits, as numbers like predict's JSON "digit"
    }


def predict_batch(uploads: list[Upload]) -> list[Outcome]:
    """An Outcome per upload, in order. The images that preprocess go through the model as one batch, through
    predict's own `infer` (if the model fails on the batch, each image is run alone)."""
    model = _loaded()
    prepared = [prepare(upload) for upload in uploads]
    good = [(upload, x) for upload, x in zip(uploads, prepared) if isinstance(x, np.ndarray)]
    # Every class ranked; each upload keeps its own `top` first ones, the very ranking `--top K` prints.
    results = iter(infer(model, [upload.name for upload, _ in good], [x for _, x in good], NUM_CLASSES) if good else [])
    outcomes = []
    for upload, x in zip(uploads, prepared):
        if isinstance(x, Outcome):
            outcomes.append(x)
            continue
        result = next(results)
        # the model failed on this image, or gave non-finite scores: ours, not the client's
        if isinstance(result, Failure):
            outcomes.append(Outcome(500, result.as_dict()))
            continue
        row = (result if upload.refuse else result.as_digit()).as_dict()
        row["top"] = row["top"][: upload.top]
        if upload.preview:
            row["preview"] = "data:image/png;base64," + base64.b64encode(png_bytes(x)).decode("ascii")
        outcomes.append(Outcome(200, row))
    return outcomes


CALLS: dict[str, Callable[..., Any]] = {"model_facts": model_facts, "predict_batch": predict_batch}


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None  # end of input: the server closed it, or is gone


def main(model_path: str, server: int) -> None:
    # A server killed outright (SIGKILL, the OOM killer) closes the pipes, but a worker busy in a model that
    # never finishes would not read them again: it dies with the server instead.
    die_with_parent(server)
    # The server stops its workers by closing their input, after answering the requests in flight:
    # a stop signal sent to a whole service (systemd) must not cut a batch short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # Answers go out on the original stdout; anything else printed here (Python or native code) goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    calls = sys.stdin.buffer
    start(model_path)
    while (header := _read(calls, FRAME.size)) is not None and (
        payload := _read(calls, FRAME.unpack(header)[0])
    ) is not None:
        name, args = pickle.loads(payload)
        try:
            answer = (True, CALLS[name](*args))
        except MnistEdgeError as exc:
            answer = (False, exc)
        except Exception as exc:  # a bug: say so, keep serving the other calls
            traceback.print_exc()
            answer = (False, MnistEdgeError(bug("the worker failed", exc)))
        answers.write(frame(answer))
        answers.flush()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
