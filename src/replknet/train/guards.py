"""Stopping a run on every process at once: a NaN or infinite loss on any rank stops all of them.

Each process checks its own loss and the flag is all-reduced (``broadcast_flag``) before the backward pass, so
that under DDP no process is left waiting in a gradient all-reduce that the others will never join.
"""

from __future__ import annotations

import torch

from replknet.train.distributed import broadcast_flag

__all__ = ["NonFiniteLossError", "stop_if_not_finite"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint was left as it was."""


def stop_if_not_finite(loss: torch.Tensor, device: torch.device, where: str) -> None:
    """Raise ``NonFiniteLossError`` on every process when ``loss`` is not finite on any of them.

    Args:
        loss: this process's loss (any shape).
        device: where the flag is reduced (the process group's device).
        where: appended to the message, e.g. ``"at epoch 2, update 31 (lr 0.004)"``.

    Call it on every process at the same point (it is a collective under DDP), before ``backward``.
    """
    bad = not bool(torch.isfinite(loss.detach()).all().item())
    if broadcast_flag(bad, device):
        values = loss.detach().float().flatten()
        value = values[~torch.isfinite(values)][0].item() if bad else "non-finite on another process"
        raise NonFiniteLossError(f"the loss became {value} {where}; training stopped")
