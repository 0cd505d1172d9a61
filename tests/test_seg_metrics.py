"""mIoU from the confusion matrix: hand-made cases with known answers, the ignore index, an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from replknet.seg.metrics import ConfusionMatrix, confusion_matrix, segmentation_metrics


def test_hand_made_two_class_case():
    target = torch.tensor([[0, 0], [1, 1]])
    prediction = torch.tensor([[0, 1], [1, 1]])
    matrix = confusion_matrix(prediction, target, num_classes=2)
    assert matrix.tolist() == [[1, 1], [0, 2]]
    metrics = segmentation_metrics(matrix)
    # IoU_0 = 1 / (2 + 1 - 1) = 1/2, IoU_1 = 2 / (2 + 3 - 2) = 2/3
    assert metrics["IoU"] == pytest.approx({"0": 0.5, "1": 2 / 3})
    assert metrics["mIoU"] == pytest.approx(7 / 12)
    assert metrics["aAcc"] == pytest.approx(3 / 4)
    assert metrics["mAcc"] == pytest.approx((1 / 2 + 1) / 2)


def test_three_class_case_with_absent_class():
    # class 2 never occurs in labels or predictions: its IoU is undefined and left out of the mean.
    target = torch.tensor([0, 0, 0, 1, 1, 1])
    prediction = torch.tensor([0, 0, 1, 1, 1, 0])
    metrics = segmentation_metrics(confusion_matrix(prediction, target, 3), ["a", "b", "c"])
    assert metrics["IoU"]["a"] == pytest.approx(2 / 4)
    assert metrics["IoU"]["b"] == pytest.approx(2 / 4)
    assert math.isnan(metrics["IoU"]["c"])
    assert metrics["mIoU"] == pytest.approx(0.5)
    # A class predicted but absent from the labels has IoU 0 (not NaN) and counts.
    metrics = segmentation_metrics(confusion_matrix(torch.tensor([2, 0]), torch.tensor([0, 0]), 3))
    assert metrics["IoU"]["2"] == 0.0 and metrics["IoU"]["0"] == 0.5
    assert metrics["mIoU"] == pytest.approx(0.25)


def test_ignore_index_is_not_counted():
    target = torch.tensor([[0, 255], [1, 255]])
    prediction = torch.tensor([[0, 1], [1, 0]])  # wrong where the label is ignored
    matrix = confusion_matrix(prediction, target, num_classes=2, ignore_index=255)
    assert matrix.sum().item() == 2
    assert segmentation_metrics(matrix)["mIoU"] == 1.0
    # A custom ignore value, and labels outside [0, K) are skipped as well.
    matrix = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, -1, 7]), num_classes=2, ignore_index=-1)
    assert matrix.tolist() == [[1, 0], [0, 0]]


def test_perfect_prediction_from_logits():
    target = torch.randint(0, 4, (2, 5, 7))
    logits = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    metrics = segmentation_metrics(confusion_matrix(logits, target, 4))
    assert metrics["mIoU"] == 1.0 and metrics["aAcc"] == 1.0


def test_matches_independent_reference_and_accumulates():
    rng = np.random.default_rng(0)
    num_classes = 6
    targets = rng.integers(0, num_classes, size=(3, 17, 23))
    targets[rng.random(targets.shape) < 0.1] = 255
    predictions = np.where(
        rng.random(targets.shape) < 0.6, targets % num_classes, rng.integers(0, num_classes, targets.shape)
    )
    accumulator = ConfusionMatrix(num_classes)
    for prediction, target in zip(predictions, targets):
        accumulator.update(torch.from_numpy(prediction), torch.from_numpy(target))
    metrics = accumulator.compute()
    valid = targets != 255
    expected = []
    for c in range(num_classes):  # mmseg's intersect / union per class, in float64
        intersection = np.sum((predictions == c) & (targets == c) & valid)
        union = np.sum(((predictions == c) | (targets == c)) & valid)
        expected.append(intersection / union)
    assert list(metrics["IoU"].values()) == pytest.approx(expected, abs=1e-12)
    assert metrics["mIoU"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert metrics["aAcc"] == pytest.approx(np.sum((predictions == targets) & valid) / valid.sum(), abs=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="does not match target"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="predictions must lie"):
        confusion_matrix(torch.tensor([5]), torch.tensor([0]), 2)
