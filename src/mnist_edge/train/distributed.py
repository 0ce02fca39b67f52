"""Process-group plumbing for `torchrun ... -m mnist_edge train`: ranks, backend choice, small collectives.

A single process is a world of size 1 and every helper here is then a no-op, so the training loop has
one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mnist_edge.errors import MnistEdgeError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """This process's rank as torchrun set it, before joining the group: 0 in a plain run."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def join(device_type: str) -> World:
    """Join the process group torchrun set up (nccl on CUDA, gloo otherwise); a plain run is World()."""
    if not launched_by_torchrun():
        return World()
    if device_type == "mps":
        raise MnistEdgeError("distributed training runs on CPU (gloo) or CUDA (nccl), not MPS")
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world


def leave(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's share of a global batch (rows of BATCH): every row goes to exactly one rank."""
    return batch[world.rank :: world.size]


def sum_across(world: World, value: torch.Tensor) -> torch.Tensor:
    if world.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def any_rank(world: World, flag: bool, device: torch.device) -> bool:
    """True on every rank when FLAG is true on any, so all ranks stop at the same step."""
    if not world.distributed:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(world: World, obj: Any) -> list[Any]:
    """OBJ from every rank, in rank order (a list of one in a single process)."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
