"""The process group of a study under torchrun: set up once, rank queries, rank 0's decisions for everyone."""

from __future__ import annotations

import os

import torch

__all__ = ["world", "init_distributed", "agree", "split_batch"]


def world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str | None) -> bool:
    """Set up the process group once for the whole study under torchrun; True if this call created it."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every process (so that all take the same branch)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.broadcast(value, src=0)
    return bool(value.item() > 0)


def split_batch(batch: int, world: int) -> int:
    if batch % world:
        raise ValueError(f"the global batch {batch} does not split over {world} processes")
    return batch // world
