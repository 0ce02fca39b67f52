"""Train a registered architecture with its notebook's recipe on an in-memory, on-device pipeline.

The whole training set lives on the device as one uint8 tensor; each epoch is a permutation of it, each
batch is converted to float and (for recipes with augmentation) warped on the device in one call. All
randomness comes from seeded generators whose state is checkpointed, so `--resume` continues exactly,
and Ctrl-C stops after the current step with a resumable checkpoint.

A run reads top to bottom: `train` plans it (`make_plan`: every flag and file checked before any work), holds
its checkpoint file against other runs (`atomic.holding`) and sets it up (`set_up`: data, model, optimizer,
restored state), then `_train` runs each epoch (`run_epoch`), evaluates it (`evaluate_epoch`) and saves (`save`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mnist_edge import __version__, augment, distributed, robust_augment, synthetic
from mnist_edge.architectures import SCHEDULES, MnistClassifier, Recipe, arch_info, create_model, min_train_batch
from mnist_edge.atomic import holding, probe_writable, require_replaceable
from mnist_edge.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mnist_edge.data import load_mnist
from mnist_edge.errors import MnistEdgeError, out_of_memory
from mnist_edge.spec import NUM_CLASSES
from mnist_edge.evaluate import evaluate, torch_logits_fn
from mnist_edge.validate import check_recipe, integer, number, recipe_from_dict

Log = Callable[[str], None]
DEVICES = ("auto", "cpu", "cuda", "mps")
AUGMENTATION_MODULES = {"notebook": augment, "robust": robust_augment}  # architectures.AUGMENTATIONS: each a sample_params + apply_params
MNIST_TRAIN_IMAGES = 60_000  # what a recipe's image counts (holdout, printed, non_digits) are written for
CALIBRATION_IMAGES = 2000  # printed digits and non-digits generated (each) in calibration fonts
PROGRESS_EVERY_S = 10.0  # a progress line this often when the output is not a terminal (a pipe, a log file)


def _print(line: str) -> None:
    print(line, flush=True)


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


class Progress:
    """Live progress of an epoch: a rich bar on a terminal; elsewhere (a pipe, a log file) a line every few seconds."""

    def __init__(self, enabled: bool, every_s: float, log: Log) -> None:
        self.enabled, self.log, self.bar = enabled, log, None
        self.every_s = every_s
        if enabled and sys.stderr.isatty():  # the bar goes to stderr, so --json keeps stdout clean
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self.every_s = 0.3  # .item() syncs with the device: only a few times a second
            self.bar = RichProgress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]:,.0f} img/s"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    @contextmanager
    def epoch(self, label: str, total: int, done: int) -> Iterator[Callable[[int, float, float], None]]:
        if self.bar is None:
            yield lambda step, loss, speed: self.log(f"epoch {label}: step {step}/{total}, loss {loss:.4f}, {speed:,.0f} img/s")
            return
        with self.bar:
            task = self.bar.add_task("", total=total, completed=done, epoch=label, loss=float("nan"), speed=0.0)
            yield lambda step, loss, speed: self.bar.update(task, completed=step, loss=loss, speed=speed)
            self.bar.remove_task(task)


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


def _versions() -> dict[str, str]:
    return {"torch": str(torch.__version__), "mnist_edge": __version__}  # str: TorchVersion is not weights_only-loadable


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
        raise MnistEdgeError(f"{config.resume}: already trained {trained} of {recipe.epochs} epochs; give --epochs above {trained} to go on")
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


# --- 2. set up: data, model, optimizer, and the state a resumed run left -----------------------------------


@dataclass
class Position:
    """Where the loop stands: the epoch, the step in it, and that epoch's permutation and partial loss."""

    epoch: int = 0
    step: int = 0
    perm: torch.Tensor | None = None
    loss_sum: float = 0.0
    seen: int = 0  # images of the epoch done, all ranks together


@dataclass
class Run:
    plan: Plan
    device: torch.device
    world: distributed.World
    model: MnistClassifier
    net: torch.nn.Module  # the model, wrapped for DistributedDataParallel when there are several ranks
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # permutations and augmentation, on the CPU
    images: torch.Tensor  # uint8 [N,1,28,28] on the device, converted per batch
    labels: torch.Tensor
    holdout: tuple[np.ndarray, np.ndarray]  # training digits kept out to calibrate on (open-set recipes)
    test_x: np.ndarray
    test_y: np.ndarray
    steps: int  # per epoch
    dataset_sha256: dict[str, str]
    start: Position
    history: list[dict[str, Any]]
    threads: int  # CPU threads, recorded in the checkpoint
    started: float  # perf_counter when the run began, checkpoint and data loading included
    calibration: dict[str, float] = field(default_factory=dict)  # calibrate.py's figures, once fitted

    @property
    def n(self) -> int:
        return len(self.labels)


def steps_per_epoch(n: int, recipe: Recipe, world_size: int, min_per_rank: int = 1) -> int:
    """Batches per epoch. A last partial batch too small to give every rank MIN_PER_RANK images is dropped."""
    if recipe.batch_size < world_size:
        raise MnistEdgeError(f"--batch-size {recipe.batch_size} leaves some of the {world_size} processes without images")
    if recipe.batch_size < world_size * min_per_rank:
        raise MnistEdgeError(
            f"--batch-size {recipe.batch_size} is too small: this network's BatchNorm over pooled features needs "
            f"at least {min_per_rank} images per process and step"
        )
    tail = n % recipe.batch_size
    if recipe.drop_last or 0 < tail < world_size * min_per_rank:
        return n // recipe.batch_size
    return math.ceil(n / recipe.batch_size)


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


def set_up(plan: Plan, device: torch.device, world: distributed.World, data_dir: Path | None, threads: int, started: float) -> Run:
    data = load_mnist(data_dir)
    n = plan.limit or len(data.train_images)
    recipe = plan.recipe
    train_x, train_y, holdout_x, holdout_y = training_set(recipe, data.train_images[:n], data.train_labels[:n])
    test_x, test_y = data.test_images[: plan.limit], data.test_labels[: plan.limit]
    torch.manual_seed(recipe.seed)  # the initial weights
    model = plan.resumed.model if plan.resumed is not None else create_model(plan.arch)
    steps = steps_per_epoch(len(train_x), recipe, world.size, min_train_batch(model))
    if steps == 0:
        raise MnistEdgeError(f"{len(train_x)} training images make no full batch of {recipe.batch_size}")
    if device.type == "cuda":
        # cuDNN picks deterministic convolution algorithms, so a seed means the same run (up to atomics in a few backward kernels)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)  # oneDNN's convolutions are faster on NHWC here
    if world.distributed:
        torch.manual_seed(recipe.seed + world.rank)  # each rank its own dropout masks
    optimizer = build_optimizer(recipe, model, device)
    generator = torch.Generator().manual_seed(recipe.seed)
    start, history = Position(), []
    if plan.resumed is not None:
        where = f"{plan.resume}: its training state"
        start = _restore(plan.resumed.training, where, optimizer, generator, world, device, len(train_x), steps)
        history = list(plan.resumed.meta.get("history", []))
    net: torch.nn.Module = model
    if world.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    images = torch.from_numpy(train_x.copy()).to(device).unsqueeze(1)
    labels = torch.from_numpy(train_y).to(device)
    return Run(
        plan, device, world, model, net, optimizer, generator, images, labels, (holdout_x, holdout_y),
        test_x, test_y, steps, data.sha256, start, history, threads, started,
    )


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Any, where: str) -> None:
    """The saved per-parameter state (momentum, Adam moments), checked against the parameters; the hyperparameters
    come from the recipe, not from the file, so a crafted file cannot smuggle in values the recipe checks refuse."""
    state = saved.get("state") if isinstance(saved, dict) else None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(state, dict) or not set(state) <= set(range(len(params))):
        raise MnistEdgeError(f"{where}: the optimizer state does not fit the model")
    for index, values in state.items():
        param = params[index]
        ok = isinstance(values, dict) and all(
            isinstance(v, torch.Tensor) and v.is_floating_point() and v.shape in (param.shape, ()) and bool(torch.isfinite(v).all())
            for v in values.values()
        )
        if not ok:
            raise MnistEdgeError(f"{where}: the optimizer state of parameter {index} does not fit (shape, type or non-finite values)")
    optimizer.load_state_dict({**optimizer.state_dict(), "state": state})


def _restore(
    training: dict[str, Any],
    where: str,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    world: distributed.World,
    device: torch.device,
    n: int,
    steps: int,
) -> Position:
    """Put optimizer and RNG state back as the checkpoint left them; returns where the loop resumes."""
    try:
        _load_optimizer_state(optimizer, training["optimizer"], where)
        generator.set_state(training["generator"])
        rng = training["rng"]
        if len(rng) == world.size:  # another world size cannot reproduce the other ranks' dropout
            torch.set_rng_state(rng[world.rank])
        cuda_rng = training.get("cuda_rng", [])
        if device.type == "cuda" and len(cuda_rng) == world.size:
            torch.cuda.set_rng_state(cuda_rng[world.rank], device)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise MnistEdgeError(f"{where} is incomplete or does not fit ({str(exc).splitlines()[0][:120]})") from None
    position = Position(**{k: training[k] for k in ("epoch", "step", "perm", "loss_sum", "seen") if k in training})
    if position.step >= steps or (position.step and position.perm is None):
        raise MnistEdgeError(f"{where}: step {position.step} is not a step of an epoch of {steps}")
    if position.perm is not None and not torch.equal(position.perm.sort().values, torch.arange(n)):
        raise MnistEdgeError(f"{where}: the permutation is not one of the {n} training images")
    return position


# --- 3. one epoch ----------------------------------------------------------------------------------------


@dataclass
class EpochOutcome:
    position: Position  # where the epoch stopped: step == steps when it ran to the end
    images: int  # images the epoch's steps processed, summed over ranks (a check that the ranks cover the epoch)
    seconds: float
    timed_images: int  # images processed by this process's run (not by a run it resumed)


def run_epoch(
    run: Run,
    epoch: int,
    start: Position,
    stop_requested: Callable[[], bool],
    show: Callable[[int, float, float], None],
    every_s: float,
) -> EpochOutcome:
    """Train one epoch from START (a step of it, when resuming mid-epoch); stops early when Ctrl-C asks."""
    recipe, world, steps = run.plan.recipe, run.world, run.steps
    augmentation = AUGMENTATION_MODULES[recipe.augmentation]
    first = start.step if start.epoch == epoch else 0
    perm = start.perm if first else None
    if perm is None:
        perm = torch.randperm(run.n, generator=run.generator)
    loss_sum = torch.tensor(start.loss_sum if first else 0.0, device=run.device)
    seen = start.seen if first else 0
    processed = torch.zeros((), dtype=torch.int64, device=run.device)  # by this rank
    perm_device = perm.to(run.device)
    run.net.train()
    began = last_shown = time.perf_counter()
    timed_from = seen  # a resumed epoch's earlier images were timed by the earlier run
    step = first
    for step in range(first, steps):
        batch = perm_device[step * recipe.batch_size : (step + 1) * recipe.batch_size]
        params = augmentation.sample_params(len(batch), run.generator) if recipe.augment else None
        index = distributed.shard(batch, world)  # each rank its slice of the global batch: the recipe's batch size holds
        x = run.images[index].float().div_(255)
        if params is not None:
            x = augmentation.apply_params(x, distributed.shard(params, world))
        for group in run.optimizer.param_groups:
            group["lr"] = recipe.lr_at(epoch * steps + step, recipe.epochs * steps)
        batch_loss = F.cross_entropy(run.net(x), run.labels[index], reduction="sum", label_smoothing=recipe.label_smoothing)
        # the sum over the global batch's mean, so DDP's average of the ranks' gradients is the one-process gradient
        loss = batch_loss / (len(batch) / world.size)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        loss_sum += batch_loss.detach()
        processed += len(index)
        seen += len(batch)
        now = time.perf_counter()
        if now - last_shown >= every_s:
            mean = float(loss_sum) / max(seen, 1) * world.size
            if not math.isfinite(mean) and not world.distributed:  # ranks see only their own loss: they check at epoch end
                break
            show(step + 1, float(loss.detach()), (seen - timed_from) / max(now - began, 1e-9))
            last_shown = now
        if distributed.any_rank(world, stop_requested(), run.device) and step + 1 < steps:
            break
    total = distributed.sum_across(world, loss_sum)
    position = Position(epoch, step + 1, perm, float(total) / world.size, seen)
    images = timed_from + int(distributed.sum_across(world, processed))  # with those a resumed run did before
    return EpochOutcome(position, images, time.perf_counter() - began, seen - timed_from)


def check_finite(outcome: EpochOutcome, out: Path) -> None:
    """A NaN or inf loss stops the run; the checkpoint of the last good epoch stays as it was."""
    if math.isfinite(outcome.position.loss_sum):
        return
    kept = f"{out} (the last good epoch) is kept" if out.is_file() else "nothing was written"
    raise MnistEdgeError(
        f"training diverged in epoch {outcome.position.epoch + 1}: the loss is {outcome.position.loss_sum}; "
        f"stopped, {kept}; try a lower --lr"
    )


# --- 4. evaluate and 5. save ------------------------------------------------------------------------------


def evaluate_epoch(run: Run, outcome: EpochOutcome) -> dict[str, Any]:
    position = outcome.position
    record: dict[str, Any] = {
        "epoch": position.epoch + 1,
        "train_loss": position.loss_sum * run.world.size / max(position.seen, 1),
        "seconds": outcome.seconds,
        "images": outcome.images,
        "images_per_s": outcome.timed_images / max(outcome.seconds, 1e-9),
    }
    if run.world.is_main:
        result = evaluate(torch_logits_fn(run.model, run.device), run.test_x, run.test_y)
        if not math.isfinite(result.loss):
            raise MnistEdgeError(f"training diverged in epoch {position.epoch + 1}: the test loss is {result.loss}; stopped; try a lower --lr")
        record.update(test_loss=result.loss, test_accuracy=result.accuracy)
    return record


def save(run: Run, epochs_done: int, position: Position) -> None:
    """Write the checkpoint (rank 0); every rank's RNG state rides along so --resume continues exactly."""
    rng = distributed.gather(run.world, torch.get_rng_state())
    cuda_rng = distributed.gather(run.world, torch.cuda.get_rng_state(run.device)) if run.device.type == "cuda" else None
    if not run.world.is_main:
        return
    plan, resumed = run.plan, run.plan.resumed
    training: dict[str, Any] = {"epoch": position.epoch, "step": position.step}
    if position.step:
        training.update(perm=position.perm, loss_sum=position.loss_sum, seen=position.seen)
    training.update(optimizer=run.optimizer.state_dict(), generator=run.generator.get_state(), rng=rng)
    if cuda_rng is not None:
        training["cuda_rng"] = cuda_rng
    if plan.limit:
        training["limit"] = plan.limit
    info = arch_info(plan.arch)
    meta = {
        "arch": plan.arch,
        "recipe": plan.recipe.as_dict(),
        "epochs_done": epochs_done,
        "test_accuracy": run.history[-1]["test_accuracy"] if run.history else None,
        "normalize": list(info.normalize) if info.normalize else None,
        "seed": plan.recipe.seed,
        "device": str(run.device),
        "world_size": run.world.size,
        "threads": run.threads,
        "train_images": run.n,
        "wall_time_s": (resumed.meta.get("wall_time_s", 0.0) if resumed else 0.0) + time.perf_counter() - run.started,
        "versions": _versions(),
        "dataset_sha256": run.dataset_sha256,
        "history": run.history,
    }
    if run.calibration:
        meta["calibration"] = run.calibration
    save_checkpoint(plan.out, run.model, meta, training)


# --- the run ---------------------------------------------------------------------------------------------


def train(config: TrainConfig, log: Log = _print) -> TrainResult:
    """Run the training CONFIG asks for; writes a checkpoint after every epoch and on Ctrl-C."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    plan = make_plan(config)
    with holding(plan.out) if distributed.launch_rank() == 0 else contextlib.nullcontext():  # rank 0 writes it
        check_out(plan.out, config)  # again, held: another run may have written it since
        world = distributed.join(device.type)
        if world.distributed and device.type == "cuda":
            device = torch.device("cuda", world.local_rank)
        try:
            with cpu_threads(config.threads, world.size) as threads:
                run = set_up(plan, device, world, config.data_dir, threads, started)
                return _train(config, run, log if world.is_main else lambda _line: None)
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            written = plan.out.is_file()
            kept = f"{plan.out} keeps the last checkpoint written" if written else "no checkpoint was written"
            raise MnistEdgeError(f"out of memory on {device}; stopped, {kept}; try a smaller --batch-size") from None
        finally:
            distributed.leave(world)


def _train(config: TrainConfig, run: Run, log: Log) -> TrainResult:
    plan, device, world = run.plan, run.device, run.world
    recipe, out = plan.recipe, plan.out
    progress = Progress(config.progress and world.is_main, config.progress_every_s, log)
    every_s = progress.every_s if progress.enabled else math.inf
    interrupted = False
    with stop_on_interrupt(escalate=not world.distributed) as stop_requested:
        log(
            f"training {plan.arch} on {run.n:,} images ({len(run.test_x):,} test) | device {device}, {run.threads} threads"
            + (f", {world.size} processes" if world.distributed else "")
        )
        log(f"recipe: {_describe(recipe)}" + (f" | resuming {config.resume} at epoch {run.start.epoch + 1}" if plan.resumed else ""))
        for epoch in range(run.start.epoch, recipe.epochs):
            with progress.epoch(f"{epoch + 1}/{recipe.epochs}", run.steps, run.start.step if epoch == run.start.epoch else 0) as show:
                outcome = run_epoch(run, epoch, run.start, stop_requested, show, every_s)
            check_finite(outcome, out)
            if outcome.position.step < run.steps:  # Ctrl-C mid-epoch: save where it stands
                save(run, epoch, outcome.position)
                interrupted = True
                log(f"interrupted in epoch {epoch + 1} at step {outcome.position.step}/{run.steps}: saved {out}; --resume {out} continues")
                break
            record = evaluate_epoch(run, outcome)
            if world.is_main:
                run.history.append(record)
                log(
                    f"epoch {epoch + 1}/{recipe.epochs}: train loss {record['train_loss']:.4f}, test loss {record['test_loss']:.4f}, "
                    f"test accuracy {record['test_accuracy']:.2f}% | {record['images_per_s']:,.0f} img/s, {record['seconds']:.1f}s"
                )
            if epoch + 1 == recipe.epochs and run.model.open_set and world.is_main:
                _calibrate(run, log)
            save(run, epoch + 1, Position(epoch + 1))
            if stop_requested():
                interrupted = epoch + 1 < recipe.epochs
                if interrupted:
                    log(f"interrupted after epoch {epoch + 1}: saved {out}; --resume {out} continues")
                break
    done = run.history[-1]["epoch"] if run.history else 0
    accuracy = run.history[-1]["test_accuracy"] if run.history else None
    took = time.perf_counter() - run.started
    if world.is_main and not interrupted:
        log(f"done: {plan.arch}, {done} epochs, test accuracy {accuracy:.2f}%, {took:.1f}s; checkpoint {out}")
    return TrainResult(out, done, accuracy, interrupted, run.history, plan.arch, recipe.as_dict(), took)


def _calibrate(run: Run, log: Log) -> None:
    """Fit the open-set model's temperature and "not a digit" threshold on what training left out (calibrate.py)."""
    from mnist_edge.calibrate import calibrate

    recipe, (holdout_x, holdout_y) = run.plan.recipe, run.holdout
    if not len(holdout_y):
        log("no held-out digits (recipe holdout 0): temperature 1, and nothing is refused")
        return
    generated = scaled(CALIBRATION_IMAGES, run.plan.limit or MNIST_TRAIN_IMAGES)
    result = calibrate(run.model, holdout_x, holdout_y, recipe.seed, generated, generated)
    run.calibration = result.figures
    log(_calibrated(result.figures, len(holdout_y)))


def _calibrated(f: dict[str, float], holdout: int) -> str:
    return (
        f"calibrated on {holdout:,} held-out digits: temperature {f['temperature']:.3f}, not-a-digit threshold "
        f"{f['not_digit_threshold']:.4f} (answers {f['holdout_answered']:.2f}% of them, {f['shifted_answered']:.2f}% "
        f"shifted, {f['printed_answered']:.2f}% printed; refuses {f['non_digits_refused']:.2f}% of calibration non-digits)"
    )


def recalibrate(path: Path, data_dir: Path | None, log: Log = _print) -> None:
    """Fit a trained open-set checkpoint's temperature and threshold again, as its last epoch did (after a change of
    the calibration rule), on the digits its recipe held out; the weights stay as they are."""
    from mnist_edge.calibrate import calibrate

    ckpt = load_checkpoint(path)
    if not ckpt.model.open_set or "recipe" not in ckpt.meta:
        raise MnistEdgeError(f"{path}: not a trained open-set checkpoint (nothing to calibrate)")
    recipe = recipe_from_dict(ckpt.meta["recipe"], str(path))
    limit = ckpt.training.get("limit")
    data = load_mnist(data_dir)
    n = limit or len(data.train_images)
    _, _, holdout_x, holdout_y = training_set(replace(recipe, printed=0, non_digits=0), data.train_images[:n], data.train_labels[:n])
    if not len(holdout_y):
        raise MnistEdgeError(f"{path}: its recipe held no digits out to calibrate on")
    generated = scaled(CALIBRATION_IMAGES, n)
    result = calibrate(ckpt.model, holdout_x, holdout_y, recipe.seed, generated, generated)
    save_checkpoint(path, ckpt.model, {**ckpt.meta, "calibration": result.figures}, ckpt.training or None)
    log(_calibrated(result.figures, len(holdout_y)))


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
