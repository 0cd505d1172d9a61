"""Building a model from a run folder, a converted folder or a weights file, and writing converted folders.

A run folder (``replknet train``) and a converted folder (``replknet convert``) both hold a ``config.json`` in
timm's ``save_for_hf`` layout (``replknet.runs``): the architecture, its ``model_args`` (``num_classes``,
``small_kernel_merged``, any non-default constructor argument), the preprocessing ``pretrained_cfg`` and the class
names. So ``timm.create_model("local-dir:FOLDER", pretrained=True)`` loads either without network access, and
every command here needs nothing but the folder (or a weights file inside it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from replknet.runs import CONFIG_NAME, RunInfo, read_run, run_config, write_run_config

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "build_run_model",
    "compare_outputs",
    "is_fused",
    "load_model",
    "model_input_size",
    "save_model_folder",
    "weights_architecture",
]


def _weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception:  # a corrupt file: reading the weights names the problem
        return {}


def weights_architecture(path: str | os.PathLike) -> str | None:
    """The model a ``.safetensors`` file written by this library names in its metadata, else None."""
    import replknet

    metadata = _weights_metadata(path)
    name = metadata.get("architecture") or metadata.get("model")
    return name if name and replknet.find_model_info(name) is not None else None


def build_run_model(run: RunInfo, model_name: str | None = None, **kwargs: Any) -> nn.Module:
    """The model of a run or converted folder, with its weights (``run.weights``), preprocessing and class names.

    Raises:
        ValueError: ``model_name`` contradicts the folder's architecture, or the folder holds another task.
    """
    import replknet

    if run.task != "classification":
        raise ValueError(f"{run.folder} is a {run.task} run: evaluate it with `replknet seg-eval --checkpoint`")
    architecture = run.architecture
    if model_name is not None and model_name.split(".")[0] != architecture:
        raise ValueError(f"--model {model_name} contradicts {run.folder / CONFIG_NAME}, which is for {architecture}")
    model_args = {**run.model_args, **kwargs}
    info = replknet.find_model_info(architecture)
    if info is not None and info.family.deploy_arg is not None and info.family.deploy_arg not in kwargs:
        # The form follows the weights file (model.safetensors or model_fused.safetensors of one run folder).
        model_args.pop(info.family.deploy_arg, None)
    overlay = {key: tuple(value) if isinstance(value, list) else value for key, value in run.pretrained_cfg.items()}
    if overlay:
        model_args.setdefault("pretrained_cfg_overlay", overlay)
    model = replknet.create_model(architecture, checkpoint_path=run.weights, **model_args)
    if run.class_names:
        model.pretrained_cfg["label_names"] = list(run.class_names)
    return model.eval()


def load_model(
    checkpoint: str | os.PathLike,
    model_name: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model and load ``checkpoint`` into it, in eval mode.

    Args:
        checkpoint: a run folder (``replknet train``), a converted folder (``replknet convert``), a weights file
            inside either (``model_fused.safetensors``, ``checkpoint.pt``, ...), or any checkpoint file
            ``replknet.create_model`` reads (official, wrapped, ``module.``-prefixed, mmpretrain, deploy form).
        model_name: registered model name; needed only for a file outside a run or converted folder that does not
            name its model (official and mmpretrain files).
        **kwargs: constructor options passed on (e.g. ``num_classes``).

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: unknown model, a model name that contradicts the folder's config, or a checkpoint that does
            not fit the model (``replknet.CheckpointError`` names the keys).
    """
    import replknet

    run = read_run(checkpoint)
    if run is not None:
        return build_run_model(run, model_name, **kwargs)
    model_name = model_name or weights_architecture(checkpoint)
    if model_name is None:
        raise ValueError(
            f"{checkpoint} is a weights file that does not name its model (no {CONFIG_NAME} beside it): give --model"
        )
    size = _weights_metadata(checkpoint).get("image_size", "")
    if size.isdigit() and "pretrained_cfg_overlay" not in kwargs:
        # A run's weights file away from its folder still says the size it was trained at.
        kwargs["pretrained_cfg_overlay"] = {"input_size": (3, int(size), int(size))}
    model = replknet.create_model(model_name, checkpoint_path=checkpoint, **kwargs).eval()
    input_size = model.pretrained_cfg.get("input_size")
    _logger.info(
        "%s has no %s beside it: %s's preprocessing (%s px) and no class names",
        checkpoint,
        CONFIG_NAME,
        model_name,
        "x".join(str(v) for v in input_size[1:]) if input_size else "default",
    )
    return model


def is_fused(model: nn.Module) -> bool:
    """True when ``model`` is one of this library's fusible models in its deploy (re-parameterised) form."""
    from replknet.models._registry import family_of

    family = family_of(model)
    return family is not None and family.fusible and family.is_deploy_state_dict(model.state_dict())


def save_model_folder(model: nn.Module, folder: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` as a timm local-dir folder: ``model.safetensors`` and ``config.json``, each atomically.

    The config records the deploy flag (``small_kernel_merged`` for RepLKNet), so loading rebuilds the same (fused
    or training) form, and keeps the model's preprocessing (input size, mean/std, crop) and class names. Returns
    the folder.
    """
    import replknet
    from replknet.models._registry import family_of

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output {folder} is a file, not a folder")
    model_args: dict[str, Any] = {}
    family = family_of(model)
    if family is not None and family.deploy_arg is not None:
        model_args[family.deploy_arg] = is_fused(model)
    labels = model.pretrained_cfg.get("label_names")
    config = run_config(model, class_names=labels if labels else None, model_args=model_args)
    folder.mkdir(parents=True, exist_ok=True)
    info = {"format": "replknet", "architecture": config["architecture"], **(metadata or {})}
    replknet.save_state_dict(model.state_dict(), folder / WEIGHTS_NAME, metadata=info)
    write_run_config(folder, config)
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


def model_input_size(model: nn.Module, size: int | tuple[int, int] | list[int] | None = None) -> tuple[int, int]:
    """``(H, W)``: ``size`` when given (one int for a square), else the model's configured input size."""
    if size is not None:
        if isinstance(size, int):
            return (size, size)
        values = tuple(int(v) for v in size)
        return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    input_size = getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))
    return (int(input_size[-2]), int(input_size[-1]))
