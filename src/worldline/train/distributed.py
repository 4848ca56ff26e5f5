"""torch.distributed plumbing for the trainer: one process per device, launched by ``torchrun``.

``setup`` reads the variables torchrun exports (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
joins the process group: NCCL on CUDA, gloo on CPU. Without them it is a one-process "group" and
every helper here degrades to a no-op, so the trainer has one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from typing import Iterator

import torch
import torch.distributed as dist

from worldline.core.errors import WorldlineError


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if CUDA is present, else the CPU; ``cuda`` picks the local GPU."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preference)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise WorldlineError(f"train.device={preference!r} but CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise WorldlineError(f"environment variable {name}={raw!r} is not an integer") from None


def setup(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one (idempotent) and pick this process's device."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        # A long timeout: rank 0 may spend minutes building a frame/latent cache while others wait.
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60), **kwargs)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


@contextlib.contextmanager
def rank_zero_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds an on-disk cache), then the others (which find it)."""
    if not info.is_main:
        barrier(info)
    yield
    if info.is_main:
        barrier(info)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks of a float tensor (gloo has no AVG, so SUM then divide)."""
    if not info.distributed:
        return values
    values = values.detach().to(info.device, torch.float32).clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / info.world_size


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. one rank got SIGTERM)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_bytes(data: bytes, info: DistInfo) -> list[bytes]:
    """Every rank's ``data`` on every rank, as tensors (no pickle on the wire)."""
    if not info.distributed:
        return [data]
    payload = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=info.device)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=info.device)
    padded[: payload.numel()] = payload.to(info.device)
    chunks = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(chunks, padded)
    return [bytes(c[: int(s.item())].cpu().numpy().tobytes()) for c, s in zip(chunks, sizes)]


def broadcast_bool(flag: bool, info: DistInfo) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not info.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=info.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def wrap_ddp(module: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel over ``module`` (its parameters are broadcast from rank 0 here)."""
    if not info.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)
