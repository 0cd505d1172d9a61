"""Classifying image files with a model's own preprocessing and reporting the top-k ImageNet labels."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from replknet.data.images import ImageReadError, read_image

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class ClassScore:
    """One of the top-k classes: its index, its name (None when the model's classes are unnamed), probability."""

    index: int
    label: str | None
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first; a skipped unreadable file has no classes and an error."""

    path: str
    top: list[ClassScore]
    error: str | None = None  # why the file was skipped (``predict(..., skip_bad_images=True)``)

    def to_dict(self) -> dict:
        return asdict(self)


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among ``inputs``: files as given, folders searched recursively (sorted), by extension.

    Raises:
        FileNotFoundError: an input that does not exist, or no images found at all.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"image or folder not found: {path}")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {[str(i) for i in inputs]}")
    return found


def load_image(path: str | os.PathLike):
    """``replknet.data.images.read_image``: an 8-bit RGB PIL image; ``ImageReadError`` (a ``ValueError``) names a
    file that cannot be read."""
    return read_image(path)


def class_labels(model: nn.Module) -> list[str] | None:
    """Names of the model's classes: the config's ``label_names`` if any, else timm's ImageNet metadata for a
    1000/21841/... class head (offline, bundled with timm), else None.
    """
    from timm.data import ImageNetInfo, infer_imagenet_subset

    num_classes = getattr(model, "num_classes", None)
    names = getattr(model, "pretrained_cfg", {}).get("label_names")
    if names and (num_classes is None or len(names) == num_classes):
        return list(names.values()) if isinstance(names, dict) else list(names)
    subset = infer_imagenet_subset(model) if num_classes else None
    if subset is None:
        return None
    return list(ImageNetInfo(subset).label_descriptions())


def data_transform(model: nn.Module, image_size: int | tuple[int, int] | None = None):
    """The model's evaluation transform (timm ``resolve_data_config`` + ``create_transform``); ``image_size`` (one
    size or ``(H, W)``) replaces the configured input size, keeping its crop ratio."""
    from timm.data import create_transform, resolve_data_config

    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    args = {"input_size": (getattr(model, "in_chans", 3), *image_size)} if image_size else {}
    config = resolve_data_config(args, model=model)
    return create_transform(**config, is_training=False)


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Iterable[str | os.PathLike],
    top_k: int = 5,
    batch_size: int = 16,
    image_size: int | tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    labels: Sequence[str] | None = None,
    skip_bad_images: bool = False,
    progress: bool = False,
) -> list[Prediction]:
    """Top-k classes for each image file (folders are searched recursively).

    Args:
        model: a classifier.
        images: image files and/or folders.
        top_k: classes per image (capped at the number of classes).
        batch_size: images per forward pass.
        image_size: override the model's input resolution, one size or ``(H, W)`` (the crop keeps the model's
            crop ratio).
        device: where to run.
        labels: class names; by default ``class_labels(model)``.
        skip_bad_images: an unreadable file gets a ``Prediction`` with no classes and its ``error`` (in its place
            in the list) and the other files are still classified; by default the first one raises.
        progress: a progress bar over the images.

    Raises:
        ImageReadError: an unreadable image (a ``ValueError`` naming the file), unless ``skip_bad_images``.
        ValueError: a model without a classifier, a bad ``top_k`` or ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    num_classes = getattr(model, "num_classes", None)
    if not num_classes:
        raise ValueError("the model has no classifier head (num_classes is 0 or None); predict needs one")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    paths = find_images(images)
    labels = list(labels) if labels is not None else class_labels(model)
    if labels is not None and len(labels) != num_classes:
        raise ValueError(f"{len(labels)} class names given for a model with {num_classes} classes")
    transform = data_transform(model, image_size)
    model = model.eval().to(device)
    k = min(top_k, num_classes)
    from tqdm.auto import tqdm

    predictions: dict[int, Prediction] = {}
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for batch_indices in _batches(range(len(paths)), batch_size):
            tensors, readable = [], []
            for index in batch_indices:
                try:
                    tensors.append(transform(read_image(paths[index])))
                except ImageReadError as error:
                    if not skip_bad_images:
                        raise
                    _logger.warning("skipped %s", error)
                    predictions[index] = Prediction(str(paths[index]), [], error.reason)
                    continue
                readable.append(index)
            bar.update(len(batch_indices))
            if not readable:
                continue
            probabilities = model(torch.stack(tensors).to(device)).float().softmax(dim=-1)  # (N, classes)
            top_p, top_i = probabilities.topk(k, dim=-1)
            for index, p_row, i_row in zip(readable, top_p.tolist(), top_i.tolist()):
                scores = [ClassScore(i, labels[i] if labels else None, p) for p, i in zip(p_row, i_row)]
                predictions[index] = Prediction(str(paths[index]), scores)
            _logger.debug("classified %d/%d images", len(predictions), len(paths))
    finally:
        bar.close()
    return [predictions[index] for index in range(len(paths))]


__all__ = ["ClassScore", "Prediction", "class_labels", "data_transform", "find_images", "load_image", "predict"]
