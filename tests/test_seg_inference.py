"""Whole-image, sliding-window and multi-scale + flip inference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from replknet.seg.inference import _grid_starts, aug_inference, inference, slide_inference, whole_inference
from replknet.seg.model import build_segmentor


def _per_pixel_model(num_classes: int = 3) -> nn.Module:
    """A 1x1 conv: its output at a pixel depends on that pixel only, so any tiling gives the same answer."""
    model = nn.Conv2d(3, num_classes, 1)
    nn.init.normal_(model.weight)
    return model.eval()


def test_sliding_window_equals_whole_image_when_the_window_covers_it():
    model = build_segmentor("replknet_tiny", 4, channels=16, aux_channels=0).eval()
    image = torch.randn(1, 3, 64, 96)
    whole = whole_inference(model, image)
    for crop in ((64, 96), (128, 128)):
        slide = slide_inference(model, image, crop, (32, 32), num_classes=4)
        assert torch.equal(slide, whole)
    assert torch.equal(inference(model, image, "slide", 4, (100, 100), (50, 50)), inference(model, image, "whole"))


def test_overlapping_windows_are_averaged_exactly():
    model = _per_pixel_model()
    image = torch.randn(2, 3, 37, 53)
    whole = whole_inference(model, image)
    slide = slide_inference(model, image, (16, 20), (7, 11), num_classes=3)
    assert torch.allclose(slide, whole, atol=1e-6)
    # Logits resized to another output size, as mmseg does to the original label size.
    assert slide_inference(model, image, (16, 20), (7, 11), 3, out_size=(74, 106)).shape == (2, 3, 74, 106)


def test_window_grid_covers_the_image_and_ends_at_the_border():
    assert _grid_starts(100, 40, 30) == [0, 30, 60]
    assert _grid_starts(100, 100, 30) == [0]
    assert _grid_starts(50, 100, 30) == [0]
    assert _grid_starts(101, 40, 30) == [0, 30, 60, 61]
    for length, crop, stride in [(77, 20, 13), (512, 512, 341), (683, 512, 341)]:
        starts = _grid_starts(length, crop, stride)
        covered = torch.zeros(length, dtype=torch.bool)
        for start in starts:
            covered[start : start + crop] = True
        assert covered.all() and starts[-1] + min(crop, length) == length


def test_multi_scale_flip():
    image = torch.randn(1, 3, 32, 48)
    model = _per_pixel_model()
    probs = inference(model, image)
    assert torch.allclose(probs.sum(1), torch.ones(1, 32, 48))
    # One scale, no flip: plain inference. A per-pixel model is flip-equivariant, so flipping changes nothing.
    assert torch.allclose(aug_inference(model, image, (1.0,), flip=False), probs, atol=1e-6)
    assert torch.allclose(aug_inference(model, image, (1.0,), flip=True), probs, atol=1e-6)
    # The flip is undone: a model that sees only the left half's mirror image would break this.
    asymmetric = build_segmentor("replknet_tiny", 3, channels=16, aux_channels=0).eval()
    flipped_only = aug_inference(asymmetric, image, (1.0,), flip=True) * 2 - inference(asymmetric, image)
    mirrored = inference(asymmetric, image.flip(-1)).flip(-1)
    assert torch.allclose(flipped_only, mirrored, atol=1e-5)
    # Several scales: probabilities at the requested size, averaged (still a distribution).
    image = torch.randn(1, 3, 64, 96)
    out = aug_inference(asymmetric, image, (0.5, 1.0, 1.5), flip=True, out_size=(20, 30))
    assert out.shape == (1, 3, 20, 30) and torch.allclose(out.sum(1), torch.ones(1, 20, 30), atol=1e-5)


def test_bad_arguments_are_named():
    model = _per_pixel_model()
    image = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="stride"):
        slide_inference(model, image, (4, 4), (5, 5), 3)
    with pytest.raises(ValueError, match="unknown inference mode"):
        inference(model, image, "tiles")
    with pytest.raises(ValueError, match="needs crop_size"):
        inference(model, image, "slide")
    with pytest.raises(ValueError, match="num_classes"):
        slide_inference(model, image, (4, 4), (4, 4), 5)
