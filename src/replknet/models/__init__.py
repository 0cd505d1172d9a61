"""Model families; importing this package registers every model with timm and with ``replknet``'s registry.

A family is one module (its classes, variant configs, one ``ModelFamily`` record and explicit factories) plus one
import line here.
"""

from replknet.models._registry import (
    ModelFamily,
    ModelInfo,
    UnknownModelError,
    find_model_info,
    get_model_info,
    list_families,
    list_models,
)
from replknet.models.mobilenetv2 import MOBILENETV2, MOBILENETV2_CONFIGS, LargeKernelMobileNetV2, MobileNetV2Config
from replknet.models.replknet import (
    REPLKNET,
    REPLKNET_CONFIGS,
    ConvFFN,
    RepLKBlock,
    RepLKNet,
    RepLKNetConfig,
    RepLKNetStage,
)
from replknet.models.unireplknet import UNIREPLKNET, UNIREPLKNET_CONFIGS, UniRepLKNet, UniRepLKNetConfig

__all__ = [
    "MOBILENETV2",
    "MOBILENETV2_CONFIGS",
    "REPLKNET",
    "REPLKNET_CONFIGS",
    "ConvFFN",
    "LargeKernelMobileNetV2",
    "MobileNetV2Config",
    "ModelFamily",
    "ModelInfo",
    "RepLKBlock",
    "RepLKNet",
    "RepLKNetConfig",
    "RepLKNetStage",
    "UNIREPLKNET",
    "UNIREPLKNET_CONFIGS",
    "UniRepLKNet",
    "UniRepLKNetConfig",
    "UnknownModelError",
    "find_model_info",
    "get_model_info",
    "list_families",
    "list_models",
]
