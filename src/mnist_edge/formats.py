"""One vocabulary for model files: the formats and quantizations export writes, the manifest records and the
benchmark measures, their file names and their display names. Torch-free: the edge package's manifest uses it.

FORMATS is the one table of formats: a new format is one entry here and one writer module (export/writers.py),
plus its edge model class when a runtime of its own runs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_edge.errors import MnistEdgeError

if TYPE_CHECKING:
    from mnist_edge.edge.models import EdgeModel

ONNX, TFLITE, TORCHSCRIPT, CHECKPOINT = "onnx", "tflite", "torchscript", "checkpoint"
NONE, DYNAMIC, STATIC = "none", "dynamic", "static"
QUANTIZATIONS = (NONE, DYNAMIC, STATIC)  # what `--quantize` takes; "none" is the fp32 file every export writes


@dataclass(frozen=True)
class Format:
    """One kind of model file, as export writes it, the manifest records it and the CLI offers it."""

    name: str  # what `--format` and the manifest call it
    display: str  # what tables and messages call it
    suffix: str  # its files' name ending, after the quantization's (VARIANTS)
    quantizes: tuple[str, ...] = ()  # what export quantizes it to besides fp32; another mode is skipped, saying why
    in_all: bool = False  # whether `--format all` writes it
    # The module that writes it, by name: formats.py stays torch-free, so export imports it on first use.
    # Empty for a file export does not write.
    writer: str = ""
    # The edge runtime's model class that runs it torch-free, as "module:Class" (edge/models.EdgeModel); empty for
    # a file only torch runs. Export's parity gate, verify and benchmark open a file through it.
    runtime: str = ""


FORMATS = {
    f.name: f
    for f in (
        Format(ONNX, "ONNX", ".onnx", (DYNAMIC, STATIC), in_all=True, writer="mnist_edge.export.onnx_writer",
               runtime="mnist_edge.edge.runtime:OnnxModel"),
        # Not in "all", which is what the [train] extra writes: LiteRT's converter is an extra of its own
        # ([tflite], about 1.1 GB with jax), so it is asked for by name. Its int8 is PT2E static only.
        Format(TFLITE, "LiteRT", ".tflite", (STATIC,), writer="mnist_edge.export.tflite_writer",
               runtime="mnist_edge.edge.litert:LiteRTModel"),
        # ".torchscript.pt", not ".pt": the checkpoint an export came from may sit in the same folder as ARCH.pt.
        Format(TORCHSCRIPT, "TorchScript", ".torchscript.pt", (DYNAMIC, STATIC), in_all=True,
               writer="mnist_edge.export.torchscript_writer"),
        Format(CHECKPOINT, "PyTorch eager", ".pt"),  # the training checkpoint, run as the model itself
    )
}
TFLITE_IDENTIFIER = b"TFL3"  # bytes 4-8 of every TFLite flatbuffer: a .tflite file is known by its content
TFLITE_METADATA = "mnist_edge"  # the flatbuffer metadata entry holding a .tflite file's metadata as JSON
# The int8 file is named for what it holds; dynamic quantization keeps float activations.
VARIANTS = {NONE: "", DYNAMIC: ".dynamic", STATIC: ".int8"}
# Where `export` writes unless told: a folder of the user's own, never the shipped exported/ of a checkout.
DEFAULT_EXPORT_DIR = Path("mnist-edge-export")
# Training digits that calibrate static int8 unless `export --calibration-size` says otherwise.
CALIBRATION_SIZE = 1000
QUANTIZATION_NAMES = {NONE: "fp32", DYNAMIC: "dynamic int8", STATIC: "static int8"}


def export_formats() -> list[str]:
    """What `export --format` and `benchmark --format` take besides "all": the formats with a writer, in order."""
    return [f.name for f in FORMATS.values() if f.writer]


def runtime_model(fmt: str) -> Callable[..., EdgeModel]:
    """FMT's edge model class (called as cls(path, threads)), imported now: only the runtime a file needs is loaded.
    FMT must have one (FORMATS[fmt].runtime)."""
    module, name = FORMATS[fmt].runtime.split(":")
    cls: Callable[..., EdgeModel] = getattr(importlib.import_module(module), name)
    return cls


def runtime_format(path: Path) -> str | None:
    """The format of an edge runtime PATH is for: a TFLite flatbuffer by its content, whatever its name, else the
    format whose suffix ends its name (.onnx, .tflite); None for any other file."""
    if is_tflite(path):
        return TFLITE
    return next((f.name for f in FORMATS.values() if f.runtime and path.name.endswith(f.suffix)), None)


def quantizes(fmt: str, quantization: str) -> bool:
    """Whether export makes a file of FMT in QUANTIZATION (fp32 always): otherwise it is skipped, saying why."""
    return quantization == NONE or quantization in FORMATS[fmt].quantizes


def is_tflite(path: Path) -> bool:
    """Whether PATH holds a TFLite flatbuffer, by its content, whatever its name."""
    if not path.is_file():  # a FIFO would block the read
        return False
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:] == TFLITE_IDENTIFIER
    except OSError:
        return False


def artifact_name(stem: str, fmt: str, quantization: str) -> str:
    """The file name export gives STEM's model in FMT and QUANTIZATION, e.g. tiny.int8.onnx."""
    return f"{stem}{VARIANTS[quantization]}{FORMATS[fmt].suffix}"


def display_name(fmt: str, quantization: str = NONE) -> str:
    """'ONNX static int8', 'TorchScript fp32'; a checkpoint is 'PyTorch eager' (it is run as the model itself)."""
    display = FORMATS[fmt].display
    return display if fmt == CHECKPOINT else f"{display} {QUANTIZATION_NAMES[quantization]}"


def expand_formats(formats: list[str]) -> list[str]:
    """`--format` values in FORMATS order, "all" meaning the formats marked in_all, each once."""
    return [f.name for f in FORMATS.values() if f.writer and (f.name in formats or ("all" in formats and f.in_all))]


def variants(formats: list[str], quantizations: list[str]) -> list[tuple[str, str]]:
    """(format, quantization) pairs an export of FORMATS with QUANTIZATIONS makes: the fp32 file of each format
    first (every quantization starts from it), then each requested quantization once, in QUANTIZATIONS order."""
    _check_names(formats, quantizations)
    modes = [NONE] + [q for q in QUANTIZATIONS if q != NONE and q in quantizations]
    return [(f, q) for f in expand_formats(formats) for q in modes]


def _check_names(formats: list[str], quantizations: list[str]) -> None:
    """One line for a name export does not know: the CLI's choices refuse them, but the Python API passed them on,
    and an unknown or empty FORMATS (a "checkpoint", a bare "onnx" string read as "o", "n", ...) then exported
    nothing and reported it published."""
    known = [*export_formats(), "all"]
    if not formats:
        raise MnistEdgeError(f"no format to export: name one or more of {', '.join(known)}")
    for name in formats:
        if name not in known:
            why = " (the training checkpoint itself, not an export format)" if name == CHECKPOINT else ""
            raise MnistEdgeError(f"unknown export format {name!r}{why}: export writes {', '.join(known)}")
    for name in quantizations:
        if name not in QUANTIZATIONS:
            raise MnistEdgeError(f"unknown quantization {name!r}: one of {', '.join(QUANTIZATIONS)}")
