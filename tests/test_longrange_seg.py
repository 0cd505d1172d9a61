"""The long-range segmentation task: deterministic, one legible cue per region, exact cue distances and bound."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from replknet.data.longrange_seg import (
    CUE_COLORS,
    LONGRANGE_CLASSES,
    LongRangeSegConfig,
    LongRangeSegmentation,
    glyph,
    local_accuracy_bound,
    longrange_config,
    render_longrange,
    write_segmentation_folder,
)


def _cue_squares(image: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Top-left corners of the cue squares, found from the pixels: a size x size window whose border ring is pure
    white (region textures stay far below white: values <= 0.8 + contrast 0.15 + noise)."""
    white = (image.min(axis=-1) > 235).astype(np.int64)
    ring = np.ones((size, size), dtype=bool)
    ring[1:-1, 1:-1] = False
    corners = []
    height, width = white.shape
    for top in range(height - size + 1):
        for left in range(width - size + 1):
            if white[top : top + size, left : left + size][ring].all():
                corners.append((top, left))
    return corners


@pytest.mark.parametrize("preset", ["short", "long"])
def test_each_region_has_one_cue_naming_its_label(preset):
    config = longrange_config(preset)
    for index in range(4):
        image, label, distance = render_longrange(config, np.random.default_rng((5, index)))
        corners = _cue_squares(image, config.cue_size)
        assert len(corners) == config.num_regions
        regions_seen = set()
        for top, left in corners:
            patch = image[top : top + config.cue_size, left : left + config.cue_size].astype(np.float64) / 255
            classes = np.unique(label[top : top + config.cue_size, left : left + config.cue_size])
            assert len(classes) == 1  # the cue lies inside one region
            mark = glyph(int(classes[0]), config.cue_size)
            assert np.array_equal(patch.max(axis=-1) < 0.5, mark)  # its black glyph names the class
            inside = np.zeros_like(mark)
            inside[1:-1, 1:-1] = True
            colour = patch[inside & ~mark].mean(axis=0)  # and so does its colour
            assert np.abs(colour - np.array(CUE_COLORS[int(classes[0])])).max() < 0.1
            regions_seen.add((top, left))
            assert (distance[top : top + config.cue_size, left : left + config.cue_size] == 0).all()
        assert len(regions_seen) == config.num_regions


def test_cue_distance_is_chebyshev_to_own_cue():
    config = longrange_config("long")
    image, label, distance = render_longrange(config, np.random.default_rng(9))
    corners = _cue_squares(image, config.cue_size)
    size = config.cue_size
    yy, xx = np.mgrid[: config.image_size, : config.image_size]
    expected = np.full(label.shape, 10**6)
    for top, left in corners:
        cls = label[top, left]
        # Distance to the nearest cue of the pixel's class (two regions may share a class).
        dy = np.maximum(np.maximum(top - yy, yy - (top + size - 1)), 0)
        dx = np.maximum(np.maximum(left - xx, xx - (left + size - 1)), 0)
        candidate = np.maximum(dy, dx)
        expected = np.where(label == cls, np.minimum(expected, candidate), expected)
    # The own-region distance is at least that; where only one cue has the pixel's class, it is that.
    assert (distance >= expected).all()
    unique_classes = [c for c in np.unique(label) if sum(label[top, left] == c for top, left in corners) == 1]
    mask = np.isin(label, unique_classes)
    assert np.array_equal(distance[mask], expected[mask])


def test_local_accuracy_bound_analytic():
    distance = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert local_accuracy_bound(distance, 10, 4) == 1.0
    assert local_accuracy_bound(distance, -1, 4) == 0.25
    assert local_accuracy_bound(distance, 3, 4) == pytest.approx(0.5 + 0.5 * 0.25)


def test_deterministic_and_folder_round_trip(tmp_path):
    from replknet.seg.data import build_dataset, dataset_spec

    config = LongRangeSegConfig(image_size=32, num_regions=2, min_region_fraction=0.2)
    a = LongRangeSegmentation("train", 3, config, seed=1)
    b = LongRangeSegmentation("train", 3, config, seed=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, LongRangeSegmentation("val", 3, config, seed=1).images)
    written = write_segmentation_folder(tmp_path / "seg", config, seed=1, split_sizes={"train": 3, "val": 2})
    assert written == {"train": 3, "val": 2}
    assert json.loads((tmp_path / "seg" / "classes.json").read_text())["classes"] == list(LONGRANGE_CLASSES)
    spec = dataset_spec("folder", tmp_path / "seg")
    assert spec.num_classes == 4 and spec.class_names == LONGRANGE_CLASSES
    folder = build_dataset("folder", "train", tmp_path / "seg", train=False)
    image, target = folder[1]
    assert image.shape == (3, 32, 32) and torch.equal(target, torch.from_numpy(a.labels[1].astype(np.int64)))
    builtin = build_dataset("longrange", "val", None, train=False, seed=1, num_samples=2, image_size=32,
                            options={"num_regions": 2, "min_region_fraction": 0.2})  # fmt: skip
    assert builtin.cue_distance.shape == (2, 32, 32)


def test_errors_name_the_problem(tmp_path):
    from replknet.seg.data import dataset_spec

    with pytest.raises(ValueError, match="cue_size"):
        LongRangeSegConfig(cue_size=8).validate()
    with pytest.raises(ValueError, match="unknown long-range"):
        longrange_config("long", regions=3)
    with pytest.raises(FileNotFoundError, match="classes.json"):
        dataset_spec("folder", tmp_path)
    with pytest.raises(ValueError, match="glyph label"):
        glyph(4, 9)


def test_synth_cli_writes_a_segmentation_folder(tmp_path):
    from replknet.cli.main import main

    argv = ["data", "synth", "--task", "longrange-seg", "--preset", "short", "--output", str(tmp_path)]
    assert main([*argv, "--train-size", "3", "--val-size", "2"]) == 0
    assert len(list((tmp_path / "images" / "train").glob("*.png"))) == 3
    assert len(list((tmp_path / "annotations" / "val").glob("*.png"))) == 2
    assert json.loads((tmp_path / "task.json").read_text())["num_regions"] == 8
    assert main([*argv[:3], "shapes", "--preset", "long", "--output", str(tmp_path / "x")]) == 2  # no shapes presets
