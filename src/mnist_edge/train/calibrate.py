"""Make an open-set model's numbers mean what they say, on images training never used.

Two things are fitted after the last epoch and saved with the weights (architectures.MnistClassifier):
- the temperature that makes the digit probabilities honest (Guo et al. 2017, temperature scaling): one
  number, chosen to minimise the negative log-likelihood of held-out training digits;
- the "not a digit" threshold: the lowest that still answers `ANSWER_RATE` of every pool of held-out real
  digits (clean, augmented as photos and other pens are, printed in calibration-only fonts).
Neither touches the test set, which stays for the final check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mnist_edge.train import robust_augment, synthetic
from mnist_edge.train.architectures import MnistClassifier, not_digit_score
from mnist_edge.measure.evaluate import to_pixels
from mnist_edge.spec import NUM_CLASSES

# Of real digits, per pool: the operating point. The floors ask real digits to be answered at >= 99% and non-digits
# refused at >= 95%; on the calibration images 99.8% leaves each about the same margin (docs/edge-model.md).
ANSWER_RATE = 0.998
# Temperatures searched (log-spaced); the fit is a convex 1-D problem, so a fine grid finds its minimum.
TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(5.0), 2001))


@dataclass(frozen=True)
class Calibration:
    temperature: float
    threshold: float
    figures: dict[str, float]  # what the held-out images showed at that operating point, for the checkpoint


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the mean NLL of softmax(LOGITS / T) at LABELS."""
    logits = logits.astype(np.float64)
    rows = np.arange(len(labels))
    nll = [-_log_softmax(logits / t)[rows, labels].mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def choose_threshold(pools: list[np.ndarray], answer_rate: float = ANSWER_RATE) -> float:
    """The lowest threshold at which every pool of real digits' not-digit scores is answered at ANSWER_RATE."""
    highest = max(float(np.quantile(p, answer_rate, method="higher")) for p in pools if len(p))
    return min(1.0, float(np.nextafter(np.float32(highest), np.float32(2.0))))


def _outputs(model: MnistClassifier, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Raw digit logits and not-digit scores of uint8-valued IMAGES [N,1,28,28] (float in [0,1])."""
    model.eval()
    logits, scores = [], []
    with torch.inference_mode():
        for start in range(0, len(images), 1000):
            raw = model(images[start : start + 1000])
            logits.append(raw[:, :NUM_CLASSES].float().cpu().numpy())
            scores.append(not_digit_score(raw).float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(scores)


def calibrate(
    model: MnistClassifier, holdout_x: np.ndarray, holdout_y: np.ndarray, seed: int, printed: int, non_digits: int
) -> Calibration:
    """Fit the temperature and the threshold of MODEL on held-out digits HOLDOUT_X/Y (uint8 [N,28,28]) and on
    PRINTED digits and NON_DIGITS generated in calibration-only fonts, and set them on MODEL."""
    device = next(model.parameters()).device
    clean = torch.from_numpy(to_pixels(holdout_x)).to(device)
    generator = torch.Generator().manual_seed(seed + 7919)  # a stream of its own: not the training draws
    shifted = robust_augment.apply_params(clean, robust_augment.sample_params(len(clean), generator).to(device))
    fonts = synthetic.fonts_for("calibration")
    printed_x, printed_y = synthetic.printed_digits(printed, seed + 1, fonts)
    negatives, _ = synthetic.non_digits(non_digits, seed + 1, fonts)
    logits, clean_scores = _outputs(model, clean)
    _, shifted_scores = _outputs(model, shifted)
    printed_logits, printed_scores = _outputs(model, torch.from_numpy(to_pixels(printed_x)).to(device))
    _, negative_scores = _outputs(model, torch.from_numpy(to_pixels(negatives)).to(device))
    temperature = fit_temperature(logits, holdout_y)
    threshold = choose_threshold([clean_scores, shifted_scores, printed_scores])
    model.temperature.fill_(temperature)
    model.not_digit_threshold.fill_(threshold)
    temperature, threshold = float(model.temperature), float(model.not_digit_threshold)  # as saved: float32
    figures = {
        "temperature": temperature,
        "not_digit_threshold": threshold,
        "holdout_images": float(len(holdout_y)),
        "holdout_accuracy": float((logits.argmax(1) == holdout_y).mean() * 100),
        "holdout_answered": float((clean_scores < threshold).mean() * 100),
        "shifted_answered": float((shifted_scores < threshold).mean() * 100),
        "printed_answered": float((printed_scores < threshold).mean() * 100),
        "printed_accuracy": float((printed_logits.argmax(1) == printed_y).mean() * 100),
        "non_digits_refused": float((negative_scores >= threshold).mean() * 100),
    }
    return Calibration(temperature, threshold, figures)
