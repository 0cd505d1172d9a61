"""Segmentation metrics from an exact integer confusion matrix: IoU per class, mIoU, pixel and mean accuracy.

Conventions follow mmsegmentation's ``mean_iou``: pixels whose label equals ``ignore_index`` (or lies outside
``[0, num_classes)``) are not counted; a class that appears in neither the labels nor the predictions has an
undefined IoU (NaN) and is left out of the mean.
"""

from __future__ import annotations

import math

import torch

__all__ = ["confusion_matrix", "ConfusionMatrix", "segmentation_metrics"]


def confusion_matrix(
    prediction: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts; row = ground-truth class, column = predicted class.

    Args:
        prediction: predicted class ids, any shape (or logits ``(N, C, H, W)`` with ``target`` ``(N, H, W)``).
        target: ground-truth class ids of the same shape as ``prediction``.
        num_classes: number of classes.
        ignore_index: label value to skip (labels outside ``[0, num_classes)`` are skipped too).
    """
    if prediction.dim() == target.dim() + 1 and prediction.shape[1] == num_classes:
        prediction = prediction.argmax(dim=1)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} does not match target {tuple(target.shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    prediction = prediction.reshape(-1).long()
    target = target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    prediction, target = prediction[valid], target[valid]
    if prediction.numel() and (prediction.min() < 0 or prediction.max() >= num_classes):
        raise ValueError(
            f"predictions must lie in [0, {num_classes}), got range {prediction.min()}..{prediction.max()}"
        )
    counts = torch.bincount(target * num_classes + prediction, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def segmentation_metrics(matrix: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """IoU and accuracy from a confusion matrix (rows ground truth, columns prediction).

    Returns:
        ``{"mIoU", "aAcc", "mAcc", "IoU": {name: value}, "Acc": {name: value}}``; fractions in [0, 1], NaN for a
        class with no ground-truth and no predicted pixels (IoU) or no ground-truth pixels (Acc).
    """
    matrix = matrix.double()
    true_positive = matrix.diag()
    ground_truth = matrix.sum(dim=1)
    predicted = matrix.sum(dim=0)
    union = ground_truth + predicted - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp_min(1), torch.full_like(union, math.nan))
    accuracy = torch.where(
        ground_truth > 0, true_positive / ground_truth.clamp_min(1), torch.full_like(ground_truth, math.nan)
    )
    total = matrix.sum()
    names = class_names if class_names is not None else [str(i) for i in range(len(iou))]
    if len(names) != len(iou):
        raise ValueError(f"{len(names)} class names for a {len(iou)}-class confusion matrix")

    def _nanmean(values: torch.Tensor) -> float:
        kept = values[~torch.isnan(values)]
        return kept.mean().item() if kept.numel() else math.nan

    return {
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(accuracy),
        "aAcc": (true_positive.sum() / total).item() if total > 0 else math.nan,
        "IoU": dict(zip(names, iou.tolist())),
        "Acc": dict(zip(names, accuracy.tolist())),
    }


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches (and over processes with ``all_reduce``)."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix += confusion_matrix(prediction, target, self.num_classes, self.ignore_index)

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (no-op outside ``torch.distributed``)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            matrix = self.matrix.to(device)
            dist.all_reduce(matrix)
            self.matrix = matrix.cpu()

    def compute(self, class_names: list[str] | None = None) -> dict:
        return segmentation_metrics(self.matrix, class_names)
