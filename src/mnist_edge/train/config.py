"""What a training run is asked for (TrainConfig), what it answers (TrainResult), and how the asking resolves: the
device, the CPU threads and the recipe with the user's overrides."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnist_edge.errors import MnistEdgeError
from mnist_edge.train.recipes import SCHEDULES, Recipe
from mnist_edge.train.progress import PROGRESS_EVERY_S
from mnist_edge.schema import integer, number
from mnist_edge.train.validate import check_recipe, recipe_from_dict
from mnist_edge.train.architectures import arch_info, create_model
from mnist_edge.train.checkpoint import Checkpoint, load_checkpoint
from mnist_edge.atomic import probe_writable, require_replaceable

Log = Callable[[str], None]
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class TrainConfig:
    """What the user asked for; None means "the recipe's value" (or the resumed checkpoint's).

    Every number is range-checked here, so the library refuses what the command line refuses.
    """

    arch: str | None = None
    recipe: str | None = None  # a named recipe of the architecture; default: its default recipe
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    augment: bool | None = None
    schedule: str | None = None
    device: str = "auto"
    data_dir: Path | None = None
    out: Path | None = None  # a checkpoint file; default: checkpoints/ARCH.pt, or the resumed file
    resume: Path | None = None
    limit: int | None = None  # use only the first LIMIT training images and the first LIMIT test images
    threads: int | None = None  # CPU threads; default: the usable CPUs the load average leaves free
    overwrite: bool = False  # replace an existing OUT that is not the resumed checkpoint
    progress: bool = True  # a live bar on a terminal, else a line every progress_every_s seconds
    progress_every_s: float = PROGRESS_EVERY_S

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise MnistEdgeError(f"--device {self.device}: choose {', '.join(DEVICES)}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise MnistEdgeError(f"--schedule {self.schedule}: choose {' or '.join(SCHEDULES)}")
        # the recipe's own checks, on the fields given; resolve_recipe checks the merged recipe again
        probe = Recipe(optimizer="sgd", lr=1.0, batch_size=1, epochs=1)
        given = {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "seed") if getattr(self, k) is not None}
        check_recipe(dataclasses.replace(probe, **given))
        if self.limit is not None:
            integer("--limit", self.limit, 1, 2**31)
        if self.threads is not None:
            integer("--threads", self.threads, 1, os.cpu_count() or 1)  # more than the CPUs only contend
        number("progress_every_s", self.progress_every_s, 0.0, 86_400.0)


@dataclass(frozen=True)
class TrainResult:
    out: Path
    epochs_done: int
    test_accuracy: float | None
    interrupted: bool
    history: list[dict[str, Any]]
    arch: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "out": str(self.out)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MnistEdgeError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise MnistEdgeError("--device mps: MPS is not available")
    if name not in DEVICES:
        raise MnistEdgeError(f"--device {name}: choose {', '.join(DEVICES)}")
    return torch.device(name)


def default_threads() -> int:
    """The usable CPUs minus those the 1-minute load average says are busy, at least 1.

    On a busy machine more threads than free cores only contend (OpenMP threads wait on each other).
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, usable - busy)


@contextmanager
def cpu_threads(threads: int | None, world_size: int) -> Iterator[int]:
    """Run with THREADS CPU threads (default: default_threads() shared among the ranks); restores the previous count.

    An OMP_NUM_THREADS the user (or torchrun) set is left alone unless THREADS is given.
    """
    previous = torch.get_num_threads()
    if threads is None and "OMP_NUM_THREADS" in os.environ:
        yield previous
        return
    torch.set_num_threads(threads or max(1, default_threads() // world_size))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def resolve_recipe(base: Recipe, config: TrainConfig, resuming: bool) -> Recipe:
    """The recipe with the user's overrides; a resumed run may only extend --epochs."""
    overrides: dict[str, Any] = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "augment": config.augment,
        "schedule": config.schedule,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if resuming:
        changed = [k for k, v in overrides.items() if k != "epochs" and v != getattr(base, k)]
        if changed:
            raise MnistEdgeError(f"--resume continues the checkpoint's recipe; cannot change {', '.join(changed)}")
    return check_recipe(dataclasses.replace(base, **overrides))


def build_optimizer(recipe: Recipe, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    # fused kernels update all parameters in one pass (CPU and CUDA); MPS keeps the default path
    fused = True if device.type in ("cpu", "cuda") else None
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay, fused=fused,
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=fused)
    raise MnistEdgeError(f"unknown optimizer {recipe.optimizer!r} in the recipe")


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """A generous estimate of a checkpoint's size: weights, two optimizer buffers each, and metadata."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 3 * weights + (1 << 20)


# --- 1. plan: every decision and check before any work ----------------------------------------------------


@dataclass(frozen=True)
class Plan:
    arch: str
    recipe: Recipe
    limit: int | None
    out: Path
    resumed: Checkpoint | None
    resume: Path | None  # the resumed file


def make_plan(config: TrainConfig) -> Plan:
    """What this run trains, for how long and into which file; refuses a bad combination or an unwritable --out."""
    resumed = load_checkpoint(config.resume) if config.resume else None
    if resumed is not None:
        if config.arch not in (None, resumed.arch):
            raise MnistEdgeError(f"--arch {config.arch} does not match the checkpoint's architecture {resumed.arch!r}")
        if not resumed.training:
            raise MnistEdgeError(f"{config.resume}: holds no training state to resume (a final or exported checkpoint)")
        if config.recipe is not None:
            raise MnistEdgeError("--resume continues the checkpoint's recipe; leave out --recipe")
        arch, base = resumed.arch, recipe_from_dict(resumed.meta["recipe"], str(config.resume))
        limit = resumed.training.get("limit")
        if config.limit not in (None, limit):
            raise MnistEdgeError(f"--limit {config.limit} differs from the checkpoint's ({limit})")
    elif config.arch is None:
        raise MnistEdgeError("give --arch NAME (or --resume FILE)")
    else:
        arch, base, limit = config.arch, arch_info(config.arch).get_recipe(config.recipe), config.limit
    recipe = resolve_recipe(base, config, resuming=resumed is not None)
    trained = resumed.training.get("epoch") if resumed is not None else None
    if trained is not None and trained >= recipe.epochs:
        raise MnistEdgeError(
            f"{config.resume}: already trained {trained} of {recipe.epochs} epochs; give --epochs above {trained} to "
            "go on"
        )
    out = Path(config.out or config.resume or Path("checkpoints") / f"{arch}.pt")
    check_out(out, config)
    probe_writable(out, checkpoint_bytes(create_model(arch)), "checkpoint")
    return Plan(arch, recipe, limit, out, resumed, config.resume)


def check_out(out: Path, config: TrainConfig) -> None:
    """OUT may be written: nothing there, or a file that is the resumed one or that --overwrite may replace; never
    a FIFO or a device (as root, `--out /dev/null` would replace the system's)."""
    require_replaceable(out, "checkpoint file")
    resumed = config.resume is not None and out.resolve() == Path(config.resume).resolve()
    if os.path.lexists(out) and not config.overwrite and not resumed:
        raise MnistEdgeError(f"{out}: exists; --resume it, choose another --out, or give --overwrite to replace it")
