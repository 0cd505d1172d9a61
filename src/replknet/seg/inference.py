"""Inference modes of the paper's evaluation (mmsegmentation's ``EncoderDecoder``): whole image, sliding window,
and multi-scale + flip ("ms" in the paper's tables).

Every function takes ``model``: any callable mapping a normalised ``(N, 3, h, w)`` batch to logits
``(N, K, h, w)`` at its input size (``RepLKNetUperNet`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["whole_inference", "slide_inference", "inference", "aug_inference", "PAPER_MS_RATIOS"]

# mmseg's multi-scale test ratios (img_ratios) used for the paper's "ms" numbers.
PAPER_MS_RATIOS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

Model = Callable[[torch.Tensor], torch.Tensor]


def _resize(x: torch.Tensor, size: Sequence[int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


@torch.no_grad()
def whole_inference(
    model: Model, image: torch.Tensor, out_size: Sequence[int] | None = None, align_corners: bool = False
) -> torch.Tensor:
    """Logits for the whole image, resized to ``out_size`` (default: the image size)."""
    logits = model(image)
    return _resize(logits, out_size or image.shape[-2:], align_corners)


def _grid_starts(length: int, crop: int, stride: int) -> list[int]:
    # mmseg: (length - crop + stride - 1) // stride + 1 windows; the last is shifted back to end at the border.
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, length) - crop, 0) for i in range(count)]


@torch.no_grad()
def slide_inference(
    model: Model,
    image: torch.Tensor,
    crop_size: Sequence[int],
    stride: Sequence[int],
    num_classes: int,
    out_size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Sliding-window logits: windows of ``crop_size`` every ``stride``, overlapping logits averaged.

    As mmseg's ``slide_inference``: windows are clipped to the image (a window larger than the image is the whole
    image) and the last window in each direction is moved back to end at the border.
    """
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride
    if min(crop_h, crop_w, stride_h, stride_w) < 1:
        raise ValueError(f"crop_size and stride must be positive, got {tuple(crop_size)} and {tuple(stride)}")
    if stride_h > crop_h or stride_w > crop_w:
        raise ValueError(f"stride {tuple(stride)} larger than crop {tuple(crop_size)} would leave pixels unseen")
    batch, _, height, width = image.shape
    logits = image.new_zeros((batch, num_classes, height, width), dtype=torch.float32)
    count = image.new_zeros((1, 1, height, width), dtype=torch.float32)
    for top in _grid_starts(height, crop_h, stride_h):
        for left in _grid_starts(width, crop_w, stride_w):
            bottom, right = min(top + crop_h, height), min(left + crop_w, width)
            window = model(image[:, :, top:bottom, left:right])
            if window.shape[1] != num_classes:
                raise ValueError(f"model gave {window.shape[1]} channels, num_classes is {num_classes}")
            logits[:, :, top:bottom, left:right] += window.float()
            count[:, :, top:bottom, left:right] += 1
    logits = logits / count
    return _resize(logits, out_size or (height, width), align_corners)


@torch.no_grad()
def inference(
    model: Model,
    image: torch.Tensor,
    mode: str = "whole",
    num_classes: int | None = None,
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    out_size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Class probabilities (softmax) at ``out_size``, by ``mode`` ``"whole"`` or ``"slide"``."""
    if mode == "whole":
        logits = whole_inference(model, image, out_size, align_corners)
    elif mode == "slide":
        if crop_size is None or stride is None or num_classes is None:
            raise ValueError("slide inference needs crop_size, stride and num_classes")
        logits = slide_inference(model, image, crop_size, stride, num_classes, out_size, align_corners)
    else:
        raise ValueError(f"unknown inference mode {mode!r}; modes: whole, slide")
    return logits.float().softmax(dim=1)


@torch.no_grad()
def aug_inference(
    model: Model,
    image: torch.Tensor,
    ratios: Sequence[float] = PAPER_MS_RATIOS,
    flip: bool = True,
    mode: str = "whole",
    num_classes: int | None = None,
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    out_size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Multi-scale (+ horizontal flip) test: probabilities averaged over every scale and flip (mmseg ``aug_test``).

    ``ratios`` rescale the (already test-resized) image; each prediction is resized to ``out_size`` (default: the
    image size) before averaging.

    NOTE: mmseg rescales the uint8 image in the data pipeline (OpenCV bilinear); here the normalised tensor is
    rescaled with PyTorch's bilinear interpolation. Normalisation is affine per channel, so the two differ only by
    the interpolation kernels' rounding, not systematically.
    """
    if not ratios:
        raise ValueError("aug_inference needs at least one scale ratio")
    height, width = image.shape[-2:]
    out_size = tuple(out_size or (height, width))
    total = None
    views = 0
    for ratio in ratios:
        size = (max(int(height * ratio + 0.5), 1), max(int(width * ratio + 0.5), 1))
        scaled = _resize(image, size, align_corners=False)
        for flipped in (False, True) if flip else (False,):
            view = scaled.flip(-1) if flipped else scaled
            probs = inference(model, view, mode, num_classes, crop_size, stride, out_size, align_corners)
            probs = probs.flip(-1) if flipped else probs
            total = probs if total is None else total + probs
            views += 1
    return total / views
