"""What every edge runtime (ONNX Runtime, LiteRT) checks on a model file and does around a run, without loading
either: the file's size, the "not a digit" threshold in its metadata, Ctrl-C while a model computes, and whether
opening a model crashes the process."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from mnist_edge.errors import MnistEdgeError
from mnist_edge.spec import NOT_DIGIT_NAME, THRESHOLD_KEY

# Largest model opened, its external data included. MNIST models are kilobytes to a few MB; ONNX Runtime holds
# about twice a file's size while it loads, so gigabytes would take down a Pi (the OOM killer prints no error line).
MAX_MODEL_BYTES = 256 * 1024 * 1024
# How long crash_in_a_child lets a model's first open and run take (edgenet takes milliseconds, even on a Pi)
PROBE_SECONDS = 120.0


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


def crash_in_a_child(work: Callable[[], object], timeout_s: float = PROBE_SECONDS) -> str | None:
    """How WORK ends a forked copy of this process ("crashes on it: SIGSEGV", "hangs on it"); None when it
    returns or raises. A native runtime may segfault on a malformed model, which no `except` catches: WORK is
    what the parent then does for real, tried first where a crash costs only the child. None without fork."""
    if not hasattr(os, "fork"):
        return None
    with warnings.catch_warnings():  # Python 3.12+ warns on forking with threads; the child only runs WORK
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns, never runs atexit or flushes the parent's buffered output
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the runtime's log lines, printed again by the parent
            work()
        finally:
            os._exit(0)
    return _ending(pid, timeout_s)


def _ending(pid: int, timeout_s: float) -> str | None:
    """How the child PID ended (see crash_in_a_child); it is killed if it runs past TIMEOUT_S or we are stopped."""
    deadline, status = time.monotonic() + timeout_s, None  # status: os.waitpid's, once the child ended
    try:
        while status is None and time.monotonic() < deadline:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
            else:
                time.sleep(0.001)
    except ChildProcessError:  # reaped already (SIGCHLD set to SIG_IGN): how it ended is unknown, taken as well
        status = 0
    finally:
        if status is None:  # past the deadline, or Ctrl-C: no orphan left computing
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    if status is None:
        return f"hangs on it (more than {timeout_s:g} s)"
    if os.WIFSIGNALED(status):
        return f"crashes on it: {signal.Signals(os.WTERMSIG(status)).name}"
    return None if os.WEXITSTATUS(status) == 0 else f"exits with code {os.WEXITSTATUS(status)} on it"
