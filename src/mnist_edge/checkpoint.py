"""Checkpoints: weights plus metadata, readable with torch.load(weights_only=True).

Only tensors, dicts, lists, strings and numbers are stored, so loading an untrusted file can never
run code. Training state (optimizer, RNG, epoch) rides along for exact resumption.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnist_edge.architectures import MnistClassifier, create_model, list_models
from mnist_edge.atomic import atomic_path
from mnist_edge.errors import MnistEdgeError

FORMAT = "mnist-edge-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    arch: str
    model: MnistClassifier  # in eval mode, on the CPU
    meta: dict[str, Any]  # recipe, epochs_done, test_accuracy, normalization, seed, versions, dataset sha256
    training: dict[str, Any] = field(default_factory=dict)  # optimizer / RNG state for --resume


def save_checkpoint(
    path: Path | str, model: MnistClassifier, meta: dict[str, Any], training: dict[str, Any] | None = None
) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "arch": model.arch, "state_dict": state, "meta": meta}
    if training:
        payload["training"] = training
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path | str) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise MnistEdgeError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise MnistEdgeError(f"{path}: refused: it holds Python objects beyond weights (not a mnist-edge checkpoint)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as exc:  # KeyError: garbage in the legacy format
        reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise MnistEdgeError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MnistEdgeError(f"{path}: not a mnist-edge checkpoint (a foreign or bare state_dict file)")
    if payload.get("version") != VERSION:
        raise MnistEdgeError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    arch = payload.get("arch")
    if arch not in list_models():
        raise MnistEdgeError(f"{path}: unknown architecture {arch!r}")
    model = create_model(arch)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise MnistEdgeError(f"{path}: weights do not fit architecture {arch!r} ({str(exc).splitlines()[0][:100]})") from None
    model.eval()
    return Checkpoint(arch, model, payload.get("meta", {}), payload.get("training", {}))
