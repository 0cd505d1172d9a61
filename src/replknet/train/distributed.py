"""torchrun / DDP helpers shared by every engine: process-group setup from the environment, reductions, flags.

Built on ``timm.utils.distributed`` conventions (``init_distributed_device``-style environment reading) but kept
explicit so that CPU (gloo) runs, as in the tests, work the same as GPU (nccl) runs. ``replknet.train`` and
``replknet.seg`` both stand on this module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistributedState",
    "all_reduce_sum",
    "barrier",
    "broadcast_flag",
    "cleanup_distributed",
    "init_distributed",
    "resolve_device",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedState:
    """Where this process stands: ``world_size == 1`` for a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owned: bool = False  # this process group was created by ``init_distributed`` (and is its caller's to destroy)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """``"cpu"``, ``"cuda"`` (this process's ``LOCAL_RANK`` GPU), ``"cuda:N"``, or None/``"auto"`` (CUDA when
    available); a CUDA device becomes the current one."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not device.startswith("cuda"):
        return torch.device(device)
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available")
    torch_device = torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
    torch.cuda.set_device(torch_device)
    return torch_device


def init_distributed(device: str | None = None) -> DistributedState:
    """Initialise the default process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1), else nothing.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None/``"auto"`` (CUDA when available). With ``"cuda"`` each
            process takes the GPU of its ``LOCAL_RANK`` and the backend is nccl; on CPU it is gloo.

    A process group that already exists (made by the caller) is used as it is and ``owned`` is False.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedState(device=torch_device)
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend, init_method="env://", world_size=world_size, rank=rank)
    else:
        backend = dist.get_backend()
    _logger.info("process %d/%d on %s (%s)", rank, world_size, torch_device, backend)
    return DistributedState(rank, local_rank, world_size, torch_device, backend, owned)


def cleanup_distributed() -> None:
    """Destroy the default process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (nothing when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


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
