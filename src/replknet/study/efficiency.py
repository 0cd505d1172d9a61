"""Guideline 1 measured: the share of a forward pass spent in depthwise convolutions, per implementation."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DepthwiseShare", "depthwise_share"]


@dataclass(frozen=True)
class DepthwiseShare:
    """One timing round: total and depthwise seconds per forward pass, and the depthwise share in percent."""

    total_seconds: float
    depthwise_seconds: float
    images_per_second: float
    depthwise_layers: int

    @property
    def share(self) -> float:
        return 100.0 * self.depthwise_seconds / self.total_seconds


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels > 1


@torch.no_grad()
def depthwise_share(
    model: nn.Module, image_size: int = 224, batch_size: int = 8, impl: str = "auto", iterations: int = 2
) -> DepthwiseShare:
    """Time ``iterations`` forward passes (after one warm-up) with every depthwise convolution timed on its own.

    Args:
        model: the model, in eval mode on CPU (CUDA timing would need synchronisation around every layer).
        image_size: input side.
        batch_size: images per forward.
        impl: the depthwise implementation (``replknet.ops.impl_override``): ``"reference"`` is plain
            ``F.conv2d``, ``"auto"`` this library's choice.
        iterations: timed forward passes (their mean is reported).
    """
    from replknet.ops import impl_override

    parameter = next(model.parameters())
    if parameter.device.type != "cpu":
        raise ValueError("depthwise_share times CPU forward passes; move the model to the CPU")
    layers = [m for m in model.modules() if _is_depthwise(m)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no depthwise convolution to time")
    spent = [0.0]
    started: dict[int, float] = {}

    def before(module, _inputs):
        started[id(module)] = time.perf_counter()

    def after(module, _inputs, _output):
        spent[0] += time.perf_counter() - started.pop(id(module))

    handles = [h for m in layers for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    x = torch.randn(batch_size, 3, image_size, image_size, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with impl_override(impl):
            model(x)  # warm-up (the auto rule's first choice, allocator)
            spent[0] = 0.0
            start = time.perf_counter()
            for _ in range(iterations):
                model(x)
            total = (time.perf_counter() - start) / iterations
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return DepthwiseShare(total, spent[0] / iterations, batch_size / total, len(layers))
