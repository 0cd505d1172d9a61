"""The modules the models' depthwise convolutions go through: stride 1 (large kernels) and strided."""

from __future__ import annotations

import torch
from torch import nn

from replknet.ops.cpu import strided_dwconv2d
from replknet.ops.dispatch import dwconv2d, reference_forced


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise ``K x K`` convolution, stride 1, same padding, computed by ``replknet.ops.dwconv2d``.

    Its parameters and state dict are exactly those of
    ``nn.Conv2d(C, C, K, padding=dilation * (K - 1) // 2, dilation=dilation, groups=C)``,
    so official checkpoints load unchanged and the implementation can change without touching models.

    Args:
        channels: input and output channels.
        kernel_size: odd kernel size.
        bias: learn a bias.
        impl: implementation name for ``dwconv2d`` (``"auto"`` picks the fastest for each shape).
        dilation: spacing of the kernel taps.
    """

    def __init__(
        self, channels: int, kernel_size: int, bias: bool = False, impl: str = "auto", dilation: int = 1
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"DepthwiseConv2d needs an odd kernel size, got {kernel_size}")
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f"DepthwiseConv2d needs a positive int dilation, got {dilation!r}")
        super().__init__(
            channels,
            channels,
            kernel_size,
            stride=1,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=channels,
            bias=bias,
        )
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H, W)
        return dwconv2d(x, self.weight, self.bias, impl=self.impl, dilation=self.dilation[0])

    def extra_repr(self) -> str:
        return super().extra_repr() + f", impl={self.impl}"


class StridedDepthwiseConv2d(nn.Conv2d):
    """Depthwise ``K x K`` convolution with a stride (downsampling), computed by ``replknet.ops.cpu.strided_dwconv2d``.

    The state dict of ``nn.Conv2d(C, C, K, stride, padding, groups=C)``. Its only difference from that module is
    the CPU bf16 backward (``strided_dwconv2d``); under tracing, scripting, ``torch.compile`` and
    ``impl_override("reference")`` it is plain ``nn.Conv2d``.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int, bias: bool = False) -> None:
        super().__init__(channels, channels, kernel_size, stride=stride, padding=padding, groups=channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H / stride, W / stride)
        if reference_forced() or torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return super().forward(x)
        return strided_dwconv2d(x, self.weight, self.bias, self.stride[0], self.padding[0])
