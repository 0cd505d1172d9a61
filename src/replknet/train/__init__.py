"""Training and evaluation: the paper's recipes on timm's parts, torchrun-ready, with a built-in dataset."""

from replknet.train.config import PRESETS, TrainConfig, accumulation_steps, get_preset, list_presets, scaled_lr
from replknet.train.data import DataFileError, eval_transform, train_transform
from replknet.train.engine import NonFiniteLossError, TrainResult, train
from replknet.train.evaluate import evaluate, evaluate_checkpoint, synthetic_shape_bias
from replknet.train.optim import (
    build_optimizer,
    build_scheduler,
    layer_decay_param_groups,
    replknet_layer_id,
    unireplknet_layer_id,
)

__all__ = [
    "PRESETS",
    "DataFileError",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "accumulation_steps",
    "build_optimizer",
    "build_scheduler",
    "eval_transform",
    "evaluate",
    "evaluate_checkpoint",
    "get_preset",
    "layer_decay_param_groups",
    "list_presets",
    "replknet_layer_id",
    "unireplknet_layer_id",
    "scaled_lr",
    "synthetic_shape_bias",
    "train",
    "train_transform",
]
