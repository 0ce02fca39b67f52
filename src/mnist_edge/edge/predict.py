"""Predict digits for image files: collect paths, preprocess, run the ONNX model in batches.

Every bad input becomes a `Failure` beside the good ones, in input order, so one bad file never
stops the rest. Torch-free: numpy, Pillow and ONNX Runtime only.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from mnist_edge.errors import MnistEdgeError
from mnist_edge.edge.preprocess import preprocess, save_png
from mnist_edge.edge.runtime import OnnxModel, usable_cpus
from mnist_edge.spec import LABELS

# What a folder is searched for; files named explicitly are tried whatever their suffix.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
# ORT's per-call overhead is already negligible at 32 images; bigger batches only grow its arena
# (measured on tiny: 74 MiB peak at 32, 142 MiB at 256).
BATCH_SIZE = 64
T = TypeVar("T")
# Images per worker process below which a pool costs more to start than it saves.
PARALLEL_MIN = 64


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


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
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


@dataclass(frozen=True)
class _Job:
    path: Path
    raw: bool
    save_to: Path | None  # chosen in the parent, so names stay unique across worker processes


def _prepare(job: _Job | Failure) -> np.ndarray | Failure:
    """What the model sees for one image, or why not; runs in a worker process for big runs."""
    if isinstance(job, Failure):
        return job
    try:
        image = preprocess(job.path, raw=job.raw)
        if job.save_to is not None:
            save_png(image, job.save_to)
        return image
    except MnistEdgeError as exc:
        return Failure(str(job.path), str(exc))


@contextmanager
def _mapper(jobs: int, workers: int | None) -> Iterator[Callable]:
    """An ordered map over jobs: in this process for a few images, else over a process pool, because
    preprocessing is per-image Python and numpy work that one core cannot keep up with on a big run."""
    workers = min(workers or usable_cpus(), jobs // PARALLEL_MIN)
    if workers < 2:
        yield map
        return
    import multiprocessing as mp  # here, not at the top: ~25 ms of start-up that one-image runs never need
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # fork: workers start in milliseconds with everything imported (spawn would re-import for ~0.2 s each).
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        yield lambda fn, items: pool.map(fn, items, chunksize=max(1, min(64, jobs // (8 * workers))))
    except BrokenProcessPool:
        raise MnistEdgeError("a preprocessing worker process died (out of memory?); try fewer images per call") from None
    finally:
        pool.shutdown(cancel_futures=True)  # an early stop (error, Ctrl-C) must not wait for every queued image


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
    workers: int | None = None,
) -> Iterator[Prediction | Failure]:
    """A Prediction or a Failure for every image PATHS name, in order, inferred in batches."""
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission: fail before any work, not once per image
            raise MnistEdgeError(f"{save_dir}: cannot create the folder ({exc.strerror or exc})") from None
    names = _Names()
    jobs = [
        item if isinstance(item, Failure) else _Job(item, raw, save_dir / names(item) if save_dir else None)
        for item in collect_images(paths)
    ]
    with _mapper(len(jobs), workers) as map_fn:
        for batch in _batches(zip(jobs, map_fn(_prepare, jobs)), batch_size):
            images = [x for _, x in batch if isinstance(x, np.ndarray)]
            probs = iter(_softmax(model.run(np.stack(images)[:, None]))) if images else iter(())
            for job, x in batch:
                yield x if isinstance(x, Failure) else _prediction(job.path, next(probs), top)
