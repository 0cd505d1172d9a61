"""Semantic segmentation with RepLKNet: UperNet + auxiliary FCN head, data, metrics, inference and training."""

from replknet.seg.data import (
    DATASET_SPECS,
    EvalTransform,
    SegmentationFolder,
    SyntheticSegmentation,
    TrainTransform,
    build_dataset,
    colorize,
    palette,
    save_prediction_png,
)
from replknet.seg.engine import EvalConfig, TrainConfig, build_optimizer, evaluate, load_segmentor, poly_lr, train
from replknet.seg.inference import PAPER_MS_RATIOS, aug_inference, inference, slide_inference, whole_inference
from replknet.seg.metrics import ConfusionMatrix, confusion_matrix, segmentation_metrics
from replknet.seg.model import (
    FCNHead,
    RepLKNetUperNet,
    SegmentorConfig,
    UperNetHead,
    backbone_features,
    build_segmentor,
)

__all__ = [
    "DATASET_SPECS",
    "PAPER_MS_RATIOS",
    "ConfusionMatrix",
    "EvalConfig",
    "EvalTransform",
    "FCNHead",
    "RepLKNetUperNet",
    "SegmentationFolder",
    "SegmentorConfig",
    "SyntheticSegmentation",
    "TrainConfig",
    "TrainTransform",
    "UperNetHead",
    "aug_inference",
    "backbone_features",
    "build_dataset",
    "build_optimizer",
    "build_segmentor",
    "colorize",
    "confusion_matrix",
    "evaluate",
    "inference",
    "load_segmentor",
    "palette",
    "poly_lr",
    "save_prediction_png",
    "segmentation_metrics",
    "slide_inference",
    "train",
    "whole_inference",
]
