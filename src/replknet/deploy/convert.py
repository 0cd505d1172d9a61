"""Converting RepLKNet checkpoints (official, wrapped, prefixed, mmpretrain, training or deploy form) to this
library's format (a timm local-dir folder of safetensors weights and a config), optionally fused, with a check
that the written files reproduce the source model's outputs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from replknet.deploy.loading import compare_outputs, is_fused, model_input_size, save_model_folder

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConversionResult:
    """What ``convert_checkpoint`` wrote and how closely the written model reproduces the source.

    Attributes:
        output: the folder written (``model.safetensors`` + ``config.json``).
        model_name: the architecture.
        fused: whether the written weights are in the fused (deploy) form.
        max_abs_diff: max |output - source output| on the check batch (None when not checked).
        relative_diff: ``max_abs_diff / max |source output|`` (None when not checked).
        input_size: ``(H, W)`` of the check batch.
    """

    output: Path
    model_name: str
    fused: bool
    max_abs_diff: float | None
    relative_diff: float | None
    input_size: tuple[int, int]


def load_source_model(
    source: str | os.PathLike, model_name: str | None = None, use_ema: bool = False, **kwargs
) -> nn.Module:
    """Build ``model_name`` from a checkpoint of any supported layout (or a converted folder), in eval mode.

    ``use_ema`` takes the ``model_ema`` weights of a training checkpoint. A deploy-form checkpoint builds the
    fused model; the classifier width follows the checkpoint's head.
    """
    import replknet
    from replknet.checkpoint import CheckpointError, check_state_dict, convert_state_dict
    from replknet.deploy.loading import load_model

    if not use_ema or Path(source).is_dir():
        return load_model(source, model_name, **kwargs)
    if model_name is None:
        raise ValueError(f"give --model for the checkpoint file {source}")
    checkpoint = replknet.read_checkpoint(source)
    ema = next((checkpoint[k] for k in ("model_ema", "state_dict_ema") if isinstance(checkpoint.get(k), dict)), None)
    if ema is None:
        raise CheckpointError(f"{source}: no 'model_ema' entry (top-level keys: {sorted(checkpoint)[:10]})")
    # NOTE: the EMA entry is unwrapped here; convert_state_dict(use_ema=True) would demand a nested model_ema.
    state_dict = convert_state_dict(ema)
    info = replknet.find_model_info(model_name)
    if info is not None and info.family.deploy_arg is not None and info.family.is_deploy_state_dict(state_dict):
        kwargs.setdefault(info.family.deploy_arg, True)
    head = f"{info.classifier}.weight" if info is not None else "head.weight"
    if head in state_dict:
        kwargs.setdefault("num_classes", state_dict[head].shape[0])
    model = replknet.create_model(model_name, **kwargs)
    try:
        check_state_dict(model, state_dict)
    except CheckpointError as error:
        raise CheckpointError(f"{source} (model_ema): {error}") from None
    model.load_state_dict(state_dict)
    return model.eval()


def convert_checkpoint(
    source: str | os.PathLike,
    output: str | os.PathLike,
    model_name: str | None = None,
    reparam: bool = False,
    use_ema: bool = False,
    check: bool = True,
    check_size: int | None = None,
    seed: int = 0,
    **kwargs,
) -> ConversionResult:
    """Convert ``source`` into a folder loadable by ``timm.create_model("local-dir:<output>", pretrained=True)``.

    Args:
        source: checkpoint file (official plain / ``model`` / ``state_dict`` / ``model_ema``-wrapped,
            ``module.``-prefixed, mmpretrain, training or deploy form) or a converted folder.
        output: folder to write (``model.safetensors`` + ``config.json``).
        model_name: registered architecture, e.g. ``replknet_31b`` (optional for a converted folder).
        reparam: store the fused (deploy) form; the config then records ``small_kernel_merged=True``.
        use_ema: take the EMA weights of a training checkpoint.
        check: reload the written folder through timm and compare its outputs with the source model's.
        check_size: input resolution of the check (default: the model's configured input size).
        seed: seed of the random check batch.
        **kwargs: constructor options for the model (e.g. ``num_classes``).
    """
    import timm

    import replknet

    model = load_source_model(source, model_name, use_ema=use_ema, **kwargs)
    model_name = model.pretrained_cfg.get("architecture", model_name)
    converted = replknet.reparameterize(model) if reparam else model
    fused = is_fused(converted)
    folder = save_model_folder(converted, output, metadata={"source": Path(source).name})
    input_size = model_input_size(model, check_size)
    max_diff = relative = None
    if check:
        # Reload through timm's own local-dir loader: this is the path users take, and no network is involved.
        reloaded = timm.create_model(f"local-dir:{Path(folder).resolve()}", pretrained=True)
        max_diff, relative = compare_outputs(model, reloaded, input_size, seed=seed)
        _logger.info("converted %s -> %s: max |diff| %.3e (relative %.2e)", source, folder, max_diff, relative)
    return ConversionResult(Path(folder), model_name, fused, max_diff, relative, input_size)


def reparameterize_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    model_name: str | None = None,
    check: bool = False,
    check_size: int | None = None,
    seed: int = 0,
    **kwargs,
) -> ConversionResult:
    """Fuse a training-form checkpoint and save it as a converted folder (``convert_checkpoint(reparam=True)``)."""
    return convert_checkpoint(
        checkpoint, output, model_name, reparam=True, check=check, check_size=check_size, seed=seed, **kwargs
    )


def default_output(source: str | os.PathLike, suffix: str) -> Path:
    """``<source without extension><suffix>`` beside the source (a folder name for the converted output)."""
    source = Path(source)
    stem = source.name if source.is_dir() else source.stem
    return source.parent / f"{stem}{suffix}"


__all__ = [
    "ConversionResult",
    "convert_checkpoint",
    "default_output",
    "load_source_model",
    "reparameterize_checkpoint",
]
