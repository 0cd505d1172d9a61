"""Building a model from a checkpoint file or a converted folder, and writing converted folders.

A converted folder has timm's ``save_for_hf`` layout: ``model.safetensors`` plus ``config.json`` (architecture,
``model_args`` such as ``num_classes`` and ``small_kernel_merged``, and the preprocessing ``pretrained_cfg``), so
``timm.create_model("local-dir:FOLDER", pretrained=True)`` loads it without any network access.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# Weight files timm looks for in a local folder, in its order of preference.
_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def read_folder_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a converted (timm local-dir) folder."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is a folder without {CONFIG_NAME}; give a checkpoint file or a converted folder"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"cannot parse {path}: {error}") from error
    if not isinstance(config, dict) or "architecture" not in config:
        raise ValueError(f"{path} has no 'architecture' entry; it is not a timm model config")
    return config


def folder_weights(folder: str | os.PathLike) -> Path:
    """The weights file of a converted folder (the one timm would pick)."""
    for name in _FOLDER_WEIGHTS:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no weights file ({', '.join(_FOLDER_WEIGHTS)}) in {folder}")


def load_model(
    checkpoint: str | os.PathLike,
    model_name: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model and load ``checkpoint`` into it, in eval mode.

    Args:
        checkpoint: a checkpoint file of any layout ``replknet.create_model`` reads (official, wrapped,
            ``module.``-prefixed, mmpretrain, deploy form, safetensors), or a converted folder (``config.json``
            plus weights).
        model_name: registered model name; optional for a converted folder (its config names it).
        **kwargs: constructor options passed on (e.g. ``num_classes``).

    Raises:
        ValueError: unknown model, a model name that contradicts the folder's config, or a checkpoint that does
            not fit the model (``replknet.CheckpointError`` names the keys).
    """
    import replknet

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        config = read_folder_config(checkpoint)
        architecture = config["architecture"]
        if model_name is not None and model_name.split(".")[0] != architecture:
            raise ValueError(
                f"--model {model_name} contradicts {checkpoint / CONFIG_NAME}, which is for {architecture}"
            )
        model_args = dict(config.get("model_args", {}))
        model_args.update(kwargs)
        pretrained_cfg = config.get("pretrained_cfg")
        if pretrained_cfg:
            # The saved preprocessing (input size, mean/std, crop) travels with the weights.
            model_args.setdefault("pretrained_cfg_overlay", dict(pretrained_cfg))
        model = replknet.create_model(architecture, checkpoint_path=folder_weights(checkpoint), **model_args)
        labels = config.get("label_names")
        if labels:
            model.pretrained_cfg["label_names"] = labels
    else:
        if model_name is None:
            raise ValueError(f"give --model for the checkpoint file {checkpoint} (only converted folders name it)")
        model = replknet.create_model(model_name, checkpoint_path=checkpoint, **kwargs)
    return model.eval()


def is_fused(model: nn.Module) -> bool:
    """True when ``model`` is one of this library's fusible models in its deploy (re-parameterised) form."""
    from replknet.models._registry import family_of

    family = family_of(model)
    return family is not None and family.fusible and family.is_deploy_state_dict(model.state_dict())


def save_model_folder(model: nn.Module, folder: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` as a timm local-dir folder: ``model.safetensors`` and ``config.json``, each atomically.

    The config records ``small_kernel_merged`` for RepLKNet models, so loading rebuilds the same (fused or
    training) form. Returns the folder.
    """
    from timm.models._hub import save_config_for_hf

    import replknet
    from replknet.checkpoint import atomic_write
    from replknet.models._registry import family_of

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    model_args: dict[str, Any] = {}
    architecture = model.pretrained_cfg.get("architecture", "")
    family = family_of(model)
    if family is not None and family.deploy_arg is not None:
        model_args[family.deploy_arg] = is_fused(model)
    info = {"format": "replknet", "architecture": architecture, **(metadata or {})}
    replknet.save_state_dict(model.state_dict(), folder / WEIGHTS_NAME, metadata=info)
    # timm writes the config to a path: write it to the temporary file of an atomic write.
    atomic_write(folder / CONFIG_NAME, lambda tmp: save_config_for_hf(model, tmp, model_args=model_args))
    _logger.info("wrote %s and %s", folder / WEIGHTS_NAME, folder / CONFIG_NAME)
    return folder


@torch.no_grad()
def compare_outputs(
    model: nn.Module, other: nn.Module, input_size: tuple[int, int], batch_size: int = 2, seed: int = 0
) -> tuple[float, float]:
    """``(max |diff|, max |diff| / max |reference|)`` of two models' eval outputs on one seeded random batch."""
    generator = torch.Generator().manual_seed(seed)
    in_chans = getattr(model, "in_chans", 3)
    x = torch.randn(batch_size, in_chans, *input_size, generator=generator)
    reference, output = model.eval()(x), other.eval()(x)
    max_diff = (output.double() - reference.double()).abs().max().item()
    return max_diff, max_diff / max(reference.double().abs().max().item(), 1e-30)


def model_input_size(model: nn.Module, size: int | None = None) -> tuple[int, int]:
    """``(H, W)``: ``size`` when given, else the model's configured input size."""
    if size is not None:
        return (size, size)
    input_size = getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))
    return (int(input_size[-2]), int(input_size[-1]))
