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
    """Build the model of ``source`` (a checkpoint of any supported layout, a run or converted folder), in eval mode.

    ``use_ema`` takes the EMA weights: a run folder's ``model_ema.safetensors``, or the ``model_ema`` /
    ``state_dict_ema`` / ``ema`` entry of a training checkpoint. A deploy-form checkpoint builds the fused model;
    the classifier width follows the checkpoint's head.
    """
    import dataclasses

    import replknet
    from replknet.checkpoint import CheckpointError, check_state_dict, convert_state_dict
    from replknet.deploy.loading import build_run_model, load_model, weights_architecture
    from replknet.runs import read_run

    if not use_ema:
        return load_model(source, model_name, **kwargs)
    run = read_run(source)
    if run is not None and Path(source).is_dir():
        ema_file = run.folder / "model_ema.safetensors"
        if ema_file.is_file():
            return build_run_model(dataclasses.replace(run, weights=ema_file), model_name, **kwargs)
        if not (run.folder / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"{run.folder} holds no EMA weights (model_ema.safetensors or checkpoint.pt)")
        source = run.folder / "checkpoint.pt"
    model_name = model_name or (run.architecture if run is not None else weights_architecture(source))
    if model_name is None:
        raise ValueError(f"give --model for the checkpoint file {source}")
    checkpoint = replknet.read_checkpoint(source)
    entries = ("model_ema", "state_dict_ema", "ema")
    ema = next((checkpoint[k] for k in entries if isinstance(checkpoint.get(k), dict)), None)
    if ema is None:
        raise CheckpointError(
            f"{source}: no EMA entry ({', '.join(entries)}; top-level keys: {sorted(checkpoint)[:10]})"
        )
    # NOTE: the EMA entry is unwrapped here; convert_state_dict(use_ema=True) would demand a nested model_ema.
    state_dict = convert_state_dict(ema)
    info = replknet.find_model_info(model_name)
    if info is not None and info.family.deploy_arg is not None and info.family.is_deploy_state_dict(state_dict):
        kwargs.setdefault(info.family.deploy_arg, True)
    head = f"{info.classifier}.weight" if info is not None else "head.weight"
    if head in state_dict:
        kwargs.setdefault("num_classes", state_dict[head].shape[0])
    if run is not None:
        overlay = {k: tuple(v) if isinstance(v, list) else v for k, v in run.pretrained_cfg.items()}
        deploy_arg = info.family.deploy_arg if info is not None else None
        kwargs = {**{k: v for k, v in run.model_args.items() if k != deploy_arg}, **kwargs}
        if overlay:
            kwargs.setdefault("pretrained_cfg_overlay", overlay)
    model = replknet.create_model(model_name, **kwargs)
    try:
        check_state_dict(model, state_dict)
    except CheckpointError as error:
        raise CheckpointError(f"{source} (EMA): {error}") from None
    model.load_state_dict(state_dict)
    if run is not None and run.class_names:
        model.pretrained_cfg["label_names"] = list(run.class_names)
    return model.eval()


def convert_checkpoint(
    source: str | os.PathLike,
    output: str | os.PathLike,
    model_name: str | None = None,
    reparam: bool = False,
    use_ema: bool = False,
    check: bool = True,
    check_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    **kwargs,
) -> ConversionResult:
    """Convert ``source`` into a folder loadable by ``timm.create_model("local-dir:<output>", pretrained=True)``.

    Args:
        source: checkpoint file (official plain / ``model`` / ``state_dict`` / ``model_ema``-wrapped,
            ``module.``-prefixed, mmpretrain, training or deploy form), a run folder or a converted folder (or a
            weights file inside either).
        output: folder to write (``model.safetensors`` + ``config.json``).
        model_name: registered architecture, e.g. ``replknet_31b`` (not needed for a run or converted folder).
        reparam: store the fused (deploy) form; the config then records ``small_kernel_merged=True``.
        use_ema: take the EMA weights of a training checkpoint.
        check: reload the written folder through timm and compare its outputs with the source model's.
        check_size: input resolution of the check, one size or ``(H, W)`` (default: the model's configured input
            size, a run's own).
        seed: seed of the random check batch.
        **kwargs: constructor options for the model (e.g. ``num_classes``, or a custom architecture's
            ``large_kernel_sizes``, ``layers``, ``channels``): recorded in the config's ``model_args``.
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
    check_size: int | tuple[int, int] | None = None,
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
