"""Predict digits for image files: collect paths, preprocess, run the model in batches.

Every bad input becomes a `Failure` beside the good ones, in input order, so one bad file never
stops the rest: whatever preprocessing raises, even a worker process dying, and a model that fails
on an image or returns non-finite logits for it. `results_from_logits` and the `as_dict` methods make
the objects `predict --json` prints, for any caller (the server) that runs the model itself.
Torch-free: numpy, Pillow and the model's runtime (ONNX Runtime or LiteRT) only.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mnist_edge.errors import MnistEdgeError, bug, debugging
from mnist_edge.edge.lifetime import die_with_parent
from mnist_edge.edge.models import EdgeModel
from mnist_edge.edge.preprocess import IMAGE_SUFFIXES, preprocess, save_png
from mnist_edge.edge.results import Failure, Prediction, Result, usable_cpus
from mnist_edge.spec import refuses

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

# ORT's per-call overhead is already negligible at 32 images; bigger batches only grow its arena
# (measured on tiny: 74 MiB peak at 32, 142 MiB at 256).
BATCH_SIZE = 64
T = TypeVar("T")
# Images per worker process below which a pool costs more to start than it saves.
PARALLEL_MIN = 64


def collect_images(paths: Iterable[str]) -> Iterator[Path | Failure]:
    """Each PATH's images: a file as given, a folder's images (sorted), a glob's matches; else a Failure.
    Whatever is wrong with one PATH (no such file, no permission, a name too long, a loop of links) is its own
    Failure: the other paths are still collected."""
    seen: set[Path] = set()
    for name in paths:
        try:
            found = _images_named(name)
        except MnistEdgeError as exc:
            yield Failure(name, str(exc))
            continue
        except OSError as exc:
            yield Failure(name, f"{name}: cannot read ({exc.strerror or exc})")
            continue
        for image in found:
            if image not in seen:
                seen.add(image)
                yield image


def _images_named(name: str) -> list[Path]:
    """The images NAME stands for, or a MnistEdgeError (an OSError from the file system) saying why none."""
    if not name:  # Path("") is the current folder: an empty argument (an unset shell variable) must not mean it
        raise MnistEdgeError("'': an empty argument names no file or folder")
    try:
        mode = os.stat(name).st_mode
    except ValueError:  # a NUL in the name, which no file name holds
        raise MnistEdgeError(f"{name!r}: not a valid file name") from None
    except FileNotFoundError:
        if not glob.has_magic(name):
            raise MnistEdgeError(f"{name}: no such file or folder") from None
        # A pattern the shell left unexpanded (quoted, or Windows).
        found = sorted(Path(p) for p in glob.glob(name) if Path(p).is_file())
        if not found:
            raise MnistEdgeError(f"{name}: no file matches this pattern") from None
        return found
    if not stat.S_ISDIR(mode):
        return [Path(name)]  # tried whatever its suffix
    found = sorted(p for p in Path(name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise MnistEdgeError(f"{name}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def results_from_logits(
    files: Sequence[str],
    logits: np.ndarray,
    top: int,
    model: str,
    not_digit: np.ndarray | None = None,
    threshold: float | None = None,
) -> list[Result]:
    """A Prediction per row of LOGITS [N,10] (softmax, the TOP most likely digits), or a Failure naming MODEL
    for a row holding NaN or infinity: a probability computed from it would be meaningless. With an open-set
    model's NOT_DIGIT scores [N], a row scoring THRESHOLD or more is "not a digit" (no THRESHOLD: never)."""
    logits = np.asarray(logits, dtype=np.float64)  # float64: exp never overflows after the max is taken off
    scores = np.full(len(logits), np.nan) if not_digit is None else np.asarray(not_digit, dtype=np.float64)
    finite = np.isfinite(logits).all(axis=1) & (np.isfinite(scores) if not_digit is not None else True)
    safe = np.where(finite[:, None], logits, 0.0)
    exp = np.exp(safe - safe.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    results: list[Result] = []
    for file, ok, p, score in zip(files, finite, probs, scores):
        if not ok:
            results.append(
                Failure(file, f"{file}: the model {model} returned a non-finite logit (NaN or infinity) for this image")
            )
            continue
        ranked = [(int(k), float(p[k])) for k in np.argsort(-p, kind="stable")[:top]]
        stated = None if not_digit is None else float(score)
        if stated is not None and threshold is not None and refuses(stated, threshold):
            results.append(Prediction(file, None, None, ranked, stated))
        else:
            results.append(Prediction(file, ranked[0][0], ranked[0][1], ranked, stated))
    return results


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class _ImageFile:
    """One image file to predict, and how: as it is (raw) or preprocessed, and where its prepared copy goes."""

    path: Path
    raw: bool
    save_to: Path | None  # chosen in the parent, so names stay unique across worker processes


def _choose_names(images: Sequence[Path | Failure], folder: Path, log: Callable[[str], None]) -> list[Path | None]:
    """Where each image's preprocessed copy goes: its stem, numbered when this run already used that name or a
    file there (not ours: perhaps the input itself) already has it. Never a name to overwrite."""
    used: set[str] = set()
    names: list[Path | None] = []
    for image in images:
        if isinstance(image, Failure):
            names.append(None)
            continue
        name, n, taken = f"{image.stem}.png", 1, []
        while name in used or os.path.lexists(folder / name):
            if name not in used:
                taken.append(name)
            n += 1
            name = f"{image.stem}-{n}.png"
        used.add(name)
        if taken:
            log(
                f"note: {folder / taken[0]} already exists and is kept; what the model saw of {image} goes to "
                f"{folder / name}"
            )
        names.append(folder / name)
    return names


@dataclass(frozen=True)
class _ModelInput:
    """What the model sees of one image file."""

    pixels: np.ndarray  # [28,28] float32, white digit on black
    note: str | None = None  # for the log: its copy went to another name than the one chosen


def _save_names(source: _ImageFile) -> Iterator[Path]:
    """The name chosen for SOURCE's copy, then its input's stem numbered on: another process writing the same
    folder may take a name between the choice and the write."""
    assert source.save_to is not None
    yield source.save_to
    yield from (source.save_to.with_name(f"{source.path.stem}-{n}.png") for n in range(2, 10_000))


def _prepare_one(source: _ImageFile | Failure) -> _ModelInput | Failure:
    """What the model sees for one image, or why not; runs in a worker process for big runs."""
    if isinstance(source, Failure):
        return source
    try:
        pixels = preprocess(source.path, raw=source.raw)
        if source.save_to is not None and (saved := save_png(pixels, _save_names(source))) != source.save_to:
            return _ModelInput(
                pixels,
                f"note: {source.save_to} was taken meanwhile (another process?) and is kept; what the model saw of "
                f"{source.path} goes to {saved}",
            )
        return _ModelInput(pixels)
    except MnistEdgeError as exc:
        return Failure(str(source.path), str(exc))
    except Exception as exc:  # whatever else goes wrong with one image stays that image's failure
        if debugging():
            raise
        return Failure(str(source.path), bug(f"{source.path}: failed", exc))


def _prepare_all(sources: Sequence[_ImageFile | Failure], workers: int | None) -> Iterator[_ModelInput | Failure]:
    """_prepare_one of each source, in order: in this process for a few images, else over worker processes,
    because preprocessing is per-image Python and numpy work that one core cannot keep up with on a big run."""
    workers = min(workers or usable_cpus(), len(sources) // PARALLEL_MIN)
    if workers < 2:
        yield from map(_prepare_one, sources)
        return
    import multiprocessing as mp  # here, not at the top: ~25 ms of start-up that one-image runs never need
    from concurrent.futures.process import BrokenProcessPool

    # fork: workers start in milliseconds with everything imported (spawn would re-import for ~0.2 s each).
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    done = 0
    while done < len(sources):
        pool = _pool(workers, context)
        try:
            chunk = max(1, min(64, (len(sources) - done) // (8 * workers)))
            for result in pool.map(_prepare_one, sources[done:], chunksize=chunk):
                done += 1
                yield result
        except BrokenProcessPool:
            # A worker died (killed for memory, a crash in a decoder). The first unfinished image is tried
            # alone: if its own worker dies too it is the one to blame; if not, the rest go on in a new pool.
            yield _isolated(sources[done], context)
            done += 1
        finally:
            pool.shutdown(cancel_futures=True)  # an early stop (error, Ctrl-C) must not wait for every queued image


def _pool(workers: int, context: Any) -> ProcessPoolExecutor:
    """WORKERS processes that die with this one, even when it is killed (SIGKILL, the OOM killer)."""
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),))


def _isolated(source: _ImageFile | Failure, context: Any) -> _ModelInput | Failure:
    """_prepare_one of SOURCE in a process of its own: its result, or the Failure of a process that died on it."""
    from concurrent.futures.process import BrokenProcessPool

    with _pool(1, context) as pool:
        try:
            return pool.submit(_prepare_one, source).result()
        except BrokenProcessPool:
            path = source.file if isinstance(source, Failure) else source.path
            return Failure(
                str(path),
                f"{path}: the process preparing this image died (out of memory, or a crash in the image decoder)",
            )


def infer(
    model: EdgeModel, files: Sequence[str], images: Sequence[np.ndarray], top: int, refuse: bool = True
) -> list[Result]:
    """Results for a batch of preprocessed IMAGES named FILES (here and by the server); when the model fails on
    the batch, each image is run alone, so only those it fails on fail. REFUSE False: always a digit, even for
    what the model says is not one."""
    try:
        logits, not_digit = model.outputs(np.stack(images)[:, None])
    except MnistEdgeError as exc:
        if len(images) == 1:
            return [Failure(files[0], f"{files[0]}: {exc}")]
        return [result for file, image in zip(files, images) for result in infer(model, [file], [image], top, refuse)]
    threshold = model.threshold if refuse else None
    return results_from_logits(files, logits, top, str(model.path), not_digit, threshold)


def predict_paths(
    model: EdgeModel,
    paths: Iterable[str],
    top: int = 3,
    raw: bool = False,
    save_dir: Path | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    log: Callable[[str], None] = lambda _: None,
    refuse: bool = True,
) -> Generator[Result, None, None]:
    """A Prediction or a Failure for every image PATHS name, in order, inferred in batches. LOG gets notes
    (an image's preprocessed copy saved under another name because its own was taken). A folder SAVE_DIR
    that cannot be made fails here, before anything is predicted. REFUSE False: a digit even for what the
    model says is not one."""
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission: fail before any work, not once per image
            raise MnistEdgeError(f"{save_dir}: cannot create the folder ({exc.strerror or exc})") from None
    images = list(collect_images(paths))
    targets = _choose_names(images, save_dir, log) if save_dir is not None else [None] * len(images)
    sources = [
        item if isinstance(item, Failure) else _ImageFile(item, raw, target) for item, target in zip(images, targets)
    ]
    return _predict(model, sources, top, batch_size, workers, log, refuse)


def _predict(
    model: EdgeModel,
    sources: list[_ImageFile | Failure],
    top: int,
    batch_size: int,
    workers: int | None,
    log: Callable[[str], None],
    refuse: bool,
) -> Generator[Result, None, None]:
    """The results of SOURCES in order: preprocessed (in workers for big runs), then inferred a batch at a time."""
    for batch in _batches(zip(sources, _prepare_all(sources, workers)), batch_size):
        for _, x in batch:
            if isinstance(x, _ModelInput) and x.note is not None:
                log(x.note)
        good = [
            (str(source.path), x.pixels)
            for source, x in batch
            if isinstance(x, _ModelInput) and isinstance(source, _ImageFile)
        ]
        inferred = iter(infer(model, [p for p, _ in good], [x for _, x in good], top, refuse) if good else [])
        for _, x in batch:
            yield x if isinstance(x, Failure) else next(inferred)
