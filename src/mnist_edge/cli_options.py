"""Options of the `mnist-edge` commands as typer annotations (the shared ones, and those too long for a signature),
and the choices options take."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mnist_edge.cli_types import bounded
from mnist_edge.formats import QUANTIZATIONS, export_formats

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with the four MNIST IDX files (.gz or raw). Default: $MNIST_EDGE_DATA, else download into ~/.cache/mnist-edge.",
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
        help="LR schedule: constant (every notebook's), cosine (anneals to zero) or onecycle (warm-up, then cosine). Default: the recipe's.",
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
    typer.Option("--synthetic", help="Compare on a seeded batch of random pixels, not MNIST: no accuracy, a quick check only."),
]
WideFlag = Annotated[bool, typer.Option("--wide", help="Every column (parity, load, p99, speed-up), not only those 80 columns fit.")]
ExportFormat = Enum("ExportFormat", {name: name for name in (*export_formats(), "all")}, type=str)  # type: ignore[misc]
Quantization = Enum("Quantization", {name: name for name in QUANTIZATIONS}, type=str)  # type: ignore[misc]
FORMAT_HELP = (
    "onnx (the edge format), tflite (LiteRT; needs the tflite extra), torchscript (legacy: deprecated upstream, for torch "
    "users) or all (onnx and torchscript)."
)
QUANTIZE_HELP = (
    "A quantized copy besides the fp32 file (repeatable): static = int8 QDQ calibrated on training digits (the fast one), "
    "dynamic = int8 weights of Linear layers only (skipped, with a note, for models without any)."
)
ExportOut = Annotated[
    Path, typer.Option("--out", help="Folder for the files and its manifest.json (created if needed).", file_okay=False)
]
CalibrationSize = Annotated[
    int, typer.Option("--calibration-size", callback=bounded(1, 60_000), help="Training images that calibrate static int8.")
]
MakeDefault = Annotated[
    bool, typer.Option("--make-default", help="Make the smallest ONNX file written the default model of the folder's manifest.")
]
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


def tolerance_overrides(max_abs_diff: float | None, min_agreement: float | None, max_accuracy_drop: float | None) -> dict[str, float]:
    """The parity tolerances given on the command line (verify.Tolerances field names)."""
    given = {"max_abs_diff": max_abs_diff, "min_agreement": min_agreement, "max_accuracy_drop": max_accuracy_drop}
    return {name: value for name, value in given.items() if value is not None}
