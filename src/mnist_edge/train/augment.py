"""Notebook 004's augmentation, batched on the device: RandomAffine + ColorJitter for a whole batch at once.

torchvision applies RandomAffine(20, translate=(0.1, 0.1), scale=(0.9, 1.1)) and
ColorJitter(brightness=0.2, contrast=0.2) per PIL image; here every sample draws the same
distribution of parameters (integer-pixel shifts, nearest-neighbour resampling, black fill, brightness and
contrast in a random order per image) and one affine_grid + grid_sample warps the batch.
Parameters come from a CPU torch.Generator, so a run is reproducible and resumable on any device, and
distributed ranks can draw the parameters of the whole global batch and each keep their own slice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEGREES = 20.0
TRANSLATE = 0.1  # fraction of the image side
SCALE = (0.9, 1.1)
BRIGHTNESS = 0.2
CONTRAST = 0.2
N_PARAMS = 7  # angle, dx, dy, scale, brightness, contrast, order


def sample_params(n: int, generator: torch.Generator, size: int = 28) -> torch.Tensor:
    """Per-sample parameters [n, 7]: angle (rad), dx, dy (pixels), scale, brightness, contrast, brightness-first."""
    u = torch.rand(n, N_PARAMS, generator=generator)
    max_shift = TRANSLATE * size
    return torch.stack(
        [
            math.radians(DEGREES) * (2 * u[:, 0] - 1),
            torch.round(max_shift * (2 * u[:, 1] - 1)),  # torchvision rounds the shift to whole pixels
            torch.round(max_shift * (2 * u[:, 2] - 1)),
            SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 3],
            1 + BRIGHTNESS * (2 * u[:, 4] - 1),
            1 + CONTRAST * (2 * u[:, 5] - 1),
            (u[:, 6] < 0.5).float(),  # torchvision's ColorJitter shuffles the order of its adjustments
        ],
        dim=1,
    )


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor).clamp_(0, 1)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # PIL blends with the image's mean grey level
    return (mean + factor * (x - mean)).clamp_(0, 1)


def apply_params(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Warp and colour-jitter X [N,1,H,W] in [0,1] with PARAMS [N,7]; returns a new tensor, same shape, in [0,1]."""
    p = params.to(x.device, x.dtype)
    angle, dx, dy, scale = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    n, _, h, w = x.shape
    # Inverse map, output -> input, in grid_sample's [-1, 1] coordinates (square image: rotation is isotropic).
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    tx, ty = 2 * dx / w, 2 * dy / h
    theta = torch.stack(
        [
            torch.stack([cos, sin, -(cos * tx + sin * ty)], dim=1),
            torch.stack([-sin, cos, -(-sin * tx + cos * ty)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    warped = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    b, c = p[:, 4].view(n, 1, 1, 1), p[:, 5].view(n, 1, 1, 1)
    brightness_first = p[:, 6].view(n, 1, 1, 1).bool()
    return torch.where(
        brightness_first,
        _contrast(_brightness(warped, b), c),
        _brightness(_contrast(warped, c), b),
    )


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch [N,1,H,W] of [0,1] pixels, each sample with its own random parameters."""
    return apply_params(x, sample_params(x.shape[0], generator, x.shape[-1]))
