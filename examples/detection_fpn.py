"""Detection-ready features: a RepLKNet backbone under torchvision's FeaturePyramidNetwork.

The backbone in the official downstream mode (``num_classes=None, out_indices=(0, 1, 2, 3)``) returns four maps at
strides 4, 8, 16, 32 (RepLKNet-31B: 128, 256, 512, 1024 channels). An FPN with 256 channels over them, plus the
max-pooled P6 level, is the neck of the paper's Cascade Mask R-CNN and FCOS configs (mmdetection ``FPN``,
``in_channels=[128, 256, 512, 1024], out_channels=256``).

    python examples/detection_fpn.py                       # RepLKNet-31B at 800x1216 (as COCO test images)
    python examples/detection_fpn.py --model replknet_tiny --size 256 320
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from replknet.models import get_model_info


class RepLKNetFPN(nn.Module):
    """RepLKNet backbone (official downstream mode) + FPN: ``{"0": P2, "1": P3, "2": P4, "3": P5, "pool": P6}``."""

    def __init__(self, model: str = "replknet_31b", out_channels: int = 256, norm_intermediate_features: bool = False):
        super().__init__()
        info = get_model_info(model)  # raises for an unknown name, suggesting close ones
        if info.family.backbone is None:
            raise ValueError(f"{model} ({info.family.name}) has no backbone form")
        options = {"norm_intermediate_features": True} if norm_intermediate_features else {}
        self.body = info.family.backbone(info, **options)
        in_channels = [info["num_chs"] for info in self.body.feature_info]
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels  # what torchvision's detectors read from a backbone

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)  # [(N, C_i, H / 2^(i+2), W / 2^(i+2)) for i in 0..3]
        return self.fpn(OrderedDict((str(i), feature) for i, feature in enumerate(features)))


def main(argv: list[str] | None = None) -> dict[str, tuple[int, ...]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="replknet_31b", help="RepLKNet config (default replknet_31b)")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"))
    parser.add_argument("--out-channels", type=int, default=256)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = RepLKNetFPN(args.model, args.out_channels).eval()
    x = torch.randn(1, 3, *args.size)
    with torch.no_grad():
        features = model.body(x)
        pyramid = model.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
    print(f"{args.model} backbone, input {tuple(x.shape)}")
    for i, (info, feature) in enumerate(zip(model.body.feature_info, features)):
        print(f"  C{i + 2}  stride {info['reduction']:>2}  {tuple(feature.shape)}")
    print(f"FPN ({args.out_channels} channels)")
    shapes = {}
    for name, level in pyramid.items():
        label = f"P{int(name) + 2}" if name.isdigit() else "P6 (pool)"
        print(f"  {label:<9} {tuple(level.shape)}")
        shapes[name] = tuple(level.shape)
    return shapes


if __name__ == "__main__":
    main()
