"""A procedurally generated 10-class image dataset that rewards a large receptive field.

Each image shows one LARGE shape (spanning 60-95% of the image) whose class is the shape alone: the fill inside
the shape and the background around it are random textures (stripes, checks, dots, waves, blobs, rings, flat)
drawn independently of the class, with random colours (fill and background colours far apart, so the silhouette
is visible). A small patch therefore says nothing about the class;
only the outline of the whole shape does, which a network can see only with a receptive field about as large as
the shape (the point of large kernels).

The ``cue_conflict`` split puts the shape of one class on the texture of another, in the spirit of Geirhos et
al. (ICLR 2019). NOTE: because the training fill is class-independent, a class has no texture of its own in
training; for the conflict split the texture of class ``j`` is a lattice of SMALL copies of shape ``j`` (a Navon
figure: a big circle made of little triangles). A network that decides from local evidence (corners, curvature of
small parts) answers the texture class; one that integrates the whole figure answers the shape class.

Everything is deterministic from a seed: sample ``i`` of a split is rendered from
``numpy.random.default_rng((seed, split_id, i))``, so any sample can be re-rendered on its own.

Reusable primitives (also for synthetic segmentation data): ``render_shape_mask`` (soft mask of one class's shape
at a given size and pose), ``random_pose``, ``render_texture``, ``render_class_texture`` and ``compose``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "SHAPE_NAMES",
    "NUM_CLASSES",
    "TEXTURE_KINDS",
    "SPLITS",
    "ShapePose",
    "random_pose",
    "render_shape_mask",
    "render_texture",
    "render_class_texture",
    "compose",
    "render_sample",
    "render_cue_conflict",
    "SyntheticShapes",
    "write_image_folder",
]

_logger = logging.getLogger(__name__)

# Alphabetical, so that torchvision's ImageFolder (which sorts folder names) gives the same label ids.
SHAPE_NAMES: tuple[str, ...] = (
    "arrow",
    "crescent",
    "cross",
    "disk",
    "frame",
    "heart",
    "ring",
    "square",
    "star",
    "triangle",
)
NUM_CLASSES = len(SHAPE_NAMES)
TEXTURE_KINDS: tuple[str, ...] = ("stripes", "checks", "dots", "waves", "blobs", "rings", "flat")
SPLITS: dict[str, int] = {"train": 0, "val": 1, "cue_conflict": 2}
# Default split sizes: the built-in training demo uses these.
DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 5000, "val": 1000, "cue_conflict": 450}


# ---------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class ShapePose:
    """Where a shape sits, in coordinates where the image spans [-1, 1] on both axes (x right, y down).

    Attributes:
        center_x: horizontal centre.
        center_y: vertical centre.
        scale: radius of the shape's unit frame (1.0 = touches the image border when centred).
        angle: rotation in radians, counter-clockwise on screen.
    """

    center_x: float = 0.0
    center_y: float = 0.0
    scale: float = 0.8
    angle: float = 0.0


def random_pose(
    rng: np.random.Generator,
    min_scale: float = 0.6,
    max_scale: float = 0.95,
    max_angle_deg: float = 25.0,
    max_shift: float | None = None,
) -> ShapePose:
    """A random pose that keeps the shape inside the image.

    Args:
        rng: numpy generator.
        min_scale: smallest shape radius (fraction of the image half-size).
        max_scale: largest shape radius.
        max_angle_deg: rotations are uniform in +-this (small enough that a square never becomes a diamond).
        max_shift: largest centre offset; default ``1 - scale`` (the shape stays in the image).
    """
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
    scale = float(rng.uniform(min_scale, max_scale))
    shift = max(0.0, 1.0 - scale) if max_shift is None else max_shift
    return ShapePose(
        center_x=float(rng.uniform(-shift, shift)),
        center_y=float(rng.uniform(-shift, shift)),
        scale=scale,
        angle=float(np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))),
    )


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd rule point-in-polygon test for arrays of points."""
    inside = np.zeros(u.shape, dtype=bool)
    count = len(vertices)
    for i in range(count):
        x0, y0 = vertices[i]
        x1, y1 = vertices[(i + 1) % count]
        crosses = (y0 > v) != (y1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at)
    return inside


def _regular_polygon(sides: int, radius: float, start_deg: float = -90.0) -> list[tuple[float, float]]:
    angles = np.deg2rad(start_deg) + 2 * np.pi * np.arange(sides) / sides
    return [(radius * math.cos(a), radius * math.sin(a)) for a in angles]


def _star(points: int, outer: float, inner: float) -> list[tuple[float, float]]:
    vertices = []
    for i in range(2 * points):
        radius = outer if i % 2 == 0 else inner
        angle = -np.pi / 2 + np.pi * i / points
        vertices.append((radius * math.cos(angle), radius * math.sin(angle)))
    return vertices


# Each shape: an inside test in its unit frame (u right, v down), all roughly filling the unit disk.
def _arrow(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    head = _inside_polygon(u, v, [(0.0, -0.95), (0.7, -0.15), (-0.7, -0.15)])
    shaft = (np.abs(u) <= 0.25) & (v >= -0.2) & (v <= 0.9)
    return head | shaft


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u**2 + v**2 <= 0.95**2) & ((u - 0.45) ** 2 + v**2 > 0.72**2)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.9)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.9))


def _disk(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u**2 + v**2 <= 0.9**2


def _frame(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    chebyshev = np.maximum(np.abs(u), np.abs(v))
    return (chebyshev <= 0.85) & (chebyshev >= 0.45)


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with y up, scaled to the unit disk.
    x, y = u * 1.25, -(v * 1.25 - 0.1)
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    radius_sq = u**2 + v**2
    return (radius_sq <= 0.95**2) & (radius_sq >= 0.5**2)


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


_STAR_VERTICES = _star(5, 1.0, 0.42)
_TRIANGLE_VERTICES = [(x, y + 0.15) for x, y in _regular_polygon(3, 1.0)]


def _star_shape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _inside_polygon(u, v, _STAR_VERTICES)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _inside_polygon(u, v, _TRIANGLE_VERTICES)


_SHAPE_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "arrow": _arrow,
    "crescent": _crescent,
    "cross": _cross,
    "disk": _disk,
    "frame": _frame,
    "heart": _heart,
    "ring": _ring,
    "square": _square,
    "star": _star_shape,
    "triangle": _triangle,
}


def _shape_name(shape: int | str) -> str:
    if isinstance(shape, str):
        if shape not in _SHAPE_FUNCTIONS:
            raise ValueError(f"unknown shape {shape!r}; shapes: {list(SHAPE_NAMES)}")
        return shape
    if not 0 <= int(shape) < NUM_CLASSES:
        raise ValueError(f"shape class must be in [0, {NUM_CLASSES}), got {shape}")
    return SHAPE_NAMES[int(shape)]


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return int(height), int(width)


@functools.lru_cache(maxsize=16)
def _pixel_grid(height: int, width: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (y down), ``supersample`` samples per pixel and axis (cached, read-only)."""
    ys = (np.arange(height * supersample) + 0.5) / (height * supersample) * 2 - 1
    xs = (np.arange(width * supersample) + 0.5) / (width * supersample) * 2 - 1
    # NOTE: a non-square image keeps square pixels: x spans [-w/h, w/h] relative to the height.
    xs = xs * (width / height)
    grid = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    for array in grid:
        array.setflags(write=False)
    return grid[0], grid[1]


def render_shape_mask(
    shape: int | str,
    size: int | tuple[int, int],
    pose: ShapePose | None = None,
    supersample: int = 2,
) -> np.ndarray:
    """Soft (anti-aliased) mask of one class's shape.

    Args:
        shape: class id (index into ``SHAPE_NAMES``) or shape name.
        size: ``S`` or ``(H, W)`` in pixels.
        pose: position, size and rotation; default centred, scale 0.8, upright.
        supersample: samples per pixel along each axis (1 = hard mask).

    Returns:
        ``(H, W)`` float32 array in [0, 1] (fraction of each pixel covered).
    """
    name = _shape_name(shape)
    height, width = _size_hw(size)
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    pose = pose or ShapePose()
    if pose.scale <= 0:
        raise ValueError(f"pose.scale must be positive, got {pose.scale}")
    x, y = _pixel_grid(height, width, supersample)
    x, y = x - pose.center_x, y - pose.center_y
    cos, sin = math.cos(pose.angle), math.sin(pose.angle)
    # Rotate the points by -angle into the shape frame (y is down, so a positive angle turns counter-clockwise).
    u = (cos * x - sin * y) / pose.scale
    v = (sin * x + cos * y) / pose.scale
    mask = _SHAPE_FUNCTIONS[name](u, v).astype(np.float32)
    if supersample > 1:
        mask = mask.reshape(height, supersample, width, supersample).mean(axis=(1, 3))
    return mask


# ---------------------------------------------------------------------------------------------- textures
def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=3).astype(np.float32)


def _two_colors(rng: np.random.Generator, min_distance: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    first = _random_color(rng)
    for _ in range(100):
        second = _random_color(rng)
        if np.abs(first - second).sum() >= min_distance:
            break
    return first, second


def _pattern(kind: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A ``[0, 1]`` pattern of the given kind on coordinates ``x, y`` (image spans [-1, 1])."""
    theta = rng.uniform(0, np.pi)
    rotated_x = np.cos(theta) * x + np.sin(theta) * y
    rotated_y = -np.sin(theta) * x + np.cos(theta) * y
    if kind == "stripes":
        frequency = rng.uniform(3.0, 8.0)
        return (np.sin(np.pi * frequency * rotated_x + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float32)
    if kind == "checks":
        frequency = rng.uniform(2.5, 6.0)
        return ((np.floor(frequency * rotated_x) + np.floor(frequency * rotated_y)) % 2).astype(np.float32)
    if kind == "dots":
        frequency = rng.uniform(3.0, 6.0)
        radius = rng.uniform(0.2, 0.4)
        fx = (frequency * rotated_x) % 1.0 - 0.5
        fy = (frequency * rotated_y) % 1.0 - 0.5
        return (fx**2 + fy**2 <= radius**2).astype(np.float32)
    if kind == "waves":
        a, b = rng.uniform(2.0, 6.0, size=2)
        return (0.5 + 0.5 * np.sin(np.pi * a * rotated_x) * np.sin(np.pi * b * rotated_y)).astype(np.float32)
    if kind == "blobs":
        cells = int(rng.integers(3, 7))
        coarse = rng.uniform(0, 1, size=(cells + 1, cells + 1)).astype(np.float32)
        # Bilinear upsampling of a coarse random grid: soft blobs a few cells across.
        gx = np.clip((x + 1) / 2, 0, 1) * cells
        gy = np.clip((y + 1) / 2, 0, 1) * cells
        x0 = np.minimum(np.floor(gx).astype(int), cells - 1)
        y0 = np.minimum(np.floor(gy).astype(int), cells - 1)
        tx, ty = gx - x0, gy - y0
        top = coarse[y0, x0] * (1 - tx) + coarse[y0, x0 + 1] * tx
        bottom = coarse[y0 + 1, x0] * (1 - tx) + coarse[y0 + 1, x0 + 1] * tx
        return (top * (1 - ty) + bottom * ty > 0.5).astype(np.float32)
    if kind == "rings":
        cx, cy = rng.uniform(-1.5, 1.5, size=2)
        frequency = rng.uniform(3.0, 7.0)
        radius = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        return (np.sin(np.pi * frequency * radius) > 0).astype(np.float32)
    if kind == "flat":
        return np.zeros_like(x, dtype=np.float32)
    raise ValueError(f"unknown texture kind {kind!r}; kinds: {list(TEXTURE_KINDS)}")


def render_texture(
    kind: str | None,
    size: int | tuple[int, int],
    rng: np.random.Generator,
    colors: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """A random two-colour texture of a given kind (``None``: a random kind), class-independent.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1].
    """
    height, width = _size_hw(size)
    kind = kind if kind is not None else str(rng.choice(TEXTURE_KINDS))
    x, y = _pixel_grid(height, width, 1)
    pattern = _pattern(kind, x, y, rng)[..., None]
    first, second = colors if colors is not None else _two_colors(rng)
    return (first * (1 - pattern) + second * pattern).astype(np.float32)


def render_class_texture(
    shape: int | str,
    size: int | tuple[int, int],
    rng: np.random.Generator,
    cells: int | None = None,
    colors: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The texture that stands for a class in the cue-conflict split: a lattice of small copies of its shape.

    Args:
        shape: class id or name.
        size: ``S`` or ``(H, W)``.
        rng: numpy generator (colours, lattice offset, small pose jitter).
        cells: copies per image side; default 5 (small enough to be texture, large enough to stay recognisable).
        colors: (background, shape) colours; random by default.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1].
    """
    height, width = _size_hw(size)
    cells = cells if cells is not None else 5
    if cells < 1:
        raise ValueError(f"cells must be >= 1, got {cells}")
    cell = max(height, width) / cells
    tile = int(math.ceil(cell))
    small = render_shape_mask(shape, tile, ShapePose(scale=0.85, angle=float(rng.uniform(-0.2, 0.2))))
    repeats_y = height // tile + 2
    repeats_x = width // tile + 2
    tiled = np.tile(small, (repeats_y, repeats_x))
    offset_y, offset_x = (int(o) for o in rng.integers(0, tile, size=2))
    pattern = tiled[offset_y : offset_y + height, offset_x : offset_x + width][..., None]
    first, second = colors if colors is not None else _two_colors(rng, min_distance=0.6)
    return (first * (1 - pattern) + second * pattern).astype(np.float32)


def compose(fill: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``fill`` inside the (soft) mask, ``background`` outside: ``(H, W, 3)`` float32."""
    if fill.shape != background.shape or fill.shape[:2] != mask.shape:
        raise ValueError(f"shapes differ: fill {fill.shape}, background {background.shape}, mask {mask.shape}")
    alpha = mask[..., None]
    return fill * alpha + background * (1 - alpha)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _texture_colors(base: np.ndarray, rng: np.random.Generator, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """A texture's two colours: ``base`` and a colour within ``contrast`` of it per channel."""
    second = np.clip(base + rng.uniform(-contrast, contrast, size=3), 0.0, 1.0).astype(np.float32)
    return base, second


def render_sample(
    label: int, size: int | tuple[int, int], rng: np.random.Generator, noise: float = 0.03, contrast: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """One training/validation image: class ``label``'s shape, random fill and background textures.

    Fill and background get different texture kinds and base colours far apart (so the silhouette is visible);
    each texture varies within ``contrast`` of its base colour. Nothing about them depends on ``label``.

    Returns:
        ``(image, mask)``: ``(H, W, 3)`` uint8 RGB and the ``(H, W)`` float32 shape mask.
    """
    pose = random_pose(rng)
    mask = render_shape_mask(label, size, pose)
    fill_kind, background_kind = rng.choice(len(TEXTURE_KINDS), size=2, replace=False)
    fill_base, background_base = _two_colors(rng, min_distance=0.9)
    fill_colors = _texture_colors(fill_base, rng, contrast)
    background_colors = _texture_colors(background_base, rng, contrast)
    fill = render_texture(TEXTURE_KINDS[fill_kind], size, rng, colors=fill_colors)
    background = render_texture(TEXTURE_KINDS[background_kind], size, rng, colors=background_colors)
    image = compose(fill, background, mask)
    if noise > 0:
        image = image + noise * rng.standard_normal(size=image.shape, dtype=np.float32)
    return _to_uint8(image), mask


def render_cue_conflict(
    shape: int, texture: int, size: int | tuple[int, int], rng: np.random.Generator, contrast: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """The shape of class ``shape`` filled with the texture of class ``texture`` (small copies of its shape).

    The background is a class-independent texture as in training; the fill's base colour is far from it.

    Returns:
        ``(image, mask)``: ``(H, W, 3)`` uint8 RGB and the ``(H, W)`` float32 mask of the large shape.
    """
    pose = random_pose(rng, min_scale=0.75, max_scale=0.95)
    mask = render_shape_mask(shape, size, pose)
    fill_base, background_base = _two_colors(rng, min_distance=0.9)
    _, element = _two_colors(rng, min_distance=0.6)
    for _ in range(100):  # small shapes clearly visible on the fill
        if np.abs(element - fill_base).sum() >= 0.6:
            break
        element = _random_color(rng)
    fill = render_class_texture(texture, size, rng, colors=(fill_base, element))
    background_kind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    background = render_texture(background_kind, size, rng, colors=_texture_colors(background_base, rng, contrast))
    return _to_uint8(compose(fill, background, mask)), mask


# ---------------------------------------------------------------------------------------------- dataset
def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng((int(seed), SPLITS[split], int(index)))


def cue_conflict_pair(index: int) -> tuple[int, int]:
    """(shape class, texture class) of cue-conflict sample ``index``: all 90 ordered pairs, cyclically."""
    pair = index % (NUM_CLASSES * (NUM_CLASSES - 1))
    shape, offset = divmod(pair, NUM_CLASSES - 1)
    texture = (shape + 1 + offset) % NUM_CLASSES
    return shape, texture


class InMemoryImages(Dataset):
    """A labelled image set held in memory: ``images`` (N, H, W, 3) uint8, ``labels`` (N,) int64, an optional
    ``transform`` on PIL images; without one an item is a float (3, H, W) tensor in [0, 1]."""

    images: torch.Tensor
    labels: torch.Tensor
    transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            from PIL import Image

            return self.transform(Image.fromarray(image.numpy())), int(self.labels[index])
        return image.permute(2, 0, 1).float().div_(255), int(self.labels[index])


class SyntheticShapes(InMemoryImages):
    """The built-in dataset as a torch ``Dataset`` of ``(image, label)``.

    Labels are balanced (sample ``i`` has class ``i % 10``). For ``cue_conflict`` the label is the SHAPE class and
    ``texture_labels[i]`` the texture class. Images are rendered once on construction (about 1 ms each) and kept
    as uint8.

    Args:
        split: ``"train"``, ``"val"`` or ``"cue_conflict"``.
        num_samples: number of images (default ``DEFAULT_SPLIT_SIZES[split]``).
        image_size: side in pixels.
        seed: the dataset seed; train, val and cue-conflict draw from disjoint streams of it.
        transform: applied to a PIL image if given; otherwise the item is a float ``(3, H, W)`` tensor in [0, 1].
    """

    classes: tuple[str, ...] = SHAPE_NAMES

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        image_size: int = 64,
        seed: int = 0,
        transform: Callable | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {list(SPLITS)}")
        num_samples = DEFAULT_SPLIT_SIZES[split] if num_samples is None else int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
        self.split, self.image_size, self.seed, self.transform = split, image_size, seed, transform
        images = np.empty((num_samples, image_size, image_size, 3), dtype=np.uint8)
        labels = np.empty(num_samples, dtype=np.int64)
        textures = np.full(num_samples, -1, dtype=np.int64)
        for index in range(num_samples):
            rng = _sample_rng(seed, split, index)
            if split == "cue_conflict":
                shape, texture = cue_conflict_pair(index)
                images[index], _ = render_cue_conflict(shape, texture, image_size, rng)
                labels[index], textures[index] = shape, texture
            else:
                labels[index] = index % NUM_CLASSES
                images[index], _ = render_sample(int(labels[index]), image_size, rng)
        self.images = torch.from_numpy(images)  # (N, H, W, 3) uint8
        self.labels = torch.from_numpy(labels)
        self.texture_labels = torch.from_numpy(textures)
        self.targets = self.labels.tolist()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as a float ``(N, 3, H, W)`` tensor in [0, 1] and the labels."""
        return self.images.permute(0, 3, 1, 2).float().div_(255).contiguous(), self.labels


def write_image_folder(
    out_dir: str | os.PathLike,
    image_size: int = 64,
    seed: int = 0,
    split_sizes: dict[str, int] | None = None,
) -> dict[str, int]:
    """Write the dataset as PNG files in the ImageFolder layout ``out_dir/<split>/<class>/<index>.png``.

    The cue-conflict split also gets ``out_dir/cue_conflict/labels.json`` mapping each file (relative path) to
    its ``shape`` and ``texture`` class names; its folders are named by shape class.

    Returns:
        the number of images written per split.
    """
    from PIL import Image

    sizes = dict(DEFAULT_SPLIT_SIZES if split_sizes is None else split_sizes)
    for split in sizes:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {list(SPLITS)}")
    root = Path(out_dir)
    written: dict[str, int] = {}
    for split, count in sizes.items():
        dataset = SyntheticShapes(split, num_samples=count, image_size=image_size, seed=seed)
        for name in SHAPE_NAMES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        manifest = {}
        for index in range(len(dataset)):
            shape = SHAPE_NAMES[int(dataset.labels[index])]
            if split == "cue_conflict":
                texture = SHAPE_NAMES[int(dataset.texture_labels[index])]
                relative = f"{shape}/{index:06d}_{shape}-{texture}.png"
                manifest[relative] = {"shape": shape, "texture": texture}
            else:
                relative = f"{shape}/{index:06d}.png"
            Image.fromarray(dataset.images[index].numpy()).save(root / split / relative)
        if manifest:
            (root / split / "labels.json").write_text(json.dumps(manifest, indent=1))
        written[split] = len(dataset)
        _logger.info("wrote %d %s images to %s", len(dataset), split, root / split)
    return written
