"""torchrun / DDP helpers: process-group setup from the environment, rank queries, reductions.

Built on ``timm.utils.distributed`` conventions (``init_distributed_device``-style environment reading) but kept
explicit so that CPU (gloo) runs, as in the tests, work the same as GPU (nccl) runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedState", "init_distributed", "cleanup_distributed", "all_reduce_sum", "broadcast_flag"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedState:
    """Where this process stands: ``world_size == 1`` for a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistributedState:
    """Initialise the default process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else nothing.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available). With CUDA each process takes the GPU of its
            ``LOCAL_RANK`` and the backend is nccl; on CPU it is gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size <= 1:
        return DistributedState(device=torch_device)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", world_size=world_size, rank=rank)
    _logger.info("process %d/%d on %s (%s)", rank, world_size, torch_device, backend)
    return DistributedState(rank, local_rank, world_size, torch_device, backend)


def cleanup_distributed() -> None:
    """Destroy the default process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over all processes (identity when not distributed); returns a new tensor."""
    tensor = tensor.clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on ANY process (so that every process takes the same branch)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
