"""What a network costs: its parameters, and its multiply-accumulates for one image (`mnist-edge models`)."""

from __future__ import annotations

import torch
from torch import nn

from mnist_edge.spec import INPUT_SHAPE


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module) -> int:
    """Multiply-accumulates of the conv and linear layers for one image."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        weight: torch.Tensor = module.weight  # type: ignore[assignment]  # only conv and linear layers are hooked
        per_output = weight[0].numel()  # in_channels/groups * kh * kw, or in_features
        total += output[0].numel() * per_output

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *INPUT_SHAPE))
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return total
