"""Optimizer and schedule from timm's parts, with each family's official layer-decay grouping.

NOTE: a model's ``group_matcher`` (timm convention) groups by stage and block, which timm's automatic layer decay
turns into one group per block. The official codes use 14 groups instead: RepLKNet's
``optim_factory.get_num_layer_for_replknet`` (``replknet_layer_id``) and UniRepLKNet's
``get_num_layer_for_convnext`` (``unireplknet_layer_id``); they are handed to timm's ``create_optimizer_v2``
through ``param_group_fn``. Models of other families (and timm's own) get timm's layer decay over their
``group_matcher``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

__all__ = [
    "NUM_LAYER_GROUPS",
    "build_optimizer",
    "build_scheduler",
    "layer_decay_param_groups",
    "replknet_layer_id",
    "unireplknet_layer_id",
]

_logger = logging.getLogger(__name__)

NUM_LAYER_GROUPS = 14  # 0 = stem, 1-12 = blocks and transitions, 13 = norm and head
_STAGE = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")
_STAGE_NORM = re.compile(r"^stages\.(\d+)\.norm\.")
_TRANSITION = re.compile(r"^transitions\.(\d+)\.")


def replknet_layer_id(name: str, layers: tuple[int, ...] = (2, 2, 18, 2)) -> int:
    """The official layer-decay group (0..13) of a RepLKNet parameter.

    Official rule (for layers ``[2, 2, 18, 2]``): stem -> 0; stage 0 and transition 0 -> 1; stage 1 and
    transition 1 -> 2; stage 2's 36 block entries -> ``3 + block // 4`` (3..11), transition 2 -> 11; stage 3 ->
    12; everything else (final norm, head) -> 13.

    NOTE: for other depths (the small models) stage 2 is split into the same 9 groups by (RepLK, ConvFFN) pair:
    ``3 + (block // 2) * 9 // layers[2]``, which equals ``3 + block // 4`` for 18 pairs.
    """
    if len(layers) != 4:
        raise ValueError(f"the official grouping is defined for 4 stages, got layers={layers}")
    if name.startswith("stem."):
        return 0
    match = _STAGE.match(name) or _STAGE_NORM.match(name)
    if match is not None:
        stage = int(match.group(1))
        if stage in (0, 1):
            return stage + 1
        if stage == 2:
            if match.re is _STAGE_NORM:
                return 11
            pair = int(match.group(2)) // 2
            return 3 + pair * 9 // layers[2]
        return 12
    match = _TRANSITION.match(name)
    if match is not None:
        transition = int(match.group(1))
        return transition + 1 if transition in (0, 1) else 11
    return NUM_LAYER_GROUPS - 1


def unireplknet_layer_id(name: str) -> int:
    """The official UniRepLKNet layer-decay group (0..13) of a parameter: ``get_num_layer_for_convnext``.

    Official rule (written for depths ``[3, 3, 27, 3]``, applied as is to every depth): stem (downsample 0) -> 0;
    downsample 1, 2 -> 2, 3; stages 0, 1 -> 1, 2; stage 2's block ``b`` -> ``3 + b // 3``; downsample 3 and
    stage 3 -> 12; everything else (final norm, head, the features mode's ``norm0..3``) -> 13.
    """
    parts = name.split(".")
    if parts[0] == "downsample_layers":
        return (0, 2, 3, 12)[int(parts[1])]
    if parts[0] == "stages":
        stage, block = int(parts[1]), int(parts[2])
        if stage in (0, 1):
            return stage + 1
        return 3 + block // 3 if stage == 2 else 12
    return NUM_LAYER_GROUPS - 1


def layer_decay_param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float,
    layers: tuple[int, ...] | None = None,
    layer_id: Callable[[str], int] | None = None,
) -> list[dict]:
    """Parameter groups with ``lr_scale = layer_decay ** (13 - layer_id)`` and no weight decay on 1-D params.

    timm's schedulers multiply each group's lr by its ``lr_scale``. ``layer_id`` maps a parameter name to its
    group (default: RepLKNet's ``replknet_layer_id`` with ``layers`` pairs per stage).
    """
    if layer_id is None:
        layers = tuple(layers if layers is not None else getattr(model, "layers", (2, 2, 18, 2)))
        layer_id = lambda name: replknet_layer_id(name, layers)  # noqa: E731
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # NOTE: as in both official codes, only 1-D parameters and biases skip weight decay (GRN's (1,1,1,C)
        # gamma and beta are decayed).
        no_decay = param.ndim <= 1 or name.endswith(".bias")
        group_id = layer_id(name)
        key = f"layer_{group_id}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (NUM_LAYER_GROUPS - 1 - group_id),
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def _model_layers(model: nn.Module) -> tuple[int, ...]:
    """Pairs per stage, read from the model itself (``len(stage.blocks) // 2``)."""
    stages = getattr(model, "stages", None)
    if stages is None:
        raise ValueError("layer decay with the official grouping needs a RepLKNet (a model with .stages)")
    return tuple(len(stage.blocks) // 2 for stage in stages)


def build_optimizer(
    model: nn.Module,
    opt: str,
    lr: float,
    weight_decay: float,
    layer_decay: float | None = None,
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2``: no weight decay on 1-D params, official layer decay when asked."""
    from replknet.models._registry import family_of

    kwargs = {"eps": eps} if opt.lower() in ("adamw", "adam", "nadam", "radam", "lamb") else {}
    if layer_decay is not None and layer_decay < 1.0:
        family = family_of(model)
        family_name = family.name if family is not None else None
        if family_name == "replknet":
            layers = _model_layers(model)
            layer_id = lambda name: replknet_layer_id(name, layers)  # noqa: E731
        elif family_name == "unireplknet":
            layer_id = unireplknet_layer_id
        else:
            _logger.info("layer decay over %s's group_matcher (timm)", type(model).__name__)
            return create_optimizer_v2(
                model, opt=opt, lr=lr, weight_decay=weight_decay, layer_decay=layer_decay, **kwargs
            )
        return create_optimizer_v2(
            model,
            opt=opt,
            lr=lr,
            weight_decay=weight_decay,
            param_group_fn=lambda m: layer_decay_param_groups(m, weight_decay, layer_decay, layer_id=layer_id),
            **kwargs,
        )
    return create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=weight_decay, filter_bias_and_bn=True, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_updates: int, warmup_updates: int, min_lr: float
) -> CosineLRScheduler:
    """Per-update cosine to ``min_lr`` after a linear warm-up from 0, as the official ``cosine_scheduler``.

    Step it with ``scheduler.step_update(num_updates)`` after every optimizer step.
    """
    warmup_updates = min(warmup_updates, max(total_updates - 1, 0))
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_updates - warmup_updates),
        lr_min=min_lr,
        warmup_t=warmup_updates,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        cycle_limit=1,
        t_in_epochs=False,
    )
