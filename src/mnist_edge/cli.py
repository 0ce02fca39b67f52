"""The `mnist-edge` command line: parse, call one function, print.

Heavy modules (torch, onnxruntime) are imported inside commands, so `predict` starts fast and
the base install (no torch) runs it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from mnist_edge import __version__
from mnist_edge.errors import MnistEdgeError

app = typer.Typer(
    name="mnist-edge",
    help="Train the reference MNIST notebooks' models, export them to ONNX/TorchScript, verify parity, predict at the edge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

TRAIN_EXTRA = {"torch", "torchvision", "onnx", "onnxscript"}

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with the four MNIST IDX files (.gz or raw). Default: $MNIST_EDGE_DATA, else download into ~/.cache/mnist-edge.",
        file_okay=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register FN as a subcommand whose user errors print one line and exit non-zero, never a traceback."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MnistEdgeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except ModuleNotFoundError as exc:
            if exc.name not in TRAIN_EXTRA:
                raise
            typer.echo(f"error: this command needs {exc.name}: pip install 'mnist-edge[train]'", err=True)
            raise typer.Exit(1) from None

    return app.command()(run)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mnist-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


@command
def models(json_output: JsonFlag = False) -> None:
    """List the architectures: parameters, multiply-accumulates per image, notebook and its accuracy."""
    from mnist_edge.catalog import describe_models

    rows = describe_models()
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':<10} {'params':>10} {'MACs/image':>12} {'notebook':<21} {'notebook acc':>12}  description")
    for r in rows:
        acc = f"{r['reported_accuracy']:.2f}%" if r["reported_accuracy"] is not None else "-"
        typer.echo(f"{r['name']:<10} {r['params']:>10,} {r['macs']:>12,} {r['notebook']:<21} {acc:>12}  {r['description']}")


def main() -> None:
    app()
