"""Training and evaluation data: the built-in synthetic shapes (in memory) and ImageFolder datasets (timm transforms).

The official evaluation transform (``main.py``/``datasets.py``): below 384 px, resize the short side to
``int(size / 0.875)`` and centre-crop ``size``; at 384 px and above, resize (warp) directly to ``size x size``;
bicubic; the model's mean/std.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from replknet.data.images import ImageReadError, image_loader

__all__ = [
    "DataFileError",
    "CheckedImageFolder",
    "ReadCheckedLoader",
    "SyntheticBatches",
    "eval_transform",
    "train_transform",
    "build_image_folder",
    "train_loader",
    "eval_loader",
]

_logger = logging.getLogger(__name__)


# An unreadable data file: the library's one image error (a ``ValueError`` whose message names the file).
DataFileError = ImageReadError


def eval_transform(
    image_size: int,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    interpolation: str = "bicubic",
    crop_pct: float | None = None,
    crop_mode: str | None = None,
) -> Callable:
    """The official evaluation transform (see the module docstring), built with timm's ``create_transform``.

    ``crop_pct``/``crop_mode`` replace the official rule (a run's own preprocessing, e.g. no crop for a model
    trained on the built-in shapes).
    """
    from timm.data import create_transform

    big = image_size >= 384
    return create_transform(
        input_size=image_size,
        is_training=False,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
        crop_pct=crop_pct if crop_pct is not None else (1.0 if big else 0.875),
        crop_mode=crop_mode if crop_mode is not None else ("squash" if big else "center"),
    )


def train_transform(
    image_size: int,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    reprob: float = 0.25,
    hflip: float = 0.5,
) -> Callable:
    """timm's training transform: RandomResizedCrop (bicubic), flip, RandAugment, random erasing (pixel mode)."""
    from timm.data import create_transform

    return create_transform(
        input_size=image_size,
        is_training=True,
        auto_augment=auto_augment,
        interpolation="bicubic",
        re_prob=reprob,
        re_mode="pixel",
        re_count=1,
        hflip=hflip,
        mean=tuple(mean),
        std=tuple(std),
        color_jitter=0.4,
    )


class CheckedImageFolder(Dataset):
    """torchvision ``ImageFolder`` read with ``replknet.data.images.read_image``; a bad file raises ``ImageReadError``
    naming it (``DataFileError`` is the same class)."""

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None) -> None:
        from torchvision.datasets import ImageFolder

        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        try:
            self.folder = ImageFolder(str(root), loader=image_loader)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{root}: {error} (expected <root>/<class>/<image>)") from None
        self.transform = transform
        self.classes = self.folder.classes
        self.targets = self.folder.targets
        self.samples = self.folder.samples
        self.root = root

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, index: int):
        path, target = self.folder.samples[index]
        image = self.folder.loader(path)  # ImageReadError names an unreadable file
        if self.transform is not None:
            try:
                image = self.transform(image)
            except Exception as error:
                raise ImageReadError(path, f"the transform failed: {type(error).__name__}: {error}") from error
        return image, target


def build_image_folder(root: str | os.PathLike, split: str, transform: Callable | None) -> CheckedImageFolder:
    """``root/split`` as a checked ImageFolder; a missing split names the path it looked for."""
    path = Path(root) / split
    if not path.is_dir():
        raise FileNotFoundError(f"no {split!r} split: {path} is not a directory (expected {root}/{split}/<class>/...)")
    return CheckedImageFolder(path, transform)


class SyntheticBatches:
    """Batches from in-memory uint8 images: per-epoch shuffle (seeded), rank sharding, flip, normalisation.

    Shuffling and augmentation draw from a generator seeded by ``(seed, epoch)``, so an epoch's batches do not
    depend on anything before it: resuming at an epoch boundary reproduces them exactly.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        train: bool = True,
        hflip: float = 0.5,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.hflip, self.seed = batch_size, train, hflip, seed
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std).view(1, 3, 1, 1) * 255
        self.epoch = 0
        per_rank = len(labels) // world_size if train else len(range(rank, len(labels), world_size))
        if train and per_rank < batch_size:
            raise ValueError(f"{len(labels)} training images cannot fill one batch of {batch_size} per process")
        self.per_rank = per_rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.train:
            return self.per_rank // self.batch_size  # drop the last partial batch
        return -(-self.per_rank // self.batch_size)

    def _indices(self) -> tuple[torch.Tensor, torch.Generator]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if not self.train:
            return torch.arange(self.rank, len(self.labels), self.world_size), generator
        order = torch.randperm(len(self.labels), generator=generator)
        usable = self.per_rank * self.world_size
        return order[:usable][self.rank :: self.world_size], generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices, generator = self._indices()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            if len(batch) == 0:
                break
            x = self.images[batch].permute(0, 3, 1, 2).float()  # (N, H, W, 3) -> (N, 3, H, W)
            if self.train and self.hflip > 0:
                flip = torch.rand(len(batch), generator=generator) < self.hflip
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            x = (x - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            else:
                x = x.contiguous()
            yield x, self.labels[batch]


class _Unreadable:
    """What a worker hands back, as data, in place of a sample whose file cannot be read."""

    def __init__(self, error: ImageReadError) -> None:
        self.error = error


class _MarkUnreadable(Dataset):
    """``dataset[i]``, or an ``_Unreadable`` marker when its file cannot be read."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except ImageReadError as error:
            return _Unreadable(error)


def _collate_readable(batch: list) -> tuple[object | None, list[ImageReadError]]:
    """``(default_collate(readable samples) or None, [errors of the unreadable ones])``."""
    readable = [item for item in batch if not isinstance(item, _Unreadable)]
    errors = [item.error for item in batch if isinstance(item, _Unreadable)]
    return (default_collate(readable) if readable else None), errors


class ReadCheckedLoader:
    """A DataLoader whose unreadable files come back as data, so that the main process decides what they mean.

    Without ``skip_bad_images`` the first unreadable file raises its own ``ImageReadError`` (one line naming the
    file, the same with 0 or many worker processes, where PyTorch would re-raise a worker's error as a traceback
    text). With it, the file is left out of its batch, logged and listed in ``skipped``.
    """

    def __init__(
        self,
        dataset: Dataset,
        skip_bad_images: bool = False,
        **loader_kwargs,
    ) -> None:
        self.loader = DataLoader(_MarkUnreadable(dataset), collate_fn=_collate_readable, **loader_kwargs)
        self.skip_bad_images = skip_bad_images
        self.skipped: list[ImageReadError] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for batch, errors in self.loader:
            if errors and not self.skip_bad_images:
                raise errors[0]
            for error in errors:
                _logger.warning("skipped %s", error)
            self.skipped.extend(errors)
            if batch is not None:
                yield batch


def train_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> ReadCheckedLoader:
    """A shuffled, drop-last loader whose order is fixed by ``(seed, epoch)`` (rank-sharded when distributed)."""
    from torch.utils.data import DistributedSampler, RandomSampler

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    if len(dataset) // world_size < batch_size:
        raise ValueError(f"{len(dataset)} training images cannot fill one batch of {batch_size} per process")
    return ReadCheckedLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        generator=generator,
        persistent_workers=False,
    )


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    skip_bad_images: bool = False,
) -> ReadCheckedLoader:
    """Sequential loader over this rank's shard ``rank::world_size`` (no padding, so sums over ranks are exact).

    An unreadable file raises its ``ImageReadError``; with ``skip_bad_images`` it is left out and listed in the
    loader's ``skipped``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    shard = Subset(dataset, list(range(rank, len(dataset), world_size))) if world_size > 1 else dataset
    return ReadCheckedLoader(
        shard, skip_bad_images, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory
    )
