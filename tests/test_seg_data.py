"""Segmentation data: the synthetic set, ADE20K / Cityscapes layouts, the mmseg-style transforms, the PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from replknet.seg.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    SegmentationFolder,
    SyntheticSegmentation,
    TrainTransform,
    colorize,
    palette,
    save_prediction_png,
)


def test_synthetic_is_deterministic_and_labelled():
    first = SyntheticSegmentation("val", num_samples=6, image_size=(48, 64), seed=3)
    again = SyntheticSegmentation("val", num_samples=6, image_size=(48, 64), seed=3)
    other = SyntheticSegmentation("train", num_samples=6, image_size=(48, 64), seed=3)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.images, other.images)
    image, label = first[0]
    assert image.shape == (3, 48, 64) and label.shape == (48, 64) and label.dtype == torch.int64
    assert set(np.unique(first.labels)) <= set(range(len(first.class_names)))
    # Large shapes: on average the shapes cover a large part of the image, and the background is present.
    assert 0.15 < (first.labels > 0).mean() < 0.9
    assert first.class_names[0] == "background"
    with pytest.raises(ValueError, match="at least 32"):
        SyntheticSegmentation("train", 1, image_size=16)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_ade20k_layout_reduces_zero_label(tmp_path):
    label = np.array([[0, 1, 150, 7]] * 4, dtype=np.uint8)
    for split in ("training", "validation"):
        _write(tmp_path / "images" / split / "ADE_x_0001.jpg", np.full((4, 4, 3), 128, np.uint8))
        _write(tmp_path / "annotations" / split / "ADE_x_0001.png", label)
    dataset = SegmentationFolder(tmp_path, "ade20k", "val", transform=EvalTransform())
    _, target = dataset[0]
    assert target[0].tolist() == [255, 0, 149, 6]
    assert len(SegmentationFolder(tmp_path, "ade20k", "train")) == 1


def test_cityscapes_layout_and_missing_files(tmp_path):
    _write(
        tmp_path / "leftImg8bit" / "val" / "ulm" / "ulm_000000_000019_leftImg8bit.png", np.zeros((8, 16, 3), np.uint8)
    )
    _write(
        tmp_path / "gtFine" / "val" / "ulm" / "ulm_000000_000019_gtFine_labelTrainIds.png",
        np.full((8, 16), 13, np.uint8),
    )
    image, target = SegmentationFolder(tmp_path, "cityscapes", "val", transform=EvalTransform())[0]
    assert image.shape == (3, 8, 16) and (target == 13).all()
    _write(
        tmp_path / "leftImg8bit" / "val" / "ulm" / "ulm_000001_000019_leftImg8bit.png", np.zeros((8, 16, 3), np.uint8)
    )
    with pytest.raises(FileNotFoundError, match="labelTrainIds"):
        SegmentationFolder(tmp_path, "cityscapes", "val")
    with pytest.raises(FileNotFoundError, match="images not found"):
        SegmentationFolder(tmp_path, "cityscapes", "train")
    with pytest.raises(ValueError, match="unknown dataset layout"):
        SegmentationFolder(tmp_path, "coco")


def test_train_transform_keeps_image_and_label_aligned():
    # The image's red channel encodes the label, so any geometric mismatch shows.
    label = np.random.default_rng(0).integers(0, 5, size=(40, 60)).astype(np.uint8)
    image = np.stack([label * 50, np.zeros_like(label), np.zeros_like(label)], axis=-1).astype(np.uint8)
    transform = TrainTransform((32, 32), photometric=False)  # crop + flip: exact
    for seed in range(5):
        tensor, target = transform(Image.fromarray(image), Image.fromarray(label), np.random.default_rng(seed))
        assert tensor.shape == (3, 32, 32) and target.shape == (32, 32)
        red = tensor[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        assert torch.equal((red * 255 / 50).round(), target.float())
    # With a random rescale the image is interpolated (bilinear) and the label is not (nearest): on 10x10 blocks
    # they agree away from the block edges.
    blocks = np.kron(label[:4, :6], np.ones((10, 10), np.uint8))
    image = np.stack([blocks * 50, np.zeros_like(blocks), np.zeros_like(blocks)], axis=-1).astype(np.uint8)
    transform = TrainTransform((32, 32), scale=(120, 40), ratio_range=(0.6, 1.4), photometric=False)
    for seed in range(5):
        tensor, target = transform(Image.fromarray(image), Image.fromarray(blocks), np.random.default_rng(seed))
        red = tensor[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        valid = target != 255
        agree = ((red * 255 / 50).round()[valid] == target[valid].float()).float().mean()
        assert agree > 0.8
    # A crop larger than the image is padded: image with 0, label with the ignore index.
    tensor, target = TrainTransform((64, 80), photometric=False)(
        Image.fromarray(image), Image.fromarray(blocks), np.random.default_rng(0)
    )
    assert tensor.shape == (3, 64, 80) and (target[40:] == 255).all() and (target[:, 60:] == 255).all()
    assert (tensor[:, 40:] == 0).all()


def test_prediction_png_is_colour_coded(tmp_path):
    colors = palette(3, "synthetic")
    assert len({tuple(c) for c in colors}) == 3
    assert palette(19, "cityscapes")[0].tolist() == [128, 64, 128]  # road
    prediction = np.array([[0, 1], [2, 255]])
    rgb = colorize(prediction, colors)
    assert rgb[0, 1].tolist() == colors[1].tolist() and rgb[1, 1].tolist() == [0, 0, 0]
    path = save_prediction_png(tmp_path / "p.png", np.zeros((2, 2, 3), np.uint8), prediction, colors, prediction)
    saved = np.asarray(Image.open(path))
    assert saved.shape == (2, 2 * 3 + 2 * 4, 3)
    assert saved[1, -2].tolist() == colors[2].tolist()


def test_photometric_distortion_is_seeded_and_bounded():
    from replknet.seg.data import _photometric

    image = np.random.default_rng(0).integers(0, 256, size=(12, 10, 3)).astype(np.uint8)
    outputs = [_photometric(image, np.random.default_rng(seed)) for seed in range(12)]
    assert all(out.shape == image.shape and out.min() >= 0 and out.max() <= 255 for out in outputs)
    assert np.array_equal(outputs[3], _photometric(image, np.random.default_rng(3)))
    assert any(not np.allclose(out, image) for out in outputs)
