"""Evaluation: top-1/top-5 over a loader (summed exactly over DDP ranks), checkpoints by path, synthetic shape bias."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from replknet.train.distributed import all_reduce_sum

__all__ = ["evaluate", "predict", "synthetic_shape_bias", "evaluate_checkpoint", "autocast"]

_logger = logging.getLogger(__name__)


def autocast(device: torch.device, amp: str | None):
    """``torch.autocast`` for ``"bf16"``/``"fp16"``, a no-op context for None."""
    if amp is None:
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


def _model_mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str = "cpu",
    amp: str | None = None,
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``.

    In a distributed run each process evaluates its own shard and the counts are summed over processes.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # images, top-1 hits, top-5 hits, summed loss
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(targets.view(-1, 1))
        totals += torch.tensor(
            [
                len(targets),
                hits[:, 0].sum().item(),
                hits.any(dim=1).sum().item(),
                F.cross_entropy(logits, targets, reduction="sum").item(),
            ],
            dtype=torch.float64,
        )
    model.train(was_training)
    totals = all_reduce_sum(totals.to(device)).cpu()
    count = int(totals[0].item())
    if count == 0:
        raise ValueError("the evaluation set is empty")
    return {
        "top1": 100.0 * totals[1].item() / count,
        "top5": 100.0 * totals[2].item() / count,
        "loss": totals[3].item() / count,
        "images": count,
    }


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: torch.device | str = "cpu"):
    """Logits for a normalised ``(N, 3, H, W)`` tensor, in batches."""
    model.eval()
    outputs = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outputs)


def synthetic_shape_bias(
    model: nn.Module,
    image_size: int = 64,
    num_samples: int = 450,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """Shape bias of a model trained on the built-in shapes, on its cue-conflict split.

    shape bias = shape hits / (shape hits + texture hits) (``replknet.analysis.shape_bias``'s counting).
    """
    from replknet.analysis.shape_bias import shape_bias_from_decisions
    from replknet.data.synthetic import SHAPE_NAMES, SyntheticShapes

    dataset = SyntheticShapes("cue_conflict", num_samples=num_samples, image_size=image_size, seed=seed)
    mean, std = _model_mean_std(model)
    images, shapes = dataset.tensors()
    images = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    decisions = predict(model, images, device=device).argmax(dim=1)
    triples = [
        (SHAPE_NAMES[s], SHAPE_NAMES[t], SHAPE_NAMES[d])
        for s, t, d in zip(shapes.tolist(), dataset.texture_labels.tolist(), decisions.tolist())
    ]
    return shape_bias_from_decisions(triples, categories=SHAPE_NAMES).to_dict(with_records=False)


def evaluate_checkpoint(
    model_name: str,
    checkpoint: str | os.PathLike | None,
    data: str | os.PathLike,
    split: str = "val",
    image_size: int | None = None,
    batch_size: int = 64,
    workers: int = 4,
    device: str | None = None,
    amp: str | None = None,
    channels_last: bool = False,
    progress: bool = True,
    synthetic_size: int = 1000,
    synthetic_seed: int = 0,
    num_classes: int | None = None,
    skip_bad_images: bool = False,
) -> dict:
    """Top-1/top-5 of a checkpoint (this library's, official or mmpretrain layouts) on an ImageFolder split.

    Args:
        model_name: registered model name (a ``.tag`` selects its pretrained config, e.g. mean/std and size).
        checkpoint: local checkpoint file, or None for the randomly initialised model.
        data: ImageFolder root holding ``split/<class>/...``, or ``"synthetic"`` for the built-in shapes.
        image_size: evaluation resolution; default the model's pretrained config input size.
        num_classes: head size when there is no checkpoint to read it from.
        skip_bad_images: leave out image files that cannot be read and list them under ``"skipped"`` (each
            ``{"path", "error"}``); by default the first one raises ``ImageReadError`` naming it.

    Returns:
        ``evaluate``'s metrics over the readable images, the settings used, and ``"skipped"``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    import replknet
    from replknet.train.data import SyntheticBatches, build_image_folder, eval_loader, eval_transform

    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if str(data) == "synthetic":
        from replknet.data.synthetic import NUM_CLASSES

        kwargs["num_classes"] = NUM_CLASSES
    model = replknet.create_model(model_name, checkpoint_path=checkpoint, **kwargs).to(torch_device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = _model_mean_std(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if str(data) == "synthetic":
        from replknet.data.synthetic import SyntheticShapes

        size = image_size or 64
        dataset = SyntheticShapes(split, num_samples=synthetic_size, image_size=size, seed=synthetic_seed)
        loader = SyntheticBatches(dataset.images, dataset.labels, batch_size, mean, std, train=False)
        num_classes = len(dataset.classes)
    else:
        size = image_size or int(cfg.get("input_size", (3, 224, 224))[-1])
        dataset = build_image_folder(data, split, eval_transform(size, mean, std, cfg.get("interpolation", "bicubic")))
        loader = eval_loader(
            dataset, batch_size, workers, pin_memory=torch_device.type == "cuda", skip_bad_images=skip_bad_images
        )
        num_classes = len(dataset.classes)
    if getattr(model, "num_classes", num_classes) != num_classes:
        raise ValueError(
            f"the model has {model.num_classes} classes but {data}/{split} has {num_classes} class folders"
        )
    metrics = evaluate(model, loader, torch_device, amp, channels_last, progress=progress, desc=f"eval {split}")
    metrics.update(model=model_name, checkpoint=str(checkpoint), data=str(data), split=split, image_size=size)
    skipped = getattr(loader, "skipped", [])
    metrics["skipped"] = [{"path": error.path, "error": error.reason} for error in skipped]
    return metrics
