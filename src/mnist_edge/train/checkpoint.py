"""Checkpoints: weights plus metadata, readable with torch.load(weights_only=True).

Only tensors, dicts, lists, strings and numbers are stored, so loading an untrusted file can never
run code. Training state (optimizer, RNG, epoch) rides along for exact resumption.

A checkpoint is untrusted input: load_checkpoint says what a file is when it is something else (an ONNX
model, a TorchScript archive, a bare state_dict, text...), and checks every field of one that claims to be a
checkpoint (types, ranges, finite numbers, recipe keys, weight names and shapes) before anything uses it, so
`train --resume`, `export` and `evaluate` fail with one line instead of deep inside.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnist_edge.train.architectures import MnistClassifier, create_model, list_models
from mnist_edge.atomic import atomic_path
from mnist_edge.errors import MnistEdgeError, first_line, mismatch, require_file
from mnist_edge.schema import Check, anything, check_fields, int_in, list_of, map_of, number_in, optional, shown, text
from mnist_edge.train.validate import MAX_EPOCHS, recipe_from_dict

FORMAT = "mnist-edge-checkpoint"
VERSION = 1
NOT_A_CHECKPOINT = "not a training checkpoint"
# The largest architecture's checkpoint, optimizer state included, is tens of MB: far larger is not one of ours,
# and is refused before torch.load reads it all into memory.
MAX_CHECKPOINT_BYTES = 1 << 30


@dataclass
class Checkpoint:
    arch: str
    model: MnistClassifier  # in eval mode, on the CPU
    meta: dict[str, Any]  # recipe, epochs_done, test_accuracy, normalization, seed, versions, dataset sha256
    training: dict[str, Any] = field(default_factory=dict)  # optimizer / RNG state for --resume


def all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def save_checkpoint(
    path: Path | str, model: MnistClassifier, meta: dict[str, Any], training: dict[str, Any] | None = None
) -> None:
    """Write the checkpoint atomically: a failed write (full disk...) is one line and leaves PATH as it was."""
    if not all_finite(model):
        raise MnistEdgeError(f"{path}: not written: the model's weights hold NaN or inf")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "arch": model.arch, "state_dict": state, "meta": meta}
    if training:
        payload["training"] = training
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        reason = getattr(exc, "strerror", None) or first_line(exc, 120)
        raise MnistEdgeError(f"{path}: cannot write the checkpoint ({reason}); the previous one is unchanged") from None


# --- what a file is, when it is not a checkpoint --------------------------------------------------------------


def _zip_kind(path: Path) -> str | None:
    """None for a torch.save archive; else what kind of zip PATH is."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a damaged zip archive (a truncated or corrupt file)"
    names = [entry.filename for entry in entries]
    # torch.save stores its records uncompressed: contents far larger than the file are a zip bomb, never read
    if sum(entry.file_size for entry in entries) > 2 * path.stat().st_size + (1 << 20):
        return "a zip archive whose contents expand far beyond its size (a zip bomb)"
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        return "a TorchScript archive (an exported model)"
    if any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        return None
    return "a zip archive holding no PyTorch data"


def _is_onnx(path: Path, head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, a varint): byte 0x08.
    if path.suffix != ".onnx" and not head.startswith(b"\x08"):
        return False
    try:
        import onnx

        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # not parseable as ONNX is the answer, whatever the parser raised
        return False
    return len(model.graph.node) > 0 or len(model.opset_import) > 0


def sniff(path: Path) -> str | None:
    """What PATH is when it is plainly not a torch.save file (None: let torch.load try it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise MnistEdgeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head:
        return "an empty file"
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        return (
            f"a file of {path.stat().st_size:,} bytes, larger than any mnist-edge checkpoint (at most "
            f"{MAX_CHECKPOINT_BYTES:,})"
        )
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(path)
    if head.startswith(b"\x80"):  # never unpickled: mnist-edge has always written torch's zip format
        return "a pickle (plain, or PyTorch's pre-1.6 format): not loaded, as unpickling can run code"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if _is_onnx(path, head):
        return "an ONNX model (an exported file: evaluate and verify take it, not train or export)"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError:
            pass
    return "not a PyTorch file (unrecognized content)"


def _describe_payload(payload: Any) -> str:
    if isinstance(payload, torch.Tensor):
        return "a single tensor (torch.save of a tensor)"
    if isinstance(payload, dict):
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            return "a bare state_dict (weights without mnist-edge's metadata)"
        return "a PyTorch file holding a dict without mnist-edge's format marker"
    return f"a PyTorch file holding a {type(payload).__name__}"


# --- field checks (schema.py's, and the tensors only torch can check) -----------------------------------------


def _tensor(dtype: torch.dtype, ndim: int | None = None) -> Check:
    """A plain tensor of DTYPE (of NDIM dimensions, if given) on the CPU: torch.load(map_location="cpu") leaves a
    crafted meta-device tensor (no data) on the meta device."""
    needs = f"must be a CPU {dtype} tensor" + (f" of {ndim} dimension" + "s" * (ndim != 1) if ndim is not None else "")

    def problem(v: Any) -> str | None:
        plain = isinstance(v, torch.Tensor) and v.layout == torch.strided and v.device.type == "cpu"
        return None if plain and v.dtype == dtype and ndim in (None, v.dim()) else needs

    return problem


def _normalize(value: Any) -> str | None:
    """The [mean, std] a network normalizes its input pixels with."""
    mean, std = number_in(-10, 10), number_in(1e-6, 10)
    ok = isinstance(value, list) and len(value) == 2 and mean(value[0]) is None and std(value[1]) is None
    return None if ok else "must be [mean, std]: a finite mean from -10 to 10 and std from 1e-06 to 10"


_RNG_STATES = list_of(_tensor(torch.uint8, 1), 1 << 20, at_least=1)
_EPOCH = map_of(text(), number_in())  # an epoch's figures by name: its loss, its accuracy...

# The metadata train writes. Every checkpoint names its architecture; one that can be resumed also needs its recipe
# and history (a final checkpoint, such as the shipped one rebuilt for export, may leave out the rest).
REQUIRED_META = ("arch",)
REQUIRED_TO_RESUME = ("arch", "recipe", "epochs_done", "history")
META: dict[str, Check] = {
    "arch": text(),
    "recipe": anything,  # checked field by field by recipe_from_dict
    "epochs_done": int_in(0, MAX_EPOCHS),
    "test_accuracy": optional(number_in(0, 100)),
    "normalize": optional(_normalize),
    "seed": int_in(),
    "device": text(),
    "world_size": int_in(1, 1 << 20),
    "threads": int_in(1, 1 << 20),
    "train_images": int_in(),
    "wall_time_s": number_in(0),
    "versions": map_of(text(), text(), 1024),
    "dataset_sha256": map_of(text(), text(), 1024),
    "history": list_of(_EPOCH, MAX_EPOCHS),
    "calibration": map_of(text(), number_in(), 64),
}
TRAINING: dict[str, Check] = {
    "epoch": int_in(0, MAX_EPOCHS),
    "step": int_in(),
    "optimizer": map_of(),  # optimizer.load_state_dict checks the rest
    "generator": _tensor(torch.uint8, 1),
    "rng": _RNG_STATES,
    "cuda_rng": _RNG_STATES,  # CUDA runs: each rank's
    "perm": _tensor(torch.int64, 1),
    "loss_sum": number_in(0),
    "seen": int_in(),
    "limit": int_in(1),
}
# An open-set model's calibration (calibrate.py), saved as buffers beside its weights.
CALIBRATION_RANGES = {"temperature": (1e-3, 1e3), "not_digit_threshold": (0.0, 1.0)}
PAYLOAD_KEYS = {"format", "version", "arch", "state_dict", "meta", "training"}


def _check_weights(path: Path, arch: str, state: Any, model: MnistClassifier) -> None:
    if not isinstance(state, dict):
        raise MnistEdgeError(f"{path}: its state_dict is a {type(state).__name__}, not a mapping")
    expected = model.state_dict()
    unknown, missing = sorted(map(str, set(state) - set(expected))), sorted(set(expected) - set(state))
    if unknown or missing:
        detail = mismatch(unknown[:3], missing[:3], "unexpected")
        raise MnistEdgeError(f"{path}: weights do not fit architecture {arch!r} ({detail})")
    for name, want in expected.items():
        got = state[name]
        if _tensor(want.dtype)(got) is not None or got.shape != want.shape:
            found = _tensor_kind(got)
            raise MnistEdgeError(
                f"{path}: weight {name} is {found}, architecture {arch!r} needs {want.dtype} {list(want.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise MnistEdgeError(f"{path}: weight {name} holds NaN or inf")
        if name in CALIBRATION_RANGES and not CALIBRATION_RANGES[name][0] <= float(got) <= CALIBRATION_RANGES[name][1]:
            raise MnistEdgeError(f"{path}: {name} {float(got):g} is outside {list(CALIBRATION_RANGES[name])}")


def _tensor_kind(value: Any) -> str:
    """'torch.float32 [8, 1, 3, 3]', with its layout and device when they are not a plain CPU tensor's."""
    if not isinstance(value, torch.Tensor):
        return type(value).__name__
    unusual = [str(value.layout)] * (value.layout != torch.strided) + [f"on {value.device}"] * (
        value.device.type != "cpu"
    )
    return " ".join([str(value.dtype), str(list(value.shape)), *unusual])


def load_checkpoint(path: Path | str) -> Checkpoint:
    """The checkpoint at PATH, every field checked; anything else is one MnistEdgeError saying what it is."""
    path = Path(path)
    require_file(path, "checkpoint")
    kind = sniff(path)
    if kind is not None:
        raise MnistEdgeError(f"{path}: is {kind}, {NOT_A_CHECKPOINT}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors saved on CUDA land on the CPU
    except Exception as exc:  # a crafted file can make the unpickler raise anything
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            raise MnistEdgeError(
                f"{path}: refused: it holds Python objects beyond weights (loading it could run code)"
            ) from None
        raise MnistEdgeError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc, 100)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MnistEdgeError(f"{path}: is {_describe_payload(payload)}, {NOT_A_CHECKPOINT}")
    version = payload.get("version")
    # an int first: `!=` on a tensor answers element-wise, which `if` cannot take for two or more elements
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise MnistEdgeError(f"{path}: checkpoint version {shown(version)} is not supported (expected {VERSION})")
    if unknown := sorted(map(str, set(payload) - PAYLOAD_KEYS)):
        raise MnistEdgeError(f"{path}: unknown checkpoint fields {unknown}")
    arch = payload.get("arch")
    if not isinstance(arch, str) or arch not in list_models():
        raise MnistEdgeError(f"{path}: unknown architecture {str(arch)[:40]!r}")
    training = check_fields(str(path), "its training state", payload.get("training", {}), TRAINING)
    meta = check_fields(
        str(path), "its metadata", payload.get("meta"), META, REQUIRED_TO_RESUME if training else REQUIRED_META
    )
    if meta["arch"] != arch:
        raise MnistEdgeError(f"{path}: its metadata says architecture {meta['arch']!r}, its weights {arch!r}")
    if "recipe" in meta:  # complete: a field added since the file was written shows its default
        meta["recipe"] = recipe_from_dict(meta["recipe"], str(path)).as_dict()
    model = create_model(arch)
    _check_weights(path, arch, payload.get("state_dict"), model)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return Checkpoint(arch, model, meta, training)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Any, where: str) -> None:
    """The saved per-parameter state (momentum, Adam moments), checked against the parameters; the hyperparameters
    come from the recipe, not from the file, so a crafted file cannot smuggle in values the recipe checks refuse."""
    state = saved.get("state") if isinstance(saved, dict) else None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(state, dict) or not set(state) <= set(range(len(params))):
        raise MnistEdgeError(f"{where}: the optimizer state does not fit the model")
    for index, values in state.items():
        param = params[index]
        ok = isinstance(values, dict) and all(
            isinstance(v, torch.Tensor) and v.is_floating_point() and v.shape in (param.shape, ())
            and bool(torch.isfinite(v).all())
            for v in values.values()
        )
        if not ok:
            raise MnistEdgeError(
                f"{where}: the optimizer state of parameter {index} does not fit (shape, type or non-finite values)"
            )
    optimizer.load_state_dict({**optimizer.state_dict(), "state": state})
