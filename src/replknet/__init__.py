"""replknet: RepLKNet large-kernel CNNs (Ding et al., CVPR 2022), exact to the official code, fast, timm-native."""

from __future__ import annotations

import os

import timm
from torch import nn

import replknet.models  # noqa: F401  (registers the models with timm)
from replknet import layers
from replknet.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_state_dict
from replknet.models import (
    ModelInfo,
    RepLKNet,
    UniRepLKNet,
    UnknownModelError,
    find_model_info,
    get_model_info,
    list_families,
)
from replknet.models import list_models as _list_models
from replknet.models._registry import unknown_model_message
from replknet.profile import count_macs, count_params
from replknet.reparam import reparameterize

__version__ = "0.1.0"


def list_models(family: str | None = None, fusible: bool | None = None) -> list[str]:
    """Names of the models this library registers (all creatable with ``timm.create_model`` too).

    Args:
        family: only this family's models (``list_families()``).
        fusible: only models that ``reparameterize`` turns into a different deploy form (or only those that not).
    """
    return _list_models(family, fusible)


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

    Raises:
        UnknownModelError: (a ``ValueError``) for a name neither replknet nor timm registers, naming close ones.
    """
    base = name.split(".")[0]
    if base not in timm.list_models():
        raise UnknownModelError(unknown_model_message(name))
    info = find_model_info(base)
    state_dict = None
    if checkpoint_path is not None:
        from replknet.checkpoint import convert_state_dict

        state_dict = convert_state_dict(read_checkpoint(checkpoint_path))
        family = info.family if info is not None else None
        if family is not None and family.deploy_arg is not None and family.is_deploy_state_dict(state_dict):
            kwargs.setdefault(family.deploy_arg, True)
        # The classifier width follows the checkpoint's head (timm's pretrained config names the head module).
        head = f"{info.classifier}.weight" if info is not None else "head.weight"
        if head in state_dict and "num_classes" not in kwargs:
            kwargs["num_classes"] = state_dict[head].shape[0]
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model


__all__ = [
    "CheckpointError",
    "ModelInfo",
    "RepLKNet",
    "UniRepLKNet",
    "UnknownModelError",
    "count_macs",
    "count_params",
    "create_model",
    "layers",
    "find_model_info",
    "get_model_info",
    "list_families",
    "list_models",
    "load_checkpoint",
    "read_checkpoint",
    "reparameterize",
    "save_state_dict",
]
