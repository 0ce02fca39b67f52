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


def mismatch(unknown: list[str], missing: list[str], unknown_word: str = "unknown keys") -> str:
    """What a mapping has too many and too few of, for the parts that are not empty."""
    return "; ".join(part for part in (unknown and f"{unknown_word} {unknown}", missing and f"missing {missing}") if part)


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
        kind = "a folder" if stat.S_ISDIR(mode) else "a pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        article = "an" if what[0] in "AEIOUaeiou" else "a"
        raise MnistEdgeError(f"{path}: is {kind}, not {article} {what}")
