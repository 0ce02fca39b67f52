"""Train a registered architecture with its notebook's recipe on an in-memory, on-device pipeline.

The whole training set lives on the device as one uint8 tensor; each epoch is a permutation of it, each
batch is converted to float and (for recipes with augmentation) warped on the device in one call. All
randomness comes from seeded generators whose state is checkpointed, so `--resume` continues exactly,
and Ctrl-C stops after the current step with a resumable checkpoint.

A run reads top to bottom: `train` plans it (config.make_plan: every flag and file checked before any work), holds
its checkpoint file against other runs (`atomic.holding`) and sets it up (`set_up`: data, model, optimizer,
restored state), then `_train` runs each epoch (`run_epoch`), evaluates it (`evaluate_epoch`) and saves (`save`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mnist_edge import __version__
from mnist_edge.atomic import holding
from mnist_edge.errors import MnistEdgeError, first_line, out_of_memory
from mnist_edge.measure.evaluate import evaluate, torch_logits_fn
from mnist_edge.train import augment, distributed, robust_augment
from mnist_edge.train.architectures import MnistClassifier, arch_info, create_model, min_train_batch
from mnist_edge.train.checkpoint import load_optimizer_state, save_checkpoint
from mnist_edge.train.config import Plan, TrainConfig, TrainResult, build_optimizer, check_out, cpu_threads
from mnist_edge.train.config import make_plan, resolve_device
from mnist_edge.train.data import load_mnist
from mnist_edge.train.open_set import calibrate_run, training_set
from mnist_edge.train.progress import Progress, stop_on_interrupt
from mnist_edge.train.recipes import Recipe

Log = Callable[[str], None]
# recipes.AUGMENTATIONS: each a sample_params + apply_params
AUGMENTATION_MODULES = {"notebook": augment, "robust": robust_augment}


def _print(line: str) -> None:
    print(line, flush=True)


def _versions() -> dict[str, str]:
    # str: TorchVersion is not weights_only-loadable
    return {"torch": str(torch.__version__), "mnist_edge": __version__}


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
        raise MnistEdgeError(f"--batch-size {recipe.batch_size} leaves some of the {world_size} processes "
                             "without images")
    if recipe.batch_size < world_size * min_per_rank:
        raise MnistEdgeError(
            f"--batch-size {recipe.batch_size} is too small: this network's BatchNorm over pooled features needs "
            f"at least {min_per_rank} images per process and step"
        )
    tail = n % recipe.batch_size
    if recipe.drop_last or 0 < tail < world_size * min_per_rank:
        return n // recipe.batch_size
    return math.ceil(n / recipe.batch_size)


def set_up(
    plan: Plan, device: torch.device, world: distributed.World, data_dir: Path | None, threads: int, started: float
) -> Run:
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
        # cuDNN picks deterministic convolution algorithms, so a seed means the same run
        # (up to atomics in a few backward kernels)
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
        net = torch.nn.parallel.DistributedDataParallel(model,
                                                        device_ids=[device.index] if device.type == "cuda" else None)
    images = torch.from_numpy(train_x.copy()).to(device).unsqueeze(1)
    labels = torch.from_numpy(train_y).to(device)
    return Run(
        plan, device, world, model, net, optimizer, generator, images, labels, (holdout_x, holdout_y),
        test_x, test_y, steps, data.sha256, start, history, threads, started,
    )


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
        load_optimizer_state(optimizer, training["optimizer"], where)
        generator.set_state(training["generator"])
        rng = training["rng"]
        if len(rng) == world.size:  # another world size cannot reproduce the other ranks' dropout
            torch.set_rng_state(rng[world.rank])
        cuda_rng = training.get("cuda_rng", [])
        if device.type == "cuda" and len(cuda_rng) == world.size:
            torch.cuda.set_rng_state(cuda_rng[world.rank], device)
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise MnistEdgeError(f"{where} is incomplete or does not fit ({first_line(exc, 120)})") from None
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
        # each rank its slice of the global batch: the recipe's batch size holds
        index = distributed.shard(batch, world)
        x = run.images[index].float().div_(255)
        if params is not None:
            x = augmentation.apply_params(x, distributed.shard(params, world))
        for group in run.optimizer.param_groups:
            group["lr"] = recipe.lr_at(epoch * steps + step, recipe.epochs * steps)
        batch_loss = F.cross_entropy(run.net(x), run.labels[index], reduction="sum",
                                     label_smoothing=recipe.label_smoothing)
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
            # ranks see only their own loss: they check at epoch end
            if not math.isfinite(mean) and not world.distributed:
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
            raise MnistEdgeError(f"training diverged in epoch {position.epoch + 1}: the test loss is {result.loss}; "
                                 "stopped; try a lower --lr")
        record.update(test_loss=result.loss, test_accuracy=result.accuracy)
    return record


def save(run: Run, epochs_done: int, position: Position) -> None:
    """Write the checkpoint (rank 0); every rank's RNG state rides along so --resume continues exactly."""
    rng = distributed.gather(run.world, torch.get_rng_state())
    cuda_rng = (distributed.gather(run.world, torch.cuda.get_rng_state(run.device))
                if run.device.type == "cuda" else None)
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
            f"training {plan.arch} on {run.n:,} images ({len(run.test_x):,} test) | device {device}, {run.threads} "
            "threads"
            + (f", {world.size} processes" if world.distributed else "")
        )
        log(f"recipe: {recipe.describe()}"
            + (f" | resuming {config.resume} at epoch {run.start.epoch + 1}" if plan.resumed else ""))
        for epoch in range(run.start.epoch, recipe.epochs):
            with progress.epoch(f"{epoch + 1}/{recipe.epochs}", run.steps,
                                run.start.step if epoch == run.start.epoch else 0) as show:
                outcome = run_epoch(run, epoch, run.start, stop_requested, show, every_s)
            check_finite(outcome, out)
            if outcome.position.step < run.steps:  # Ctrl-C mid-epoch: save where it stands
                save(run, epoch, outcome.position)
                interrupted = True
                log(f"interrupted in epoch {epoch + 1} at step {outcome.position.step}/{run.steps}: saved {out}; "
                    f"--resume {out} continues")
                break
            record = evaluate_epoch(run, outcome)
            if world.is_main:
                run.history.append(record)
                log(
                    f"epoch {epoch + 1}/{recipe.epochs}: train loss {record['train_loss']:.4f}, test loss "
                    f"{record['test_loss']:.4f}, test accuracy {record['test_accuracy']:.2f}% | "
                    f"{record['images_per_s']:,.0f} img/s, {record['seconds']:.1f}s"
                )
            if epoch + 1 == recipe.epochs and run.model.open_set and world.is_main:
                run.calibration = calibrate_run(run.model, recipe, run.holdout, plan.limit, log)
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

