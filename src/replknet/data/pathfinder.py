"""A Pathfinder-style task: are the two marked dots joined by one path?

After Linsley et al. ("Learning long-range spatial dependencies with horizontal gated recurrent units", NeurIPS
2018) and the Long Range Arena's Pathfinder (Tay et al., ICLR 2021). Every image shows ``2 + num_distractors``
curved paths of the same arc length, drawn as dashes, and two marker discs, each on the end of a path. Label 1
(``connected``): both markers sit on the two ends of one path. Label 0 (``disconnected``): they sit on ends of two
different paths.

Why it needs a large receptive field, by construction (each point is a rule of the generator, checked by tests):

- **Nothing local differs between the classes.** Every image has the same number of paths, all of the same
  length and drawn the same way; every marker sits on a path end; every path, marked or not, has its two ends at
  least ``min_distance`` apart, so no window smaller than that holds both ends of one path.
- **The marker distance says nothing.** The distance between the two markers is drawn from the same distribution
  in both classes (uniform over ``[min_distance, max_distance]`` in ``distance_bins`` bins), and so is every path's
  end-to-end distance. A unit whose receptive field is narrower than ``min_distance`` never sees both markers.
- To answer, a network has to follow a path from one marker to the other: the distance to integrate is set by
  ``min_distance``/``max_distance`` and ``path_length``, the difficulty by the dash gaps, the turns and the
  distractors.

NOTE: the original generator places "paddles" on a grid and controls clutter differently; this one is written
from the task's definition, with the two controls above added because a small network would otherwise learn the
marker distance or a curled path's nearby end instead of the connection.

Sample ``i`` of a split is rendered from ``numpy.random.default_rng((seed, 300 + split_id, i))`` and its label is
``i % 2``, so datasets are deterministic and balanced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from replknet.data.synthetic import InMemoryImages

__all__ = [
    "PATHFINDER_CLASSES",
    "PATHFINDER_PRESETS",
    "PATHFINDER_DIFFICULTY",
    "PathfinderConfig",
    "PathfinderScene",
    "pathfinder_config",
    "render_pathfinder",
    "Pathfinder",
    "cached_pathfinder",
    "write_pathfinder_folder",
]

_logger = logging.getLogger(__name__)

# Label ids follow the sorted folder names, as torchvision's ImageFolder assigns them.
PATHFINDER_CLASSES: tuple[str, ...] = ("connected", "disconnected")
_SPLIT_IDS = {"train": 300, "val": 301, "cue_conflict": 302}


@dataclass(frozen=True)
class PathfinderConfig:
    """How Pathfinder images are drawn. All lengths in pixels of the final image.

    The defaults are the built-in ``long`` setting at 64 px, difficulty 0 (see ``PATHFINDER_PRESETS`` and
    ``PATHFINDER_DIFFICULTY`` for the reasons).
    """

    image_size: int = 64
    # arc length of every path (marked or distractor); must exceed max_distance
    path_length: float = 46.0
    # the two markers are min_distance..max_distance apart; every path's two ends are too
    min_distance: float = 32.0
    max_distance: float = 44.0
    distance_bins: int = 8
    # extra unmarked paths besides the two every image has
    num_distractors: int = 0
    # each path is made of segments of this length, turning by up to max_turn radians between segments
    segment_length: float = 4.0
    max_turn: float = 0.6
    # blank length at the end of each segment (0: a solid line)
    gap_length: float = 0.0
    line_width: float = 1.5
    marker_radius: float = 2.5
    # paths keep at least this distance from each other (and from the other markers)
    clearance: float = 5.0
    noise: float = 0.0

    def validate(self) -> PathfinderConfig:
        """Check the values; raises ``ValueError`` naming the bad one."""
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {self.image_size}")
        if not 0 < self.min_distance <= self.max_distance:
            raise ValueError(f"need 0 < min_distance <= max_distance, got {self.min_distance}, {self.max_distance}")
        if self.max_distance >= self.path_length:
            raise ValueError(
                f"max_distance ({self.max_distance}) must be below path_length ({self.path_length}): a path's "
                "ends cannot be further apart than its length"
            )
        if self.max_distance > 0.8 * self.image_size:
            raise ValueError(f"max_distance {self.max_distance} does not fit a {self.image_size} px image")
        if self.segment_length <= 0 or not 0 <= self.gap_length < self.segment_length:
            raise ValueError(f"need 0 <= gap_length < segment_length, got {self.gap_length}, {self.segment_length}")
        if self.distance_bins < 1 or self.num_distractors < 0:
            raise ValueError("distance_bins must be >= 1 and num_distractors >= 0")
        if self.clearance <= self.gap_length + self.line_width:
            raise ValueError(
                f"clearance ({self.clearance}) must exceed gap_length + line_width ({self.gap_length + self.line_width}) "
                "so that separate paths stay separate when the gaps are bridged"
            )
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Named settings. The distances are the point. "short" keeps the markers 9-13 px apart (any small network sees
# both); "long" puts their centres 32-44 px apart on a 64 px image, so two marker pixels are at least
# 32 - 2 x 2.5 = 27 px apart: farther than any two pixels of a 19 x 19 window (18 sqrt 2 = 25.5 px), the receptive
# field of the local control model of docs/study.md. Its paths turn by up to 0.6 rad per 4 px (a global-view
# reference learnt them faster than the 0.9 rad ones, at the same distances; docs/study.md "Calibration").
PATHFINDER_PRESETS: dict[str, dict] = {
    "short": dict(
        image_size=64, path_length=16.0, min_distance=9.0, max_distance=13.0, segment_length=2.7, max_turn=0.9
    ),
    "long": dict(image_size=64, path_length=46.0, min_distance=32.0, max_distance=44.0, max_turn=0.6),
}


# Difficulty: how hard it is to follow a path, at the same distances. 0: solid lines, no distractor (the two
# paths every image needs); 1: dashed; 2: dashed with one distractor path; 3: two distractors.
PATHFINDER_DIFFICULTY: dict[int, dict] = {
    0: dict(gap_length=0.0, num_distractors=0),
    1: dict(gap_length=1.5, num_distractors=0),
    2: dict(gap_length=1.5, num_distractors=1),
    3: dict(gap_length=1.5, num_distractors=2),
}


def pathfinder_config(preset: str | None = None, difficulty: int | None = None, **overrides) -> PathfinderConfig:
    """A ``PathfinderConfig`` from a preset (``short``, ``long``; default ``long``), a difficulty level (0-3;
    default 0, the dataclass's) and field overrides (applied last)."""
    preset = preset or "long"
    if preset not in PATHFINDER_PRESETS:
        raise ValueError(f"unknown Pathfinder preset {preset!r}; presets: {sorted(PATHFINDER_PRESETS)}")
    if difficulty is not None and difficulty not in PATHFINDER_DIFFICULTY:
        raise ValueError(f"unknown Pathfinder difficulty {difficulty!r}; levels: {sorted(PATHFINDER_DIFFICULTY)}")
    names = {f.name for f in dataclasses.fields(PathfinderConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown Pathfinder option(s) {unknown}; options: {sorted(names)}")
    level = PATHFINDER_DIFFICULTY[difficulty] if difficulty is not None else {}
    return PathfinderConfig(**{**PATHFINDER_PRESETS[preset], **level, **overrides}).validate()


@dataclass
class PathfinderScene:
    """What the generator drew: the paths as point arrays, the markers and the label (for tests and inspection)."""

    paths: list[np.ndarray]  # each (n, 2) points (x, y) along the path, one per segment boundary
    markers: np.ndarray  # (2, 2) marker centres (x, y)
    marked_paths: tuple[int, int]  # index of the path each marker sits on
    label: int  # 0 connected, 1 disconnected (ImageFolder order of PATHFINDER_CLASSES)


# ---------------------------------------------------------------------------------------------- geometry
def _path_shapes(config: PathfinderConfig, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random path shapes starting at the origin: ``(count, segments + 1, 2)``."""
    segments = max(1, int(round(config.path_length / config.segment_length)))
    step = config.path_length / segments
    turns = rng.uniform(-config.max_turn, config.max_turn, size=(count, segments))
    turns[:, 0] = rng.uniform(0, 2 * np.pi, size=count)  # initial heading
    heading = np.cumsum(turns, axis=1)
    steps = step * np.stack([np.cos(heading), np.sin(heading)], axis=-1)
    points = np.concatenate([np.zeros((count, 1, 2)), np.cumsum(steps, axis=1)], axis=1)
    return points


def _shape_in_bin(config: PathfinderConfig, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A path shape (origin start) whose end-to-end distance lies in ``[low, high)`` (rejection sampling)."""
    for _ in range(200):
        shapes = _path_shapes(config, rng, 64)
        distance = np.linalg.norm(shapes[:, -1] - shapes[:, 0], axis=1)
        ok = np.nonzero((distance >= low) & (distance < high))[0]
        if ok.size:
            return shapes[int(ok[0])]
    raise RuntimeError(
        f"no path of length {config.path_length} with turns up to {config.max_turn} has its ends {low:.1f}-{high:.1f} "
        "px apart; lower max_turn or the distances"
    )


def _bin_edges(config: PathfinderConfig) -> np.ndarray:
    return np.linspace(config.min_distance, config.max_distance, config.distance_bins + 1)


def _random_bin(config: PathfinderConfig, rng: np.random.Generator) -> tuple[float, float]:
    edges = _bin_edges(config)
    index = int(rng.integers(config.distance_bins))
    return float(edges[index]), float(edges[index + 1])


def _dense(path: np.ndarray, spacing: float = 0.5) -> np.ndarray:
    """Points about every ``spacing`` px along a polyline of equal-length segments (for clearance checks)."""
    step = float(np.linalg.norm(path[1] - path[0]))
    count = max(1, int(math.ceil(step / spacing)))
    t = (np.arange(count) / count)[None, :, None]
    inner = path[:-1, None, :] + t * (path[1:, None, :] - path[:-1, None, :])
    return np.concatenate([inner.reshape(-1, 2), path[-1:]])


class _Occupancy:
    """Pixels near what is already drawn, for fast clearance checks (distances rounded to whole pixels)."""

    def __init__(self, size: int, scale: int = 1) -> None:
        self.scale, self.size = scale, size * scale
        self.grid = np.zeros((self.size, self.size), dtype=bool)
        self._discs: dict[float, np.ndarray] = {}

    def _disc(self, radius: float) -> np.ndarray:
        if radius not in self._discs:
            r = int(math.ceil(radius * self.scale))
            yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
            self._discs[radius] = np.stack([xx, yy], -1)[(xx**2 + yy**2) < (radius * self.scale) ** 2]
        return self._discs[radius]

    def _cells(self, points: np.ndarray) -> np.ndarray:
        return np.clip(np.round(points * self.scale).astype(int), 0, self.size - 1)

    def free_batch(self, points: np.ndarray) -> np.ndarray:
        """``(B, n, 2)`` point sets -> ``(B,)`` True where no point lies on a marked pixel."""
        cells = self._cells(points)
        return ~self.grid[cells[..., 1], cells[..., 0]].any(axis=-1)

    def add(self, points: np.ndarray, radius: float) -> None:
        cells = np.unique(self._cells(points), axis=0)
        stamped = (cells[:, None, :] + self._disc(radius)[None]).reshape(-1, 2)
        stamped = stamped[((stamped >= 0) & (stamped < self.size)).all(1)]
        self.grid[stamped[:, 1], stamped[:, 0]] = True


def _rotations(shape: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """``shape`` (n, 2) rotated by each angle: ``(len(angles), n, 2)``."""
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    x, y = shape[None, :, 0], shape[None, :, 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1)


def _fits(shape: np.ndarray, rng: np.random.Generator, config: PathfinderConfig, margin: float, count: int):
    """``count`` random rotations of ``shape``, each at a random position wholly inside the image (those that fit)."""
    rotated = _rotations(shape, rng.uniform(0, 2 * np.pi, size=count))
    low, high = rotated.min(axis=1), rotated.max(axis=1)  # (count, 2)
    room = (config.image_size - 2 * margin) - (high - low)
    ok = (room >= 0).all(axis=1)
    placed = rotated - low[:, None] + margin + (rng.uniform(0, 1, size=(count, 2)) * np.maximum(room, 0))[:, None]
    return placed[ok]


def _dense_batch(paths: np.ndarray, spacing: float = 0.5) -> np.ndarray:
    """``_dense`` of a batch of paths of the same shape: ``(B, n, 2) -> (B, m, 2)``."""
    step = float(np.linalg.norm(paths[0, 1] - paths[0, 0]))
    count = max(1, int(math.ceil(step / spacing)))
    t = (np.arange(count) / count)[None, None, :, None]
    inner = paths[:, :-1, None, :] + t * (paths[:, 1:, None, :] - paths[:, :-1, None, :])
    return np.concatenate([inner.reshape(len(paths), -1, 2), paths[:, -1:]], axis=1)


def _first_free(candidates: np.ndarray, grids: list[_Occupancy]) -> np.ndarray | None:
    """The first candidate path (B, n, 2) whose dense points avoid every grid, or None."""
    if len(candidates) == 0:
        return None
    points = _dense_batch(candidates)
    ok = np.ones(len(candidates), dtype=bool)
    for grid in grids:
        ok &= grid.free_batch(points)
    index = np.nonzero(ok)[0]
    return candidates[int(index[0])] if index.size else None


def _place_scene(
    config: PathfinderConfig, rng: np.random.Generator, connected: bool, bins: list[tuple[float, float]]
) -> PathfinderScene | None:
    """One attempt at a scene with the distance bins already drawn; None when a rule is broken (retry).

    ``bins[0]`` is the marker distance, ``bins[1:]`` each path's end-to-end distance. Connected: path 0 runs
    from marker to marker, so its end-to-end distance is the marker distance. Disconnected: path 1 ends at a
    point at the marker distance from path 0's start. Either way both distances come from the same bins.
    """
    margin = config.marker_radius + 1.0
    tries = 100  # candidate placements tested at once per path
    marker_gap = config.clearance + config.marker_radius  # a marker keeps this far from every other path
    near_paths = _Occupancy(config.image_size)  # within clearance of a placed path
    near_markers = _Occupancy(config.image_size)  # within marker_gap of a marker
    first_bin = bins[0] if connected else bins[1]
    placed = _fits(_shape_in_bin(config, rng, *first_bin), rng, config, margin, 8)
    if len(placed) == 0:
        return None
    first = placed[0]
    paths = [first]
    near_paths.add(_dense(first), config.clearance)
    if connected:
        markers, marked = np.stack([first[0], first[-1]]), (0, 0)
    else:
        # The second marker keeps marker_gap from path 0; path 1 keeps clearance from path 0 and marker_gap
        # from the first marker.
        far_from_first = _Occupancy(config.image_size)
        far_from_first.add(_dense(first), marker_gap)
        first_marker = _Occupancy(config.image_size)
        first_marker.add(first[:1], marker_gap)
        distance = rng.uniform(*bins[0], size=tries)
        angle = rng.uniform(0, 2 * np.pi, size=tries)
        targets = first[0] + distance[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
        inside = ((targets >= margin) & (targets <= config.image_size - margin)).all(axis=1)
        targets = targets[inside]
        targets = targets[far_from_first.free_batch(targets[:, None, :])]
        if len(targets) == 0:
            return None
        candidates = _rotations(_shape_in_bin(config, rng, *bins[2]), rng.uniform(0, 2 * np.pi, size=len(targets)))
        candidates = candidates - candidates[:, -1:] + targets[:, None]  # path 1 ends at the second marker
        inside = ((candidates >= margin) & (candidates <= config.image_size - margin)).all(axis=(1, 2))
        second = _first_free(candidates[inside], [near_paths, first_marker])
        if second is None:
            return None
        paths.append(second)
        near_paths.add(_dense(second), config.clearance)
        markers, marked = np.stack([first[0], second[-1]]), (0, 1)
    near_markers.add(markers, marker_gap)
    # The unmarked paths: the connected image's second path, then the distractors.
    for low_high in bins[2:] if connected else bins[3:]:
        candidate = _first_free(
            _fits(_shape_in_bin(config, rng, *low_high), rng, config, margin, tries), [near_paths, near_markers]
        )
        if candidate is None:
            return None
        paths.append(candidate)
        near_paths.add(_dense(candidate), config.clearance)
    return PathfinderScene(paths=paths, markers=markers, marked_paths=marked, label=0 if connected else 1)


def _draw(scene: PathfinderScene, config: PathfinderConfig, rng: np.random.Generator, supersample: int = 4):
    from PIL import Image, ImageDraw

    size = config.image_size * supersample
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, int(round(config.line_width * supersample)))
    for path in scene.paths:
        for a, b in zip(path[:-1], path[1:]):
            length = float(np.linalg.norm(b - a))
            keep = max(0.0, (length - config.gap_length) / length) if length > 0 else 0.0
            end = a + keep * (b - a)
            draw.line([tuple(a * supersample), tuple(end * supersample)], fill=255, width=width)
    radius = config.marker_radius * supersample
    for x, y in scene.markers * supersample:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    image = np.asarray(canvas.resize((config.image_size, config.image_size), Image.BOX), dtype=np.float32) / 255
    if config.noise > 0:
        image = np.clip(image + config.noise * rng.standard_normal(image.shape).astype(np.float32), 0, 1)
    return (image * 255 + 0.5).astype(np.uint8)


def render_pathfinder(
    label: int, config: PathfinderConfig, rng: np.random.Generator, max_tries: int = 500
) -> tuple[np.ndarray, PathfinderScene]:
    """One image of class ``label`` (0 connected, 1 disconnected).

    Returns:
        ``(image, scene)``: an ``(H, W)`` uint8 grey image (white paths on black) and what was drawn.
    """
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (connected) or 1 (disconnected), got {label}")
    # The bins are drawn once and kept through the retries, so that a placement failing more often for one class
    # or one distance does not change the distance distributions.
    bins = [_random_bin(config, rng) for _ in range(3 + config.num_distractors)]
    for _ in range(max_tries):
        scene = _place_scene(config, rng, label == 0, bins)
        if scene is not None:
            return _draw(scene, config, rng), scene
    raise RuntimeError(
        f"could not place {2 + config.num_distractors} paths of length {config.path_length} on a "
        f"{config.image_size} px image in {max_tries} tries; use fewer distractors or shorter paths"
    )


class Pathfinder(InMemoryImages):
    """The Pathfinder task as a torch ``Dataset`` of ``(image, label)``; images are rendered once, kept as uint8.

    Args:
        split: ``"train"`` or ``"val"`` (disjoint random streams).
        num_samples: number of images (label ``i % 2``: balanced).
        config: a ``PathfinderConfig`` (default: the ``long`` preset).
        seed: dataset seed.
        transform: applied to a PIL image if given; otherwise the item is a float ``(3, H, W)`` tensor in [0, 1].
    """

    classes: tuple[str, ...] = PATHFINDER_CLASSES

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 1000,
        config: PathfinderConfig | None = None,
        seed: int = 0,
        transform: Callable | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"Pathfinder splits are 'train' and 'val', got {split!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.config = (config or pathfinder_config()).validate()
        self.split, self.seed, self.transform = split, seed, transform
        size = self.config.image_size
        images = np.empty((num_samples, size, size, 3), dtype=np.uint8)
        labels = np.arange(num_samples, dtype=np.int64) % 2
        for index in range(num_samples):
            rng = np.random.default_rng((int(seed), _SPLIT_IDS[split], index))
            grey, _ = render_pathfinder(int(labels[index]), self.config, rng)
            images[index] = grey[..., None]
        self.images = torch.from_numpy(images)  # (N, H, W, 3) uint8, grey replicated
        self.labels = torch.from_numpy(labels)
        self.targets = self.labels.tolist()


_CACHE: dict[tuple, Pathfinder] = {}
_CACHE_SIZE = 4


def cached_pathfinder(split: str, num_samples: int, config: PathfinderConfig, seed: int = 0) -> Pathfinder:
    """``Pathfinder(split, num_samples, config, seed)``, kept in a small per-process cache (the last 4 sets).

    A study trains many models on the same data; rendering it once saves ~20 ms an image per run.
    """
    key = (split, int(num_samples), config, int(seed))
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = Pathfinder(split, num_samples, config, seed)
    return _CACHE[key]


def write_pathfinder_folder(
    out_dir: str | os.PathLike,
    config: PathfinderConfig | None = None,
    seed: int = 0,
    split_sizes: dict[str, int] | None = None,
) -> dict[str, int]:
    """Write the task as an ImageFolder: ``out_dir/<split>/{connected,disconnected}/<index>.png`` (grey PNGs)
    plus ``out_dir/task.json`` (the generator settings), so any ImageFolder tool trains on it.

    Returns:
        the number of images written per split.
    """
    from PIL import Image

    config = (config or pathfinder_config()).validate()
    sizes = dict(split_sizes or {"train": 8000, "val": 2000})
    root = Path(out_dir)
    written = {}
    for split, count in sizes.items():
        data = Pathfinder(split, count, config, seed)
        for name in PATHFINDER_CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for index in range(len(data)):
            name = PATHFINDER_CLASSES[int(data.labels[index])]
            Image.fromarray(data.images[index, :, :, 0].numpy()).save(root / split / name / f"{index:06d}.png")
        written[split] = len(data)
        _logger.info("wrote %d %s images to %s", len(data), split, root / split)
    (root / "task.json").write_text(json.dumps({"task": "pathfinder", "seed": seed, **config.to_dict()}, indent=1))
    return written
