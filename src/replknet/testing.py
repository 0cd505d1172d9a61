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


@torch.no_grad()
def randomize_affine(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """``randomize_bn_stats`` plus every other per-channel affine a fusion folds, so that no fold is trivial.

    LayerNorm weight ~ U(0.5, 1.5) and bias ~ 0.1 N(0, 1); parameters named ``gamma`` (layer scale, GRN scale)
    ~ U(0.5, 1.5) and ``beta`` (GRN shift) ~ 0.1 N(0, 1) on any other module.
    """
    randomize_bn_stats(model, generator)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        elif not isinstance(module, nn.modules.batchnorm._BatchNorm):
            for name, param in module.named_parameters(recurse=False):
                if name == "gamma":
                    param.copy_(0.5 + torch.rand(param.shape, generator=generator))
                elif name == "beta":
                    param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return model
