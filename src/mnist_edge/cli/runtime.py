"""How the `mnist-edge` command line runs: the command group, every failure as one `error:` line with its exit
status, and the last flush of stdout (a full disk or a closed pipe is an error line too, never a traceback).
cli/commands.py registers the commands on `app` with `command`; `main` is the console script (pyproject.toml)."""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

try:  # recent typer releases carry their own copy of click; older ones use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

from mnist_edge.errors import MnistEdgeError, debugging, describe, install_hint, one_line, out_of_memory

# The base install's compiled dependencies (import name, distribution name), probed in this order when an
# import fails: a broken wheel (a missing .so, an ABI mismatch) gets named instead of a long traceback.
BASE_DEPENDENCIES = (("numpy", "numpy"), ("PIL", "pillow"), ("onnxruntime", "onnxruntime"))
# sysexits.h EX_SOFTWARE: what an unexpected exception (a bug) exits with, apart from user errors' 1 and usage's 2.
EXIT_BUG = 70


def _usage_metavar(param: Any) -> str:
    """What --help and usage lines show for PARAM's value: PATH..., FILE, DIR, N, NUMBER, a|b|c or its NAME.
    Duck-typed: typer versions carry click's parameter types under different classes."""
    kind, name = param.type, (param.name or "value").upper()
    if isinstance(param, TyperArgument):
        text = name[:-1] if param.nargs != 1 and name.endswith("S") else name
    elif getattr(kind, "choices", None):
        text = "|".join(map(str, kind.choices))
    elif hasattr(kind, "file_okay") and hasattr(kind, "dir_okay"):
        text = "DIR" if not kind.file_okay else "FILE" if not kind.dir_okay else "PATH"
    elif kind.name.startswith("int"):
        text = "N"
    elif kind.name.startswith("float"):
        text = "NUMBER"
    else:
        text = name
    return text + ("..." if param.nargs != 1 else "")


class _Command(TyperCommand):
    """A subcommand whose help shows plain metavars (PATH..., FILE, N), not click's `<file>` or typer's `{paths}`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None and not getattr(param, "is_flag", False):
                param.metavar = _usage_metavar(param)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        arguments = [p for p in self.get_params(ctx) if isinstance(p, TyperArgument)]
        return [
            self.options_metavar or "[OPTIONS]",
            *(str(p.metavar) if p.required else f"[{p.metavar}]" for p in arguments),
        ]


class _Group(TyperGroup):
    """The command group: a usage error (unknown option, missing argument, bad value) is one `error:` line and a
    hint on stderr with exit status 2, not a box drawn by rich."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        extra["windows_expand_args"] = windows_expand_args
        if not standalone_mode:  # the caller handles click's exceptions itself
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `mnist-edge`: the help (rich prints it itself)
                if exc.message.strip():
                    typer.echo(exc.message)
                sys.exit(exc.exit_code)
            typer.echo(f"error: {_sentence(exc.format_message())}", err=True)
            if exc.ctx is not None:
                typer.echo(f"try '{exc.ctx.command_path} --help'", err=True)
            sys.exit(exc.exit_code)
        except ClickException as exc:
            typer.echo(f"error: {_sentence(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:  # end of input at a prompt
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)


def _sentence(message: str) -> str:
    """Click's message as the rest of an `error:` line: one line, lower-case start
    ("No such option" -> "no such ...")."""
    text = one_line(message)
    return text[0].lower() + text[1:] if len(text) > 1 and text[1].islower() else text


app = typer.Typer(
    name="mnist-edge",
    help="Train the reference MNIST notebooks' models, export them to ONNX/TorchScript, verify parity, predict at "
    "the edge.",
    cls=_Group,
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The extra that installs each optional module a command may need.
EXTRAS = {
    **dict.fromkeys(("torch", "torchvision", "onnx", "onnxscript"), "train"),
    **dict.fromkeys(("starlette", "uvicorn", "python_multipart"), "serve"),
    **dict.fromkeys(("litert_torch", "torchao", "jax", "flatbuffers"), "tflite"),
    "ai_edge_litert": "litert",
}

def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register FN as a subcommand whose errors print one `error:` line, never a traceback: user errors
    (MnistEdgeError) and the system's (no permission, disk full, no memory, a broken install) exit 1; anything
    else is a bug, said so, exit 70 (MNIST_EDGE_DEBUG=1 lets the traceback out instead)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, ClickException):  # an exit status, or a usage error the group prints
            raise
        except Exception as exc:
            _fail(exc)

    return app.command(cls=_Command)(run)


def _fail(exc: Exception) -> NoReturn:
    """Print EXC as one `error:` line and exit with its status."""
    status = 1
    if isinstance(exc, MnistEdgeError):
        message = str(exc)
    elif isinstance(exc, BrokenPipeError):  # the reader went away (`| head`): typer exits quietly
        raise exc
    elif isinstance(exc, (ImportError, OSError)) and _during_import(exc) and (broken := _broken_dependency()):
        message = broken
    elif isinstance(exc, ModuleNotFoundError) and (extra := EXTRAS.get((exc.name or "").split(".")[0])):
        message = f"this command needs {exc.name}: {install_hint(extra)}"
    elif debugging():
        raise exc
    elif isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        code = f" ({errno_name})" if (errno_name := _errno_name(exc.errno)) else ""
        message = f"{where}{exc.strerror or describe(exc)}{code}"
    elif out_of_memory(exc):
        message = "out of memory: try fewer or smaller inputs"
    else:
        status = EXIT_BUG
        message = f"{describe(exc)} (this is a bug, please report it; MNIST_EDGE_DEBUG=1 shows the traceback)"
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(status)


def _errno_name(number: int | None) -> str:
    import errno

    return errno.errorcode.get(number, "") if number is not None else ""


def _during_import(exc: BaseException) -> bool:
    """Whether EXC was raised while a module was being imported: ImportError always is; another error is when a
    module's top-level code is among its frames (importlib hides its own)."""
    import traceback

    return isinstance(exc, ImportError) or any(
        frame.f_code.co_name == "<module>" for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _broken_dependency() -> str | None:
    """Which base dependency fails to import, how, and how to reinstall it; None when all of them import."""
    for module, package in BASE_DEPENDENCIES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken install raises anything: ImportError, OSError, AttributeError...
            return (f"{package} is missing or broken ({describe(exc)}); reinstall it: "
                    f"pip install --force-reinstall '{_requirement(package)}'")
    return None


def _requirement(package: str) -> str:
    """PACKAGE's requirement as mnist-edge declares it (e.g. 'onnxruntime>=1.17,!=1.21.0'), else its bare name."""
    from importlib import metadata

    try:
        declared = metadata.requires("mnist-edge") or []
    except metadata.PackageNotFoundError:
        return package
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement)
        if name and name[0].lower() == package and ";" not in requirement:
            return requirement
    return package


def main() -> None:
    if sys.stdout is None:  # started with its output closed (`cmd >&-`): click would drop every line and exit 0
        if sys.stderr is not None:
            print("error: standard output is closed: nowhere to print the results", file=sys.stderr)
        sys.exit(1)
    import mnist_edge.cli.commands  # noqa: F401 - registers the commands on `app`

    try:
        app(prog_name="mnist-edge")  # the same name in usage and hints for `python -m mnist_edge` and torchrun
    except SystemExit as done:
        status = done.code
    except Exception as exc:  # outside any command: --help or --version written to a full disk or a closed pipe
        status = _outside_commands(exc)
    try:
        sys.stdout.flush()  # what is still buffered fails here, where it is caught, not in Python's exit
    except Exception as exc:
        if status:  # the command failed and said so already: its unwritten output is not a second error
            _discard_stdout()
        else:
            status = _outside_commands(exc)
    sys.exit(status)


def _discard_stdout() -> None:
    # what a failed write left buffered would fail again in Python's own flush at exit (a second message, exit 120)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _outside_commands(exc: Exception) -> int:
    """The exit status for EXC raised outside any command, said in one line as a command's error would be."""
    _discard_stdout()
    if isinstance(exc, BrokenPipeError):  # the reader went away (`--help | head -1`): quiet, as click is
        return 1
    try:
        _fail(exc)
    except typer.Exit as stop:
        return stop.exit_code
    raise AssertionError("_fail always exits")  # unreachable: for the type checker
