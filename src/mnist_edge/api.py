"""The train side's Python API: train a checkpoint, export it, verify an exported file: what `mnist-edge train`,
`export` and `verify` do, for a script or a notebook. This module imports torch only when one of them runs, so
`import mnist_edge` stays torch-free (the `train` extra installs torch). docs/api.md shows each in use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_edge.formats import DEFAULT_EXPORT_DIR

if TYPE_CHECKING:  # for the signatures only: importing them loads torch
    from mnist_edge.export.publish import ExportReport
    from mnist_edge.train.config import TrainResult
    from mnist_edge.export.verify import Parity

PathLike = str | os.PathLike[str]
# TrainConfig fields that hold paths: the API takes a str as well
_PATH_OPTIONS = ("data_dir", "out", "resume")


def train_model(arch: str | None = None, *, log: Callable[[str], None] | None = print, **options: Any) -> TrainResult:
    """Train ARCH (see `mnist-edge models`) with its default recipe and write its checkpoint; the result names it
    (`.out`) and holds its test accuracy and history. OPTIONS are `mnist-edge train`'s flags as keywords: recipe,
    epochs, batch_size, lr, seed, augment, schedule, device, threads, data_dir, out, resume, limit, overwrite.
    LOG gets the progress lines (None: silent)."""
    from mnist_edge.train.config import TrainConfig
    from mnist_edge.train.loop import train

    paths = {key: Path(options[key]) for key in _PATH_OPTIONS if options.get(key) is not None}
    config = TrainConfig(arch=arch, **{**options, **paths})
    return train(config, log=log or (lambda _line: None))


def export_model(
    checkpoint: PathLike,
    out: PathLike = DEFAULT_EXPORT_DIR,
    *,
    formats: Sequence[str] = ("onnx",),
    quantize: Sequence[str] = (),
    data_dir: PathLike | None = None,
    limit: int | None = None,
    make_default: bool = False,
    force: bool = False,
    **tolerances: float,
) -> ExportReport:
    """Export CHECKPOINT into the folder OUT in FORMATS ("onnx", "torchscript"), each also QUANTIZE'd ("static",
    "dynamic"), as `mnist-edge export` does: every file passes the parity gate or none is written (`.published`).
    TOLERANCES: max_abs_diff, min_agreement, max_accuracy_drop, to override the gate's defaults."""
    from mnist_edge.export.publish import export_checkpoint

    return export_checkpoint(
        Path(checkpoint),
        Path(out),
        list(formats),
        list(quantize),
        data_dir=None if data_dir is None else Path(data_dir),
        limit=limit,
        tolerance_overrides=tolerances,
        command=f"mnist_edge.export_model({os.fspath(checkpoint)!r}) (Python API)",
        make_default=make_default,
        force=force,
    )


def verify_model(
    file: PathLike,
    checkpoint: PathLike,
    *,
    data_dir: PathLike | None = None,
    limit: int | None = None,
    synthetic: bool = False,
    trust_torchscript: bool = False,
    **tolerances: float,
) -> Parity:
    """Check that the exported FILE computes what CHECKPOINT's PyTorch model computes, as `mnist-edge verify` does:
    `.passed`, `.on_mnist`, `.failures`, `.summary()`. SYNTHETIC: on random pixels, not MNIST (no accuracy)."""
    from mnist_edge.export.verify import verify_artifact

    folder = None if data_dir is None else Path(data_dir)
    return verify_artifact(
        Path(file),
        Path(checkpoint),
        folder,
        limit,
        tolerances,
        trust_torchscript=trust_torchscript,
        synthetic=synthetic,
    )
