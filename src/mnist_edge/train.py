"""Train a registered architecture with its notebook's recipe on an in-memory, on-device pipeline.

The whole training set lives on the device as one uint8 tensor; each epoch is a permutation of it, each
batch is converted to float and (for recipes with augmentation) warped on the device in one call. All
randomness comes from seeded generators whose state is checkpointed, so `--resume` continues exactly,
and Ctrl-C stops after the current step with a resumable checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mnist_edge import __version__, augment, distributed, robust_augment
from mnist_edge.architectures import AUGMENTATIONS, SCHEDULES, MnistClassifier, Recipe, arch_info, create_model
from mnist_edge.checkpoint import load_checkpoint, save_checkpoint
from mnist_edge.data import MNIST, load_mnist
from mnist_edge.errors import MnistEdgeError
from mnist_edge.evaluate import evaluate, torch_logits_fn

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """What the user asked for; None means "the recipe's value" (or the resumed checkpoint's)."""

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
    out: Path | None = None  # default: checkpoints/ARCH.pt, or the resumed file
    resume: Path | None = None
    limit: int | None = None  # train on the first LIMIT images, test on the first LIMIT test images
    progress: bool = True  # a live bar when stdout is a terminal


@dataclass(frozen=True)
class TrainResult:
    out: Path
    epochs_done: int
    test_accuracy: float | None
    interrupted: bool
    history: list[dict[str, Any]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MnistEdgeError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise MnistEdgeError("--device mps: MPS is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise MnistEdgeError(f"--device {name}: choose auto, cpu, cuda or mps")
    return torch.device(name)


def resolve_recipe(base: Recipe, config: TrainConfig, resuming: bool) -> Recipe:
    """The recipe with the user's overrides; a resumed run may only extend --epochs."""
    overrides = {
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
    recipe = dataclasses.replace(base, **overrides)
    if recipe.schedule not in SCHEDULES:
        raise MnistEdgeError(f"--schedule {recipe.schedule}: choose {' or '.join(SCHEDULES)}")
    if recipe.augmentation not in AUGMENTATIONS:
        raise MnistEdgeError(f"unknown augmentation {recipe.augmentation!r} in the recipe")
    if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.lr <= 0:
        raise MnistEdgeError("--epochs and --batch-size must be at least 1 and --lr positive")
    return recipe


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


class EpochBar:
    """One rich progress bar per epoch (loss, images/s, ETA); silent when disabled or not on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.progress = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]:,.0f} img/s"),
                TimeRemainingColumn(),
                transient=True,
            )

    @contextmanager
    def epoch(self, label: str, total: int, done: int) -> Iterator[Callable[[int, float, float], None]]:
        if self.progress is None:
            yield lambda _steps, _loss, _speed: None
            return
        with self.progress:
            task = self.progress.add_task("", total=total, completed=done, epoch=label, loss=float("nan"), speed=0.0)
            yield lambda steps, loss, speed: self.progress.update(task, completed=steps, loss=loss, speed=speed)
            self.progress.remove_task(task)


@contextmanager
def stop_on_interrupt(escalate: bool = True) -> Iterator[Callable[[], bool]]:
    """First Ctrl-C asks the loop to stop after the current step; a second one (if ESCALATE) interrupts at once.

    Under torchrun a worker gets Ctrl-C twice (from the terminal and forwarded by torchrun), so there it
    never escalates: torchrun kills workers that do not stop in time.
    """
    requested = False

    def handler(_signum: int, _frame: Any) -> None:
        nonlocal requested
        if requested and escalate:
            raise KeyboardInterrupt
        requested = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield lambda: False
        return
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)


def _subset(data: MNIST, limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if limit is not None and limit < 1:
        raise MnistEdgeError("--limit must be at least 1")
    n = limit or len(data.train_images)
    return data.train_images[:n], data.train_labels[:n], data.test_images[:n], data.test_labels[:n]


def _versions() -> dict[str, str]:
    return {"torch": str(torch.__version__), "mnist_edge": __version__}  # str: TorchVersion is not weights_only-loadable


def train(config: TrainConfig, log: Log = print) -> TrainResult:
    """Run the training CONFIG asks for; writes a checkpoint after every epoch and on Ctrl-C."""
    device = resolve_device(config.device)
    world = distributed.join(device.type)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    try:
        return _train(config, device, world, log if world.is_main else lambda _line: None)
    finally:
        distributed.leave(world)


def _train(config: TrainConfig, device: torch.device, world: distributed.World, log: Log) -> TrainResult:
    started = time.perf_counter()
    resumed = load_checkpoint(config.resume) if config.resume else None
    if resumed is not None:
        if config.arch not in (None, resumed.arch):
            raise MnistEdgeError(f"--arch {config.arch} does not match the checkpoint's architecture {resumed.arch!r}")
        if not resumed.training:
            raise MnistEdgeError(f"{config.resume}: holds no training state to resume (a final or exported checkpoint)")
        arch = resumed.arch
        base = Recipe(**resumed.meta["recipe"])
        limit = resumed.training.get("limit") or None
        if config.recipe is not None:
            raise MnistEdgeError("--resume continues the checkpoint's recipe; leave out --recipe")
        if config.limit not in (None, limit):
            raise MnistEdgeError(f"--limit {config.limit} differs from the checkpoint's ({limit})")
    elif config.arch is None:
        raise MnistEdgeError("give --arch NAME (or --resume FILE)")
    else:
        arch, base, limit = config.arch, arch_info(config.arch).get_recipe(config.recipe), config.limit
    recipe = resolve_recipe(base, config, resuming=resumed is not None)
    trained = resumed.training.get("epoch") if resumed is not None else None
    if isinstance(trained, int) and trained >= recipe.epochs:
        raise MnistEdgeError(f"{config.resume}: already trained {trained} of {recipe.epochs} epochs; give --epochs above {trained} to go on")
    out = Path(config.out or config.resume or Path("checkpoints") / f"{arch}.pt")
    info = arch_info(arch)

    data = load_mnist(config.data_dir)
    train_x, train_y, test_x, test_y = _subset(data, limit)
    n = len(train_x)
    steps = n // recipe.batch_size if recipe.drop_last else math.ceil(n / recipe.batch_size)
    if steps == 0:
        raise MnistEdgeError(f"{n} training images make no full batch of {recipe.batch_size}")

    torch.manual_seed(recipe.seed)  # the initial weights
    model: MnistClassifier = resumed.model if resumed is not None else create_model(arch)
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)  # oneDNN's convolutions run ~12% faster on NHWC here
    if world.distributed:
        torch.manual_seed(recipe.seed + world.rank)  # each rank its own dropout masks
    optimizer = build_optimizer(recipe, model, device)
    generator = torch.Generator().manual_seed(recipe.seed)  # permutations and augmentation, on the CPU
    history: list[dict[str, Any]] = list(resumed.meta.get("history", [])) if resumed else []
    state: dict[str, Any] = {"epoch": 0, "step": 0}
    if resumed is not None:
        state = _restore(resumed.training, optimizer, generator, world, device)
    net = model
    if world.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    images = torch.from_numpy(train_x.copy()).to(device).unsqueeze(1)  # uint8 [N,1,28,28], converted per batch
    labels = torch.from_numpy(train_y).to(device)
    augmentation = {"notebook": augment, "robust": robust_augment}[recipe.augmentation]
    def checkpoint(epochs_done: int, training: dict[str, Any]) -> None:
        rng = distributed.gather(world, torch.get_rng_state())
        if not world.is_main:
            return
        training = {**training, "optimizer": optimizer.state_dict(), "generator": generator.get_state(), "rng": rng}
        if device.type == "cuda":
            training["cuda_rng"] = torch.cuda.get_rng_state(device)
        if limit:
            training["limit"] = limit
        previous_wall = resumed.meta.get("wall_time_s", 0.0) if resumed else 0.0
        meta = {
            "arch": arch,
            "recipe": recipe.as_dict(),
            "epochs_done": epochs_done,
            "test_accuracy": history[-1]["test_accuracy"] if history else None,
            "normalize": list(info.normalize) if info.normalize else None,
            "seed": recipe.seed,
            "device": str(device),
            "world_size": world.size,
            "train_images": n,
            "wall_time_s": previous_wall + time.perf_counter() - started,
            "versions": _versions(),
            "dataset_sha256": data.sha256,
            "history": history,
        }
        save_checkpoint(out, model, meta, training)

    bar = EpochBar(config.progress and world.is_main)
    interrupted = False
    with stop_on_interrupt(escalate=not world.distributed) as stop_requested:
        log(
            f"training {arch} on {n:,} images ({len(test_x):,} test) | device {device}, {torch.get_num_threads()} threads"
            + (f", {world.size} processes" if world.distributed else "")
        )
        log(f"recipe: {_describe(recipe)}" + (f" | resuming {config.resume} at epoch {state['epoch'] + 1}" if resumed else ""))
        for epoch in range(state["epoch"], recipe.epochs):
            first_step = state["step"] if epoch == state["epoch"] else 0
            perm = state.get("perm") if first_step else None
            if perm is None:
                perm = torch.randperm(n, generator=generator)
            loss_sum = torch.tensor(state.get("loss_sum", 0.0) if first_step else 0.0, device=device)
            seen = state.get("seen", 0) if first_step else 0
            timed_from = seen  # a resumed epoch's earlier images were timed by the earlier run
            perm_device = perm.to(device)
            net.train()
            epoch_start = last_shown = time.perf_counter()
            with bar.epoch(f"{epoch + 1}/{recipe.epochs}", steps, first_step) as show:
                for step in range(first_step, steps):
                    index = perm_device[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                    params = augmentation.sample_params(len(index), generator) if recipe.augment else None
                    # Each rank takes its slice of the global batch, so the recipe's batch size holds.
                    index = index[world.rank :: world.size]
                    x = images[index].float().div_(255)
                    if params is not None:
                        x = augmentation.apply_params(x, params[world.rank :: world.size])
                    for group in optimizer.param_groups:
                        group["lr"] = recipe.lr_at(epoch * steps + step, recipe.epochs * steps)
                    loss = F.cross_entropy(net(x), labels[index], label_smoothing=recipe.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach() * len(index)
                    seen += len(index)
                    now = time.perf_counter()
                    if now - last_shown > 0.3:  # .item() syncs with the device: only a few times a second
                        show(step + 1, loss.item(), (seen - timed_from) * world.size / max(now - epoch_start, 1e-9))
                        last_shown = now
                    if distributed.any_rank(world, stop_requested(), device) and step + 1 < steps:
                        interrupted = True
                        loss_total = distributed.sum_across(world, loss_sum)
                        checkpoint(
                            epoch,
                            {
                                "epoch": epoch,
                                "step": step + 1,
                                "perm": perm,
                                "loss_sum": float(loss_total) / world.size,
                                "seen": seen,
                            },
                        )
                        break
            if interrupted:
                log(f"interrupted in epoch {epoch + 1} at step {step + 1}/{steps}: saved {out}; --resume {out} continues")
                break
            seconds = time.perf_counter() - epoch_start
            train_loss = float(distributed.sum_across(world, loss_sum)) / max(seen * world.size, 1)
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": seconds}
            if world.is_main:
                result = evaluate(torch_logits_fn(model, device), test_x, test_y)
                record.update(test_loss=result.loss, test_accuracy=result.accuracy)
                record["images_per_s"] = (seen - timed_from) * world.size / seconds
                history.append(record)
                log(
                    f"epoch {epoch + 1}/{recipe.epochs}: train loss {train_loss:.4f}, test loss {result.loss:.4f}, "
                    f"test accuracy {result.accuracy:.2f}% | {record['images_per_s']:,.0f} img/s, {seconds:.1f}s"
                )
            checkpoint(epoch + 1, {"epoch": epoch + 1, "step": 0})
            if stop_requested():
                interrupted = epoch + 1 < recipe.epochs
                if interrupted:
                    log(f"interrupted after epoch {epoch + 1}: saved {out}; --resume {out} continues")
                break
    done = history[-1]["epoch"] if history else 0
    accuracy = history[-1]["test_accuracy"] if history else None
    if world.is_main and not interrupted:
        took = time.perf_counter() - started
        log(f"done: {arch}, {done} epochs, test accuracy {accuracy:.2f}%, {took:.1f}s; checkpoint {out}")
    return TrainResult(out, done, accuracy, interrupted, history)


def _restore(
    training: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    world: distributed.World,
    device: torch.device,
) -> dict[str, Any]:
    """Put optimizer and RNG state back as the checkpoint left them; returns where the loop resumes."""
    try:
        optimizer.load_state_dict(training["optimizer"])
        generator.set_state(training["generator"])
        rng = training["rng"]
        if len(rng) == world.size:  # another world size cannot reproduce the other ranks' dropout
            torch.set_rng_state(rng[world.rank])
        if device.type == "cuda" and "cuda_rng" in training:
            torch.cuda.set_rng_state(training["cuda_rng"], device)
        return {k: training[k] for k in ("epoch", "step", "perm", "loss_sum", "seen") if k in training}
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise MnistEdgeError(f"checkpoint's training state is incomplete or does not fit ({exc})") from None


def _describe(recipe: Recipe) -> str:
    opt = f"{recipe.optimizer} lr {recipe.lr:g}" + (f" momentum {recipe.momentum:g}" if recipe.optimizer == "sgd" else "")
    parts = [opt, f"batch {recipe.batch_size}", f"{recipe.epochs} epochs", f"seed {recipe.seed}"]
    parts.append(f"{recipe.augmentation} augmentation" if recipe.augment else "no augmentation")
    parts += [f"{k.replace('_', ' ')} {v:g}" for k in ("weight_decay", "label_smoothing") if (v := getattr(recipe, k))]
    if recipe.nesterov:
        parts.append("nesterov")
    if recipe.drop_last:
        parts.append("drop_last")
    if recipe.schedule != "constant":
        parts.append(f"{recipe.schedule} LR schedule" + (f" ({recipe.warmup:g} warm-up)" if recipe.schedule == "onecycle" else ""))
    return ", ".join(parts)
