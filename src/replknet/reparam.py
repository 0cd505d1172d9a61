"""Structural re-parameterisation: the fusion math as pure tensor functions, and the model walker.

Every fusible module in this library has ``reparameterize()`` (in place, idempotent). The official code's
``structural_reparam()`` only merges the large-kernel branches; ``deep=True`` additionally folds every
conv-BN pair and each pre-BN into the 1x1 conv that follows it, which is still exact.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode BN into the conv before it: ``bn(conv(x)) == conv'(x)``.

    ``W' = W * gamma / std`` per output channel, ``b' = beta + (b - mean) * gamma / std``.
    """
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    conv_bias = bias if bias is not None else torch.zeros_like(bn.running_mean)
    return weight * scale.reshape(-1, 1, 1, 1), beta + (conv_bias - bn.running_mean) * scale


def bn_affine(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BN as ``y = x * scale + shift`` per channel."""
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


def fold_bn_into_next_1x1(
    scale: torch.Tensor, shift: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a per-channel affine ``x * scale + shift`` into the (unpadded, ungrouped) 1x1 conv or linear after it.

    ``W (x s + t) + b = (W s) x + (W t + b)``. Valid for a 1x1 conv because no padding mixes in zeros.
    """
    flat = weight.reshape(weight.shape[0], weight.shape[1])  # (out, in)
    new_bias = flat @ shift
    if bias is not None:
        new_bias = new_bias + bias
    new_weight = weight * scale.reshape(1, -1, *([1] * (weight.dim() - 2)))
    return new_weight, new_bias


def pad_kernel_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a centred odd ``k x k`` kernel to ``size x size`` (both convs use padding ``k // 2``)."""
    k = kernel.shape[-1]
    if k > size or (size - k) % 2:
        raise ValueError(f"cannot centre a {k}x{k} kernel in {size}x{size}")
    pad = (size - k) // 2
    return F.pad(kernel, [pad] * 4)


def dilated_to_dense(kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """The dense kernel of a dilated one: ``k x k`` taps at stride ``dilation`` in ``r(k-1)+1``, zeros between.

    A convolution with ``kernel`` at dilation ``r`` (padding ``r(k-1)/2``) equals one with the result at
    dilation 1 (padding ``(r(k-1)+1)//2``).
    """
    if dilation == 1:
        return kernel
    k = kernel.shape[-1]
    size = dilation * (k - 1) + 1
    dense = kernel.new_zeros(*kernel.shape[:-2], size, size)
    dense[..., ::dilation, ::dilation] = kernel
    return dense


class Reparameterizable:
    """Mixin for modules with a fusible training form.

    ``reparameterize(deep=False)`` switches the module to its deploy form in place, idempotently. ``deep`` asks
    for the folds beyond the official code (conv-BN pairs, pre-BN into the next 1x1 conv).
    """

    def reparameterize(self, deep: bool = False) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def reparameterize(model: nn.Module, inplace: bool = False, deep: bool = False) -> nn.Module:
    """Return the fused (deploy) form of ``model``.

    Calls ``reparameterize()`` on every submodule that is ``Reparameterizable``, children before parents, which
    merges each small-kernel branch and its BN into the large kernel, exactly as the official
    ``structural_reparam()``.

    Args:
        model: any module; modules without fusible parts are returned unchanged.
        inplace: fuse ``model`` itself instead of a deep copy.
        deep: also fold every conv-BN pair and every pre-BN into the following 1x1 conv (beyond the official
            code; exact in eval mode, and faster).
    """
    if not inplace:
        model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for module in reversed(list(model.modules())):
            if isinstance(module, Reparameterizable):
                module.reparameterize(deep=deep)
    model.train(was_training)
    return model
