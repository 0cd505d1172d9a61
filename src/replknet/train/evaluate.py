"""Evaluation: top-1/top-5 over a loader (summed exactly over DDP ranks), checkpoints by path, synthetic shape bias."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable

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
    model_name: str | nn.Module | None,
    checkpoint: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    split: str | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    workers: int = 4,
    device: str | None = None,
    amp: str | None = None,
    channels_last: bool | None = None,
    progress: bool = True,
    synthetic_size: int | None = None,
    synthetic_seed: int | None = None,
    num_classes: int | None = None,
    skip_bad_images: bool = False,
) -> dict:
    """Top-1/top-5 of a model or checkpoint on an ImageFolder split or the built-in shapes.

    Given a run folder (``replknet train``), everything not passed is read from it: the model, its preprocessing,
    and how the run validated (its data, split, image size, batch size, memory format, AMP), so the result is
    the top-1 the run recorded in ``summary.json``.

    Args:
        model_name: a model (used as it is), a registered name (a ``.tag`` selects its pretrained config, e.g.
            mean/std and size), or None when ``checkpoint`` is a run or converted folder (or a file inside one).
        checkpoint: a run folder, a weights file (this library's, official or mmpretrain layouts), or None for
            the randomly initialised ``model_name``.
        data: ImageFolder root holding ``split/<class>/...``, ``"synthetic"`` for the built-in shapes or
            ``"pathfinder"`` for the built-in Pathfinder task (a run's own generator settings, else the default
            task); default: the run's validation data (else synthetic).
        split: the split folder (default: the run's validation split, else ``val``).
        image_size: evaluation resolution; default the run's, else the model's pretrained config input size.
        batch_size: images per forward (default: the run's validation batch, else 64).
        channels_last: evaluate in channels_last (default: as the run did, else no).
        synthetic_size, synthetic_seed: the built-in data's split size and seed (default: the run's, else
            1000 and 0).
        num_classes: head size when there is no checkpoint to read it from.
        skip_bad_images: leave out image files that cannot be read and list them under ``"skipped"`` (each
            ``{"path", "error"}``); by default the first one raises ``ImageReadError`` naming it.

    Returns:
        ``evaluate``'s metrics over the readable images, the settings used, and ``"skipped"``.
    """
    import replknet
    from replknet.train.data import SyntheticBatches, build_image_folder, eval_loader, eval_transform

    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    run = None
    if isinstance(model_name, nn.Module):
        model = model_name
        model_name = model.pretrained_cfg.get("architecture", type(model).__name__)
    else:
        from replknet.deploy.loading import load_model
        from replknet.runs import read_run

        run = read_run(checkpoint) if checkpoint is not None else None
        if run is None and model_name is None:
            raise ValueError("give a model name, or a run or converted folder as the checkpoint")
        if run is None and str(data) == "synthetic" and num_classes is None:
            from replknet.data.synthetic import NUM_CLASSES

            kwargs["num_classes"] = NUM_CLASSES
        if checkpoint is not None:
            model = load_model(checkpoint, model_name, **kwargs)
            model_name = model.pretrained_cfg.get("architecture", model_name)
        else:
            model = replknet.create_model(model_name, **kwargs)
    run_eval = dict((run.training or {}).get("evaluation") or {}) if run is not None else {}
    if run is not None and run.legacy and run.training is not None:
        run_eval = _legacy_evaluation(run.training)
    own_data = data is None or str(data) == str(run_eval.get("data"))
    data = data if data is not None else run_eval.get("data", "synthetic")
    split = split or (run_eval.get("split") if own_data else None) or "val"
    if batch_size is None:
        batch_size = run_eval.get("batch_size", 64) if own_data else 64
    if channels_last is None:
        channels_last = run_eval.get("memory_format") == "channels_last" and torch_device.type == "cpu"
    if amp is None and own_data:
        amp = run_eval.get("amp")
    model = model.to(torch_device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = _model_mean_std(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cfg_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    if str(data) == "synthetic":
        from replknet.data.synthetic import SyntheticShapes

        size = image_size or run_eval.get("image_size") or (cfg_size if run is not None else 64)
        count = synthetic_size or (run_eval.get("synthetic_size") if own_data else None) or 1000
        seed = synthetic_seed if synthetic_seed is not None else (run_eval.get("synthetic_seed", 0) if own_data else 0)
        dataset = SyntheticShapes(split, num_samples=count, image_size=size, seed=seed)
        loader = SyntheticBatches(dataset.images, dataset.labels, batch_size, mean, std, train=False)
        num_classes = len(dataset.classes)
    elif str(data) == "pathfinder":
        from replknet.data.pathfinder import cached_pathfinder, pathfinder_config

        # The task's generator settings: the run's (its data_options), else the default task.
        options = dict(((run.training or {}).get("data_options") or {}) if run is not None and own_data else {})
        size = image_size or (run_eval.get("image_size") if own_data else None)
        if size:
            options["image_size"] = size
        task = pathfinder_config(options.pop("preset", None), **options)
        size = task.image_size
        count = synthetic_size or (run_eval.get("synthetic_size") if own_data else None) or 1000
        seed = synthetic_seed if synthetic_seed is not None else (run_eval.get("synthetic_seed", 0) if own_data else 0)
        dataset = cached_pathfinder(split, count, task, seed)
        loader = SyntheticBatches(dataset.images, dataset.labels, batch_size, mean, std, train=False)
        num_classes = len(dataset.classes)
    else:
        size = image_size or cfg_size
        # The model's own crop at its own size (a run's preprocessing); the official rule at any other size.
        crop = dict(crop_pct=cfg.get("crop_pct"), crop_mode=cfg.get("crop_mode")) if size == cfg_size else {}
        transform = eval_transform(size, mean, std, cfg.get("interpolation", "bicubic"), **crop)
        dataset = build_image_folder(data, split, transform)
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


def _legacy_evaluation(training: dict) -> dict:
    """How a run folder from before the run-folder format validated (its config.json = the training options)."""
    synthetic = training.get("data") == "synthetic"
    batch = int(training.get("batch_size", 32))
    return {
        "data": training.get("data"),
        "split": training.get("val_split", "val"),
        "image_size": training.get("image_size"),
        "batch_size": batch * 2 if synthetic else int(1.5 * batch),
        "synthetic_size": training.get("synthetic_val_size"),
        "synthetic_seed": training.get("synthetic_seed", 0),
        "memory_format": "channels_last" if training.get("channels_last") else "contiguous",
        "amp": training.get("amp"),
    }
