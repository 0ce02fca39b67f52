"""The one exception type the CLI turns into a one-line message and a non-zero exit, and how any other
exception is told in one line."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

# Long enough for ONNX Runtime's longest useful causes (its opset notice is ~330 characters), short
# enough that a hostile message (a file name, a decoder's dump) cannot flood a terminal or a JSON field.
MAX_MESSAGE = 400


class MnistEdgeError(Exception):
    """A problem the user can fix (bad file, bad flag, missing data); never a bug."""


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """TEXT on one line (any run of whitespace, newlines included, becomes one space), cut at LIMIT, with
    control characters escaped: a file named with a newline or a terminal escape sequence cannot forge lines."""
    line = printable(" ".join(text.split()))
    return line if len(line) <= limit else line[: limit - 3] + "..."


def printable(text: str) -> str:
    """TEXT with each non-printable character (control, format) written as its Python escape."""
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def valid_unicode(text: str) -> str:
    """TEXT with what no UTF-8 encoder takes written as backslash escapes: the bytes of a file name that is not
    UTF-8 (which Python carries as lone surrogates) become `\\xNN`, so JSON holding it is valid UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe(exc: BaseException) -> str:
    """What EXC says, on one line; its class name when it says nothing, or adds it when the text alone is cryptic."""
    text = one_line(str(exc))
    if isinstance(exc, MnistEdgeError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def first_line(exc: BaseException, width: int = 300) -> str:
    """The first line of EXC's message (its type when it has none), cut to WIDTH characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:width] if text else type(exc).__name__


def bug(what: str, exc: BaseException) -> str:
    """WHAT (naming the input) failed with EXC, which no check foresaw: said so, on one line."""
    return f"{what} ({describe(exc)}; this is a bug, please report it)"


# How an allocation failure reads when torch raises it as a plain RuntimeError: its CPU allocator (DefaultCPUAllocator,
# "can't allocate memory"), oneDNN and other kernels ("not enough memory"), CUDA paths that predate
# torch.OutOfMemoryError ("out of memory")
OUT_OF_MEMORY_TEXTS = ("can't allocate memory", "not enough memory", "out of memory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether EXC is the system running out of memory, not a bug: MemoryError, torch.OutOfMemoryError (CUDA; its
    class is matched by name, so this module needs no torch) or a RuntimeError that says so."""
    if isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in OUT_OF_MEMORY_TEXTS)


def mismatch(unknown: list[str], missing: list[str], unknown_word: str = "unknown keys") -> str:
    """What a mapping has too many and too few of, for the parts that are not empty."""
    return "; ".join(
        part for part in (unknown and f"{unknown_word} {unknown}", missing and f"missing {missing}") if part
    )


def debugging() -> bool:
    """MNIST_EDGE_DEBUG=1: let unexpected exceptions out with their traceback instead of one line."""
    return os.environ.get("MNIST_EDGE_DEBUG", "") not in ("", "0")


class NotRegularFile(ValueError):
    """A device, pipe or socket where a file was expected."""


def open_regular(path: Path) -> BinaryIO:
    """PATH opened for reading if what was opened is a regular file: checked on the open file, not the name, which
    a symlink swapped in meanwhile could point elsewhere; opened without blocking, as a FIFO would block forever.
    IsADirectoryError for a folder, NotRegularFile for a device, pipe or socket."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        raise NotRegularFile("not a regular file (a device, pipe or socket)")
    return os.fdopen(fd, "rb")


def require_file(path: Path, what: str = "file") -> None:
    """One line unless PATH is a regular file (a symlink to one counts): missing, a folder, a device or a FIFO
    is named as such, as reading one could block forever (a FIFO) or never end (/dev/zero)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MnistEdgeError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise MnistEdgeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        article = "an" if what[0] in "AEIOUaeiou" else "a"
        raise MnistEdgeError(f"{path}: is {mode_kind(mode)}, not {article} {what}")


def mode_kind(mode: int) -> str:
    """What a file of MODE (os.stat's st_mode) is, when not a regular file: a folder, a FIFO, a socket or a device."""
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def install_hint(extra: str) -> str:
    """The command that installs the optional EXTRA ("train", "serve") into this install. mnist-edge is not on
    PyPI: an install from a checkout (editable) gets that checkout's path, any other the checkout's way."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "pyproject.toml").is_file():
        return f"pip install '.[{extra}]' in a checkout of mnist-edge"
    where = "." if checkout == Path.cwd().resolve() else str(checkout)
    return f"pip install -e '{where}[{extra}]'"
