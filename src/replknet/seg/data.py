"""Segmentation data: a built-in synthetic dataset, ADE20K and Cityscapes layouts, mmseg-style transforms, palettes.

Transforms follow mmsegmentation's pipelines as the paper's configs use them: random rescale (ratio 0.5-2.0 of the
dataset scale, aspect kept), random crop with ``cat_max_ratio`` 0.75, horizontal flip, photometric distortion,
ImageNet normalisation and padding to the crop size (label padded with the ignore index). Randomness comes from a
generator per (seed, epoch, index), so a run can be resumed exactly.
"""

from __future__ import annotations

import colorsys
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from replknet.data.images import read_image, read_label

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetSpec",
    "DATASET_SPECS",
    "FOLDER_DATASET",
    "dataset_spec",
    "LongRangeSegDataset",
    "ImageLabelFolder",
    "TrainTransform",
    "EvalTransform",
    "SegmentationFolder",
    "SyntheticSegmentation",
    "build_dataset",
    "palette",
    "colorize",
    "save_prediction_png",
    "denormalize",
]

_logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# The official Cityscapes colours of the 19 train ids.
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# Shapes of the synthetic dataset (shape names of replknet.data.synthetic); class 0 is the background.
SYNTHETIC_SHAPES = ("disk", "square", "triangle")


@dataclass(frozen=True)
class DatasetSpec:
    """Per-dataset defaults, from the paper's mmseg configs (``segmentation/configs``)."""

    num_classes: int
    # mmseg ``img_scale``: training rescales to ratio * this (long side, short side), testing to this.
    scale: tuple[int, int] | None
    crop_size: tuple[int, int]
    align_corners: bool
    reduce_zero_label: bool = False
    class_names: tuple[str, ...] | None = None


DATASET_SPECS: dict[str, DatasetSpec] = {
    # RepLKNet-31B_1Kpretrain_upernet_160k_ade20k_512.py + mmseg ade20k.py
    "ade20k": DatasetSpec(150, (2048, 512), (512, 512), align_corners=False, reduce_zero_label=True),
    # RepLKNet-31B_1Kpretrain_upernet_80k_cityscapes_769.py + mmseg cityscapes_769x769.py
    "cityscapes": DatasetSpec(19, (2049, 1025), (769, 769), align_corners=True, class_names=CITYSCAPES_CLASSES),
    "synthetic": DatasetSpec(
        1 + len(SYNTHETIC_SHAPES), None, (96, 96), align_corners=False, class_names=("background", *SYNTHETIC_SHAPES)
    ),
    # The long-range task (replknet.data.longrange_seg): a region's class is given by a cue far from most of it.
    "longrange": DatasetSpec(4, None, (64, 64), align_corners=False, class_names=("plus", "cross", "ring", "block")),
}
# A segmentation folder as `replknet data synth --task longrange-seg` writes it: images/<split>/*.png,
# annotations/<split>/*.png (class ids, 255 ignored) and classes.json; its spec is read from the folder.
FOLDER_DATASET = "folder"


def dataset_spec(name: str, root: str | os.PathLike | None = None) -> DatasetSpec:
    """The spec of a named dataset, or of a segmentation folder (``name="folder"``, read from its classes.json)."""
    if name == FOLDER_DATASET:
        import json

        if root is None:
            raise ValueError(
                "the 'folder' dataset needs a data root (a folder with images/, annotations/, classes.json)"
            )
        path = Path(root) / "classes.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a segmentation folder lists its classes there")
        try:
            classes = tuple(json.loads(path.read_text())["classes"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f'{path}: expected {{"classes": [names...]}}, got an unreadable file ({error})') from None
        if not classes:
            raise ValueError(f"{path} lists no classes")
        return DatasetSpec(len(classes), None, (512, 512), align_corners=False, class_names=classes)
    if name not in DATASET_SPECS:
        raise ValueError(f"unknown dataset {name!r}; datasets: {sorted([*DATASET_SPECS, FOLDER_DATASET])}")
    return DATASET_SPECS[name]


# ---------------------------------------------------------------------------------------------- transforms
def _resize_keep_ratio(image: Image.Image, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest size with the aspect kept, long side <= max(scale), short <= min(scale)."""
    width, height = image.size
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion``: brightness +-32, contrast and saturation x0.5-1.5, hue +-18 (each p=0.5)."""
    image = image.astype(np.float32)
    if rng.random() < 0.5:
        image = image + rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
    if contrast_first and contrast is not None:
        image = image * contrast
    image = np.clip(image, 0, 255)
    do_saturation, do_hue = rng.random() < 0.5, rng.random() < 0.5
    if do_saturation or do_hue:
        hsv = np.asarray(Image.fromarray(image.astype(np.uint8)).convert("HSV")).astype(np.float32)
        if do_saturation:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 255)
        if do_hue:
            # NOTE: PIL's hue runs 0-255 for 360 degrees; +-18 degrees as in mmseg (OpenCV's 0-180 scale).
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-18, 18) * 256 / 360) % 256
        image = np.asarray(Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGB")).astype(np.float32)
    if not contrast_first and contrast is not None:
        image = np.clip(image * contrast, 0, 255)
    return image


def _to_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1).div_(255)
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)  # (3, H, W)


class TrainTransform:
    """Random rescale, crop (``cat_max_ratio``), flip, photometric distortion, normalise, pad.

    Args:
        crop_size: ``(H, W)`` of the training crop; ``None`` keeps the whole (rescaled) image.
        scale: mmseg ``img_scale`` (long, short) or ``None`` for no rescale.
        ratio_range: random multiplier of ``scale``.
        cat_max_ratio: re-draw a crop (up to 10 times) while one class covers more than this share of it.
        flip_prob: horizontal flip probability.
        photometric: apply the photometric distortion.
        ignore_index: label value for padding.
    """

    def __init__(
        self,
        crop_size: tuple[int, int] | None,
        scale: tuple[int, int] | None = None,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: bool = True,
        ignore_index: int = 255,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.crop_size, self.scale, self.ratio_range = crop_size, scale, ratio_range
        self.cat_max_ratio, self.flip_prob, self.photometric = cat_max_ratio, flip_prob, photometric
        self.ignore_index, self.mean, self.std = ignore_index, mean, std

    def _crop_box(self, label: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
        crop_h, crop_w = self.crop_size
        height, width = label.shape
        box = (0, 0, height, width)
        for _ in range(10):
            top = int(rng.integers(0, max(height - crop_h, 0) + 1))
            left = int(rng.integers(0, max(width - crop_w, 0) + 1))
            box = (top, left, min(top + crop_h, height), min(left + crop_w, width))
            if self.cat_max_ratio >= 1.0:
                break
            values, counts = np.unique(label[box[0] : box[2], box[1] : box[3]], return_counts=True)
            counts = counts[values != self.ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return box

    def __call__(
        self, image: Image.Image, label: Image.Image, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale is not None:
            ratio = rng.uniform(*self.ratio_range)
            size = _resize_keep_ratio(image, (int(self.scale[0] * ratio), int(self.scale[1] * ratio)))
            image = image.resize(size, Image.BILINEAR)
            label = label.resize(size, Image.NEAREST)
        image_array, label_array = np.asarray(image.convert("RGB")), np.asarray(label)
        if self.crop_size is not None:
            top, left, bottom, right = self._crop_box(label_array, rng)
            image_array, label_array = image_array[top:bottom, left:right], label_array[top:bottom, left:right]
        if rng.random() < self.flip_prob:
            image_array, label_array = image_array[:, ::-1], label_array[:, ::-1]
        image_array = _photometric(image_array, rng) if self.photometric else image_array
        tensor = _to_tensor(image_array, self.mean, self.std)
        target = torch.from_numpy(np.ascontiguousarray(label_array, dtype=np.int64))
        if self.crop_size is not None:
            pad_h, pad_w = self.crop_size[0] - tensor.shape[1], self.crop_size[1] - tensor.shape[2]
            if pad_h > 0 or pad_w > 0:
                # mmseg pads the normalised image with 0 and the label with the ignore index.
                tensor = torch.nn.functional.pad(tensor, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=0.0)
                target = torch.nn.functional.pad(target, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=self.ignore_index)
        return tensor, target


class EvalTransform:
    """Resize the image to ``scale`` (aspect kept) and normalise; the label stays at its original size."""

    def __init__(
        self, scale: tuple[int, int] | None = None, mean: Sequence[float] = IMAGENET_MEAN, std=IMAGENET_STD
    ) -> None:
        self.scale, self.mean, self.std = scale, mean, std

    def __call__(
        self, image: Image.Image, label: Image.Image, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale is not None:
            image = image.resize(_resize_keep_ratio(image, self.scale), Image.BILINEAR)
        tensor = _to_tensor(np.asarray(image.convert("RGB")), self.mean, self.std)
        return tensor, torch.from_numpy(np.asarray(label, dtype=np.int64).copy())


# ---------------------------------------------------------------------------------------------- datasets
class _SeededDataset(Dataset):
    """Items are ``(image, label)`` tensors; the transform gets a generator seeded by (seed, epoch, index)."""

    def __init__(self, transform, seed: int) -> None:
        self.transform, self.seed, self.epoch = transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _load(self, index: int) -> tuple[Image.Image, Image.Image]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self._load(index)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if self.transform is None:
            return EvalTransform()(image, label)
        return self.transform(image, label, rng)


class SegmentationFolder(_SeededDataset):
    """ADE20K (``images/``, ``annotations/``) or Cityscapes (``leftImg8bit/``, ``gtFine/``) on disk.

    Args:
        root: dataset root.
        layout: ``"ade20k"`` or ``"cityscapes"``.
        split: ``"train"`` or ``"val"``.
        transform: ``TrainTransform``/``EvalTransform`` (called with PIL image, PIL label, generator).
        reduce_zero_label: ADE20K: label 0 ("other") becomes the ignore index and the rest shift down by one.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        layout: str,
        split: str = "train",
        transform=None,
        reduce_zero_label: bool | None = None,
        ignore_index: int = 255,
        seed: int = 0,
    ) -> None:
        super().__init__(transform, seed)
        if layout not in ("ade20k", "cityscapes"):
            raise ValueError(f"unknown dataset layout {layout!r}; layouts: ade20k, cityscapes")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.root, self.layout, self.split, self.ignore_index = Path(root), layout, split, ignore_index
        self.reduce_zero_label = (
            DATASET_SPECS[layout].reduce_zero_label if reduce_zero_label is None else reduce_zero_label
        )
        self.class_names = DATASET_SPECS[layout].class_names
        if layout == "ade20k":
            sub = {"train": "training", "val": "validation"}[split]
            image_dir, label_dir = self.root / "images" / sub, self.root / "annotations" / sub
            image_suffix, label_suffix = ".jpg", ".png"
        else:
            image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
            image_suffix, label_suffix = "_leftImg8bit.png", "_gtFine_labelTrainIds.png"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{layout} images not found: {image_dir} (expected the standard {layout} layout)")
        if not label_dir.is_dir():
            raise FileNotFoundError(f"{layout} annotations not found: {label_dir}")
        images = sorted(image_dir.rglob(f"*{image_suffix}"))
        if not images:
            raise FileNotFoundError(f"no *{image_suffix} images under {image_dir}")
        self.samples: list[tuple[Path, Path]] = []
        for image_path in images:
            relative = image_path.relative_to(image_dir)
            label_path = label_dir / relative.parent / (image_path.name[: -len(image_suffix)] + label_suffix)
            if not label_path.is_file():
                hint = " (run cityscapesscripts' createTrainIdLabelImgs first)" if layout == "cityscapes" else ""
                raise FileNotFoundError(f"annotation missing for {image_path}: expected {label_path}{hint}")
            self.samples.append((image_path, label_path))
        _logger.info("%s %s: %d images under %s", layout, split, len(self.samples), self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[Image.Image, Image.Image]:
        image_path, label_path = self.samples[index]
        image = read_image(image_path)  # ImageReadError (a ValueError) names a file that cannot be read
        label = read_label(label_path)  # (H, W) uint8 class indices
        if label.shape != (image.height, image.width):
            raise ValueError(f"{label_path}: label {label.shape} and image {(image.height, image.width)} sizes differ")
        if self.reduce_zero_label:
            label = label.astype(np.int16) - 1
            label[label < 0] = self.ignore_index
            label[label == 254] = self.ignore_index
            label = label.astype(np.uint8)
        return image, Image.fromarray(label)


def render_synthetic_sample(
    size: tuple[int, int],
    rng: np.random.Generator,
    shapes: Sequence[str] = SYNTHETIC_SHAPES,
    max_shapes: int = 2,
    min_scale: float = 0.5,
    max_scale: float = 0.85,
    noise: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene: 1..``max_shapes`` large shapes, each a random flat colour, over a random texture.

    The class of a pixel is its shape (1-based; 0 = background). Colours and textures are drawn independently of
    the class: telling shape from background is local (flat against textured), but a pixel inside a large shape
    can be given its class only by seeing the shape's outline, i.e. with a receptive field as large as the shape.

    Returns:
        ``(H, W, 3)`` uint8 image and ``(H, W)`` uint8 label.
    """
    from replknet.data.synthetic import compose, random_pose, render_shape_mask, render_texture

    image = render_texture(None, size, rng)
    label = np.zeros(size, dtype=np.uint8)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        shape = int(rng.integers(len(shapes)))
        mask = render_shape_mask(shapes[shape], size, random_pose(rng, min_scale, max_scale, max_angle_deg=25.0))
        image = compose(render_texture("flat", size, rng), image, mask)
        label[mask >= 0.5] = shape + 1
    if noise > 0:
        image = image + rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), label


class SyntheticSegmentation(_SeededDataset):
    """Built-in, procedurally generated segmentation data (no download): large flat shapes on textured backgrounds.

    Sample ``i`` of a split is rendered from ``numpy.random.default_rng((seed, 100 + split_id, i))``: the data are
    identical on every machine. Images are rendered once, on construction.

    Args:
        split: ``"train"`` or ``"val"`` (disjoint random streams).
        num_samples: number of images.
        image_size: ``S`` or ``(H, W)``.
        transform: training/eval transform; default: normalise only.
        seed: dataset seed.
    """

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 256,
        image_size: int | tuple[int, int] = 96,
        transform=None,
        seed: int = 0,
        shapes: Sequence[str] = SYNTHETIC_SHAPES,
    ) -> None:
        super().__init__(transform, seed)
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if min(size) < 32:
            raise ValueError(f"image_size must be at least 32 pixels (the backbone's stride), got {image_size}")
        self.class_names = ("background", *shapes)
        split_id = {"train": 100, "val": 101}[split]
        rendered = [
            render_synthetic_sample(size, np.random.default_rng((seed, split_id, i)), shapes)
            for i in range(num_samples)
        ]
        self.images = np.stack([image for image, _ in rendered])  # (N, H, W, 3) uint8
        self.labels = np.stack([label for _, label in rendered])  # (N, H, W) uint8

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, index: int) -> tuple[Image.Image, Image.Image]:
        return Image.fromarray(self.images[index]), Image.fromarray(self.labels[index])


class LongRangeSegDataset(_SeededDataset):
    """The long-range segmentation task (``replknet.data.longrange_seg``) through the seg pipeline's transforms.

    The rendered sets are cached per process (see ``cached_longrange``), and ``cue_distance`` (N, H, W) is kept
    for the far-pixel accuracy of ``replknet study``.
    """

    def __init__(self, split: str, num_samples: int, image_size: int, transform, seed: int, options: dict) -> None:
        from replknet.data.longrange_seg import cached_longrange, longrange_config

        super().__init__(transform, seed)
        options = dict(options)
        config = longrange_config(options.pop("preset", None), **{"image_size": image_size, **options})
        data = cached_longrange(split, num_samples, config, seed)
        self.config, self.class_names = config, data.class_names
        self.images, self.labels, self.cue_distance = data.images, data.labels, data.cue_distance

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, index: int) -> tuple[Image.Image, Image.Image]:
        return Image.fromarray(self.images[index]), Image.fromarray(self.labels[index])


class ImageLabelFolder(_SeededDataset):
    """A segmentation folder: ``root/images/<split>/<name>.png`` with ``root/annotations/<split>/<name>.png``."""

    def __init__(self, root, split: str, transform, seed: int, class_names: tuple[str, ...]) -> None:
        super().__init__(transform, seed)
        image_dir, label_dir = Path(root) / "images" / split, Path(root) / "annotations" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"no {split!r} split: {image_dir} is not a directory")
        self.samples = []
        for image_path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
            label_path = label_dir / (image_path.stem + ".png")
            if not label_path.is_file():
                raise FileNotFoundError(f"annotation missing for {image_path}: expected {label_path}")
            self.samples.append((image_path, label_path))
        if not self.samples:
            raise FileNotFoundError(f"no images under {image_dir}")
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[Image.Image, Image.Image]:
        image_path, label_path = self.samples[index]
        image = Image.open(image_path).convert("RGB")
        label = np.asarray(Image.open(label_path))
        if label.ndim != 2 or label.shape != (image.height, image.width):
            raise ValueError(f"{label_path}: expected a single-channel label of the image's size {image.size[::-1]}")
        return image, Image.fromarray(label.astype(np.uint8))


def build_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    train: bool | None = None,
    seed: int = 0,
    crop_size: tuple[int, int] | None = None,
    num_samples: int | None = None,
    image_size: int = 96,
    options: dict | None = None,
) -> Dataset:
    """A dataset by name (``synthetic``, ``longrange``, ``folder``, ``ade20k``, ``cityscapes``) with the paper's
    transforms for ``split``. ``options``: the long-range task's preset and fields (``replknet.data.longrange_seg``).
    """
    spec = dataset_spec(name, root)
    train = split == "train" if train is None else train
    if options and name != "longrange":
        raise ValueError(f"dataset options apply to the longrange dataset only, not {name!r}")
    if name in ("synthetic", "longrange", FOLDER_DATASET):
        # Built-in and folder data: flips only (no rescale or photometric change of the small synthetic images).
        transform = TrainTransform(None, None, flip_prob=0.5, photometric=False) if train else EvalTransform(None)
    if name == "synthetic":
        count = num_samples if num_samples is not None else (512 if split == "train" else 64)
        return SyntheticSegmentation(split, count, image_size, transform, seed)
    if name == "longrange":
        count = num_samples if num_samples is not None else (512 if split == "train" else 64)
        return LongRangeSegDataset(split, count, image_size, transform, seed, options or {})
    if name == FOLDER_DATASET:
        return ImageLabelFolder(root, split, transform, seed, spec.class_names)
    if root is None:
        raise ValueError(f"dataset {name!r} needs --data-root (the {name} directory)")
    crop = crop_size if crop_size is not None else spec.crop_size
    transform = TrainTransform(crop, spec.scale) if train else EvalTransform(spec.scale)
    return SegmentationFolder(root, name, split, transform, seed=seed)


# ---------------------------------------------------------------------------------------------- visualisation
def palette(num_classes: int, name: str | None = None) -> np.ndarray:
    """``(num_classes, 3)`` uint8 colours: the official Cityscapes colours, else evenly spaced distinct hues.

    NOTE: for ADE20K this is not mmseg's hand-picked palette; colours are generated (golden-ratio hues).
    """
    if name == "cityscapes" and num_classes == len(CITYSCAPES_PALETTE):
        return np.array(CITYSCAPES_PALETTE, dtype=np.uint8)
    colors = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        value = 0.95 if i % 2 == 0 else 0.7
        colors.append([int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.75, value)])
    if name == "synthetic" and num_classes > 0:
        colors[0] = [40, 40, 40]  # background dark grey
    return np.array(colors, dtype=np.uint8)


def colorize(label: np.ndarray | torch.Tensor, colors: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class-id map ``(H, W)`` to an RGB image; ignored or out-of-range pixels are black."""
    label = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    out = np.zeros((*label.shape, 3), dtype=np.uint8)
    valid = (label >= 0) & (label < len(colors)) & (label != ignore_index)
    out[valid] = colors[label[valid]]
    return out


def denormalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """A normalised ``(3, H, W)`` tensor back to an ``(H, W, 3)`` uint8 image."""
    image = image.detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def save_prediction_png(
    path: str | os.PathLike,
    image: np.ndarray,
    prediction: np.ndarray | torch.Tensor,
    colors: np.ndarray,
    target: np.ndarray | torch.Tensor | None = None,
    ignore_index: int = 255,
) -> Path:
    """Save ``image | ground truth | prediction`` (colour-coded) side by side as a PNG; returns the path."""
    prediction_rgb = colorize(prediction, colors, ignore_index)
    if image.shape[:2] != prediction_rgb.shape[:2]:
        image = np.asarray(Image.fromarray(image).resize(prediction_rgb.shape[1::-1], Image.BILINEAR))
    panels = [image]
    if target is not None:
        panels.append(colorize(target, colors, ignore_index))
    panels.append(prediction_rgb)
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(path)
    return path
