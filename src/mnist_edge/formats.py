"""One vocabulary for model files: the formats and quantizations export writes, the manifest records and the
benchmark measures, their file names and their display names. Torch-free: the edge package's manifest uses it.
"""

from __future__ import annotations

from pathlib import Path

ONNX, TFLITE, TORCHSCRIPT, CHECKPOINT = "onnx", "tflite", "torchscript", "checkpoint"
EXPORT_FORMATS = (ONNX, TFLITE, TORCHSCRIPT)  # what `export --format` and `benchmark --format` take (plus "all")
# What "all" means: the formats the [train] extra writes. LiteRT's converter is an extra of its own ([tflite],
# about 1.1 GB with jax), so it is asked for by name.
ALL_FORMATS = (ONNX, TORCHSCRIPT)
MODEL_FORMATS = (*EXPORT_FORMATS, CHECKPOINT)  # what a manifest entry or a model file can be
NONE, DYNAMIC, STATIC = "none", "dynamic", "static"
QUANTIZATIONS = (NONE, DYNAMIC, STATIC)  # what `--quantize` takes; "none" is the fp32 file every export writes

# ".torchscript.pt", not ".pt": the checkpoint an export came from may sit in the same folder as ARCH.pt.
SUFFIXES = {ONNX: ".onnx", TFLITE: ".tflite", TORCHSCRIPT: ".torchscript.pt", CHECKPOINT: ".pt"}
# What each export format can be quantized to besides fp32 (LiteRT: PT2E static int8 only, export/tflite_writer.py).
QUANTIZES = {ONNX: (DYNAMIC, STATIC), TFLITE: (STATIC,), TORCHSCRIPT: (DYNAMIC, STATIC)}
TFLITE_IDENTIFIER = b"TFL3"  # bytes 4-8 of every TFLite flatbuffer: a .tflite file is known by its content
TFLITE_METADATA = "mnist_edge"  # the flatbuffer metadata entry holding a .tflite file's metadata as JSON
# The int8 file is named for what it holds; dynamic quantization keeps float activations.
VARIANTS = {NONE: "", DYNAMIC: ".dynamic", STATIC: ".int8"}
# Where `export` writes unless told: a folder of the user's own, never the shipped exported/ of a checkout.
DEFAULT_EXPORT_DIR = Path("mnist-edge-export")
# Training digits that calibrate static int8 unless `export --calibration-size` says otherwise.
CALIBRATION_SIZE = 1000
FORMAT_NAMES = {ONNX: "ONNX", TFLITE: "LiteRT", TORCHSCRIPT: "TorchScript", CHECKPOINT: "PyTorch eager"}
QUANTIZATION_NAMES = {NONE: "fp32", DYNAMIC: "dynamic int8", STATIC: "static int8"}


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
    return f"{stem}{VARIANTS[quantization]}{SUFFIXES[fmt]}"


def display_name(fmt: str, quantization: str = NONE) -> str:
    """'ONNX static int8', 'TorchScript fp32'; a checkpoint is 'PyTorch eager' (it is run as the model itself)."""
    return FORMAT_NAMES[fmt] if fmt == CHECKPOINT else f"{FORMAT_NAMES[fmt]} {QUANTIZATION_NAMES[quantization]}"


def expand_formats(formats: list[str]) -> list[str]:
    """`--format` values in EXPORT_FORMATS order, "all" meaning ALL_FORMATS, each once."""
    return [f for f in EXPORT_FORMATS if f in formats or ("all" in formats and f in ALL_FORMATS)]


def variants(formats: list[str], quantizations: list[str]) -> list[tuple[str, str]]:
    """(format, quantization) pairs an export of FORMATS with QUANTIZATIONS makes: the fp32 file of each format
    first (every quantization starts from it), then each requested quantization once, in QUANTIZATIONS order."""
    modes = [NONE] + [q for q in QUANTIZATIONS if q != NONE and q in quantizations]
    return [(f, q) for f in expand_formats(formats) for q in modes]
