"""What an open-set recipe adds to a training run: a training set with generated printed digits and non-digits,
the training digits held out to calibrate on, and the calibration after the last epoch (calibrate.py), which
recalibrate repeats on a trained checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from mnist_edge.errors import MnistEdgeError
from mnist_edge.spec import NUM_CLASSES
from mnist_edge.train import synthetic
from mnist_edge.train.architectures import MnistClassifier
from mnist_edge.train.recipes import Recipe

MNIST_TRAIN_IMAGES = 60_000  # what a recipe's image counts (holdout, printed, non_digits) are written for
CALIBRATION_IMAGES = 2000  # printed digits and non-digits generated (each) in calibration fonts


def scaled(count: int, n: int) -> int:
    """COUNT of a recipe written for MNIST's 60,000 training digits, scaled to a run on N of them (--limit)."""
    return round(count * n / MNIST_TRAIN_IMAGES)


def training_set(recipe: Recipe, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images and labels a recipe trains on, and the held-out digits it calibrates on: MNIST's training digits
    less the last `holdout`, plus generated printed digits (labels 0-9) and non-digits (label 10)."""
    n = len(x)
    holdout = scaled(recipe.holdout, n)
    holdout_x, holdout_y = x[n - holdout :], y[n - holdout :]
    x, y = x[: n - holdout], y[: n - holdout]
    if recipe.printed or recipe.non_digits:
        fonts = synthetic.fonts_for("train")
        printed_x, printed_y = synthetic.printed_digits(scaled(recipe.printed, n), recipe.seed, fonts)
        others, _ = synthetic.non_digits(scaled(recipe.non_digits, n), recipe.seed, fonts)
        x = np.concatenate([x, printed_x, others])
        y = np.concatenate([y, printed_y.astype(y.dtype), np.full(len(others), NUM_CLASSES, y.dtype)])
    return x, y, holdout_x, holdout_y


def calibrate_run(
    model: MnistClassifier, recipe: Recipe, holdout: tuple[np.ndarray, np.ndarray], limit: int | None,
    log: Callable[[str], None],
) -> dict[str, float]:
    """Fit MODEL's temperature and "not a digit" threshold on what training left out (HOLDOUT); the figures the
    checkpoint records, empty when nothing was held out."""
    from mnist_edge.train.calibrate import calibrate

    holdout_x, holdout_y = holdout
    if not len(holdout_y):
        log("no held-out digits (recipe holdout 0): temperature 1, and nothing is refused")
        return {}
    generated = scaled(CALIBRATION_IMAGES, limit or MNIST_TRAIN_IMAGES)
    result = calibrate(model, holdout_x, holdout_y, recipe.seed, generated, generated)
    log(_calibrated(result.figures, len(holdout_y)))
    return result.figures


def _calibrated(f: dict[str, float], holdout: int) -> str:
    return (
        f"calibrated on {holdout:,} held-out digits: temperature {f['temperature']:.3f}, not-a-digit threshold "
        f"{f['not_digit_threshold']:.4f} (answers {f['holdout_answered']:.2f}% of them, {f['shifted_answered']:.2f}% "
        f"shifted, {f['printed_answered']:.2f}% printed; refuses {f['non_digits_refused']:.2f}% of calibration "
        "non-digits)"
    )


def recalibrate(path: Path, data_dir: Path | None, log: Callable[[str], None] = print) -> None:
    """Fit a trained open-set checkpoint's temperature and threshold again, as its last epoch did (after a change of
    the calibration rule), on the digits its recipe held out; the weights stay as they are."""
    from mnist_edge.train.calibrate import calibrate
    from mnist_edge.train.checkpoint import load_checkpoint, save_checkpoint
    from mnist_edge.train.data import load_mnist
    from mnist_edge.train.validate import recipe_from_dict

    ckpt = load_checkpoint(path)
    if not ckpt.model.open_set or "recipe" not in ckpt.meta:
        raise MnistEdgeError(f"{path}: not a trained open-set checkpoint (nothing to calibrate)")
    recipe = recipe_from_dict(ckpt.meta["recipe"], str(path))
    data = load_mnist(data_dir)
    n = ckpt.training.get("limit") or len(data.train_images)
    no_generated = replace(recipe, printed=0, non_digits=0)  # only the held-out digits are needed here
    _, _, holdout_x, holdout_y = training_set(no_generated, data.train_images[:n], data.train_labels[:n])
    if not len(holdout_y):
        raise MnistEdgeError(f"{path}: its recipe held no digits out to calibrate on")
    generated = scaled(CALIBRATION_IMAGES, n)
    result = calibrate(ckpt.model, holdout_x, holdout_y, recipe.seed, generated, generated)
    save_checkpoint(path, ckpt.model, {**ckpt.meta, "calibration": result.figures}, ckpt.training or None)
    log(_calibrated(result.figures, len(holdout_y)))
