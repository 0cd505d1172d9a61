"""Shape bias on cue-conflict images (Geirhos et al., ICLR 2019), the measurement behind the RepLKNet paper's claim.

A cue-conflict image has the shape of one category and the texture of another, named
``<category>/<shape><n>-<texture><m>.png``. The standard evaluation (Geirhos et al.; model-vs-human):

1. softmax over the 1000 ImageNet logits;
2. each of the 16 categories is scored by the *mean* probability of its ImageNet classes
   (``imagenet_16class_indices.json``, shipped with the package);
3. the decision is the best-scoring of the 16;
4. images whose shape and texture categories coincide are excluded;
5. shape bias = shape hits / (shape hits + texture hits); decisions that are neither are counted in the
   accuracies' denominators only.

The counting (``shape_bias_from_decisions``) takes plain ``(shape, texture, decision)`` triples, so any set of
categories can be scored the same way (for example a synthetic cue-conflict split).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
from torch import nn

_logger = logging.getLogger(__name__)

IMAGENET_NUM_CLASSES = 1000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# <shape><n>-<texture><m>.<ext>, e.g. "cat10-keyboard1.png"
_STIMULUS_NAME = re.compile(r"^(?P<shape>[A-Za-z_]+)(?P<shape_n>\d+)-(?P<texture>[A-Za-z_]+)(?P<texture_n>\d+)$")
_LAYOUT_HINT = "expected <category>/<shape><n>-<texture><m>.png, e.g. cat/cat10-keyboard1.png"


class StimulusLayoutError(ValueError):
    """A stimuli directory or file name that does not fit the cue-conflict layout; the message names it."""


@lru_cache(maxsize=1)
def _builtin_category_indices() -> dict[str, tuple[int, ...]]:
    text = resources.files("replknet.analysis").joinpath("imagenet_16class_indices.json").read_text()
    return {name: tuple(indices) for name, indices in json.loads(text).items()}


def imagenet_16class_indices() -> dict[str, list[int]]:
    """The 16 cue-conflict categories and the ImageNet-1k class indices (timm/torchvision order) of each."""
    return {name: list(indices) for name, indices in _builtin_category_indices().items()}


CUE_CONFLICT_CATEGORIES: tuple[str, ...] = tuple(sorted(_builtin_category_indices()))


@dataclass(frozen=True)
class Stimulus:
    """One cue-conflict image: its path and the categories of its shape and its texture."""

    path: Path
    shape: str
    texture: str

    @property
    def is_conflict(self) -> bool:
        """False when shape and texture come from the same category (such images are excluded)."""
        return self.shape != self.texture


def parse_stimulus_name(path: str | os.PathLike, categories: Iterable[str] = CUE_CONFLICT_CATEGORIES) -> Stimulus:
    """Read the shape and texture categories from ``<category>/<shape><n>-<texture><m>.png``.

    Raises:
        StimulusLayoutError: the name does not fit the layout, names an unknown category, or its shape
            category differs from its directory.
    """
    path = Path(path)
    known = set(categories)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise StimulusLayoutError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}); {_LAYOUT_HINT}")
    match = _STIMULUS_NAME.match(path.stem)
    if match is None:
        raise StimulusLayoutError(f"{path}: file name does not fit the cue-conflict layout; {_LAYOUT_HINT}")
    shape, texture = match["shape"], match["texture"]
    for role, name in (("shape", shape), ("texture", texture)):
        if name not in known:
            raise StimulusLayoutError(
                f"{path}: unknown {role} category {name!r}; known categories: {', '.join(sorted(known))}"
            )
    if path.parent.name and path.parent.name != shape:
        raise StimulusLayoutError(
            f"{path}: shape category {shape!r} does not match its directory {path.parent.name!r}; {_LAYOUT_HINT}"
        )
    return Stimulus(path=path, shape=shape, texture=texture)


def find_stimuli(root: str | os.PathLike, categories: Iterable[str] = CUE_CONFLICT_CATEGORIES) -> list[Stimulus]:
    """All stimuli under ``root`` (one directory per shape category), sorted by path.

    Files directly under ``root`` (a LICENSE, a README) and hidden files are ignored; every other entry must fit
    the layout.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        StimulusLayoutError: an unknown category directory, a file that does not fit, or no stimuli at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"stimuli directory not found: {root}")
    known = set(categories)
    stimuli = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.name not in known:
            raise StimulusLayoutError(
                f"{entry}: unknown category directory {entry.name!r}; known categories: {', '.join(sorted(known))}"
            )
        for file in sorted(entry.iterdir()):
            if file.name.startswith("."):
                continue
            if not file.is_file():
                raise StimulusLayoutError(f"{file}: a directory inside a category directory; {_LAYOUT_HINT}")
            stimuli.append(parse_stimulus_name(file, known))
    if not stimuli:
        raise StimulusLayoutError(f"no stimuli found in {root}; {_LAYOUT_HINT}")
    return stimuli


def probabilities_to_decisions(
    probabilities: torch.Tensor, category_indices: Mapping[str, Sequence[int]] | None = None
) -> list[str]:
    """Map (N, num_classes) class probabilities to one category per image: the best mean probability.

    Args:
        probabilities: softmax outputs, one row per image.
        category_indices: category -> class indices; the built-in 16-class ImageNet mapping by default.
    """
    category_indices = _builtin_category_indices() if category_indices is None else category_indices
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (N, num_classes), got shape {tuple(probabilities.shape)}")
    names = list(category_indices)
    num_classes = probabilities.shape[1]
    scores = []
    for name in names:
        indices = list(category_indices[name])
        if not indices or min(indices) < 0 or max(indices) >= num_classes:
            raise ValueError(f"category {name!r}: class indices must be non-empty and in [0, {num_classes})")
        scores.append(probabilities[:, indices].mean(dim=1))
    best = torch.stack(scores, dim=1).argmax(dim=1)  # (N,) index into names
    return [names[i] for i in best.tolist()]


def logits_to_decisions(logits: torch.Tensor, category_indices: Mapping[str, Sequence[int]] | None = None) -> list[str]:
    """Softmax over all classes (in float64), then ``probabilities_to_decisions``."""
    return probabilities_to_decisions(torch.softmax(logits.double(), dim=1), category_indices)


@dataclass(frozen=True)
class ShapeBiasCounts:
    """Decision counts over a set of cue-conflict images (shape and texture categories differ)."""

    num_images: int
    shape_hits: int
    texture_hits: int

    @property
    def shape_bias(self) -> float:
        """shape hits / (shape hits + texture hits); NaN when there are neither."""
        hits = self.shape_hits + self.texture_hits
        return self.shape_hits / hits if hits else math.nan

    @property
    def shape_accuracy(self) -> float:
        """Fraction of images decided as their shape category."""
        return self.shape_hits / self.num_images if self.num_images else math.nan

    @property
    def texture_accuracy(self) -> float:
        """Fraction of images decided as their texture category."""
        return self.texture_hits / self.num_images if self.num_images else math.nan

    def to_dict(self) -> dict:
        """Counts and fractions, NaN written as None (JSON null)."""
        return {
            "shape_bias": _nan_to_none(self.shape_bias),
            "shape_accuracy": _nan_to_none(self.shape_accuracy),
            "texture_accuracy": _nan_to_none(self.texture_accuracy),
            "shape_hits": self.shape_hits,
            "texture_hits": self.texture_hits,
            "num_images": self.num_images,
        }


@dataclass(frozen=True)
class ShapeBiasResult:
    """Shape bias overall and per shape category, plus the per-image decisions when they are known."""

    overall: ShapeBiasCounts
    per_category: dict[Hashable, ShapeBiasCounts]
    num_excluded: int
    records: tuple[dict, ...] = field(default=())

    @property
    def shape_bias(self) -> float:
        return self.overall.shape_bias

    @property
    def shape_accuracy(self) -> float:
        return self.overall.shape_accuracy

    @property
    def texture_accuracy(self) -> float:
        return self.overall.texture_accuracy

    def to_dict(self, with_records: bool = True) -> dict:
        """A JSON-ready summary (category keys as strings, NaN as None)."""
        out = self.overall.to_dict()
        out["num_excluded"] = self.num_excluded
        out["per_category"] = {str(name): counts.to_dict() for name, counts in self.per_category.items()}
        if with_records and self.records:
            out["decisions"] = list(self.records)
        return out


def shape_bias_from_decisions(
    triples: Iterable[tuple[Hashable, Hashable, Hashable]],
    categories: Sequence[Hashable] | None = None,
    records: Sequence[dict] = (),
) -> ShapeBiasResult:
    """Shape bias from per-image ``(shape_label, texture_label, decision)`` triples, for any set of categories.

    Triples whose shape and texture labels coincide are excluded. Per-category figures group images by their
    shape label.

    Args:
        triples: one per image; labels may be names or integers.
        categories: every allowed label, in the order ``per_category`` should list them (categories with no
            image get zero counts and a NaN shape bias); by default the shape labels seen, sorted.
        records: optional per-image details kept on the result (for JSON output).

    Raises:
        ValueError: no triples, or a label outside ``categories``.
    """
    triples = list(triples)
    if not triples:
        raise ValueError("no decisions given: cannot compute a shape bias from zero images")
    if categories is None:
        categories = sorted({shape for shape, _, _ in triples}, key=str)
    allowed = set(categories)
    tallies = {name: [0, 0, 0] for name in categories}  # images, shape hits, texture hits
    excluded = 0
    for position, (shape, texture, decision) in enumerate(triples):
        for role, label in (("shape", shape), ("texture", texture), ("decision", decision)):
            if label not in allowed:
                raise ValueError(f"image {position}: {role} label {label!r} is not one of the categories {categories}")
        if shape == texture:
            excluded += 1
            continue
        tally = tallies[shape]
        tally[0] += 1
        tally[1] += decision == shape
        tally[2] += decision == texture
    per_category = {name: ShapeBiasCounts(*tally) for name, tally in tallies.items()}
    overall = ShapeBiasCounts(*(sum(column) for column in zip(*tallies.values())))
    if overall.num_images == 0:
        raise ValueError(f"all {excluded} images have the same shape and texture category: no cue conflict to score")
    return ShapeBiasResult(overall=overall, per_category=per_category, num_excluded=excluded, records=tuple(records))


class CueConflictDataset(torch.utils.data.Dataset):
    """Stimuli as ``(transform(image), index)`` pairs; the index points into ``stimuli``."""

    def __init__(self, stimuli: Sequence[Stimulus], transform: Callable) -> None:
        self.stimuli = list(stimuli)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.stimuli)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from replknet.data.images import read_image

        tensor = self.transform(read_image(self.stimuli[index].path))
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"the transform must return a tensor, got {type(tensor).__name__}")
        return tensor, index


def transform_for_model(model: nn.Module) -> Callable:
    """The evaluation preprocessing from a model's pretrained config (timm ``resolve_data_config``)."""
    import timm.data

    return timm.data.create_transform(**timm.data.resolve_data_config(model=model))


def _check_num_classes(model: nn.Module) -> None:
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int) and num_classes != IMAGENET_NUM_CLASSES:
        raise ValueError(
            f"{type(model).__name__} has {num_classes} outputs; shape bias needs a classifier with "
            f"{IMAGENET_NUM_CLASSES} ImageNet outputs"
        )


@torch.inference_mode()
def evaluate_shape_bias(
    model: nn.Module,
    stimuli: str | os.PathLike | Sequence[Stimulus],
    transform: Callable,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    category_indices: Mapping[str, Sequence[int]] | None = None,
    progress: bool = False,
    description: str | None = None,
) -> ShapeBiasResult:
    """Classify every cue-conflict stimulus with ``model`` and compute its shape bias.

    Args:
        model: any ``nn.Module`` mapping a batch of images to (N, 1000) ImageNet logits (N, num_classes with
            ``category_indices``); run in eval mode and restored to its mode afterwards.
        stimuli: a directory in the standard layout, or a list from ``find_stimuli``.
        transform: PIL image -> tensor preprocessing (``transform_for_model(model)`` for a timm model).
        batch_size: images per forward pass.
        device: where the images are sent (the model must already be there); the model's device by default.
        num_workers: DataLoader worker processes for image decoding.
        category_indices: category -> class indices; the built-in 16-class ImageNet mapping by default. With a
            mapping of one's own (a synthetic cue-conflict set) any number of model outputs is accepted.
        progress: show a tqdm progress bar over batches.
        description: the progress bar's label.

    Raises:
        ValueError: the model does not produce 1000 outputs per image (built-in mapping), its output is not
            (N, num_classes), or ``batch_size`` < 1.
        StimulusLayoutError: the stimuli directory does not fit the layout or is empty.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # NOTE: the 1000-output requirement belongs to the ImageNet mapping; a custom mapping brings its own classes.
    num_outputs = IMAGENET_NUM_CLASSES if category_indices is None else None
    if num_outputs is not None:
        _check_num_classes(model)
    category_indices = _builtin_category_indices() if category_indices is None else category_indices
    if not isinstance(stimuli, (str, os.PathLike)):
        stimuli = list(stimuli)
        if not stimuli:
            raise StimulusLayoutError("no stimuli given")
    else:
        stimuli = find_stimuli(stimuli, categories=category_indices)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    loader = torch.utils.data.DataLoader(
        CueConflictDataset(stimuli, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    was_training = model.training
    model.eval()
    decisions: list[str] = [""] * len(stimuli)
    try:
        for images, indices in tqdm(loader, desc=description, disable=not progress, unit="batch"):
            logits = model(images.to(device))
            _check_logits(logits, len(indices), num_outputs)
            for index, decision in zip(indices.tolist(), logits_to_decisions(logits.cpu(), category_indices)):
                decisions[index] = decision
    finally:
        model.train(was_training)
    records = [
        {"file": f"{s.path.parent.name}/{s.path.name}", "shape": s.shape, "texture": s.texture, "decision": d}
        for s, d in zip(stimuli, decisions)
    ]
    result = shape_bias_from_decisions(
        [(s.shape, s.texture, d) for s, d in zip(stimuli, decisions)],
        categories=list(category_indices),
        records=records,
    )
    _logger.info(
        "shape bias %.3f over %d cue-conflict images (%d excluded: same shape and texture)",
        result.shape_bias,
        result.overall.num_images,
        result.num_excluded,
    )
    return result


def _check_logits(logits: object, batch: int, num_outputs: int | None) -> None:
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    fits = isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[0] == batch
    if num_outputs is not None:
        fits = fits and logits.shape[1] == num_outputs
        if not fits:
            raise ValueError(
                f"the model returned {shape} for a batch of {batch} images; shape bias needs "
                f"(N, {num_outputs}) ImageNet logits"
            )
    elif not fits:
        raise ValueError(f"the model returned {shape} for a batch of {batch} images; expected (N, num_classes) logits")


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
