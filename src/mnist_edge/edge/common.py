"""What `predict`, the runtimes and the server process share, kept apart from predict.py and the runtimes because
those load a runtime, which the server's HTTP process never does: the result objects `predict --json` prints, how
many CPUs this process may use, and the checks every runtime makes on a model file and around a run."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_edge.errors import MnistEdgeError

# Largest model file opened. MNIST models are kilobytes to a few MB; ONNX Runtime holds about twice a file's
# size while it loads, so a file of gigabytes would take down a Pi (the OOM killer prints no error line).
MAX_MODEL_BYTES = 256 * 1024 * 1024


def usable_cpus() -> int:
    """The CPUs this process may run on (taskset, containers), not all the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def require_model_file(path: Path) -> None:
    """A MnistEdgeError unless PATH is a regular file no bigger than MAX_MODEL_BYTES."""
    if not path.is_file():
        what = "not a file (a folder, device or pipe)" if path.exists() else "no such model file"
        raise MnistEdgeError(f"{path}: {what}")
    if (size := path.stat().st_size) > MAX_MODEL_BYTES:
        raise MnistEdgeError(f"{path}: {size:,} bytes is over the {MAX_MODEL_BYTES:,}-byte limit for a model file (not an MNIST model)")


class ctrl_c_ends_the_process:  # noqa: N801 - used as a function: `with ctrl_c_ends_the_process():`
    """Ctrl-C (SIGINT) ends the process at once while a model runs. Python runs its handler (KeyboardInterrupt)
    only once the runtime returns, and a model that loops or computes for hours never does. Only where Python's
    own handler is in place, in the main thread: a caller with a handler of its own (the server's workers ignore
    SIGINT) keeps it. A class rather than @contextmanager: it wraps every run, and the generator cost about 1 us
    of the 7 us this takes per run (two sigaction calls), against a batch-1 int8 run of 20-40 us."""

    def __enter__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        if self.active:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass(frozen=True)
class Prediction:
    file: str
    digit: int
    probability: float
    top: list[tuple[int, float]] = field(default_factory=list)  # (digit, probability), most likely first

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "digit": self.digit, "probability": self.probability, "top": [
            {"digit": digit, "probability": p} for digit, p in self.top
        ]}


@dataclass(frozen=True)
class Failure:
    file: str
    error: str  # one line, naming the file

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "error": self.error}


Result = Prediction | Failure
