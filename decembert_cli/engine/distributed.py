"""Process-group set-up for `torchrun` (gloo on CPU, nccl on GPU) and small collective helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from decembert_cli.errors import DecembertError


@dataclass(frozen=True)
class DistInfo:
    rank: int  # this process among all
    world: int  # number of processes
    local_rank: int  # this process on its machine (selects the GPU)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group `torchrun` describes (if any) and choose this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank), dev


def resolve_device(device: str, local_rank: int = 0, option: str = "train.device") -> torch.device:
    """auto -> this process's GPU when there is one, else cpu; also checks an explicit choice.

    `option` names where the value came from in messages (a config key or a command-line flag)."""
    label = f"{option} {device}" if option.startswith("--") else f"{option}={device}"
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DecembertError(f"{label} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise DecembertError(f"{label} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise DecembertError(f"{label} is not available here; use cpu")
    return dev


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: dict[str, torch.Tensor], world: int) -> dict[str, torch.Tensor]:
    """Sum a dict of scalar tensors over processes (one collective), as float64 on the same device."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().to(torch.float64).reshape(()) for k in keys])
    if world > 1:
        dist.all_reduce(stacked)
    return dict(zip(keys, stacked.unbind()))


def gather_objects(obj: Any, world: int) -> list[Any]:
    """Every process's `obj`, in rank order (all ranks receive the list)."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
