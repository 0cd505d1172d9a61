"""``accelerate(model)``: the library's depthwise convolution inside any model (timm, torchvision, your own).

Every stride-1 depthwise ``nn.Conv2d`` (``groups == in_channels == out_channels``, odd square kernel, same padding
``dilation * (K - 1) / 2`` or ``padding="same"``, equal dilation on both axes, ``padding_mode="zeros"``) becomes a
``replknet.ops.DepthwiseConv2d``, which computes the same function through ``dwconv2d``'s implementation registry.
Every other convolution is left alone, with the reason recorded.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from torch import nn

from replknet.ops.conv import DepthwiseConv2d

__all__ = ["AccelerateReport", "accelerate", "depthwise_skip_reason"]

_logger = logging.getLogger(__name__)


@dataclass
class AccelerateReport:
    """What ``accelerate`` did: the module names it converted and, for every other ``nn.Conv2d``, why not.

    ``replaced`` maps a name to its kernel size; ``skipped`` maps a name to the reason. A module reachable under
    several names is reported under the first.
    """

    replaced: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.replaced)

    def summary(self) -> str:
        """One line: how many were replaced (by kernel size) and how many skipped (by reason)."""
        kernels = Counter(self.replaced.values())
        reasons = Counter(reason.split(" (")[0] for reason in self.skipped.values())
        text = f"replaced {len(self.replaced)} depthwise convolutions"
        if kernels:
            text += " (kernel size: count " + ", ".join(f"{k}: {n}" for k, n in sorted(kernels.items())) + ")"
        text += f"; left {len(self.skipped)} nn.Conv2d alone"
        if reasons:
            text += " (" + ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common()) + ")"
        return text


def depthwise_skip_reason(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` cannot become a ``DepthwiseConv2d`` (None if it can)."""
    if isinstance(conv, DepthwiseConv2d):
        return "already a DepthwiseConv2d"
    if type(conv) is not nn.Conv2d:
        return f"a subclass of nn.Conv2d ({type(conv).__name__}: its forward may differ)"
    if not (conv.groups == conv.in_channels == conv.out_channels):
        groups, channels = conv.groups, (conv.in_channels, conv.out_channels)
        return f"not depthwise (groups={groups}, in/out channels={channels})"
    if conv.stride != (1, 1):
        return f"strided (stride={conv.stride})"
    kernel_h, kernel_w = conv.kernel_size
    if kernel_h != kernel_w:
        return f"non-square kernel ({kernel_h}x{kernel_w})"
    if kernel_h % 2 == 0:
        return f"even kernel size ({kernel_h})"
    if conv.dilation[0] != conv.dilation[1]:
        return f"dilation differs per axis (dilation={conv.dilation})"
    if conv.padding_mode != "zeros":
        return f"padding_mode {conv.padding_mode!r} (only zero padding is computed)"
    same = conv.dilation[0] * (kernel_h - 1) // 2
    if conv.padding != "same" and tuple(conv.padding) != (same, same) and not (conv.padding == "valid" and same == 0):
        return f"not same padding (padding={conv.padding}, same would be {same})"
    return None


def accelerate(model: nn.Module, impl: str = "auto", min_kernel_size: int = 1) -> AccelerateReport:
    """Make every stride-1 depthwise ``nn.Conv2d`` of ``model`` a ``DepthwiseConv2d``, in place.

    The state dict (keys and values), the parameters themselves (same tensor objects: an optimizer built before
    stays valid), hooks, device, dtype and the outputs (within float32 noise) are kept.

    Args:
        model: any module tree (timm, torchvision, your own); modified in place.
        impl: implementation the converted layers ask ``dwconv2d`` for (``"auto"``: the fastest per shape).
        min_kernel_size: leave depthwise convolutions with smaller kernels alone (e.g. 7: large kernels only).

    Returns:
        An ``AccelerateReport``: ``replaced`` (name -> kernel size), ``skipped`` (name -> reason for every other
        ``nn.Conv2d``), ``summary()``; ``len(report)`` is the number replaced. The summary is also logged.
    """
    report = AccelerateReport()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        reason = depthwise_skip_reason(module)
        if reason is None and module.kernel_size[0] < min_kernel_size:
            reason = f"kernel size {module.kernel_size[0]} below min_kernel_size={min_kernel_size}"
        if reason is not None:
            report.skipped[name or "<model>"] = reason
            continue
        # NOTE: the module is re-classed rather than rebuilt: DepthwiseConv2d is an nn.Conv2d that adds only
        # ``impl`` and a forward through ``dwconv2d``, so the same object keeps its parameters, buffers, hooks and
        # every reference to it (shared modules, optimizers, wrappers such as timm's MixedConv2d).
        module.__class__ = DepthwiseConv2d
        module.impl = impl
        report.replaced[name or "<model>"] = module.kernel_size[0]
    _logger.info("accelerate: %s", report.summary())
    return report
