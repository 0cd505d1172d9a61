"""Parameter and MAC counting (MACs from ``torch.utils.flop_counter``: convolutions and linear layers)."""

from __future__ import annotations

import torch
from torch import nn

from replknet.ops import impl_override

_MAC_OPS = ("convolution", "addmm", "mm", "bmm")


def count_params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int | tuple[int, int] = 224, in_chans: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a single image (conv and linear only, like the paper's FLOPs).

    The depthwise op is counted with the reference convolution, whatever implementation is in use.
    """
    from torch.utils.flop_counter import FlopCounterMode

    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    in_chans = in_chans or getattr(model, "in_chans", 3)
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, height, width, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with impl_override("reference"), counter:
        model(x)
    model.train(was_training)
    flops = 0
    for op, count in counter.get_flop_counts()["Global"].items():
        if any(str(op).split(".")[1] == name for name in _MAC_OPS if "." in str(op)):
            flops += count
    return flops // 2
