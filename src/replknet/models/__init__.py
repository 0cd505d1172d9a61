"""Model families; importing this package registers every model with timm."""

from replknet.models.replknet import REPLKNET_CONFIGS, ConvFFN, RepLKBlock, RepLKNet, RepLKNetConfig, RepLKNetStage

__all__ = ["REPLKNET_CONFIGS", "ConvFFN", "RepLKBlock", "RepLKNet", "RepLKNetConfig", "RepLKNetStage"]
