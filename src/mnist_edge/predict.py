"""Predict digits for image files: collect paths, preprocess, run the ONNX model in batches.

Every bad input becomes a `Failure` beside the good ones, in input order, so one bad file never
stops the rest. Torch-free: numpy, Pillow and ONNX Runtime only.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_edge.errors import MnistEdgeError
from mnist_edge.preprocess import preprocess, save_png
from mnist_edge.runtime import OnnxModel
from mnist_edge.spec import LABELS

# What a folder is searched for; files named explicitly are tried whatever their suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
# Big enough that ORT's per-call overhead vanishes, small enough to print results as they come.
BATCH_SIZE = 256


@dataclass(frozen=True)
class Prediction:
    file: str
    digit: str
    probability: float
    top: list[tuple[str, float]] = field(default_factory=list)  # (label, probability), most likely first

    def as_dict(self) -> dict:
        return {"file": self.file, "digit": self.digit, "probability": self.probability, "top": [
            {"digit": label, "probability": p} for label, p in self.top
        ]}


@dataclass(frozen=True)
class Failure:
    file: str
    error: str  # one line, naming the file


def collect_images(paths: Iterable[str]) -> Iterator[Path | Failure]:
    """Each PATH's images: a file as given, a folder's images (sorted), a glob's matches; else a Failure."""
    seen: set[Path] = set()
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                yield Failure(name, f"{name}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
        elif path.exists():
            found = [path]
        elif glob.has_magic(name):  # a pattern the shell left unexpanded (quoted, or Windows)
            found = sorted(Path(p) for p in glob.glob(name) if Path(p).is_file())
            if not found:
                yield Failure(name, f"{name}: no file matches this pattern")
        else:
            yield Failure(name, f"{name}: no such file or folder")
            continue
        for image in found:
            if image not in seen:
                seen.add(image)
                yield image


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _batches(items: Iterator[Path | Failure], size: int) -> Iterator[list[Path | Failure]]:
    batch: list[Path | Failure] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Names:
    """File names for --save-preprocessed: the image's stem, numbered when two images share it."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, path: Path) -> str:
        name, n = f"{path.stem}.png", 1
        while name in self.used:
            n += 1
            name = f"{path.stem}-{n}.png"
        self.used.add(name)
        return name


def _prepare(path: Path, raw: bool, save_dir: Path | None, names: _Names) -> np.ndarray | Failure:
    try:
        image = preprocess(path, raw=raw)
        if save_dir is not None:
            save_png(image, save_dir / names(path))
        return image
    except MnistEdgeError as exc:
        return Failure(str(path), str(exc))


def _prediction(path: Path, probs: np.ndarray, top: int) -> Prediction:
    ranked = [(LABELS[k], float(probs[k])) for k in np.argsort(-probs)[:top]]
    return Prediction(str(path), ranked[0][0], ranked[0][1], ranked)


def predict_paths(
    model: OnnxModel,
    paths: Iterable[str],
    top: int = 3,
    raw: bool = False,
    save_dir: Path | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[Prediction | Failure]:
    """A Prediction or a Failure for every image PATHS name, in order, inferred in batches."""
    names = _Names()
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission: fail before any work, not once per image
            raise MnistEdgeError(f"{save_dir}: cannot create the folder ({exc.strerror or exc})") from None
    for batch in _batches(collect_images(paths), batch_size):
        prepared = [item if isinstance(item, Failure) else _prepare(item, raw, save_dir, names) for item in batch]
        images = [x for x in prepared if isinstance(x, np.ndarray)]
        probs = iter(_softmax(model.run(np.stack(images)[:, None]))) if images else iter(())
        for item, x in zip(batch, prepared):
            yield x if isinstance(x, Failure) else _prediction(item, next(probs), top)  # type: ignore[arg-type]
