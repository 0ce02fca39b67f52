"""Seeded checkpoints for tests: untrained weights, valid metadata, no data needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mnist_edge.train.architectures import create_model
from mnist_edge.train.checkpoint import load_checkpoint, save_checkpoint
from mnist_edge.train.loop import TrainConfig, TrainResult, train


def seeded_checkpoint(path: Path, arch: str = "tiny", seed: int = 0, logit_scale: float = 1.0, **meta: Any) -> Path:
    """Write a checkpoint of ARCH with weights drawn from SEED and META on top of {"arch", "test_accuracy"}.

    LOGIT_SCALE multiplies the last layer's weights: huge logits make float32 rounding visible."""
    torch.manual_seed(seed)
    model = create_model(arch).eval()
    if logit_scale != 1.0:
        last = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][-1]
        with torch.no_grad():
            last.weight.mul_(logit_scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, {"arch": arch, "test_accuracy": None, **meta})
    return path


def payload(path: Path) -> dict[str, Any]:
    """A checkpoint's raw contents, to be altered and written back with torch.save (crafted-file tests)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoint files hold bit-identical weights."""
    wa, wb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def train_quietly(**config: Any) -> TrainResult:
    """train() with TrainConfig(**CONFIG), its log lines dropped: for tests that check the result, not the output."""
    return train(TrainConfig(**config), log=lambda _line: None)
