"""Training and evaluation loops for RepLKNet-UperNet: iteration-based, as mmseg's ``IterBasedRunner``.

The paper's recipe (``segmentation/configs``): AdamW (betas 0.9/0.999, weight decay 0.05, none on norm layers),
poly learning-rate decay (power 1, to 0) after a linear warm-up (ratio 1e-6, 400 iterations for 31B), cross-entropy
on the decode head plus 0.4 times that of the auxiliary head. Runs single-process or under ``torchrun`` (DDP,
gloo on CPU, NCCL on GPU), with optional AMP; checkpoints are written atomically and hold only what
``torch.load(weights_only=True)`` reads back, so training resumes exactly from the last one.

It stands on the classification engine's parts (``replknet.train``): the distributed set-up, the non-finite-loss
stop taken by every process at once, every process's RNG state in the checkpoint, the ``metrics.jsonl`` writer,
the atomic writer and the configuration base (``replknet.config.RunConfig``).

The run folder (``output``) holds ``config.json`` (the segmentor, its classes and preprocessing, the run's settings:
what ``seg-eval --checkpoint RUN`` reads, ``replknet.runs``), ``last.pth`` (the training state), ``metrics.jsonl``
(the loss every ``log_every`` iterations and each evaluation) and, once the last iteration is done,
``model.safetensors`` (the trained segmentor) and ``metrics.json`` (the history and the final metrics), which marks
a finished run: a new run there is refused unless ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from replknet.checkpoint import atomic_torch_save, atomic_write_text, save_state_dict
from replknet.config import RunConfig
from replknet.outputs import check_output_dir
from replknet.runs import SEGMENTOR_ARCHITECTURE, segmentation_run_config, write_run_config
from replknet.runtime import resolve_memory_format
from replknet.seg.data import build_dataset, dataset_spec, denormalize, palette, save_prediction_png
from replknet.seg.inference import PAPER_MS_RATIOS, aug_inference, inference
from replknet.seg.metrics import ConfusionMatrix
from replknet.seg.model import RepLKNetUperNet, SegmentorConfig
from replknet.train.distributed import DistributedState, barrier, cleanup_distributed, init_distributed
from replknet.train.guards import NonFiniteLossError, stop_if_not_finite
from replknet.train.log import METRICS_NAME, MetricsLog
from replknet.train.state import gather_rng_states, restore_rng_states

__all__ = [
    "CHECKPOINT_NAME",
    "SUMMARY_NAME",
    "TrainConfig",
    "EvalConfig",
    "poly_lr",
    "build_optimizer",
    "train",
    "evaluate",
    "is_finished_run",
    "load_segmentor",
]

_logger = logging.getLogger(__name__)


CHECKPOINT_NAME = "last.pth"  # the latest training state
SUMMARY_NAME = "metrics.json"  # written when the last iteration is done: it marks a finished run
WEIGHTS_NAME = "model.safetensors"  # the trained segmentor, beside config.json (replknet.runs)
PREDICTIONS_DIR = "predictions"


def is_finished_run(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a seg-train run that completed all its iterations (its ``metrics.json``)."""
    return (Path(folder) / SUMMARY_NAME).is_file()


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Options of ``replknet seg-train``; ``None`` fields take the dataset's default (``DATASET_DEFAULTS``).

    The bookkeeping (``output``, ``overwrite``, ``seed``, ``device``, ``log_every``, ``eval_every``, ``save_every``)
    and ``replace``/``validate``/``to_dict``/``from_dict`` come from ``replknet.config.RunConfig``; here the
    intervals count iterations.
    """

    kind: ClassVar[str] = "segmentation training"

    dataset: str = "synthetic"
    data_root: str | None = None
    dataset_options: dict = dataclasses.field(default_factory=dict)  # longrange: its preset and fields
    backbone: str | None = None
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)  # constructor options on top of the backbone's
    backbone_checkpoint: str | None = None
    # UPerHead / FCNHead widths: the paper's 512 / 256 for real backbones, 64 / 32 for the CPU demo.
    channels: int | None = None
    aux_channels: int | None = None
    drop_path_rate: float | None = None
    norm_intermediate_features: bool = False
    iterations: int | None = None
    batch_size: int | None = None  # per process
    lr: float | None = None
    weight_decay: float = 0.05
    warmup_iters: int | None = None
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0
    crop_size: int | None = None
    eval_every: int | None = None  # iterations between evaluations (the last iteration is always evaluated)
    eval_mode: str = "whole"
    eval_crop: int | None = None
    eval_stride: int | None = None
    save_every: int | None = None  # iterations between checkpoints (the last iteration always)
    output: str = "runs/seg"
    # A checkpoint (or a run folder holding last.pth), or "auto": output/last.pth when it holds an unfinished run.
    resume: str | None = None
    stop_after: int | None = None  # end this run after so many iterations (checkpoint written), e.g. a time-limited job
    amp: bool = False
    # "auto": channels_last on a CPU (oneDNN's convolutions are channels-last natively), contiguous elsewhere
    memory_format: str = "auto"
    num_workers: int = 0
    image_size: int = 96  # synthetic only
    train_samples: int | None = None  # synthetic only
    val_samples: int | None = None  # synthetic only
    eval_at_start: bool = False
    save_png: int = 4
    progress: bool = True
    use_checkpoint: bool = False


# Per-dataset defaults. ADE20K/Cityscapes: the paper's 31B-1K configs (2 images per GPU on 64 / 32 GPUs; scale the
# iterations up for fewer GPUs, as the official configs' comments say). Synthetic: the CPU demo, a few minutes on
# 2 cores; its learning rate is higher than the paper's because the tiny model trains from scratch in 200 steps.
DATASET_DEFAULTS: dict[str, dict] = {
    "synthetic": dict(
        backbone="replknet_tiny",
        channels=64,
        aux_channels=32,
        drop_path_rate=0.0,
        iterations=200,
        batch_size=8,
        lr=2e-3,
        warmup_iters=20,
        eval_every=100,
        save_every=100,
        train_samples=512,
        val_samples=64,
    ),
    # The long-range task (replknet.data.longrange_seg) and segmentation folders: the synthetic demo's settings.
    "longrange": dict(
        backbone="replknet_tiny",
        channels=64,
        aux_channels=32,
        drop_path_rate=0.0,
        iterations=200,
        batch_size=8,
        lr=2e-3,
        warmup_iters=20,
        eval_every=100,
        save_every=100,
        train_samples=512,
        val_samples=64,
    ),
    "folder": dict(
        backbone="replknet_tiny",
        channels=64,
        aux_channels=32,
        drop_path_rate=0.0,
        iterations=200,
        batch_size=8,
        lr=2e-3,
        warmup_iters=20,
        eval_every=100,
        save_every=100,
    ),
    "ade20k": dict(
        backbone="replknet_31b",
        channels=512,
        aux_channels=256,
        drop_path_rate=0.5,
        iterations=40000,
        batch_size=2,
        lr=2e-4,
        warmup_iters=400,
        eval_every=2000,
        save_every=2000,
    ),
    "cityscapes": dict(
        backbone="replknet_31b",
        channels=512,
        aux_channels=256,
        drop_path_rate=0.5,
        iterations=20000,
        batch_size=2,
        lr=2e-4,
        warmup_iters=400,
        eval_every=2000,
        save_every=2000,
    ),
}


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill ``None`` fields from the dataset's defaults and check the values."""
    if config.dataset not in DATASET_DEFAULTS:
        raise ValueError(f"unknown dataset {config.dataset!r}; datasets: {sorted(DATASET_DEFAULTS)}")
    defaults = {key: value for key, value in DATASET_DEFAULTS[config.dataset].items() if getattr(config, key) is None}
    resolved = config.replace(**defaults).validate()
    for key in ("iterations", "batch_size", "channels"):
        if getattr(resolved, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(resolved, key)}")
    if resolved.lr <= 0:
        raise ValueError(f"lr must be positive, got {resolved.lr}")
    if resolved.eval_mode not in ("whole", "slide"):
        raise ValueError(f"eval_mode must be 'whole' or 'slide', got {resolved.eval_mode!r}")
    resolve_memory_format(resolved.memory_format)  # an unknown name fails here, before any work
    return resolved


# ---------------------------------------------------------------------------------------------- optimisation
def poly_lr(
    iteration: int,
    base_lr: float,
    max_iters: int,
    power: float = 1.0,
    min_lr: float = 0.0,
    warmup_iters: int = 0,
    warmup_ratio: float = 1e-6,
) -> float:
    """mmcv's ``PolyLrUpdaterHook`` with linear warm-up, at 0-based ``iteration``.

    ``lr = (base - min) * (1 - it / max_iters) ** power + min``; during warm-up it is multiplied by
    ``1 - (1 - it / warmup_iters) * (1 - warmup_ratio)``.
    """
    progress = min(iteration, max_iters) / max_iters
    lr = (base_lr - min_lr) * (1 - progress) ** power + min_lr
    if iteration < warmup_iters:
        lr *= 1 - (1 - iteration / warmup_iters) * (1 - warmup_ratio)
    return lr


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05) -> torch.optim.AdamW:
    """AdamW with no weight decay on normalisation layers (mmcv ``paramwise_cfg=dict(norm_decay_mult=0)``)."""
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            (no_decay if isinstance(module, norm_types) else decay).append(parameter)
    groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)


# ---------------------------------------------------------------------------------------------- data order
class ResumableSampler(Sampler[int]):
    """Shuffled indices per epoch (seeded by seed + epoch), split over ranks, starting at a given batch.

    Resuming at iteration ``i`` replays exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        self.per_rank = size // world_size
        if self.per_rank < batch_size:
            raise ValueError(
                f"dataset of {size} images is too small for batch size {batch_size} on {world_size} process(es)"
            )
        self.batches_per_epoch = self.per_rank // batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        mine = order[self.rank : self.per_rank * self.world_size : self.world_size]
        return mine[: self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


class _LossModule(nn.Module):
    """Puts the segmentor's own ``loss`` inside ``forward`` (what DDP synchronises)."""

    def __init__(self, segmentor: RepLKNetUperNet, ignore_index: int) -> None:
        super().__init__()
        self.segmentor, self.ignore_index = segmentor, ignore_index

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self.segmentor.loss(images, targets, self.ignore_index)


# ---------------------------------------------------------------------------------------------- checkpoints
def load_segmentor(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> RepLKNetUperNet:
    """Rebuild a segmentor from a ``seg-train`` checkpoint (its embedded config) and load its weights."""
    from replknet.checkpoint import CheckpointError, read_checkpoint

    checkpoint = read_checkpoint(path)
    if "segmentor" not in checkpoint or "model" not in checkpoint:
        raise CheckpointError(f"{path} is not a seg-train checkpoint (needs 'segmentor' and 'model' entries)")
    config = SegmentorConfig.from_dict(checkpoint["segmentor"])
    model = RepLKNetUperNet(config)
    model.load_state_dict(checkpoint["model"])
    return model.to(map_location)


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalConfig:
    """How to run the test: ``mode`` whole/slide, optional multi-scale + flip (the paper's "ms")."""

    mode: str = "whole"
    crop_size: int | None = None
    stride: int | None = None
    multi_scale: bool = False
    ratios: tuple[float, ...] = PAPER_MS_RATIOS
    flip: bool = True
    batch_size: int = 1
    amp: bool = False


@torch.no_grad()
def evaluate(
    model: RepLKNetUperNet,
    dataset: Dataset,
    eval_config: EvalConfig | None = None,
    device: torch.device | str = "cpu",
    class_names: list[str] | None = None,
    png_dir: str | os.PathLike | None = None,
    num_png: int = 0,
    colors=None,
    ignore_index: int = 255,
    progress: bool = False,
) -> dict:
    """mIoU, per-class IoU and accuracies of ``model`` on ``dataset`` (sharded over ranks under DDP).

    Returns:
        ``segmentation_metrics`` of the whole dataset (confusion matrices summed over processes).
    """
    from tqdm import tqdm

    eval_config = eval_config or EvalConfig()
    device = torch.device(device)
    num_classes = model.num_classes
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    indices = list(range(rank, len(dataset), world_size))
    subset = torch.utils.data.Subset(dataset, indices)
    loader = DataLoader(subset, batch_size=eval_config.batch_size, shuffle=False, num_workers=0)
    crop = (eval_config.crop_size,) * 2 if eval_config.crop_size else None
    stride = (eval_config.stride,) * 2 if eval_config.stride else None
    align_corners = model.config.align_corners
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    saved = 0
    autocast_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    for images, targets in tqdm(loader, desc="eval", disable=not (progress and rank == 0), leave=False):
        images = images.to(device)
        out_size = tuple(targets.shape[-2:])
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=eval_config.amp):
            if eval_config.multi_scale:
                probs = aug_inference(
                    model, images, eval_config.ratios, eval_config.flip, eval_config.mode, num_classes, crop, stride,
                    out_size, align_corners,
                )  # fmt: skip
            else:
                probs = inference(model, images, eval_config.mode, num_classes, crop, stride, out_size, align_corners)
        prediction = probs.argmax(dim=1).cpu()
        matrix.update(prediction, targets)
        if png_dir is not None and rank == 0 and saved < num_png:
            for i in range(min(len(images), num_png - saved)):
                save_prediction_png(
                    Path(png_dir) / f"pred_{saved:03d}.png", denormalize(images[i]), prediction[i], colors,
                    targets[i], ignore_index,
                )  # fmt: skip
                saved += 1
    matrix.all_reduce()
    model.train(was_training)
    return matrix.compute(class_names)


# ---------------------------------------------------------------------------------------------- training
def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _log_metrics(metrics: dict, iteration: int) -> None:
    _logger.info(
        "iter %d: mIoU %.2f  mAcc %.2f  aAcc %.2f",
        iteration,
        100 * metrics["mIoU"],
        100 * metrics["mAcc"],
        100 * metrics["aAcc"],
    )


def _resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint to resume from; refuses to start afresh over an unfinished run unless ``overwrite``."""
    out_dir = Path(config.output)
    last = out_dir / CHECKPOINT_NAME
    if config.resume == "auto":
        # A finished run (allowed here only with overwrite) starts over; an unfinished one continues.
        return last if last.is_file() and not is_finished_run(out_dir) else None
    if config.resume is not None:
        path = Path(config.resume)
        return path / CHECKPOINT_NAME if path.is_dir() else path
    if last.is_file() and not is_finished_run(out_dir) and not config.overwrite:
        raise FileExistsError(
            f"output folder {out_dir} holds an unfinished run ({last}); continue it with resume='auto' "
            "(--resume auto) or start it over with overwrite"
        )
    return None


def train(config: TrainConfig) -> dict:
    """Train a RepLKNet-UperNet as configured; returns ``{"history": [...], "final": metrics, ...}``.

    Writes ``output/last.pth`` (resumable), ``output/metrics.jsonl`` (loss and evaluations as they come),
    ``output/metrics.json`` (when the last iteration is done) and colour-coded predictions under
    ``output/predictions/``. The folder is checked before any work (a file in its place, a finished run, or an
    unfinished one that is not resumed, are refused unless ``overwrite``) and created only once the model and the
    checkpoint to resume are loaded, so a refused run leaves nothing behind.

    Raises:
        NonFiniteLossError: the loss became NaN/inf on any process (every process raises it); the last checkpoint
            is left as it was.
        NotADirectoryError, FileExistsError, PermissionError: ``output`` cannot take the run.
    """
    config = resolve_config(config)
    check_output_dir(config.output, overwrite=config.overwrite, finished=is_finished_run, what="output folder")
    resume = _resume_path(config)
    dist_state = init_distributed(config.device)
    try:
        return _train(config, resume, dist_state)
    finally:
        if dist_state.owned:
            cleanup_distributed()


def _train(config: TrainConfig, resume: Path | None, env: DistributedState) -> dict:
    from tqdm import tqdm

    from replknet.checkpoint import read_checkpoint

    device = env.device
    torch.manual_seed(config.seed + env.rank)
    out_dir = Path(config.output)
    spec = dataset_spec(config.dataset, config.data_root)

    crop = (config.crop_size,) * 2 if config.crop_size else None
    train_set = build_dataset(
        config.dataset, "train", config.data_root, seed=config.seed, crop_size=crop,
        num_samples=config.train_samples, image_size=config.image_size, options=config.dataset_options,
    )  # fmt: skip
    val_set = build_dataset(
        config.dataset, "val", config.data_root, seed=config.seed, num_samples=config.val_samples,
        image_size=config.image_size, options=config.dataset_options,
    )  # fmt: skip
    class_names = list(getattr(train_set, "class_names", None) or [str(i) for i in range(spec.num_classes)])
    sampler = ResumableSampler(len(train_set), config.batch_size, config.seed, env.rank, env.world_size)
    # Its own generator: creating an iterator each epoch must not draw from the global RNG (dropout's), or a
    # resumed run would see a different dropout stream.
    loader = DataLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers, drop_last=True,
        generator=torch.Generator().manual_seed(config.seed),
    )  # fmt: skip

    segmentor_config = SegmentorConfig(
        backbone=config.backbone,
        backbone_kwargs=dict(config.backbone_kwargs),
        num_classes=spec.num_classes,
        channels=config.channels,
        aux_channels=config.aux_channels,
        drop_path_rate=config.drop_path_rate,
        norm_intermediate_features=config.norm_intermediate_features,
        use_checkpoint=config.use_checkpoint,
        align_corners=spec.align_corners,
    )
    model = RepLKNetUperNet(segmentor_config)
    if config.backbone_checkpoint:
        model.load_backbone(config.backbone_checkpoint)
    model.to(device)
    channels_last = resolve_memory_format(config.memory_format, device) == "channels_last"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    use_scaler = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    autocast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    start_iteration, history = 0, []
    if resume is not None:
        state = read_checkpoint(resume)
        missing = [key for key in ("segmentor", "model", "optimizer", "iteration") if key not in state]
        if missing:
            raise ValueError(f"cannot resume {resume}: not a seg-train checkpoint (no {', '.join(missing)})")
        saved = SegmentorConfig.from_dict(state["segmentor"])
        if saved != segmentor_config:
            diff = {k: (v, getattr(segmentor_config, k)) for k, v in saved.to_dict().items()
                    if v != getattr(segmentor_config, k)}  # fmt: skip
            raise ValueError(f"cannot resume {resume}: model settings differ (checkpoint vs now): {diff}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if use_scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_iteration, history = int(state["iteration"]), list(state.get("history", []))
        if "rng" not in state or not restore_rng_states(state["rng"], env.rank, env.world_size):
            torch.manual_seed(config.seed + env.rank + 7919 * start_iteration)  # a fresh stream, not a repeated one
        _logger.info("resumed from %s at iteration %d", resume, start_iteration)
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)  # checked before any work (train)
        if resume is None:
            for name in (CHECKPOINT_NAME, SUMMARY_NAME, METRICS_NAME, WEIGHTS_NAME):  # nothing of an earlier run stays
                (out_dir / name).unlink(missing_ok=True)
            for old in (out_dir / PREDICTIONS_DIR).glob("pred_*.png"):
                old.unlink()
    log = MetricsLog(out_dir, env.is_main, resume_step=None if resume is None else start_iteration)

    module = _LossModule(model, ignore_index=255)
    if env.world_size > 1:
        if device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            model = module.segmentor
        ddp_kwargs = dict(device_ids=[device.index]) if device.type == "cuda" else {}
        module = nn.parallel.DistributedDataParallel(module, **ddp_kwargs)

    eval_config = EvalConfig(
        mode=config.eval_mode, crop_size=config.eval_crop, stride=config.eval_stride,
        batch_size=config.batch_size if config.dataset == "synthetic" else 1,
    )  # fmt: skip
    colors = palette(spec.num_classes, config.dataset)

    saved_at = [start_iteration if resume is not None else None]  # the iteration of the last checkpoint

    def _save(iteration: int) -> None:
        rng = gather_rng_states()  # on every process: each one's streams go into the checkpoint
        saved_at[0] = iteration
        if not env.is_main:
            return
        state = dict(
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict() if use_scaler else {},
            iteration=iteration,
            segmentor=segmentor_config.to_dict(),
            train_config=config.to_dict(),
            history=history,
            rng=rng,
        )
        atomic_torch_save(state, out_dir / CHECKPOINT_NAME)

    def _evaluate(iteration: int, last: bool) -> dict:
        metrics = evaluate(
            model, val_set, eval_config, device, class_names,
            png_dir=out_dir / PREDICTIONS_DIR if last else None, num_png=config.save_png if last else 0,
            colors=colors, progress=config.progress,
        )  # fmt: skip
        row = dict(iteration=iteration, mIoU=metrics["mIoU"], mAcc=metrics["mAcc"], aAcc=metrics["aAcc"])
        history.append(row)
        log.write({"kind": "eval", "step": iteration, **{k: v for k, v in row.items() if k != "iteration"}}, iteration)
        if env.is_main:
            _log_metrics(metrics, iteration)
        return metrics

    if env.is_main:
        run_config = segmentation_run_config(segmentor_config.to_dict(), class_names, config.to_dict())
        write_run_config(out_dir, run_config)  # what seg-eval --checkpoint reads

    if config.eval_at_start and start_iteration == 0:
        _evaluate(0, last=False)

    iteration, interrupted, metrics = start_iteration, False, None
    epoch, skip = divmod(iteration, sampler.batches_per_epoch)
    bar = tqdm(
        total=config.iterations, initial=iteration, desc="seg-train", disable=not (config.progress and env.is_main)
    )
    started = time.perf_counter()
    module.train()
    try:
        while iteration < config.iterations and not interrupted:
            sampler.set_epoch(epoch, start_batch=skip)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            for images, targets in loader:
                lr = poly_lr(
                    iteration, config.lr, config.iterations, config.power, config.min_lr, config.warmup_iters,
                    config.warmup_ratio,
                )  # fmt: skip
                _set_lr(optimizer, lr)
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=config.amp):
                    loss, parts = module(images, targets)
                stop_if_not_finite(loss, device, f"at iteration {iteration + 1} (lr {lr:.3g})")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                iteration += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
                if iteration % config.log_every == 0:
                    log.write({"kind": "step", "step": iteration, "loss": loss.item(), **parts, "lr": lr}, iteration)
                last = iteration == config.iterations
                interrupted = (
                    not last and config.stop_after is not None and iteration - start_iteration >= config.stop_after
                )
                if interrupted:
                    _save(iteration)
                    _logger.info("stopping at iteration %d (stop_after=%d); resume with resume='auto'", iteration,
                                 config.stop_after)  # fmt: skip
                    break
                if iteration % config.eval_every == 0 or last:
                    metrics = _evaluate(iteration, last)
                    module.train()
                if iteration % config.save_every == 0 or last:
                    _save(iteration)
                if last:
                    break
            epoch, skip = epoch + 1, 0
    except NonFiniteLossError as error:
        checkpoint = out_dir / CHECKPOINT_NAME
        kept = f"{checkpoint} (iteration {saved_at[0]})" if saved_at[0] is not None else "none was written yet"
        raise NonFiniteLossError(f"{error}; lower the learning rate; the last good checkpoint is {kept}") from None
    finally:
        bar.close()
        log.close()
    elapsed = time.perf_counter() - started
    result = dict(
        history=history, final=metrics, seconds=elapsed, iterations=config.iterations, config=config.to_dict()
    )
    if env.is_main and iteration == config.iterations:
        # The trained weights beside config.json (seg-eval --checkpoint RUN), then the marker of a finished run.
        metadata = {"architecture": SEGMENTOR_ARCHITECTURE, "backbone": str(config.backbone)}
        save_state_dict(model.state_dict(), out_dir / WEIGHTS_NAME, metadata)
        atomic_write_text(out_dir / SUMMARY_NAME, json.dumps(result, indent=1, default=_json_default))
    barrier()
    return result


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
