"""Building blocks shared by the model families: conv-BN units and the re-parameterisable large kernel.

Public as ``replknet.layers``."""

from __future__ import annotations

import torch
from torch import nn

from replknet.ops import DepthwiseConv2d, StridedDepthwiseConv2d
from replknet.reparam import Reparameterizable, fuse_conv_bn, pad_kernel_to


class ConvBN(nn.Module, Reparameterizable):
    """``conv`` (no bias) -> ``bn`` -> optional ``nonlinear``; state-dict keys ``conv.weight`` and ``bn.*``.

    Stride-1 depthwise convolutions go through ``DepthwiseConv2d`` (the fast-op seam), strided ones through
    ``StridedDepthwiseConv2d``; everything else is ``nn.Conv2d``. ``reparameterize(deep=True)`` folds the BN into the conv (``conv.bias`` appears).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act_layer: type[nn.Module] | None = None,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        depthwise = groups == in_channels == out_channels and in_channels > 1
        if depthwise and stride == 1 and padding == kernel_size // 2 and kernel_size % 2 == 1:
            self.conv: nn.Conv2d = DepthwiseConv2d(out_channels, kernel_size, bias=False)
        elif depthwise and stride > 1:
            # NOTE: the official code's nn.Conv2d (same state dict); this subclass only replaces oneDNN's slow bf16
            # backward-data on the CPU (replknet.ops.cpu.strided_dwconv2d)
            self.conv = StridedDepthwiseConv2d(out_channels, kernel_size, stride, padding, bias=False)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(out_channels)
        self.nonlinear: nn.Module = act_layer() if act_layer is not None else nn.Identity()

    @property
    def fused(self) -> bool:
        return isinstance(self.bn, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.bn(self.conv(x)))

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel and bias of the single conv equivalent to ``bn(conv(x))`` in eval mode."""
        if self.fused:
            return self.conv.weight, self.conv.bias
        return fuse_conv_bn(self.conv.weight, self.conv.bias, self.bn)

    def reparameterize(self, deep: bool = False) -> None:
        if not deep or self.fused:
            return
        weight, bias = self.fused_kernel_bias()
        old = self.conv
        if isinstance(old, DepthwiseConv2d):
            conv: nn.Conv2d = DepthwiseConv2d(old.out_channels, old.kernel_size[0], bias=True, impl=old.impl)
        elif isinstance(old, StridedDepthwiseConv2d):
            conv = StridedDepthwiseConv2d(
                old.out_channels, old.kernel_size[0], old.stride[0], old.padding[0], bias=True
            )
        else:
            conv = nn.Conv2d(
                old.in_channels,
                old.out_channels,
                old.kernel_size,
                old.stride,
                old.padding,
                groups=old.groups,
                bias=True,
            )
        conv.to(device=weight.device, dtype=weight.dtype)
        conv.weight.data.copy_(weight)
        conv.bias.data.copy_(bias)
        self.conv = conv
        self.bn = nn.Identity()


class ReparamLargeKernelConv(nn.Module, Reparameterizable):
    """``K x K`` conv + BN, with an optional parallel ``k x k`` conv + BN (``k < K``), summed.

    Training form: ``lkb_origin`` and ``small_conv`` (official key names). Deploy form: one ``lkb_reparam`` conv
    with bias, equal in eval mode (the small kernel is zero-padded into the centre of the large).

    Args:
        channels: input channels (and output channels unless ``out_channels`` is given).
        kernel_size: large kernel size ``K`` (odd).
        small_kernel: small kernel size (odd, ``<= K``), or ``None`` for no small branch (RepLKNet-XL).
        deploy: build the fused form directly (for loading deploy checkpoints).
        stride: stride of both branches (both pad by ``k // 2``, so their taps stay centred on the same pixel).
        out_channels: output channels (default ``channels``).
        groups: convolution groups (default ``channels``: depthwise, as in RepLKNet); ``1`` for a dense conv.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        small_kernel: int | None = 5,
        deploy: bool = False,
        stride: int = 1,
        *,
        out_channels: int | None = None,
        groups: int | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"large kernel size must be odd, got {kernel_size}")
        if small_kernel is not None and (small_kernel % 2 != 1 or small_kernel > kernel_size):
            raise ValueError(
                f"small_kernel must be odd and at most the large kernel ({kernel_size}), got {small_kernel}"
            )
        self.channels = channels
        self.out_channels = channels if out_channels is None else out_channels
        self.groups = channels if groups is None else groups
        if channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups {self.groups} must divide channels {channels} and out_channels {self.out_channels}"
            )
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        self.stride = stride
        self.lkb_origin: ConvBN | None = None
        self.small_conv: ConvBN | None = None
        self.lkb_reparam: nn.Conv2d | None = None
        if deploy:
            self.lkb_reparam = self._fused_conv()
        else:
            self.lkb_origin = self._conv_bn(kernel_size)
            if small_kernel is not None:
                self.small_conv = self._conv_bn(small_kernel)

    def _conv_bn(self, kernel_size: int) -> ConvBN:
        return ConvBN(self.channels, self.out_channels, kernel_size, stride=self.stride, groups=self.groups)

    def _fused_conv(self) -> nn.Conv2d:
        depthwise = self.groups == self.channels == self.out_channels
        if depthwise and self.stride == 1:
            return DepthwiseConv2d(self.channels, self.kernel_size, bias=True)
        return nn.Conv2d(
            self.channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.kernel_size // 2,
            groups=self.groups,
            bias=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lkb_reparam is not None:
            return self.lkb_reparam(x)
        out = self.lkb_origin(x)
        if self.small_conv is not None:
            out = out + self.small_conv(x)
        return out

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel ``(C_out, C_in / groups, K, K)`` and bias ``(C_out,)`` of the single conv equal to this module."""
        if self.lkb_reparam is not None:
            return self.lkb_reparam.weight, self.lkb_reparam.bias
        kernel, bias = self.lkb_origin.fused_kernel_bias()
        if self.small_conv is not None:
            small_kernel, small_bias = self.small_conv.fused_kernel_bias()
            kernel = kernel + pad_kernel_to(small_kernel, self.kernel_size)
            bias = bias + small_bias
        return kernel, bias

    def reparameterize(self, deep: bool = False) -> None:
        if self.lkb_reparam is not None:
            return
        kernel, bias = self.equivalent_kernel_bias()
        # NOTE: the official merge copies `padding` from the conv module, which breaks when the CUDA extension
        # reports padding 0 (official issue #48). The fused conv here is built from kernel size and stride alone.
        fused = self._fused_conv()
        if isinstance(fused, DepthwiseConv2d) and isinstance(self.lkb_origin.conv, DepthwiseConv2d):
            fused.impl = self.lkb_origin.conv.impl
        fused.to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.data.copy_(kernel)
        fused.bias.data.copy_(bias)
        self.lkb_reparam = fused
        self.lkb_origin = None
        self.small_conv = None
