"""What every edge runtime (ONNX Runtime, LiteRT) checks on a model file and does around a run, without loading
either: the file's size, the "not a digit" threshold in its metadata, and Ctrl-C while a model computes."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path

from mnist_edge.errors import MnistEdgeError
from mnist_edge.spec import NOT_DIGIT_NAME, THRESHOLD_KEY

# Largest model opened, its external data included. MNIST models are kilobytes to a few MB; ONNX Runtime holds
# about twice a file's size while it loads, so gigabytes would take down a Pi (the OOM killer prints no error line).
MAX_MODEL_BYTES = 256 * 1024 * 1024


def require_model_file(path: Path) -> int:
    """PATH's size; a MnistEdgeError unless PATH is a regular file no bigger than MAX_MODEL_BYTES."""
    if not path.is_file():
        what = "not a file (a folder, device or pipe)" if path.exists() else "no such model file"
        raise MnistEdgeError(f"{path}: {what}")
    if (size := path.stat().st_size) > MAX_MODEL_BYTES:
        raise MnistEdgeError(
            f"{path}: {size:,} bytes is over the {MAX_MODEL_BYTES:,}-byte limit for a model file (not an MNIST model)"
        )
    return size


def not_digit_threshold(metadata: dict[str, str], where: str) -> float:
    """The "not a digit" threshold an open-set model's METADATA carries: a number in [0, 1]."""
    text = metadata.get(THRESHOLD_KEY)
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise MnistEdgeError(
            f"{where}: has a {NOT_DIGIT_NAME!r} output but no usable {THRESHOLD_KEY!r} in its metadata ({text!r})"
        )
    return value


class ctrl_c_ends_the_process:  # lower case: used as a function, `with ctrl_c_ends_the_process():`
    """Ctrl-C (SIGINT) ends the process at once while a model runs. Python runs its handler (KeyboardInterrupt)
    only once the runtime returns, and a model that loops or computes for hours never does. Only where Python's
    own handler is in place, in the main thread: a caller with a handler of its own (the server's workers ignore
    SIGINT) keeps it. A class rather than @contextmanager: it wraps every run, and the generator cost about 1 us
    of the 7 us this takes per run (two sigaction calls), against a batch-1 int8 run of 20-40 us."""

    def __enter__(self) -> None:
        self.active = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if self.active:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.signal(signal.SIGINT, signal.default_int_handler)
