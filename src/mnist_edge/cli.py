"""The `mnist-edge` command line: parse, call one function, print.

Heavy modules (torch, onnxruntime) are imported inside commands, so `predict` starts fast and
the base install (no torch) runs it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

try:  # recent typer releases carry their own copy of click; older ones use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:
    from click.exceptions import ClickException, UsageError

from mnist_edge import __version__
from mnist_edge.cli_types import bounded
from mnist_edge.errors import MnistEdgeError, debugging, describe, one_line, printable
from mnist_edge.formats import DEFAULT_EXPORT_DIR, EXPORT_FORMATS, QUANTIZATIONS

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
        return [self.options_metavar or "[OPTIONS]", *(p.metavar if p.required else f"[{p.metavar}]" for p in arguments)]


class _Group(TyperGroup):
    """The command group: a usage error (unknown option, missing argument, bad value) is one `error:` line and a
    hint on stderr with exit status 2, not a box drawn by rich."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
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
    """Click's message as the rest of an `error:` line: one line, lower-case start ("No such option" -> "no such ...")."""
    text = one_line(message)
    return text[0].lower() + text[1:] if len(text) > 1 and text[1].islower() else text


app = typer.Typer(
    name="mnist-edge",
    help="Train the reference MNIST notebooks' models, export them to ONNX/TorchScript, verify parity, predict at the edge.",
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

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with the four MNIST IDX files (.gz or raw). Default: $MNIST_EDGE_DATA, else download into ~/.cache/mnist-edge.",
        file_okay=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
MNIST_TEST_IMAGES = 10_000
Limit = Annotated[
    int | None,
    typer.Option("--limit", callback=bounded(1, MNIST_TEST_IMAGES), help="Use the first N MNIST test images only (quick runs). Default: all 10,000."),
]
TrustTorchScript = Annotated[
    bool,
    typer.Option(
        "--trust-torchscript",
        help="Allow loading a TorchScript file. TorchScript is code: loading one runs the code inside it. Only for files you trust.",
    ),
]


Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace files of the same name that are already there.")]


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
        message = f"this command needs {exc.name}: pip install 'mnist-edge[{extra}]'"
    elif debugging():
        raise exc
    elif isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        code = f" ({errno_name})" if (errno_name := _errno_name(exc.errno)) else ""
        message = f"{where}{exc.strerror or describe(exc)}{code}"
    elif isinstance(exc, MemoryError):
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

    return isinstance(exc, ImportError) or any(frame.f_code.co_name == "<module>" for frame, _ in traceback.walk_tb(exc.__traceback__))


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


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Schedule(str, Enum):  # architectures.SCHEDULES; a test keeps the two equal
    constant = "constant"
    cosine = "cosine"
    onecycle = "onecycle"


@command
def train(
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture (see `mnist-edge models`).")] = None,
    recipe: Annotated[
        str | None, typer.Option("--recipe", help="A named recipe: 'notebook' is the notebook's own (see `mnist-edge models`). Default: the architecture's default.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Default: the recipe's.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Default: the recipe's.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate. Default: the recipe's.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="0 to 2**32-1. Default: the recipe's.")] = None,
    device: Annotated[Device, typer.Option("--device", help="auto: CUDA, else MPS, else the CPU.")] = Device.auto,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="CPU threads. Default: $OMP_NUM_THREADS if set, else the usable CPUs the load average leaves free "
            "(at least 1). The same seed gives the same weights only with the same thread count.",
        ),
    ] = None,
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Checkpoint FILE to write. Default: checkpoints/ARCH.pt (or the --resume file).")
    ] = None,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Turn off the recipe's augmentation.")] = False,
    schedule: Annotated[
        Schedule | None,
        typer.Option(
            "--schedule",
            help="LR schedule: constant (every notebook's), cosine (anneals to zero) or onecycle (warm-up, then cosine). Default: the recipe's.",
        ),
    ] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the training a checkpoint holds.", dir_okay=False)] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Use only the first N training images and the first N test images (quick runs). Default: all.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end; progress goes to stderr.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file (other than the --resume one).")] = False,
) -> None:
    """Train an architecture with its notebook's recipe; writes a checkpoint after every epoch and on Ctrl-C."""
    import os

    # OpenMP threads that find no work spin only briefly (about 10k polls, microseconds), then sleep: a long spin
    # takes the cores other processes (and our own other threads) need on a shared machine, and sleeping at once
    # (OMP_WAIT_POLICY=PASSIVE) costs a wake-up between every two small ops of a step. Set before torch loads
    # OpenMP; a user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    from mnist_edge.train import TrainConfig, train as run_training

    config = TrainConfig(
        arch=arch,
        recipe=recipe,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        augment=False if no_augment else None,
        schedule=schedule.value if schedule else None,
        device=device.value,
        data_dir=data_dir,
        out=out,
        resume=resume,
        limit=limit,
        threads=threads,
        overwrite=overwrite,
    )
    result = run_training(config, log=functools.partial(typer.echo, err=json_output))
    if json_output:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    if result.interrupted:
        raise typer.Exit(130)


@command
def evaluate(
    model: Annotated[Path, typer.Argument(help="A training checkpoint (.pt), or an exported .onnx or TorchScript .pt file.", dir_okay=False)],
    data_dir: DataDir = None,
    limit: Limit = None,
    json_output: JsonFlag = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write confusion_matrix.png and misclassified.png into DIR.", file_okay=False),
    ] = None,
    trust_torchscript: TrustTorchScript = False,
    overwrite: Overwrite = False,
) -> None:
    """Accuracy and per-class accuracy of MODEL on the 10,000 MNIST test digits."""
    from mnist_edge.artifacts import open_artifact
    from mnist_edge.atomic import refuse_existing
    from mnist_edge.report import REPORT_FILES

    if report is not None and not overwrite:
        refuse_existing([report / name for name in REPORT_FILES])
    from mnist_edge.data import load_mnist
    from mnist_edge.evaluate import evaluate as run_evaluation, format_evaluation

    opened = open_artifact(model, trust_torchscript=trust_torchscript)
    logits_fn, meta = opened.logits_fn, {"arch": "unknown architecture", **opened.metadata}
    data = load_mnist(data_dir)
    images, labels = data.test_images[:limit], data.test_labels[:limit]
    result = run_evaluation(logits_fn, images, labels)
    written: dict[Path, str] = {}
    if report is not None:
        from mnist_edge.report import write_report

        written = write_report(result, images, labels, report)
    if json_output:
        typer.echo(json.dumps({"model": str(model), "arch": meta["arch"], **result.as_dict(), "report": list(map(str, written))}, indent=2))
        return
    typer.echo(f"{model} ({meta['arch']}): " + format_evaluation(result))
    for path, shows in written.items():
        typer.echo(f"wrote {path}: {shows}")


@command
def predict(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders (every image inside) or glob patterns.", show_default=False)],
    model: Annotated[
        Path | None, typer.Option("--model", help="ONNX or LiteRT (.tflite) model file. Default: the model shipped with mnist-edge.", dir_okay=False)
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, max=10, help="How many most likely digits to show.")] = 3,
    json_output: JsonFlag = False,
    raw: Annotated[bool, typer.Option("--raw", help="Images are already MNIST-form 28x28 white-on-black: skip preprocessing.")] = False,
    save_preprocessed: Annotated[
        Path | None, typer.Option("--save-preprocessed", help="Write each 28x28 image the model saw into this folder.", file_okay=False)
    ] = None,
) -> None:
    """Predict the digit in each image: photos, scans or drawings, preprocessed the way MNIST was made."""
    from mnist_edge.edge.manifest import default_model_path
    from mnist_edge.edge.models import open_model
    from mnist_edge.edge.predict import Failure, predict_paths

    model_path = model or default_model_path()
    results = predict_paths(
        open_model(model_path), paths, top=top, raw=raw, save_dir=save_preprocessed, log=lambda note: typer.echo(printable(note), err=True)
    )
    if not json_output:
        typer.echo(f"model: {printable(str(model_path))}")  # which model answered: the shipped default changes with releases
    rows, failed = [], 0
    with contextlib.closing(results):  # an early end (`| head -1`) stops its worker processes now, not in Python's exit
        for result in results:
            if isinstance(result, Failure):
                failed += 1
                typer.echo(f"error: {one_line(result.error)}", err=True)
            if json_output:
                rows.append(result.as_dict())
            elif not isinstance(result, Failure):
                ranked = ", ".join(f"{digit} {p:.1%}" for digit, p in result.top[1:])
                line = f"{printable(result.file)}: {result.digit} ({result.probability:.1%})"  # one line per image, whatever its name
                typer.echo(line + (f"  then {ranked}" if ranked else ""))
    if json_output:  # every input has an entry, in order: a prediction or its error; never a bare NaN
        typer.echo(json.dumps(rows, indent=2, allow_nan=False))
    if failed:
        raise typer.Exit(1)


@command
def serve(
    model: Annotated[
        Path | None, typer.Option("--model", help="ONNX or LiteRT (.tflite) model file. Default: the model shipped with mnist-edge.", dir_okay=False)
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on. 0.0.0.0 opens it to every network this machine is on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", callback=bounded(0, 65535), help="TCP port (0: any free one).")] = 8000,
    workers: Annotated[
        int | None, typer.Option("--workers", callback=bounded(1, 64), help="Processes that preprocess and run the model. Default: one per CPU, less one.")
    ] = None,
    max_body: Annotated[
        int, typer.Option("--max-body", callback=bounded(1, 2**40), help="Largest request body in bytes; bigger ones get 413 unread.")
    ] = 10 * 1024 * 1024,
    max_files: Annotated[int, typer.Option("--max-files", callback=bounded(1, 10_000), help="Most images in one request.")] = 64,
    timeout: Annotated[
        float, typer.Option("--timeout", callback=bounded(0.1, 3600), help="Seconds a client has to send a whole request.")
    ] = 15.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", callback=bounded(1, 100_000), help="Connections served at once; more get 503.")
    ] = 128,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
) -> None:
    """Keep the model loaded and serve predictions over HTTP, with a drawing page at /. Needs the serve extra."""
    from mnist_edge.edge.manifest import default_model_path
    from mnist_edge.edge.serve.engine import default_workers
    from mnist_edge.edge.serve.server import ServeConfig, serve as run_server

    config = ServeConfig(
        model=model or default_model_path(),
        host=host,
        port=port,
        workers=workers or default_workers(),
        max_body=max_body,
        max_files=max_files,
        request_timeout=timeout,
        max_connections=max_connections,
        access_log=access_log,
    )
    run_server(config, echo=typer.echo)


ExportFormat = Enum("ExportFormat", {name: name for name in (*EXPORT_FORMATS, "all")}, type=str)  # type: ignore[misc]
Quantization = Enum("Quantization", {name: name for name in QUANTIZATIONS}, type=str)  # type: ignore[misc]
FORMAT_HELP = (
    "onnx (the edge format), tflite (LiteRT; needs the tflite extra), torchscript (legacy: deprecated upstream, for torch "
    "users) or all (onnx and torchscript)."
)
QUANTIZE_HELP = (
    "A quantized copy besides the fp32 file (repeatable): static = int8 QDQ calibrated on training digits (the fast one), "
    "dynamic = int8 weights of Linear layers only (skipped, with a note, for models without any)."
)
MaxAbsDiff = Annotated[
    float | None,
    typer.Option("--max-abs-diff", callback=bounded(0), help="Largest logit difference allowed. Default: 1e-4 (fp32), unchecked (quantized)."),
]
MinAgreement = Annotated[
    float | None,
    typer.Option("--min-agreement", callback=bounded(0, 100), help="Top-1 agreement in percent. Default: 100 (fp32), 99.5 (quantized)."),
]
MaxAccuracyDrop = Annotated[
    float | None,
    typer.Option("--max-accuracy-drop", callback=bounded(0, 100), help="Accuracy points lost. Default: unchecked (fp32), 0.3 (quantized)."),
]


def _overrides(max_abs_diff: float | None, min_agreement: float | None, max_accuracy_drop: float | None) -> dict[str, float]:
    """The parity tolerances given on the command line (verify.Tolerances field names)."""
    given = {"max_abs_diff": max_abs_diff, "min_agreement": min_agreement, "max_accuracy_drop": max_accuracy_drop}
    return {name: value for name, value in given.items() if value is not None}


def _portable(path: Path) -> str:
    """PATH as a manifest may record it: relative as given, an absolute path relative to the working folder
    when inside it, else only its name (a machine's absolute paths mean nothing on another)."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return path.name


def _export_command(checkpoint: Path, out: Path, data_dir: Path | None, options: list[str]) -> str:
    """The command that made an export, as the manifest records it: no absolute path of this machine. An
    absolute --data-dir is written as $MNIST_EDGE_DATA, the variable that points any machine at its copy."""
    import shlex

    command = shlex.join(["mnist-edge", "export", _portable(checkpoint), *options, "--out", _portable(out)])
    if data_dir is not None:
        command += " --data-dir " + ("$MNIST_EDGE_DATA" if data_dir.is_absolute() else shlex.quote(str(data_dir)))
    return command


@command
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `mnist-edge train`.", dir_okay=False, show_default=False)],
    fmt: Annotated[list[ExportFormat] | None, typer.Option("--format", help=FORMAT_HELP + " Repeatable. Default: onnx.")] = None,
    quantize: Annotated[list[Quantization] | None, typer.Option("--quantize", help=QUANTIZE_HELP + " The fp32 file is always written.")] = None,
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for the files and its manifest.json (created if needed).", file_okay=False),
    ] = DEFAULT_EXPORT_DIR,
    data_dir: DataDir = None,
    limit: Limit = None,
    calibration_size: Annotated[
        int, typer.Option("--calibration-size", callback=bounded(1, 60_000), help="Training images that calibrate static int8.")
    ] = 1000,
    make_default: Annotated[
        bool, typer.Option("--make-default", help="Make the smallest ONNX file written the default model of the folder's manifest.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace files of the same name already in --out (listed as replaced).")] = False,
    max_abs_diff: MaxAbsDiff = None,
    min_agreement: MinAgreement = None,
    max_accuracy_drop: MaxAccuracyDrop = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary of what was written, refused and replaced.")] = False,
) -> None:
    """Export a checkpoint to ONNX, LiteRT (.tflite) and/or TorchScript; every file must pass the parity gate (see `verify`),
    else none is written. Existing files are replaced only with --force."""
    from mnist_edge.export import export_checkpoint

    formats = [f.value for f in fmt or [ExportFormat.onnx]]
    quantizations = [q.value for q in quantize or []]
    options = [*(a for f in formats for a in ("--format", f)), *(a for q in quantizations for a in ("--quantize", q))]
    given = {"--limit": limit, "--calibration-size": calibration_size if calibration_size != 1000 else None,
             "--max-abs-diff": max_abs_diff, "--min-agreement": min_agreement, "--max-accuracy-drop": max_accuracy_drop}
    options += [a for flag, value in given.items() if value is not None for a in (flag, f"{value:g}")]
    options += ["--make-default"] if make_default else []
    report = export_checkpoint(
        checkpoint,
        out,
        formats,
        quantizations,
        data_dir=data_dir,
        limit=limit,
        calibration_size=calibration_size,
        tolerance_overrides=_overrides(max_abs_diff, min_agreement, max_accuracy_drop),
        command=_export_command(checkpoint, out, data_dir, options),
        make_default=make_default,
        force=force,
    )
    if json_output:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(f"parity on {len(report.data.images)} images ({report.data.source})")
        for r in report.results:
            if r.parity is None:
                typer.echo(f"{r.file}: {r.note}")
                continue
            size = f"{r.size_bytes:,} bytes ({r.size_bytes / r.fp32_size_bytes:.2f}x fp32)"
            verdict = ("ok" if report.published else "passed") if r.passed else "REFUSED: " + "; ".join(r.parity.failures)
            typer.echo(f"{out / r.file}: {size}; {r.parity.summary()}; {verdict}")
        for name in report.replaced:
            typer.echo(f"replaced {out / name}")
        if report.published and make_default:
            typer.echo(f"default model of {out / 'manifest.json'}: {report.default}")
    if not report.published:
        typer.echo(f"error: a file failed the parity gate: nothing was written to {out}", err=True)
        raise typer.Exit(1)


@command
def verify(
    artifact: Annotated[Path, typer.Argument(help="Exported .onnx or TorchScript .pt file.", dir_okay=False, show_default=False)],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="The checkpoint it was exported from.", dir_okay=False)],
    data_dir: DataDir = None,
    limit: Limit = None,
    max_abs_diff: MaxAbsDiff = None,
    min_agreement: MinAgreement = None,
    max_accuracy_drop: MaxAccuracyDrop = None,
    json_output: JsonFlag = False,
    trust_torchscript: TrustTorchScript = False,
) -> None:
    """Check that an exported file computes what the checkpoint's PyTorch model computes, on the MNIST test set."""
    from mnist_edge.verify import verify_artifact

    overrides = _overrides(max_abs_diff, min_agreement, max_accuracy_drop)
    parity = verify_artifact(artifact, checkpoint, data_dir, limit, overrides, trust_torchscript=trust_torchscript)
    if json_output:
        typer.echo(json.dumps({"file": str(artifact), "passed": parity.passed, **parity.as_dict()}, indent=2))
    else:
        typer.echo(f"{artifact}: {parity.summary()}")
        typer.echo("parity: ok" if parity.passed else "parity FAILED: " + "; ".join(parity.failures))
    if not parity.passed:
        raise typer.Exit(1)


@command
def benchmark(
    checkpoint: Annotated[
        Path | None, typer.Argument(help="Checkpoint to benchmark. Default: the shipped model's checkpoint.", dir_okay=False, show_default=False)
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="Benchmark this architecture's trained checkpoint (shipped, else checkpoints/ARCH.pt).")
    ] = None,
    fmt: Annotated[
        list[ExportFormat] | None,
        typer.Option("--format", help=FORMAT_HELP + " Repeatable, as for `export`. PyTorch eager is always measured: it is the reference."),
    ] = None,
    quantize: Annotated[list[Quantization] | None, typer.Option("--quantize", help=QUANTIZE_HELP + " As for `export`.")] = None,
    data_dir: DataDir = None,
    limit: Limit = None,
    runs: Annotated[int, typer.Option("--runs", callback=bounded(10, 1_000_000), help="Timed batch-1 runs per format (p50/p99).")] = 2000,
    json_output: JsonFlag = False,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the table as Markdown to FILE (for the README).", dir_okay=False)
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Size, accuracy, parity, load time, latency and throughput of every format of a checkpoint, side by side.

    Without --format/--quantize: TorchScript fp32 and ONNX fp32, dynamic int8 and static int8. With either, the
    files `export` would write with the same flags (--format defaults to all here)."""
    from mnist_edge.atomic import refuse_existing, write_text
    from mnist_edge.benchmark import Settings, default_checkpoint, run_benchmark
    from mnist_edge.formats import variants
    from mnist_edge.benchmark_table import markdown as to_markdown, print_table

    if checkpoint is not None and arch is not None:
        raise MnistEdgeError("pass CHECKPOINT or --arch, not both")
    if markdown is not None and not overwrite:
        refuse_existing([markdown])
    if arch is not None:
        from mnist_edge.architectures import arch_info

        arch_info(arch)  # an unknown name is a clear error listing the known ones
    path = checkpoint or default_checkpoint(arch)
    log = (lambda _: None) if json_output else functools.partial(typer.echo, err=True)
    chosen = None if fmt is None and quantize is None else variants([f.value for f in fmt or [ExportFormat.all]], [q.value for q in quantize or []])
    result = run_benchmark(path, chosen, data_dir, Settings(runs=runs, limit=limit), log)
    if json_output:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        print_table(result)
    if markdown is not None:  # after printing, so an unwritable FILE never costs the measurements
        try:
            write_text(markdown, to_markdown(result))
        except OSError as exc:
            raise MnistEdgeError(f"{markdown}: cannot write the Markdown table ({exc.strerror or exc})") from None
        typer.echo(f"wrote {markdown}", err=True)


def main() -> None:
    if sys.stdout is None:  # started with its output closed (`cmd >&-`): click would drop every line and exit 0
        if sys.stderr is not None:
            print("error: standard output is closed: nowhere to print the results", file=sys.stderr)
        sys.exit(1)
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
