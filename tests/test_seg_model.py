"""RepLKNet-UperNet: the paper's head sizes, mmseg's UPerHead function, official backbone loading, output shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from replknet.seg.model import FCNHead, RepLKNetUperNet, SegmentorConfig, UperNetHead, build_segmentor
from replknet.testing import randomize_bn_stats, relative_error


def _tiny(**kwargs) -> RepLKNetUperNet:
    kwargs = {"channels": 32, "aux_channels": 16, "drop_path_rate": 0.0, **kwargs}
    return build_segmentor("replknet_tiny", num_classes=kwargs.pop("num_classes", 5), **kwargs)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_head_sizes_for_31b_ade20k():
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = build_segmentor("replknet_31b", num_classes=150)
    c, k, backbone = 512, 150, (128, 256, 512, 1024)
    # mmseg UPerHead, counted by hand: PPM (4 x 1x1 conv + BN), bottleneck 3x3, laterals 1x1, FPN 3x3, fusion 3x3,
    # classifier 1x1 with bias. Every conv-BN conv has no bias; each BN has 2 parameters per channel.
    ppm = 4 * (backbone[3] * c + 2 * c)
    bottleneck = (backbone[3] + 4 * c) * c * 9 + 2 * c
    laterals = sum(ch * c + 2 * c for ch in backbone[:3])
    fpn = 3 * (c * c * 9 + 2 * c)
    fusion = 4 * c * c * 9 + 2 * c
    classifier = c * k + k
    assert _count(model.decode_head) == ppm + bottleneck + laterals + fpn + fusion + classifier
    assert _count(model.auxiliary_head) == 512 * 256 * 9 + 2 * 256 + 256 * k + k
    assert _count(model.backbone) == 78_837_120  # spec: downstream form of 31B
    # The paper's table: UperNet RepLKNet-31B on ADE20K has 112M parameters (inference model, no aux head).
    assert round((_count(model) - _count(model.auxiliary_head)) / 1e6) == 112


def test_head_structure_follows_mmseg():
    model = _tiny()
    assert not any(isinstance(m, nn.LayerNorm) for m in model.decode_head.modules())
    assert isinstance(model.decode_head.dropout, nn.Dropout2d) and model.decode_head.dropout.p == 0.1
    assert isinstance(model.auxiliary_head, FCNHead) and model.auxiliary_head.conv[0].out_channels == 16
    assert model.auxiliary_head.conv[0].in_channels == 64  # stage index 2 of the tiny backbone
    assert model.config.aux_loss_weight == 0.4 and model.config.pool_scales == (1, 2, 3, 6)
    assert SegmentorConfig().channels == 512 and SegmentorConfig().aux_channels == 256


def _mmseg_uperhead_reference(head: UperNetHead, features: list[torch.Tensor]) -> torch.Tensor:
    """mmseg's UPerHead.forward written out from its definition, with the module's weights, in float64."""
    decoder = head.decoder

    def conv_bn_relu(block, x):
        conv, bn = block[0], block[1]
        x = F.conv2d(x, conv.weight.double(), None, padding=conv.padding)
        x = F.batch_norm(x, bn.running_mean.double(), bn.running_var.double(), bn.weight.double(), bn.bias.double(),
                         False, 0.0, bn.eps)  # fmt: skip
        return F.relu(x)

    def up(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    x = features[3]
    ppm = [x] + [up(conv_bn_relu(b[1], F.adaptive_avg_pool2d(x, s)), x.shape[2:]) for b, s in
                 zip(decoder.psp.blocks, (1, 2, 3, 6))]  # fmt: skip
    psp = conv_bn_relu(decoder.psp.out_conv, torch.cat(ppm, 1))
    # laterals[i] for levels 0..2 (decoder keeps them top-down, i.e. reversed), then the PSP output on top
    laterals = [conv_bn_relu(decoder.fpn_lateral_blocks[2 - i].conv_norm_relu, features[i]) for i in range(3)] + [psp]
    for i in range(3, 0, -1):
        laterals[i - 1] = laterals[i - 1] + up(laterals[i], laterals[i - 1].shape[2:])
    outs = [conv_bn_relu(decoder.fpn_conv_blocks[2 - i], laterals[i]) for i in range(3)] + [laterals[3]]
    outs = [outs[0]] + [up(o, outs[0].shape[2:]) for o in outs[1:]]
    fused = conv_bn_relu(decoder.fusion_block, torch.cat(outs, 1))
    return F.conv2d(fused, head.classifier.weight.double(), head.classifier.bias.double())


def test_upernet_head_computes_mmseg_uperhead():
    head = UperNetHead((16, 32, 64, 128), channels=24, num_classes=7)
    randomize_bn_stats(head)
    head.eval()
    features = [torch.randn(2, c, 40 // 2**i, 56 // 2**i) for i, c in enumerate((16, 32, 64, 128))]
    with torch.no_grad():
        out = head(features)
        reference = _mmseg_uperhead_reference(head, [f.double() for f in features])
    assert out.shape == (2, 7, 40, 56)
    assert relative_error(out, reference) < 1e-5


@pytest.mark.parametrize("size", [(64, 96), (70, 100), (96, 40)])
def test_output_shapes_non_square(size):
    model = _tiny(num_classes=4).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert model(x).shape == (2, 4, *size)
    model.train()
    main, aux = model.forward_train(x)
    assert main.shape == aux.shape == (2, 4, *size)


def test_every_parameter_gets_a_gradient():
    model = _tiny().train()
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    target[:, :8] = 255
    loss, parts = model.loss(x, target)
    loss.backward()
    assert set(parts) == {"loss_main", "loss_aux"}
    assert loss.item() == pytest.approx(parts["loss_main"] + 0.4 * parts["loss_aux"], rel=1e-5)
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_official_checkpoints_load_into_the_backbone(shared_path, tmp_path):
    folder = shared_path("fixtures", "official_tiny")
    # The downstream form with norm_intermediate_features reproduces the official four feature maps.
    model = _tiny(norm_intermediate_features=True).eval()
    model.load_backbone(folder / "state_dict_features.pth")
    x = torch.load(folder / "input.pt", weights_only=True)
    expected = torch.load(folder / "features.pt", weights_only=True)
    with torch.no_grad():
        features = model.backbone(x)
    assert len(features) == 4
    for ours, theirs in zip(features, expected):
        assert relative_error(ours, theirs) < 1e-5
    # A classifier checkpoint (with norm.* and head.*) loads too: the head and final norm are dropped.
    classifier = _tiny()
    classifier.load_backbone(folder / "state_dict.pth")
    state = torch.load(folder / "state_dict.pth", weights_only=True)
    assert torch.equal(classifier.backbone.stem[0].conv.weight, state["stem.0.conv.weight"])
    # A checkpoint of another shape is refused with the keys named.
    with pytest.raises(ValueError, match="mis-shaped"):
        build_segmentor("replknet_tiny_k3", 5, channels=16, aux_channels=0).load_backbone(folder / "state_dict.pth")


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_segmentor("resnet50")
    with pytest.raises(ValueError, match="num_classes"):
        build_segmentor("replknet_tiny", num_classes=0)
    with pytest.raises(ValueError, match="4 backbone levels"):
        UperNetHead((16, 32, 64), 8, 2)
