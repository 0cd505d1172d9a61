"""Fusion math per block, against unfused eval-mode outputs (float64 where it matters)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import replknet
from replknet.models.layers import ConvBN, ReparamLargeKernelConv
from replknet.models.replknet import ConvFFN, RepLKBlock
from replknet.reparam import bn_affine, fold_bn_into_next_1x1, fuse_conv_bn, pad_kernel_to
from replknet.testing import randomize_bn_stats, relative_error


def _double(module: nn.Module) -> nn.Module:
    return randomize_bn_stats(module).double().eval()


@pytest.mark.parametrize(("kernel", "small", "stride"), [(31, 5, 1), (13, 5, 1), (7, 3, 2), (9, None, 1), (5, 5, 1)])
def test_large_kernel_merge(kernel, small, stride):
    module = _double(ReparamLargeKernelConv(6, kernel, small, stride=stride))
    x = torch.randn(2, 6, 17, 12, dtype=torch.float64)
    with torch.no_grad():
        reference = module(x)
        fused = replknet.reparameterize(module)
        assert fused.lkb_origin is None and fused.small_conv is None
        assert relative_error(fused(x), reference) < 1e-12


@pytest.mark.parametrize("block_cls", ["lk", "ffn"])
@pytest.mark.parametrize("deep", [False, True])
def test_blocks(block_cls, deep):
    block = RepLKBlock(8, 12, 13, 5, 0.0) if block_cls == "lk" else ConvFFN(8, 32, 8, 0.0)
    block = _double(block)
    x = torch.randn(2, 8, 15, 15, dtype=torch.float64)
    with torch.no_grad():
        reference = block(x)
        fused = replknet.reparameterize(block, deep=deep)
        assert relative_error(fused(x), reference) < 1e-12
    if deep:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())


def test_conv_bn_fold_matches_formula():
    conv_bn = _double(ConvBN(4, 6, 3, stride=2))
    weight, bias = fuse_conv_bn(conv_bn.conv.weight, None, conv_bn.bn)
    bn = conv_bn.bn
    std = (bn.running_var + bn.eps).sqrt()
    torch.testing.assert_close(weight, conv_bn.conv.weight * (bn.weight / std).reshape(-1, 1, 1, 1))
    torch.testing.assert_close(bias, bn.bias - bn.running_mean * bn.weight / std)


def test_pre_bn_fold_into_1x1():
    bn = _double(nn.BatchNorm2d(5))
    conv = nn.Conv2d(5, 3, 1, bias=True).double()
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    scale, shift = bn_affine(bn)
    weight, bias = fold_bn_into_next_1x1(scale, shift, conv.weight, conv.bias)
    with torch.no_grad():
        expected = conv(bn(x))
    torch.testing.assert_close(nn.functional.conv2d(x, weight, bias), expected)


def test_pad_kernel_to_centres():
    small = torch.arange(9.0).reshape(1, 1, 3, 3)
    padded = pad_kernel_to(small, 7)
    assert padded.shape == (1, 1, 7, 7)
    torch.testing.assert_close(padded[..., 2:5, 2:5], small)
    assert padded.sum() == small.sum()
    with pytest.raises(ValueError, match="cannot centre"):
        pad_kernel_to(small, 4)


def test_small_kernel_larger_than_large_is_rejected():
    with pytest.raises(ValueError, match="small_kernel must be odd and at most"):
        ReparamLargeKernelConv(4, 3, 5)
