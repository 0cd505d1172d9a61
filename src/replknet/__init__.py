"""replknet: RepLKNet large-kernel CNNs (Ding et al., CVPR 2022), exact to the official code, fast, timm-native."""

from __future__ import annotations

import os

import timm
from torch import nn

import replknet.models  # noqa: F401  (registers the models with timm)
from replknet.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_state_dict
from replknet.models import REPLKNET_CONFIGS, RepLKNet
from replknet.models._registry import our_models
from replknet.profile import count_macs, count_params
from replknet.reparam import reparameterize

__version__ = "0.1.0"


def list_models() -> list[str]:
    """Names of the models this library registers (all creatable with ``timm.create_model`` too)."""
    return our_models()


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """Create a registered model by name (``timm.create_model`` underneath; timm's own models work too).

    Args:
        name: a name from ``list_models()`` (optionally ``name.tag`` for a pretrained config), or any timm model.
        pretrained: load weights from the file named in ``pretrained_cfg_overlay=dict(file=...)``.
        checkpoint_path: a local checkpoint (official, mmpretrain or this library's); a fused checkpoint builds
            the fused model.
        **kwargs: constructor options (``num_classes``, ``drop_path_rate``, ``small_kernel_merged``, ...).
    """
    base = name.split(".")[0]
    if base not in timm.list_models():
        ours = ", ".join(list_models())
        raise ValueError(f"unknown model {name!r}; replknet models: {ours} (or any timm model name)")
    state_dict = None
    if checkpoint_path is not None:
        from replknet.checkpoint import convert_state_dict, is_deploy_state_dict

        state_dict = convert_state_dict(read_checkpoint(checkpoint_path))
        if base in REPLKNET_CONFIGS and is_deploy_state_dict(state_dict):
            kwargs.setdefault("small_kernel_merged", True)
        if "head.weight" in state_dict and "num_classes" not in kwargs:
            kwargs["num_classes"] = state_dict["head.weight"].shape[0]
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model


__all__ = [
    "CheckpointError",
    "RepLKNet",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "load_checkpoint",
    "read_checkpoint",
    "reparameterize",
    "save_state_dict",
]
