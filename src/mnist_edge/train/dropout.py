"""Dropout with the mask drawn fast on the CPU: the same layer as torch's, a cheaper random source.

torch's CPU dropout draws its Bernoulli mask element by element from a Mersenne Twister, slow next to the small
convolutions of `tiny`, whose four dropout layers cover its whole 28x28 and 14x14 activation maps. Here the
mask comes from numpy's PCG64 as 16-bit integers in one vectorized call, seeded by one draw from torch's
generator, so `torch.manual_seed` and a checkpoint's RNG state still reproduce every mask. An element is
dropped with probability round(p * 65536) / 65536, within 1e-5 of p, and the kept ones are scaled by the exact
inverse of the keep probability, so the layer stays unbiased. Off the CPU (CUDA's own dropout is fast), in eval
mode, for a tensor in neither contiguous layout, and for p near 1 (above about 0.92, where 1e-5 is no longer
small against 1 - p), it is torch's dropout.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 65536  # the mask's resolution: uint16 draws


def _dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with the CPU mask drawn by numpy (see the module's doc)."""
    if not training or p == 0.0 or x.device.type != "cpu" or not x.is_floating_point() or not _dense(x):
        return F.dropout(x, p, training)
    threshold = round(p * _LEVELS) if 0.0 <= p <= 1.0 else -1
    if not 0 <= threshold < _LEVELS or abs(threshold / _LEVELS - p) > 1e-4 * (1 - p):
        return F.dropout(x, p, training)  # torch's checks; and p near 1, which 16-bit draws cannot hit closely
    seed = int(torch.randint(2**63 - 1, (), dtype=torch.int64))  # from torch's generator: seeded and checkpointed
    draws = np.random.default_rng(seed).integers(0, _LEVELS, x.numel(), dtype=np.uint16)
    # the draws are i.i.d., so laying them out in x's own memory order gives a mask of x's layout without a copy
    keep = torch.from_numpy(draws >= threshold).as_strided(x.shape, x.stride())
    return x * keep.to(x.dtype).mul_(_LEVELS / (_LEVELS - threshold))


class Dropout(nn.Dropout):
    """nn.Dropout with `dropout` above; the same parameters (none) and state_dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
