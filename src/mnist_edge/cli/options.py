"""Options of the `mnist-edge` commands as typer annotations (the shared ones, and those too long for a signature),
and the choices options take."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mnist_edge.cli.checks import bounded
from mnist_edge.formats import QUANTIZATIONS, export_formats

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with the four MNIST IDX files (.gz or raw). Default: $MNIST_EDGE_DATA, else download into "
        "~/.cache/mnist-edge.",
        file_okay=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AlwaysDigitFlag = Annotated[
    bool, typer.Option("--always-digit", help="Answer a digit for every image, even one the model says is not a digit.")
]
MNIST_TEST_IMAGES = 10_000
Limit = Annotated[
    int | None,
    typer.Option(
        "--limit", callback=bounded(1, MNIST_TEST_IMAGES),
        help="Use the first N MNIST test images only (quick runs). Default: all 10,000.",
    ),
]
TrustTorchScript = Annotated[
    bool,
    typer.Option(
        "--trust-torchscript",
        help="Allow loading a TorchScript file. TorchScript is code: loading one runs the code inside it. Only for "
        "files you trust.",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace files of the same name that are already there.")]


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Schedule(str, Enum):  # recipes.SCHEDULES; a test keeps the two equal
    constant = "constant"
    cosine = "cosine"
    onecycle = "onecycle"


ScheduleOption = Annotated[
    Schedule | None,
    typer.Option(
        "--schedule",
        help="LR schedule: constant (every notebook's), cosine (anneals to zero) or onecycle (warm-up, then cosine). "
        "Default: the recipe's.",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads. Default: $OMP_NUM_THREADS if set, else the usable CPUs the load average leaves free "
        "(at least 1). The same seed gives the same weights only with the same thread count.",
    ),
]
SyntheticFlag = Annotated[
    bool,
    typer.Option(
        "--synthetic", help="Compare on a seeded batch of random pixels, not MNIST: no accuracy, a quick check only."
    ),
]
WideFlag = Annotated[
    bool, typer.Option("--wide", help="Every column (parity, load, p99, speed-up), not only those 80 columns fit.")
]
ExportFormat = Enum("ExportFormat", {name: name for name in (*export_formats(), "all")}, type=str)  # type: ignore[misc]
Quantization = Enum("Quantization", {name: name for name in QUANTIZATIONS}, type=str)  # type: ignore[misc]
FORMAT_HELP = (
    "onnx (the edge format), tflite (LiteRT; needs the tflite extra), torchscript (legacy: deprecated upstream, for "
    "torch users) or all (onnx and torchscript)."
)
QUANTIZE_HELP = (
    "A quantized copy besides the fp32 file (repeatable): static = int8 QDQ calibrated on training digits (the fast "
    "one), dynamic = int8 weights of Linear layers only (skipped, with a note, for models without any)."
)
ExportOut = Annotated[
    Path, typer.Option("--out", help="Folder for the files and its manifest.json (created if needed).", file_okay=False)
]
CalibrationSize = Annotated[
    int,
    typer.Option("--calibration-size", callback=bounded(1, 60_000), help="Training images that calibrate static int8."),
]
MakeDefault = Annotated[
    bool,
    typer.Option(
        "--make-default", help="Make the smallest ONNX file written the default model of the folder's manifest."
    ),
]
MaxAbsDiff = Annotated[
    float | None,
    typer.Option(
        "--max-abs-diff",
        callback=bounded(0),
        help="Largest logit difference allowed. Default: 1e-4 (fp32), unchecked (quantized).",
    ),
]
MinAgreement = Annotated[
    float | None,
    typer.Option(
        "--min-agreement",
        callback=bounded(0, 100),
        help="Top-1 agreement in percent. Default: 100 (fp32), 99.5 (quantized).",
    ),
]
MaxAccuracyDrop = Annotated[
    float | None,
    typer.Option(
        "--max-accuracy-drop",
        callback=bounded(0, 100),
        help="Accuracy points lost. Default: unchecked (fp32), 0.3 (quantized).",
    ),
]

# One command's own options, too long for its signature.
RecipeName = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        help="A named recipe: 'notebook' is the notebook's own (see `mnist-edge models`). Default: the "
        "architecture's default.",
    ),
]
TrainOut = Annotated[
    Path | None,
    typer.Option("--out", help="Checkpoint FILE to write. Default: checkpoints/ARCH.pt (or the --resume file)."),
]
Resume = Annotated[
    Path | None, typer.Option("--resume", help="Continue the training a checkpoint holds.", dir_okay=False)
]
TrainLimit = Annotated[
    int | None,
    typer.Option(
        "--limit", help="Use only the first N training images and the first N test images (quick runs). Default: all."
    ),
]
TrainJsonFlag = Annotated[
    bool, typer.Option("--json", help="Print a JSON summary on stdout at the end; progress goes to stderr.")
]
TrainOverwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing --out file (other than the --resume one).")
]
EvaluatedModel = Annotated[
    Path,
    typer.Argument(help="A training checkpoint (.pt), or an exported .onnx or TorchScript .pt file.", dir_okay=False),
]
ReportDir = Annotated[
    Path | None,
    typer.Option(
        "--report", help="Write confusion_matrix.png, misclassified.png and reliability.png into DIR.", file_okay=False
    ),
]
ImagePaths = Annotated[
    list[str], typer.Argument(help="Image files, folders (every image inside) or glob patterns.", show_default=False)
]
ModelFile = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="ONNX or LiteRT (.tflite) model file. Default: the model shipped with mnist-edge.",
        dir_okay=False,
    ),
]
RawFlag = Annotated[
    bool, typer.Option("--raw", help="Images are already MNIST-form 28x28 white-on-black: skip preprocessing.")
]
SavePreprocessed = Annotated[
    Path | None,
    typer.Option("--save-preprocessed", help="Write each 28x28 image the model saw into this folder.", file_okay=False),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        callback=bounded(1, 64),
        help="Processes that preprocess and run the model. Default: one per CPU, less one.",
    ),
]
MaxBody = Annotated[
    int,
    typer.Option(
        "--max-body", callback=bounded(1, 2**40), help="Largest request body in bytes; bigger ones get 413 unread."
    ),
]
MaxFiles = Annotated[int, typer.Option("--max-files", callback=bounded(1, 10_000), help="Most images in one request.")]
RequestTimeout = Annotated[
    float, typer.Option("--timeout", callback=bounded(0.1, 3600), help="Seconds a client has to send a whole request.")
]
MaxConnections = Annotated[
    int,
    typer.Option("--max-connections", callback=bounded(1, 100_000), help="Connections served at once; more get 503."),
]
ExportCheckpoint = Annotated[
    Path, typer.Argument(help="Checkpoint written by `mnist-edge train`.", dir_okay=False, show_default=False)
]
ExportFormats = Annotated[
    list[ExportFormat] | None, typer.Option("--format", help=FORMAT_HELP + " Repeatable. Default: onnx.")
]
ExportQuantizations = Annotated[
    list[Quantization] | None, typer.Option("--quantize", help=QUANTIZE_HELP + " The fp32 file is always written.")
]
Force = Annotated[
    bool, typer.Option("--force", help="Replace files of the same name already in --out (listed as replaced).")
]
ExportJsonFlag = Annotated[
    bool, typer.Option("--json", help="Print a JSON summary of what was written, refused and replaced.")
]
Artifact = Annotated[
    Path, typer.Argument(help="Exported .onnx or TorchScript .pt file.", dir_okay=False, show_default=False)
]
SourceCheckpoint = Annotated[
    Path, typer.Option("--checkpoint", help="The checkpoint it was exported from.", dir_okay=False)
]
BenchmarkCheckpoint = Annotated[
    Path | None,
    typer.Argument(
        help="Checkpoint to benchmark. Default: the shipped model's checkpoint.", dir_okay=False, show_default=False
    ),
]
BenchmarkArch = Annotated[
    str | None,
    typer.Option(
        "--arch", help="Benchmark this architecture's trained checkpoint (shipped, else checkpoints/ARCH.pt)."
    ),
]
BenchmarkFormats = Annotated[
    list[ExportFormat] | None,
    typer.Option(
        "--format",
        help=FORMAT_HELP + " Repeatable, as for `export`. PyTorch eager is always measured: it is the reference.",
    ),
]
BenchmarkQuantizations = Annotated[
    list[Quantization] | None, typer.Option("--quantize", help=QUANTIZE_HELP + " As for `export`.")
]
Runs = Annotated[
    int, typer.Option("--runs", callback=bounded(10, 1_000_000), help="Timed batch-1 runs per format (p50/p99).")
]
MarkdownFile = Annotated[
    Path | None,
    typer.Option("--markdown", help="Also write the table as Markdown to FILE (for the README).", dir_okay=False),
]


def tolerance_overrides(
    max_abs_diff: float | None, min_agreement: float | None, max_accuracy_drop: float | None
) -> dict[str, float]:
    """The parity tolerances given on the command line (verify.Tolerances field names)."""
    given = {"max_abs_diff": max_abs_diff, "min_agreement": min_agreement, "max_accuracy_drop": max_accuracy_drop}
    return {name: value for name, value in given.items() if value is not None}
