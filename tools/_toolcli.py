"""What every script in tools/ shares with `mnist-edge`: a usage error is one `error:` line on stderr with exit
status 2, any other error one line with exit 1 (an unexpected exception: exit 70, said to be a bug;
MNIST_EDGE_DEBUG=1 shows its traceback), never a traceback. Each script builds its parser with `Parser` and
ends with `run(main)`. Standard library only: CI runs some scripts (lower_bounds.py) with a bare python3."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EXIT_BUG = 70  # as mnist-edge: sysexits.h EX_SOFTWARE


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line usage errors."""

    def error(self, message: str) -> NoReturn:
        script = f"tools/{Path(sys.argv[0]).name}"
        fail(f"{message} (try 'python {script} --help')", 2)


def summary(doc: str | None) -> str:
    """A script's --help description: its docstring's first paragraph (a first line alone may end mid-sentence)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def fail(message: str, status: int = 1) -> NoReturn:
    """MESSAGE as one `error:` line (newlines and control characters escaped), and exit with STATUS."""
    line = " ".join(message.split())
    print(f"error: {line if line.isprintable() else ascii(line)[1:-1]}", file=sys.stderr)
    sys.exit(status)


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run MAIN and exit with its status; its errors end as one line, as a mnist-edge command's do."""
    try:
        status = main()
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:  # the reader went away (`--list | head`): quiet, as mnist-edge is
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush must not fail again
        sys.exit(1)
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        errors = sys.modules.get("mnist_edge.errors")  # loaded if the script uses mnist_edge; never imported here
        if errors is not None and isinstance(exc, errors.MnistEdgeError):  # a user's error, said as it is
            fail(str(exc))
        if os.environ.get("MNIST_EDGE_DEBUG", "") not in ("", "0"):
            raise
        fail(f"{type(exc).__name__}: {exc} (this is a bug, please report it; MNIST_EDGE_DEBUG=1 shows the traceback)",
             EXIT_BUG)
    sys.exit(status or 0)
