"""Robustness augmentation, batched on the device: the shifts real digits have, drawn per sample.

Real users' digits differ from MNIST's in pen (thicker and thinner strokes), writer (shape, slant,
size), and capture (low-resolution scans and photos, blur, sensor noise, faint ink). Each sample draws,
independently: stroke thickness (grey erosion or dilation), a random affine (rotation, scale, shear,
sub-pixel shift) composed with a smooth elastic displacement field, blur, a round trip through a lower
resolution, ink intensity and additive noise. Every step is one batched op (max_pool, one grid_sample,
a grouped conv, interpolate, per-size subsets), no per-sample Python.

The interface is augment.py's: `sample_params(n, generator)` draws a small float tensor [n, N_PARAMS]
on the CPU generator (reproducible, resumable, sliceable across distributed ranks); `apply_params(x,
params)` applies it on x's device. The noise field itself is drawn on the device from a seed carried in
the parameters, so the parameters stay small.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEGREES = 15.0
SCALE = (0.8, 1.15)
SHEAR = 0.2  # radians, x-shear: slant
TRANSLATE = 2.0  # pixels: predict centres by mass, so only a little jitter is left
# How often each degradation is drawn: together they leave about 4 in 10 digits only warped, so that clean MNIST
# accuracy, a floor of its own, is not traded away for the shifts.
# Stroke thickness: probabilities of erosion, nothing, dilation by a plus (4-neighbourhood), by a 3x3 square.
THICKNESS_P = (0.1, 0.7, 0.1, 0.1)
ELASTIC_P = 0.5
ELASTIC_GRID = 4  # coarse displacement grid, upsampled smoothly to the image
# std of the coarse displacements, pixels: other hands warp further than 1.2 px allowed (the model refused their
# digits as not digits), and 2.0 taught it to answer scribbles too (docs/edge-model.md)
ELASTIC_MAX = 1.6
BLUR_P = 0.15
BLUR_SIGMA = (0.4, 1.1)
BLUR_RADIUS = 3
LOWRES_P = 0.15
LOWRES_SIZES = (12, 14, 17, 20)
INK = (0.8, 1.0)  # peak ink intensity (faint pencil to full)
NOISE_P = 0.15
NOISE_STD = 0.15

_FIXED = ("angle", "scale", "shear", "dx", "dy", "thickness", "blur", "lowres", "ink", "noise", "noise_seed")
_COL = {name: i for i, name in enumerate(_FIXED)}
N_PARAMS = len(_FIXED) + 2 * ELASTIC_GRID * ELASTIC_GRID


def _choice(u: torch.Tensor, probabilities: tuple[float, ...]) -> torch.Tensor:
    """Index into PROBABILITIES for uniform draws U."""
    edges = torch.tensor(probabilities).cumsum(0)[:-1]
    return torch.bucketize(u.contiguous(), edges, right=True).float()


def sample_params(n: int, generator: torch.Generator, size: int = 28) -> torch.Tensor:
    """Per-sample parameters [n, N_PARAMS] (see _FIXED, then the elastic grid's x and y displacements in pixels)."""
    u = torch.rand(n, len(_FIXED), generator=generator)
    elastic = torch.randn(n, 2 * ELASTIC_GRID * ELASTIC_GRID, generator=generator)
    elastic_on = torch.rand(n, 1, generator=generator) < ELASTIC_P
    elastic_std = ELASTIC_MAX * torch.rand(n, 1, generator=generator)
    col = _COL
    fixed = torch.empty(n, len(_FIXED))
    fixed[:, col["angle"]] = math.radians(DEGREES) * (2 * u[:, col["angle"]] - 1)
    fixed[:, col["scale"]] = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, col["scale"]]
    fixed[:, col["shear"]] = SHEAR * (2 * u[:, col["shear"]] - 1)
    fixed[:, col["dx"]] = TRANSLATE * (2 * u[:, col["dx"]] - 1)
    fixed[:, col["dy"]] = TRANSLATE * (2 * u[:, col["dy"]] - 1)
    fixed[:, col["thickness"]] = _choice(u[:, col["thickness"]], THICKNESS_P) - 1  # -1, 0, 1, 2
    blur = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * torch.rand(n, generator=generator)
    fixed[:, col["blur"]] = torch.where(u[:, col["blur"]] < BLUR_P, blur, torch.zeros(n))
    sizes = torch.tensor(LOWRES_SIZES, dtype=torch.float32)
    pick = torch.randint(len(LOWRES_SIZES), (n,), generator=generator)
    fixed[:, col["lowres"]] = torch.where(u[:, col["lowres"]] < LOWRES_P, sizes[pick], torch.zeros(n))
    fixed[:, col["ink"]] = INK[0] + (INK[1] - INK[0]) * u[:, col["ink"]]
    noise = NOISE_STD * torch.rand(n, generator=generator)
    fixed[:, col["noise"]] = torch.where(u[:, col["noise"]] < NOISE_P, noise, torch.zeros(n))
    fixed[:, col["noise_seed"]] = torch.randint(2**24, (n,), generator=generator).float()  # exact in float32
    return torch.cat([fixed, elastic * elastic_std * elastic_on], dim=1)


def grey_dilate(x: torch.Tensor, square: bool = False) -> torch.Tensor:
    """Grey dilation of [N,1,H,W] by a 3x3 square, or by a plus (the pixel and its 4 neighbours)."""
    if square:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    shifted = [
        p[..., 1 : h + 1, 1 : w + 1], p[..., :h, 1 : w + 1], p[..., 2:, 1 : w + 1], p[..., 1 : h + 1, :w],
        p[..., 1 : h + 1, 2:],
    ]
    return torch.stack(shifted).amax(0)


def grey_erode(x: torch.Tensor) -> torch.Tensor:
    """Grey erosion by a plus: the dual of the dilation on the inverted image."""
    return 1 - grey_dilate(1 - x)


def _thickness(x: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    op = op.view(-1, 1, 1, 1)
    out = torch.where(op < 0, grey_erode(x), x)
    out = torch.where(op == 1, grey_dilate(x), out)
    return torch.where(op == 2, grey_dilate(x, square=True), out)


def _warp(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """One bilinear grid_sample for the affine map composed with the elastic field."""
    n, _, h, w = x.shape
    angle, scale, shear = p[:, _COL["angle"]], p[:, _COL["scale"]], p[:, _COL["shear"]]
    # Inverse map (output -> input) in [-1, 1] coordinates: rotate, shear along x, then scale, then shift.
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    a = torch.stack([torch.stack([cos, -sin + tan * cos], 1), torch.stack([sin, cos + tan * sin], 1)], 1)
    a = a / scale.view(n, 1, 1)
    shift = torch.stack([2 * p[:, _COL["dx"]] / w, 2 * p[:, _COL["dy"]] / h], 1)
    theta = torch.cat([a, shift.unsqueeze(2)], 2)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    coarse = p[:, len(_FIXED) :].view(n, 2, ELASTIC_GRID, ELASTIC_GRID)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    field = field * torch.tensor([2 / w, 2 / h], device=x.device, dtype=x.dtype).view(1, 2, 1, 1)
    return F.grid_sample(
        x, grid + field.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with a per-sample SIGMA (0: unchanged), as one grouped conv over the batch."""
    n, c, h, w = x.shape
    r = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-(r**2) / (2 * sigma.clamp_min(1e-3).view(n, 1) ** 2))
    g = g / g.sum(1, keepdim=True)
    kernel = (g.view(n, 1, -1, 1) * g.view(n, 1, 1, -1)).repeat_interleave(c, 0)
    return F.conv2d(x.reshape(1, n * c, h, w), kernel, padding=BLUR_RADIUS, groups=n * c).view(n, c, h, w)


def _lowres(x: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Average down to each sample's size (0: unchanged) and back up bilinearly: a low-resolution capture."""
    out = x.clone()
    h, w = x.shape[-2:]
    for size in LOWRES_SIZES:  # a handful of sizes, each one batched op
        index = (sizes == size).nonzero().flatten()
        if len(index):
            small = F.adaptive_avg_pool2d(x[index], size)
            out[index] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


def apply_params(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply PARAMS [N, N_PARAMS] to X [N,1,H,W] in [0,1]; returns a new tensor, same shape, in [0,1]."""
    p = params.to(x.device, x.dtype)
    n = len(x)
    x = _thickness(x, p[:, _COL["thickness"]])
    x = _warp(x, p)
    x = _blur(x, p[:, _COL["blur"]])
    x = _lowres(x, p[:, _COL["lowres"]])
    x = x * p[:, _COL["ink"]].view(n, 1, 1, 1)
    noise_std = p[:, _COL["noise"]]
    if bool((noise_std > 0).any()):
        gen = torch.Generator(x.device).manual_seed(int(params[0, _COL["noise_seed"]]))
        x = x + noise_std.view(n, 1, 1, 1) * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return x.clamp_(0, 1)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch [N,1,H,W] of [0,1] pixels, each sample with its own random parameters."""
    return apply_params(x, sample_params(x.shape[0], generator, x.shape[-1]))
