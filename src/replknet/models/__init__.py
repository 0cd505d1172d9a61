"""Model families; importing this package registers every model with timm."""

from replknet.models.mobilenetv2 import MOBILENETV2_CONFIGS, LargeKernelMobileNetV2, MobileNetV2Config
from replknet.models.replknet import REPLKNET_CONFIGS, ConvFFN, RepLKBlock, RepLKNet, RepLKNetConfig, RepLKNetStage

__all__ = [
    "MOBILENETV2_CONFIGS",
    "LargeKernelMobileNetV2",
    "MobileNetV2Config",
    "REPLKNET_CONFIGS",
    "ConvFFN",
    "RepLKBlock",
    "RepLKNet",
    "RepLKNetConfig",
    "RepLKNetStage",
]
