"""replknet.layers: the re-parameterisable large-kernel convolutions as parts, inside a plain torchvision ResNet."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import replknet
from replknet.layers import DILATED_BRANCHES, ConvBN, DilatedReparamBlock, ReparamLargeKernelConv
from replknet.ops import DepthwiseConv2d
from replknet.testing import randomize_affine, relative_error


def _fuses_exactly(module: nn.Module, x: torch.Tensor) -> nn.Module:
    module = randomize_affine(module.double()).eval()
    x = x.double()
    with torch.no_grad():
        reference = module(x)
        module.reparameterize()
        module.reparameterize()  # idempotent
        torch.testing.assert_close(module(x), reference, rtol=1e-12, atol=1e-12)
    return module


@pytest.mark.parametrize(
    ("options", "out_channels"),
    [
        (dict(), 6),  # depthwise, RepLKNet's form
        (dict(stride=2), 6),
        (dict(groups=1, out_channels=10), 10),  # dense, any width: a drop-in for a ResNet conv
        (dict(groups=2, out_channels=4, stride=2), 4),
    ],
)
def test_large_plus_small_kernel_conv_fuses_exactly(options, out_channels):
    layer = ReparamLargeKernelConv(6, 9, small_kernel=3, **options)
    x = torch.randn(2, 6, 17, 15)
    fused = _fuses_exactly(layer, x)
    assert fused.lkb_reparam.weight.shape == (out_channels, 6 // fused.groups, 9, 9)
    assert fused(x.double()).shape[1] == out_channels


@pytest.mark.parametrize(
    ("options", "out_channels"),
    [
        (dict(), 4),  # the official table for the kernel size
        (dict(branches=[(3, 1), (5, 3), (3, 6)]), 4),  # one's own branches
        (dict(stride=2), 4),
        (dict(groups=1, out_channels=6, stride=2), 6),
    ],
)
def test_dilated_reparam_block_fuses_exactly(options, out_channels):
    layer = DilatedReparamBlock(4, 13, **options)
    expected = options.get("branches", list(zip(*DILATED_BRANCHES[13])))
    assert {name for name, _ in layer.named_children()} >= {f"dil_conv_k{k}_{r}" for k, r in expected}
    fused = _fuses_exactly(layer, torch.randn(2, 4, 19, 21))
    assert set(fused.state_dict()) == {"lk_origin.weight", "lk_origin.bias"}
    assert fused.lk_origin.out_channels == out_channels


def test_bad_layer_arguments_are_named():
    with pytest.raises(ValueError, match=r"branch \(k=5, r=4\) .* <= 13"):
        DilatedReparamBlock(4, 13, branches=[(5, 4)])
    with pytest.raises(ValueError, match="repeat"):
        DilatedReparamBlock(4, 13, branches=[(3, 2), (3, 2)])
    with pytest.raises(ValueError, match="no branch table for kernel size 21"):
        DilatedReparamBlock(4, 21)
    with pytest.raises(ValueError, match="groups 3 must divide"):
        ReparamLargeKernelConv(4, 7, 3, groups=3)
    with pytest.raises(ValueError, match="at most the large kernel"):
        ReparamLargeKernelConv(4, 7, 9)


def test_stride_one_depthwise_large_kernels_use_the_fast_op():
    assert isinstance(ReparamLargeKernelConv(8, 13, 5).lkb_origin.conv, DepthwiseConv2d)
    assert isinstance(DilatedReparamBlock(8, 13).lk_origin, DepthwiseConv2d)
    assert isinstance(replknet.reparameterize(DilatedReparamBlock(8, 13)).lk_origin, DepthwiseConv2d)
    assert not isinstance(DilatedReparamBlock(8, 13, stride=2).lk_origin, DepthwiseConv2d)
    assert isinstance(ConvBN(8, 8, 7, groups=8).conv, DepthwiseConv2d)


def _large_kernel_resnet() -> nn.Module:
    """torchvision's ResNet-18 with every block's first 3x3 conv replaced by a dense 5x5 + 3x3 re-param conv
    (same stride and widths) followed by a depthwise 9x9 dilated re-param layer."""
    model = torchvision.models.resnet18(num_classes=10)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            conv = block.conv1
            block.conv1 = nn.Sequential(
                ReparamLargeKernelConv(
                    conv.in_channels, 5, small_kernel=3, stride=conv.stride[0], out_channels=conv.out_channels, groups=1
                ),
                DilatedReparamBlock(conv.out_channels, 9),
            )
    return model


def test_large_kernels_inside_a_torchvision_resnet_train_and_fuse():
    torch.manual_seed(0)
    model = _large_kernel_resnet()
    x, target = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(2):  # two steps: BN statistics and weights move away from their initial values
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, missing[:5]
        optimizer.step()
    model.eval()
    fused = replknet.reparameterize(model)
    with torch.no_grad():
        assert relative_error(fused(x), model(x)) < 1e-5
    layers = [m for m in fused.modules() if isinstance(m, (ReparamLargeKernelConv, DilatedReparamBlock))]
    assert len(layers) == 16 and all(getattr(m, "lkb_reparam", None) is not None or m.fused for m in layers)
    # the ResNet's own BNs stay (they are not part of a re-param layer); ours are gone
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert bns == sum(isinstance(m, nn.BatchNorm2d) for m in torchvision.models.resnet18().modules())
    assert replknet.count_params(fused) < replknet.count_params(model)
