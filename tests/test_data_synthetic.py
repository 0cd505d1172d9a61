"""The built-in synthetic shapes: determinism, analytic mask areas, class-independent textures, ImageFolder output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from replknet.data.synthetic import (
    NUM_CLASSES,
    SHAPE_NAMES,
    ShapePose,
    SyntheticShapes,
    cue_conflict_pair,
    random_pose,
    render_class_texture,
    render_sample,
    render_shape_mask,
    render_texture,
    write_image_folder,
)


def test_deterministic_and_index_stable():
    a = SyntheticShapes("train", num_samples=12, image_size=32, seed=3)
    b = SyntheticShapes("train", num_samples=20, image_size=32, seed=3)
    c = SyntheticShapes("train", num_samples=12, image_size=32, seed=4)
    assert torch.equal(a.images, b.images[:12])  # sample i does not depend on the dataset size
    assert torch.equal(a.labels, b.labels[:12])
    assert not torch.equal(a.images, c.images)
    val = SyntheticShapes("val", num_samples=12, image_size=32, seed=3)
    assert not torch.equal(a.images, val.images)  # splits draw from disjoint streams


def test_labels_balanced_and_items():
    data = SyntheticShapes("val", num_samples=30, image_size=32)
    assert torch.bincount(data.labels, minlength=NUM_CLASSES).tolist() == [3] * NUM_CLASSES
    image, label = data[7]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and label == 7
    assert len(data) == 30 and data.classes == SHAPE_NAMES


def test_shape_names_sorted_like_image_folder():
    assert list(SHAPE_NAMES) == sorted(SHAPE_NAMES) and len(SHAPE_NAMES) == 10


@pytest.mark.parametrize(
    "shape, area",
    [
        ("disk", math.pi * 0.9**2 / 4),  # radius 0.9 in a [-1, 1]^2 frame of area 4
        ("square", 0.8**2),  # half-side 0.8
        ("ring", math.pi * (0.95**2 - 0.5**2) / 4),
        ("frame", 0.85**2 - 0.45**2),
        ("cross", (2 * 0.6 * 1.8 - 0.6 * 0.6) / 4),
    ],
)
def test_mask_area_matches_geometry(shape, area):
    mask = render_shape_mask(shape, 256, ShapePose(scale=1.0), supersample=2)
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    assert mask.mean() == pytest.approx(area, rel=0.01)


def test_mask_scale_shift_and_rotation():
    small = render_shape_mask("disk", 200, ShapePose(scale=0.5))
    assert small.mean() == pytest.approx(math.pi * 0.45**2 / 4, rel=0.02)
    shifted = render_shape_mask("disk", 200, ShapePose(center_x=0.5, scale=0.5))
    assert np.allclose(np.roll(small, 50, axis=1), shifted, atol=1e-6)
    square = render_shape_mask("square", 64, ShapePose(scale=0.8))
    turned = render_shape_mask("square", 64, ShapePose(scale=0.8, angle=math.pi / 2))
    assert np.abs(square - turned).max() < 1e-5
    tilted = render_shape_mask("square", 64, ShapePose(scale=0.8, angle=math.pi / 8))
    assert np.abs(square - tilted).max() > 0.5


def test_every_shape_is_large_and_distinct():
    masks = np.stack([render_shape_mask(i, 64, ShapePose(scale=0.85)) for i in range(NUM_CLASSES)])
    for mask in masks:
        ys, xs = np.nonzero(mask > 0.5)
        extents = sorted([ys.max() - ys.min(), xs.max() - xs.min()])
        assert extents[1] >= 0.6 * 64 and extents[0] >= 0.45 * 64  # spans most of the image
    flat = masks.reshape(NUM_CLASSES, -1)
    for i in range(NUM_CLASSES):
        for j in range(i + 1, NUM_CLASSES):
            assert np.abs(flat[i] - flat[j]).mean() > 0.05, (SHAPE_NAMES[i], SHAPE_NAMES[j])


def test_textures_do_not_depend_on_the_class():
    # Same random stream, two classes: every pixel that both masks agree on is identical.
    for a, b in [(0, 5), (3, 6), (7, 9)]:
        image_a, mask_a = render_sample(a, 48, np.random.default_rng(11))
        image_b, mask_b = render_sample(b, 48, np.random.default_rng(11))
        inside = (mask_a == 1) & (mask_b == 1)
        outside = (mask_a == 0) & (mask_b == 0)
        assert inside.any() and outside.any()
        assert np.array_equal(image_a[inside], image_b[inside])
        assert np.array_equal(image_a[outside], image_b[outside])
        assert not np.array_equal(image_a, image_b)


def test_cue_conflict_split():
    pairs = {cue_conflict_pair(i) for i in range(90)}
    assert len(pairs) == 90 and all(shape != texture for shape, texture in pairs)
    data = SyntheticShapes("cue_conflict", num_samples=20, image_size=48)
    assert all(data.labels[i] != data.texture_labels[i] for i in range(20))
    # The class texture is made of small copies of that class's shape: a disk texture is rounder than a cross's.
    disk = render_class_texture("disk", 60, np.random.default_rng(0), cells=3)
    assert disk.shape == (60, 60, 3)


def test_textures_and_poses():
    rng = np.random.default_rng(0)
    for kind in ("stripes", "checks", "dots", "waves", "blobs", "rings", "flat"):
        texture = render_texture(kind, (20, 30), rng)
        assert texture.shape == (20, 30, 3) and 0 <= texture.min() and texture.max() <= 1
    pose = random_pose(rng, 0.6, 0.6)
    assert pose.scale == pytest.approx(0.6) and abs(pose.center_x) <= 0.4 + 1e-9


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown shape"):
        render_shape_mask("hexagon", 32)
    with pytest.raises(ValueError, match="shape class"):
        render_shape_mask(10, 32)
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticShapes("test")
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes("train", 4, image_size=8)
    with pytest.raises(ValueError, match="unknown texture"):
        render_texture("plaid", 8, np.random.default_rng(0))


def test_write_image_folder_and_cli(tmp_path):
    from torchvision.datasets import ImageFolder

    from replknet.cli.main import main

    assert main(["data", "synth", "--output", str(tmp_path), "--image-size", "32", "--train-size", "20",
                 "--val-size", "10", "--cue-conflict-size", "10"]) == 0  # fmt: skip
    folder = ImageFolder(str(tmp_path / "train"))
    assert folder.classes == list(SHAPE_NAMES) and len(folder) == 20
    memory = SyntheticShapes("train", num_samples=20, image_size=32)
    # The PNG files are the in-memory images, bit for bit, under the same labels.
    for path, label in folder.samples:
        index = int(path.rsplit("/", 1)[1].split(".")[0])
        assert label == int(memory.labels[index])
        assert np.array_equal(np.asarray(folder.loader(path)), memory.images[index].numpy())
    manifest = json.loads((tmp_path / "cue_conflict" / "labels.json").read_text())
    assert len(manifest) == 10 and all(v["shape"] != v["texture"] for v in manifest.values())
    assert write_image_folder(tmp_path / "x", image_size=32, split_sizes={"val": 3}) == {"val": 3}
