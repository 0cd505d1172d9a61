"""Every reader of image files goes through ``read_image``: 16-bit files predict as their 8-bit rendering, and bad
files end evaluation and prediction with one error naming them (0 or 2 DataLoader workers) or are skipped and listed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import replknet
from replknet.data.images import ImageReadError


def _write_pairs(folder: Path, write_png) -> list[tuple[Path, Path]]:
    """(8-bit file, 16-bit file of the same picture) pairs: gray I;16 PNG and 48-bit RGB PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8)
    gray = rgb[..., 1]
    Image.fromarray(rgb).save(folder / "rgb8.png")
    write_png(folder / "rgb16.png", rgb.astype(np.uint16) * 257, bit_depth=16, color_type=2)
    Image.fromarray(gray).save(folder / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
    return [(folder / "rgb8.png", folder / "rgb16.png"), (folder / "gray8.png", folder / "gray16.png")]


def _break(folder: Path) -> tuple[Path, Path]:
    """A truncated JPEG and a text file named .png in ``folder``."""
    rng = np.random.default_rng(1)
    good = folder / "whole.jpg"
    Image.fromarray(rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)).save(good, quality=90)
    truncated = folder / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    good.unlink()
    text = folder / "notes.png"
    text.write_text("not an image")
    return truncated, text


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return replknet.create_model("replknet_tiny", num_classes=10).eval()


# ---------------------------------------------------------------------------------------------- 16-bit files
def test_16_bit_files_predict_as_their_8_bit_rendering(tmp_path, tiny_model, write_png):
    from replknet.deploy import predict

    for eight, sixteen in _write_pairs(tmp_path, write_png):
        a, b = predict(tiny_model, [eight, sixteen], top_k=10, image_size=32)
        assert [(s.index, s.probability) for s in a.top] == [(s.index, s.probability) for s in b.top], sixteen.name


def test_16_bit_files_in_every_dataset(tmp_path, write_png):
    from replknet.analysis.erf import ImageFiles
    from replknet.analysis.shape_bias import CueConflictDataset, Stimulus
    from replknet.train.data import build_image_folder, eval_transform

    pairs = _write_pairs(tmp_path / "files", write_png)
    flat = [path for pair in pairs for path in pair]
    erf_items = ImageFiles(flat, size=32)
    stimuli = CueConflictDataset([Stimulus(p, "cat", "dog") for p in flat], eval_transform(32))
    for index in (0, 2):
        assert torch.equal(erf_items[index], erf_items[index + 1])
        assert torch.equal(stimuli[index][0], stimuli[index + 1][0])
    for name, path in (("a", pairs[0][0]), ("b", pairs[0][1])):  # an ImageFolder whose classes hold one file each
        (tmp_path / "folder" / "val" / name).mkdir(parents=True)
        shutil.copy(path, tmp_path / "folder" / "val" / name / "x.png")
    folder = build_image_folder(tmp_path / "folder", "val", eval_transform(32))
    assert torch.equal(folder[0][0], folder[1][0])


def test_16_bit_segmentation_images(tmp_path, write_png):
    from replknet.seg.data import EvalTransform, SegmentationFolder

    (eight, sixteen), _ = _write_pairs(tmp_path / "files", write_png)
    labels = np.random.default_rng(2).integers(0, 19, size=(40, 36), dtype=np.uint8)
    for city, source in (("a", eight), ("b", sixteen)):
        images, annotations = tmp_path / "leftImg8bit" / "val" / city, tmp_path / "gtFine" / "val" / city
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        shutil.copy(source, images / f"{city}_leftImg8bit.png")
        Image.fromarray(labels).save(annotations / f"{city}_gtFine_labelTrainIds.png")
    dataset = SegmentationFolder(tmp_path, "cityscapes", "val", transform=EvalTransform())
    (image_a, label_a), (image_b, label_b) = dataset[0], dataset[1]
    assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)
    assert torch.equal(label_a, torch.from_numpy(labels.astype(np.int64)))


# ---------------------------------------------------------------------------------------------- bad files
@pytest.fixture(scope="module")
def val_folders(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """A clean ImageFolder and a copy with two unreadable files in two classes."""
    from replknet.data.synthetic import write_image_folder

    clean = tmp_path_factory.mktemp("clean")
    write_image_folder(clean, image_size=32, split_sizes={"val": 20})
    broken = tmp_path_factory.mktemp("broken")
    shutil.copytree(clean / "val", broken / "val")
    classes = sorted(p.name for p in (broken / "val").iterdir())
    truncated, text = _break(broken / "val" / classes[1])
    shutil.move(text, broken / "val" / classes[4] / text.name)
    return clean, broken, [truncated, broken / "val" / classes[4] / text.name]


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_bad_files_stop_or_are_skipped(val_folders, tiny_model, tmp_path, workers):
    from replknet.train import evaluate_checkpoint

    clean, broken, bad = val_folders
    weights = replknet.save_state_dict(tiny_model.state_dict(), tmp_path / "model.safetensors")
    common = dict(image_size=32, batch_size=8, workers=workers, progress=False, device="cpu")
    with pytest.raises(ImageReadError) as caught:
        evaluate_checkpoint("replknet_tiny", weights, broken, **common)
    # The first unreadable file in the data's order, as one line: the same error with 0 or 2 worker processes.
    assert caught.value.path == str(bad[0]) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"cannot read image {bad[0]}: ")
    reference = evaluate_checkpoint("replknet_tiny", weights, clean, **common)
    skipped = evaluate_checkpoint("replknet_tiny", weights, broken, skip_bad_images=True, **common)
    assert [entry["path"] for entry in skipped["skipped"]] == [str(path) for path in bad]
    assert all(entry["error"] for entry in skipped["skipped"]) and reference["skipped"] == []
    for key in ("images", "top1", "top5"):
        assert skipped[key] == reference[key], key  # the readable files, as without the bad ones
    # The loss is summed over batches cut differently around the skipped files: float32 rounding apart.
    assert skipped["loss"] == pytest.approx(reference["loss"], rel=1e-6) and skipped["images"] == 20


def test_predict_bad_files_stop_or_are_skipped(tmp_path, tiny_model, write_png):
    from replknet.deploy import predict

    folder = tmp_path / "images"
    (eight, _), (gray, _) = _write_pairs(folder, write_png)
    truncated, text = _break(folder)
    with pytest.raises(ImageReadError, match=f"^cannot read image {truncated}: "):
        predict(tiny_model, [folder], top_k=2, image_size=32, batch_size=2)
    results = predict(tiny_model, [folder], top_k=2, image_size=32, batch_size=2, skip_bad_images=True)
    assert [Path(p.path).name for p in results] == ["cut.jpg", "gray16.png", "gray8.png", "notes.png", "rgb16.png",
                                                     "rgb8.png"]  # fmt: skip
    by_name = {Path(p.path).name: p for p in results}
    for name in ("cut.jpg", "notes.png"):
        assert by_name[name].top == [] and by_name[name].error
    alone = predict(tiny_model, [eight, gray], top_k=2, image_size=32)
    assert [by_name["rgb8.png"].top, by_name["gray8.png"].top] == [p.top for p in alone]
    assert all(p.error is None for p in alone)
