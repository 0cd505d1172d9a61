"""Pathfinder: deterministic, balanced, and its labels agree with a connectivity check on the pixels alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replknet.data.pathfinder import (
    PATHFINDER_CLASSES,
    Pathfinder,
    PathfinderConfig,
    cached_pathfinder,
    pathfinder_config,
    render_pathfinder,
)


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected component ids of a boolean mask (0 = background), by breadth-first search."""
    labels = np.zeros(mask.shape, dtype=np.int64)
    height, width = mask.shape
    current = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        current += 1
        labels[start] = current
        queue = [start]
        while queue:
            y, x = queue.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = current
                        queue.append((ny, nx))
    return labels


def _pixel_connectivity(image: np.ndarray) -> tuple[bool, int]:
    """From the image alone: (are the two marker blobs joined by ink with the dash gaps bridged?, markers found).

    Markers are the only ink that survives a 3x3 opening (the lines are ~1.5 px wide, the discs 5 px); the dash
    gaps (<= 1.5 px) are bridged by a 3x3 dilation, which cannot join two paths (kept >= 5 px apart).
    """
    ink = torch.from_numpy(image.astype(np.float32) / 255 > 0.4)[None, None].float()
    opened = F.max_pool2d(-F.max_pool2d(-ink, 3, 1, 1), 3, 1, 1)[0, 0].numpy() > 0.5  # erosion then dilation
    markers = _components(opened)
    bridged = F.max_pool2d(ink, 3, 1, 1)[0, 0].numpy() > 0.5
    components = _components(bridged)
    ids = [set(components[markers == m].tolist()) for m in range(1, markers.max() + 1)]
    if len(ids) != 2:
        return False, len(ids)
    return bool(ids[0] & ids[1]), 2


@pytest.mark.parametrize("preset, difficulty", [("short", 1), ("long", 0), ("long", 3)])
def test_labels_agree_with_pixel_connectivity(preset, difficulty):
    config = pathfinder_config(preset, difficulty)
    for index in range(16):
        label = index % 2
        image, scene = render_pathfinder(label, config, np.random.default_rng((7, index)))
        connected, found = _pixel_connectivity(image)
        assert found == 2, f"sample {index}: {found} marker blobs found in the pixels"
        assert connected == (label == 0), f"sample {index}: label {label} but pixel connectivity says {connected}"
        assert len(scene.paths) == 2 + config.num_distractors


def test_every_path_has_far_ends_and_markers_sit_on_ends():
    config = pathfinder_config("long", 2)
    for index in range(20):
        _, scene = render_pathfinder(index % 2, config, np.random.default_rng((3, index)))
        for path in scene.paths:
            length = np.linalg.norm(np.diff(path, axis=0), axis=1).sum()
            assert length == pytest.approx(config.path_length, rel=1e-6)
            assert config.min_distance <= np.linalg.norm(path[-1] - path[0]) <= config.max_distance
        distance = np.linalg.norm(scene.markers[0] - scene.markers[1])
        assert config.min_distance <= distance <= config.max_distance
        ends = [p[0] for p in scene.paths] + [p[-1] for p in scene.paths]
        for marker in scene.markers:
            assert min(np.linalg.norm(marker - end) for end in ends) < 1e-9


def test_marker_distance_distribution_is_the_same_in_both_classes():
    # Bins are drawn before any placement retry, so both classes get each distance bin equally often.
    config = pathfinder_config("long")
    edges = np.linspace(config.min_distance, config.max_distance, config.distance_bins + 1)
    counts = np.zeros((2, config.distance_bins))
    for index in range(240):
        label = index % 2
        _, scene = render_pathfinder(label, config, np.random.default_rng((11, index)))
        distance = np.linalg.norm(scene.markers[0] - scene.markers[1])
        counts[label, min(np.searchsorted(edges, distance, side="right") - 1, config.distance_bins - 1)] += 1
    expected = counts.sum(axis=1, keepdims=True) / config.distance_bins  # 15 per bin and class
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 2 * 30.6, counts  # 2 x (99.9% quantile of chi2 with 7 dof, 24.3) with margin
    mean = [np.mean(np.repeat((edges[:-1] + edges[1:]) / 2, counts[c].astype(int))) for c in (0, 1)]
    assert abs(mean[0] - mean[1]) < 2.0


def test_deterministic_balanced_and_index_stable():
    config = pathfinder_config("short")
    a = Pathfinder("train", 10, config, seed=1)
    b = Pathfinder("train", 14, config, seed=1)
    c = Pathfinder("train", 10, config, seed=2)
    val = Pathfinder("val", 10, config, seed=1)
    assert torch.equal(a.images, b.images[:10]) and torch.equal(a.labels, b.labels[:10])
    assert not torch.equal(a.images, c.images) and not torch.equal(a.images, val.images)
    assert a.labels.tolist() == [0, 1] * 5 and a.classes == PATHFINDER_CLASSES == tuple(sorted(PATHFINDER_CLASSES))
    image, label = a[3]
    assert image.shape == (3, 64, 64) and label == 1 and torch.equal(image[0], image[2])
    assert cached_pathfinder("train", 10, config, 1) is cached_pathfinder("train", 10, config, 1)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="max_distance"):
        PathfinderConfig(path_length=20, max_distance=30).validate()
    with pytest.raises(ValueError, match="clearance"):
        PathfinderConfig(gap_length=1.5, clearance=2.5).validate()
    with pytest.raises(ValueError, match="difficulty"):
        pathfinder_config("long", 4)
    with pytest.raises(ValueError, match="unknown Pathfinder option"):
        pathfinder_config("long", colour="red")
    with pytest.raises(ValueError, match="unknown Pathfinder preset"):
        pathfinder_config("medium")
    with pytest.raises(ValueError, match="label"):
        render_pathfinder(2, pathfinder_config(), np.random.default_rng(0))


def test_synth_cli_writes_an_image_folder(tmp_path):
    from torchvision.datasets import ImageFolder

    from replknet.cli.main import main

    argv = ["data", "synth", "--task", "pathfinder", "--preset", "short", "--output", str(tmp_path)]
    assert main([*argv, "--train-size", "6", "--val-size", "4"]) == 0
    folder = ImageFolder(str(tmp_path / "train"))
    assert folder.classes == list(PATHFINDER_CLASSES) and len(folder) == 6
    memory = Pathfinder("train", 6, pathfinder_config("short"))
    for path, label in folder.samples:  # the PNGs are the in-memory images, under the same labels
        index = int(path.rsplit("/", 1)[1].split(".")[0])
        assert label == int(memory.labels[index])
        assert np.array_equal(np.asarray(folder.loader(path))[..., 0], memory.images[index, :, :, 0].numpy())
    assert len(ImageFolder(str(tmp_path / "val"))) == 4 and (tmp_path / "task.json").is_file()
