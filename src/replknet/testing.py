"""Helpers for tests and checks: randomised BatchNorm statistics, relative errors."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_bn_stats(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, as the official fixtures do.

    running_mean ~ 0.1 N(0, 1), running_var ~ U(0.5, 1.5), weight ~ U(0.5, 1.5), bias ~ 0.1 N(0, 1).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            if module.affine:
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |output - reference| / max |reference|``, computed in float64."""
    output, reference = output.double(), reference.double()
    return ((output - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()
