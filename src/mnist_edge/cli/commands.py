"""The `mnist-edge` command line: parse, call one function, print.

Heavy modules (torch, onnxruntime) are imported inside commands, so `predict` starts fast and
the base install (no torch) runs it.
"""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Annotated

import typer

from mnist_edge import __version__
from mnist_edge.cli.options import (
    AlwaysDigitFlag, Artifact, BenchmarkArch, BenchmarkCheckpoint, BenchmarkFormats, BenchmarkQuantizations,
    CalibrationSize, DataDir, Device, EvaluatedModel, ExportCheckpoint, ExportFormat, ExportFormats, ExportJsonFlag,
    ExportOut, ExportQuantizations, Force, ImagePaths, JsonFlag, Limit, MakeDefault, MarkdownFile, MaxAbsDiff,
    MaxAccuracyDrop, MaxBody, MaxConnections, MaxFiles, MinAgreement, ModelFile, Overwrite, RawFlag, RecipeName,
    ReportDir, RequestTimeout, Resume, Runs, SavePreprocessed, ScheduleOption, SourceCheckpoint, SyntheticFlag, Threads,
    TrainJsonFlag, TrainLimit, TrainOut, TrainOverwrite, TrustTorchScript, WideFlag, Workers, tolerance_overrides,
)
from mnist_edge.cli.runtime import UsageError, app, command
from mnist_edge.cli.checks import bounded
from mnist_edge.errors import MnistEdgeError, one_line, printable, valid_unicode
from mnist_edge.formats import CALIBRATION_SIZE, DEFAULT_EXPORT_DIR


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
    from mnist_edge.train.catalog import describe_models

    rows = describe_models()
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':<10} {'params':>10} {'MACs/image':>12}  {'notebook':<27} {'its acc':>7}  description")
    for r in rows:
        acc = f"{r['reported_accuracy']:.2f}%" if r["reported_accuracy"] is not None else "-"
        notebook = r["notebook_title"]
        typer.echo(f"{r['name']:<10} {r['params']:>10,} {r['macs']:>12,}  {notebook:<27} {acc:>7}  {r['description']}")


@command
def train(
    ctx: typer.Context,
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture (see `mnist-edge models`).")] = None,
    recipe: RecipeName = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Default: the recipe's.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Default: the recipe's.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate. Default: the recipe's.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="0 to 2**32-1. Default: the recipe's.")] = None,
    device: Annotated[Device, typer.Option("--device", help="auto: CUDA, else MPS, else the CPU.")] = Device.auto,
    threads: Threads = None,
    data_dir: DataDir = None,
    out: TrainOut = None,
    no_augment: Annotated[bool, typer.Option("--no-augment", help="Turn off the recipe's augmentation.")] = False,
    schedule: ScheduleOption = None,
    resume: Resume = None,
    limit: TrainLimit = None,
    json_output: TrainJsonFlag = False,
    overwrite: TrainOverwrite = False,
) -> None:
    """Train an architecture with its notebook's recipe; writes a checkpoint after every epoch and on Ctrl-C."""
    from mnist_edge.train.openmp import spin_briefly

    spin_briefly()  # before the import below loads torch, and OpenMP with it
    from mnist_edge.train.loop import TrainConfig, train as run_training

    try:
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
    except MnistEdgeError as exc:  # TrainConfig checks every flag's range: a bad one is a usage error, as elsewhere
        raise UsageError(str(exc), ctx) from None
    result = run_training(config, log=functools.partial(typer.echo, err=json_output))
    if json_output:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    if result.interrupted:
        raise typer.Exit(130)


@command
def evaluate(
    model: EvaluatedModel,
    data_dir: DataDir = None,
    limit: Limit = None,
    json_output: JsonFlag = False,
    report: ReportDir = None,
    trust_torchscript: TrustTorchScript = False,
    overwrite: Overwrite = False,
) -> None:
    """Accuracy and per-class accuracy of MODEL on the 10,000 MNIST test digits."""
    from mnist_edge.atomic import check_destinations
    from mnist_edge.measure.evaluate import format_evaluation
    from mnist_edge.measure.report import REPORT_FILES, evaluate_file

    if report is not None:
        check_destinations([report / name for name in REPORT_FILES], overwrite)
    arch, result, written = evaluate_file(model, data_dir, limit, report, trust_torchscript)
    if json_output:
        typer.echo(
            json.dumps(
                {"model": str(model), "arch": arch, **result.as_dict(), "report": list(map(str, written))}, indent=2
            )
        )
        return
    typer.echo(f"{model} ({arch}): " + format_evaluation(result))
    for path, shows in written.items():
        typer.echo(f"wrote {path}: {shows}")


@command
def predict(
    paths: ImagePaths,
    model: ModelFile = None,
    top: Annotated[int, typer.Option("--top", min=1, max=10, help="How many most likely digits to show.")] = 3,
    json_output: JsonFlag = False,
    raw: RawFlag = False,
    save_preprocessed: SavePreprocessed = None,
    always_digit: AlwaysDigitFlag = False,
) -> None:
    """Predict the digit in each image: photos, scans or drawings, preprocessed the way MNIST was made.
    An image the model says is no digit at all is answered "not a digit" (exit status 0)."""
    from mnist_edge.edge.manifest import default_model_path
    from mnist_edge.edge.models import open_model
    from mnist_edge.edge.predict import Failure, predict_paths

    model_path = model or default_model_path()
    results = predict_paths(
        open_model(model_path), paths, top=top, raw=raw, save_dir=save_preprocessed,
        log=lambda note: typer.echo(printable(note), err=True), refuse=not always_digit,
    )
    if not json_output:
        # which model answered: the shipped default changes with releases
        typer.echo(f"model: {printable(str(model_path))}")
    rows, failed = [], 0
    with contextlib.closing(results):  # an early end (`| head -1`) stops its worker processes now, not in Python's exit
        for result in results:
            if isinstance(result, Failure):
                failed += 1
                typer.echo(f"error: {one_line(result.error)}", err=True)
            if json_output:  # names that are not UTF-8 as \xNN escapes: strict JSON parsers refuse lone surrogates
                rows.append({k: valid_unicode(v) if isinstance(v, str) else v for k, v in result.as_dict().items()})
            elif not isinstance(result, Failure):
                typer.echo(result.line(printable(result.file)))  # one line per image, whatever its name
    if json_output:  # every input has an entry, in order: a prediction or its error; never a bare NaN
        typer.echo(json.dumps(rows, indent=2, allow_nan=False))
    if failed:
        raise typer.Exit(1)


@command
def serve(
    model: ModelFile = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on. 0.0.0.0 opens it to every network this machine is on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", callback=bounded(0, 65535), help="TCP port (0: any free one).")] = 8000,
    workers: Workers = None,
    max_body: MaxBody = 10 * 1024 * 1024,
    max_files: MaxFiles = 64,
    timeout: RequestTimeout = 15.0,
    max_connections: MaxConnections = 128,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    always_digit: AlwaysDigitFlag = False,
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
        always_digit=always_digit,
    )
    run_server(config, echo=typer.echo)


@command
def export(
    checkpoint: ExportCheckpoint,
    fmt: ExportFormats = None,
    quantize: ExportQuantizations = None,
    out: ExportOut = DEFAULT_EXPORT_DIR,
    data_dir: DataDir = None,
    limit: Limit = None,
    calibration_size: CalibrationSize = CALIBRATION_SIZE,
    make_default: MakeDefault = False,
    force: Force = False,
    max_abs_diff: MaxAbsDiff = None,
    min_agreement: MinAgreement = None,
    max_accuracy_drop: MaxAccuracyDrop = None,
    json_output: ExportJsonFlag = False,
) -> None:
    """Export a checkpoint to ONNX, LiteRT (.tflite) and/or TorchScript; every file must pass the parity gate
    (see `verify`), else none is written. Existing files are replaced only with --force."""
    from mnist_edge.export.provenance import export_command
    from mnist_edge.export.publish import export_checkpoint

    formats = [f.value for f in fmt or [ExportFormat("onnx")]]
    quantizations = [q.value for q in quantize or []]
    tolerances = tolerance_overrides(max_abs_diff, min_agreement, max_accuracy_drop)
    report = export_checkpoint(
        checkpoint,
        out,
        formats,
        quantizations,
        data_dir=data_dir,
        limit=limit,
        calibration_size=calibration_size,
        tolerance_overrides=tolerances,
        command=export_command(checkpoint, out, data_dir, formats, quantizations, limit=limit,
                               calibration_size=calibration_size, tolerances=tolerances, make_default=make_default),
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
            verdict = (
                ("ok" if report.published else "passed") if r.passed else "REFUSED: " + "; ".join(r.parity.failures)
            )
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
    artifact: Artifact,
    checkpoint: SourceCheckpoint,
    data_dir: DataDir = None,
    limit: Limit = None,
    max_abs_diff: MaxAbsDiff = None,
    min_agreement: MinAgreement = None,
    max_accuracy_drop: MaxAccuracyDrop = None,
    json_output: JsonFlag = False,
    trust_torchscript: TrustTorchScript = False,
    synthetic: SyntheticFlag = False,
) -> None:
    """Check that an exported file computes what the checkpoint's PyTorch model computes, on the MNIST test set."""
    from mnist_edge.export.verify import verify_artifact

    if synthetic and data_dir is not None:
        raise MnistEdgeError("pass --data-dir or --synthetic, not both")
    overrides = tolerance_overrides(max_abs_diff, min_agreement, max_accuracy_drop)
    parity = verify_artifact(
        artifact, checkpoint, data_dir, limit, overrides, trust_torchscript=trust_torchscript, synthetic=synthetic
    )
    if json_output:
        fields = {"file": str(artifact), "passed": parity.passed, "on_mnist": parity.on_mnist, **parity.as_dict()}
        typer.echo(json.dumps(fields, indent=2))
    else:
        typer.echo(f"{artifact}: {parity.summary()}")
        verdict = "parity: ok" + ("" if parity.on_mnist else " on a synthetic batch only, NOT checked on MNIST")
        typer.echo(verdict if parity.passed else "parity FAILED: " + "; ".join(parity.failures))
    if not parity.passed:
        raise typer.Exit(1)


@command
def benchmark(
    checkpoint: BenchmarkCheckpoint = None,
    arch: BenchmarkArch = None,
    fmt: BenchmarkFormats = None,
    quantize: BenchmarkQuantizations = None,
    data_dir: DataDir = None,
    limit: Limit = None,
    runs: Runs = 2000,
    json_output: JsonFlag = False,
    markdown: MarkdownFile = None,
    overwrite: Overwrite = False,
    wide: WideFlag = False,
) -> None:
    """Size, accuracy, parity, load time, latency and throughput of every format of a checkpoint, side by side.

    Without --format/--quantize: TorchScript fp32 and ONNX fp32, dynamic int8 and static int8. With either, the
    files `export` would write with the same flags (--format defaults to all here)."""
    from mnist_edge.atomic import check_destinations, write_text
    from mnist_edge.measure.benchmark import Settings, default_checkpoint, run_benchmark
    from mnist_edge.formats import variants
    from mnist_edge.measure.benchmark_table import markdown as to_markdown, print_table

    if checkpoint is not None and arch is not None:
        raise MnistEdgeError("pass CHECKPOINT or --arch, not both")
    if markdown is not None:
        check_destinations([markdown], overwrite)
    if arch is not None:
        from mnist_edge.train.architectures import arch_info

        arch_info(arch)  # an unknown name is a clear error listing the known ones
    path = checkpoint or default_checkpoint(arch)
    log = (lambda _: None) if json_output else functools.partial(typer.echo, err=True)
    chosen = (
        None
        if fmt is None and quantize is None
        else variants([f.value for f in fmt or [ExportFormat("all")]], [q.value for q in quantize or []])
    )
    result = run_benchmark(path, chosen, data_dir, Settings(runs=runs, limit=limit), log)
    if json_output:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        print_table(result, wide=wide)
    if markdown is not None:  # after printing, so an unwritable FILE never costs the measurements
        try:
            write_text(markdown, to_markdown(result))
        except OSError as exc:
            raise MnistEdgeError(f"{markdown}: cannot write the Markdown table ({exc.strerror or exc})") from None
        typer.echo(f"wrote {markdown}", err=True)
