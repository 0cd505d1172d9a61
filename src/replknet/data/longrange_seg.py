"""A segmentation task whose per-pixel label is given only by a distant cue: "which sign is in my region?".

Each image is cut into ``num_regions`` Voronoi regions. Every region is filled with a random texture (kind, colours
and phase drawn independently of its class, desaturated, the same pool for every class) and holds ONE small cue:
a 9 px square with a white border, filled with its class's saturated colour and carrying its class's black glyph
(``+``, ``x``, ring, block). Every pixel of the region, the cue included, is labelled with that class. Region
classes are drawn independently and uniformly.

Why it needs a large receptive field, and the bound that proves it: a pixel's window tells its class only if it
contains the cue of the pixel's own region. Textures carry no class information, and neither does another region's
cue, since region classes are independent. So a model that sees only a ``(2r + 1)``-pixel square around each pixel
can be right on at most the pixels whose own cue lies within that square, plus ``1 / num_classes`` of the others
(``local_accuracy_bound``). The generator records each pixel's Chebyshev distance to its own cue, so the bound is
computed exactly per dataset. With 3 regions on 64 px, about 4 pixels in 10 are 16 px or more from their cue.

NOTE: the task is written for this library (not from a paper). It follows the issue's design: regions whose
texture is shared by all classes, whose class is given only by a distant cue.

Sample ``i`` of a split is rendered from ``numpy.random.default_rng((seed, 400 + split_id, i))``.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CUE_COLORS",
    "LONGRANGE_CLASSES",
    "LONGRANGE_PRESETS",
    "LongRangeSegConfig",
    "longrange_config",
    "render_longrange",
    "glyph",
    "local_accuracy_bound",
    "LongRangeSegmentation",
    "cached_longrange",
    "write_segmentation_folder",
]

_logger = logging.getLogger(__name__)

LONGRANGE_CLASSES: tuple[str, ...] = ("plus", "cross", "ring", "block")
# Each class's cue: its glyph in black on its own saturated colour, inside a white border. The region textures are
# desaturated (saturation <= 0.3), so no texture pixel looks like a cue.
CUE_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.9, 0.1, 0.1),
    (0.1, 0.75, 0.1),
    (0.15, 0.25, 0.95),
    (0.95, 0.85, 0.1),
)
# Region fills: the built-in texture kinds minus "blobs" and "rings", whose large patches and arcs read as region
# boundaries of their own.
REGION_TEXTURES: tuple[str, ...] = ("stripes", "checks", "dots", "waves", "flat")
_SPLIT_IDS = {"train": 400, "val": 401}


@dataclass(frozen=True)
class LongRangeSegConfig:
    """How the images are drawn (lengths in pixels). Defaults: the ``long`` setting at 64 px."""

    image_size: int = 64
    num_regions: int = 3
    # each region covers at least this share of the image (small slivers would hold no cue)
    min_region_fraction: float = 0.12
    cue_size: int = 9  # side of the cue square: a 1 px white border around the class colour and glyph
    texture_contrast: float = 0.15  # within-texture contrast (the cue is saturated colour, black and white)
    noise: float = 0.02

    def validate(self) -> LongRangeSegConfig:
        """Check the values; raises ``ValueError`` naming the bad one."""
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 (the backbones downsample by 32), got {self.image_size}")
        if self.num_regions < 1:
            raise ValueError(f"num_regions must be >= 1, got {self.num_regions}")
        if not 0 < self.min_region_fraction * self.num_regions <= 1:
            raise ValueError(f"min_region_fraction {self.min_region_fraction} x {self.num_regions} regions exceeds 1")
        if self.cue_size < 7 or self.cue_size % 2 == 0:
            raise ValueError(f"cue_size must be odd and at least 7, got {self.cue_size}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# "short": many small regions (a pixel's cue is a few pixels away); "long": 3 regions on 64 px.
LONGRANGE_PRESETS: dict[str, dict] = {
    "short": dict(image_size=64, num_regions=8, min_region_fraction=0.03),
    "long": dict(image_size=64, num_regions=3, min_region_fraction=0.12),
}


def longrange_config(preset: str | None = None, **overrides) -> LongRangeSegConfig:
    """A ``LongRangeSegConfig`` from a named preset (``short``, ``long``; default ``long``) and field overrides."""
    preset = preset or "long"
    if preset not in LONGRANGE_PRESETS:
        raise ValueError(f"unknown long-range segmentation preset {preset!r}; presets: {sorted(LONGRANGE_PRESETS)}")
    names = {f.name for f in dataclasses.fields(LongRangeSegConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown long-range segmentation option(s) {unknown}; options: {sorted(names)}")
    return LongRangeSegConfig(**{**LONGRANGE_PRESETS[preset], **overrides}).validate()


def glyph(label: int, size: int) -> np.ndarray:
    """The glyph of class ``label`` in a cue of side ``size``: a bool array, True where it is black (the 1 px border
    and two more pixels around the glyph stay clear)."""
    inner = size - 4
    yy, xx = np.mgrid[:inner, :inner]
    c = (inner - 1) / 2
    if label == 0:  # plus
        mark = (np.abs(yy - c) <= 0.5) | (np.abs(xx - c) <= 0.5)
    elif label == 1:  # cross (x)
        mark = (np.abs(yy - xx) <= 0.5) | (np.abs(yy + xx - 2 * c) <= 0.5)
    elif label == 2:  # ring
        radius = np.maximum(np.abs(yy - c), np.abs(xx - c))
        mark = radius >= c - 0.5
    elif label == 3:  # block
        mark = np.maximum(np.abs(yy - c), np.abs(xx - c)) <= c - 1
    else:
        raise ValueError(f"glyph label must be in [0, {len(LONGRANGE_CLASSES)}), got {label}")
    out = np.zeros((size, size), dtype=bool)
    out[2:-2, 2:-2] = mark
    return out


def _region_map(config: LongRangeSegConfig, rng: np.random.Generator) -> np.ndarray | None:
    size = config.image_size
    seeds = rng.uniform(0, size, size=(config.num_regions, 2))
    yy, xx = np.mgrid[:size, :size] + 0.5
    distance = (xx[None] - seeds[:, 0, None, None]) ** 2 + (yy[None] - seeds[:, 1, None, None]) ** 2
    regions = distance.argmin(axis=0)  # (H, W) region index
    counts = np.bincount(regions.ravel(), minlength=config.num_regions)
    if counts.min() < config.min_region_fraction * size * size:
        return None
    return regions


def _cue_position(region_mask: np.ndarray, cue: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """Top-left corner of a cue square lying inside the region with a 1 px margin, at random; None if none fits."""
    size = region_mask.shape[0]
    span = cue + 2
    table = np.zeros((size + 1, size + 1), dtype=np.int64)
    table[1:, 1:] = region_mask.cumsum(0).cumsum(1)
    sums = table[span:, span:] - table[:-span, span:] - table[span:, :-span] + table[:-span, :-span]
    ys, xs = np.nonzero(sums == span * span)
    if ys.size == 0:
        return None
    pick = int(rng.integers(ys.size))
    return int(ys[pick]) + 1, int(xs[pick]) + 1


def render_longrange(
    config: LongRangeSegConfig, rng: np.random.Generator, max_tries: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample.

    Returns:
        ``(image, label, cue_distance)``: ``(H, W, 3)`` uint8 RGB, ``(H, W)`` uint8 class ids and ``(H, W)``
        int16 Chebyshev distance (pixels) from each pixel to the nearest pixel of its own region's cue square.
    """
    from replknet.data.synthetic import render_texture

    size = config.image_size
    for _ in range(max_tries):
        regions = _region_map(config, rng)
        if regions is None:
            continue
        corners = [_cue_position(regions == r, config.cue_size, rng) for r in range(config.num_regions)]
        if any(corner is None for corner in corners):
            continue
        break
    else:
        raise RuntimeError(f"could not fit {config.num_regions} regions with a cue each on {size} px; use fewer")
    classes = rng.integers(len(LONGRANGE_CLASSES), size=config.num_regions)
    # Region base colours, desaturated and far apart (visible boundaries), drawn without regard to class.
    colors: list[np.ndarray] = []
    while len(colors) < config.num_regions:
        hue, saturation, value = rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.3, 0.8)
        candidate = np.array(colorsys.hsv_to_rgb(hue, saturation, value), dtype=np.float32)
        if all(np.abs(candidate - other).sum() >= 0.3 for other in colors) or rng.random() < 0.02:
            colors.append(candidate)
    image = np.zeros((size, size, 3), dtype=np.float32)
    label = np.zeros((size, size), dtype=np.uint8)
    distance = np.zeros((size, size), dtype=np.int16)
    yy, xx = np.mgrid[:size, :size]
    for r in range(config.num_regions):
        mask = regions == r
        kind = REGION_TEXTURES[int(rng.integers(len(REGION_TEXTURES)))]
        second = np.clip(colors[r] + rng.uniform(-1, 1) * config.texture_contrast, 0, 1).astype(np.float32)
        texture = render_texture(kind, size, rng, colors=(colors[r], second))
        image[mask] = texture[mask]
        label[mask] = classes[r]
        top, left = corners[r]
        bottom, right = top + config.cue_size - 1, left + config.cue_size - 1
        dy = np.maximum(np.maximum(top - yy, yy - bottom), 0)
        dx = np.maximum(np.maximum(left - xx, xx - right), 0)
        distance[mask] = np.maximum(dy, dx)[mask]
    for r in range(config.num_regions):
        top, left = corners[r]
        size = config.cue_size
        patch = np.ones((size, size, 3), dtype=np.float32)
        patch[1:-1, 1:-1] = CUE_COLORS[int(classes[r])]
        patch[glyph(int(classes[r]), size)] = 0.0
        image[top : top + size, left : left + size] = patch
    if config.noise > 0:
        image = image + config.noise * rng.standard_normal(image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), label, distance


def local_accuracy_bound(cue_distance: np.ndarray, radius: int, num_classes: int = len(LONGRANGE_CLASSES)) -> float:
    """The highest expected pixel accuracy of any model that sees only the ``(2 radius + 1)``-pixel square
    around each pixel: 1 where the pixel's own cue reaches into that square, ``1 / num_classes`` elsewhere.
    """
    near = np.asarray(cue_distance) <= radius
    return float(near.mean() + (1.0 - near.mean()) / num_classes)


class LongRangeSegmentation:
    """The task as a segmentation dataset (rendered once): ``images`` (N, H, W, 3) uint8, ``labels`` (N, H, W)
    uint8, ``cue_distance`` (N, H, W) int16; items go through the seg pipeline's transforms
    (``replknet.seg.data``), see ``build_dataset("longrange", ...)``.
    """

    class_names: tuple[str, ...] = LONGRANGE_CLASSES

    def __init__(
        self, split: str = "train", num_samples: int = 256, config: LongRangeSegConfig | None = None, seed: int = 0
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"long-range segmentation splits are {sorted(_SPLIT_IDS)}, got {split!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.config = (config or longrange_config()).validate()
        self.split, self.seed = split, seed
        rendered = [
            render_longrange(self.config, np.random.default_rng((int(seed), _SPLIT_IDS[split], i)))
            for i in range(num_samples)
        ]
        self.images = np.stack([image for image, _, _ in rendered])
        self.labels = np.stack([label for _, label, _ in rendered])
        self.cue_distance = np.stack([distance for _, _, distance in rendered])

    def __len__(self) -> int:
        return len(self.images)


def write_segmentation_folder(
    out_dir: str | os.PathLike,
    config: LongRangeSegConfig | None = None,
    seed: int = 0,
    split_sizes: dict[str, int] | None = None,
) -> dict[str, int]:
    """Write the task as a segmentation folder: ``out_dir/{images,annotations}/<split>/<index>.png`` (label PNGs
    hold class ids) plus ``out_dir/classes.json`` (class names, ignore index 255) and ``out_dir/task.json``.

    ``replknet seg-train``/``replknet study`` read this layout as the ``folder`` dataset.

    Returns:
        the number of images written per split.
    """
    from PIL import Image

    config = (config or longrange_config()).validate()
    sizes = dict(split_sizes or {"train": 2000, "val": 200})
    root = Path(out_dir)
    written = {}
    for split, count in sizes.items():
        data = LongRangeSegmentation(split, count, config, seed)
        for kind in ("images", "annotations"):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for index in range(len(data)):
            Image.fromarray(data.images[index]).save(root / "images" / split / f"{index:06d}.png")
            Image.fromarray(data.labels[index]).save(root / "annotations" / split / f"{index:06d}.png")
        written[split] = len(data)
        _logger.info("wrote %d %s images to %s", len(data), split, root)
    (root / "classes.json").write_text(json.dumps({"classes": list(LONGRANGE_CLASSES), "ignore_index": 255}, indent=1))
    (root / "task.json").write_text(json.dumps({"task": "longrange_seg", "seed": seed, **config.to_dict()}, indent=1))
    return written


_CACHE: dict[tuple, LongRangeSegmentation] = {}
_CACHE_SIZE = 4


def cached_longrange(split: str, num_samples: int, config: LongRangeSegConfig, seed: int = 0) -> LongRangeSegmentation:
    """``LongRangeSegmentation(split, num_samples, config, seed)`` kept in a small per-process cache (last 4 sets)."""
    key = (split, int(num_samples), config, int(seed))
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = LongRangeSegmentation(split, num_samples, config, seed)
    return _CACHE[key]
