"""Training and evaluation loops for RepLKNet-UperNet: iteration-based, as mmseg's ``IterBasedRunner``.

The paper's recipe (``segmentation/configs``): AdamW (betas 0.9/0.999, weight decay 0.05, none on norm layers),
poly learning-rate decay (power 1, to 0) after a linear warm-up (ratio 1e-6, 400 iterations for 31B), cross-entropy
on the decode head plus 0.4 times that of the auxiliary head. Runs single-process or under ``torchrun`` (DDP,
gloo on CPU, NCCL on GPU), with optional AMP; checkpoints are written atomically and hold only what
``torch.load(weights_only=True)`` reads back, so training resumes exactly from the last one.
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

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from replknet.seg.data import DATASET_SPECS, build_dataset, denormalize, palette, save_prediction_png
from replknet.seg.inference import PAPER_MS_RATIOS, aug_inference, inference
from replknet.seg.metrics import ConfusionMatrix
from replknet.seg.model import RepLKNetUperNet, SegmentorConfig

__all__ = [
    "TrainConfig",
    "EvalConfig",
    "poly_lr",
    "build_optimizer",
    "train",
    "evaluate",
    "save_training_checkpoint",
    "load_segmentor",
]

_logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Options of ``replknet seg-train``; ``None`` fields take the dataset's default (``dataset_defaults``)."""

    dataset: str = "synthetic"
    data_root: str | None = None
    backbone: str | None = None
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
    eval_interval: int | None = None
    eval_mode: str = "whole"
    eval_crop: int | None = None
    eval_stride: int | None = None
    checkpoint_interval: int | None = None
    output_dir: str = "runs/seg"
    resume: str | None = None  # a checkpoint path, or "auto" for output_dir/last.pth when it exists
    stop_after: int | None = None  # end this run after so many iterations (checkpoint written), e.g. a time-limited job
    amp: bool = False
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
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
        eval_interval=100,
        checkpoint_interval=100,
        train_samples=512,
        val_samples=64,
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
        eval_interval=2000,
        checkpoint_interval=2000,
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
        eval_interval=2000,
        checkpoint_interval=2000,
    ),
}


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill ``None`` fields from the dataset's defaults and check the values."""
    if config.dataset not in DATASET_DEFAULTS:
        raise ValueError(f"unknown dataset {config.dataset!r}; datasets: {sorted(DATASET_DEFAULTS)}")
    values = dataclasses.asdict(config)
    for key, default in DATASET_DEFAULTS[config.dataset].items():
        if values.get(key) is None:
            values[key] = default
    resolved = TrainConfig(**values)
    for key in ("iterations", "batch_size", "channels"):
        if getattr(resolved, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(resolved, key)}")
    if resolved.lr <= 0:
        raise ValueError(f"lr must be positive, got {resolved.lr}")
    if resolved.eval_mode not in ("whole", "slide"):
        raise ValueError(f"eval_mode must be 'whole' or 'slide', got {resolved.eval_mode!r}")
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


# ---------------------------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owned: bool = False  # this module created the process group (and destroys it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device) -> _Dist:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return _Dist()
    owned = not dist.is_initialized()
    if owned:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), owned)


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)


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
    """Wraps the segmentor so that the loss is computed inside ``forward`` (what DDP synchronises)."""

    def __init__(self, segmentor: RepLKNetUperNet, ignore_index: int) -> None:
        super().__init__()
        self.segmentor, self.ignore_index = segmentor, ignore_index

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, aux = self.segmentor.forward_train(images)
        loss_main = nn.functional.cross_entropy(main.float(), targets, ignore_index=self.ignore_index)
        total = loss_main
        if aux is not None:
            aux_loss = nn.functional.cross_entropy(aux.float(), targets, ignore_index=self.ignore_index)
            total = total + self.segmentor.config.aux_loss_weight * aux_loss
        return total, loss_main.detach()


# ---------------------------------------------------------------------------------------------- checkpoints
def save_training_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """``torch.save`` to a temp file in the same folder, then rename: a crash never leaves a partial file."""
    from replknet.checkpoint import atomic_torch_save

    return atomic_torch_save(state, path)


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


def train(config: TrainConfig) -> dict:
    """Train a RepLKNet-UperNet as configured; returns ``{"history": [...], "final": metrics, ...}``.

    Writes ``output_dir/last.pth`` (resumable), ``output_dir/metrics.json`` and colour-coded predictions under
    ``output_dir/predictions/``.
    """
    from tqdm import tqdm

    config = resolve_config(config)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = _pick_device(config.device, local_rank)
    env = _setup_distributed(device)
    torch.manual_seed(config.seed + env.rank)
    out_dir = Path(config.output_dir)
    spec = DATASET_SPECS[config.dataset]

    crop = (config.crop_size,) * 2 if config.crop_size else None
    train_set = build_dataset(
        config.dataset, "train", config.data_root, seed=config.seed, crop_size=crop,
        num_samples=config.train_samples, image_size=config.image_size,
    )  # fmt: skip
    val_set = build_dataset(
        config.dataset, "val", config.data_root, seed=config.seed, num_samples=config.val_samples,
        image_size=config.image_size,
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
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    use_scaler = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    autocast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    start_iteration, history = 0, []
    resume = config.resume
    if resume == "auto":
        resume = str(out_dir / "last.pth") if (out_dir / "last.pth").is_file() else None
    if resume:
        from replknet.checkpoint import read_checkpoint

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
        if env.rank == 0 and "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        else:
            torch.manual_seed(config.seed + env.rank + 7919 * start_iteration)
        _logger.info("resumed from %s at iteration %d", resume, start_iteration)

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

    def _state(iteration: int) -> dict:
        return dict(
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict() if use_scaler else {},
            iteration=iteration,
            segmentor=segmentor_config.to_dict(),
            train_config=dataclasses.asdict(config),
            history=history,
            torch_rng=torch.get_rng_state(),
        )

    if config.eval_at_start and start_iteration == 0:
        metrics = evaluate(model, val_set, eval_config, device, class_names, progress=config.progress)
        history.append(dict(iteration=0, mIoU=metrics["mIoU"], mAcc=metrics["mAcc"], aAcc=metrics["aAcc"]))
        if env.is_main:
            _log_metrics(metrics, 0)

    iteration, interrupted, metrics = start_iteration, False, None
    epoch, skip = divmod(iteration, sampler.batches_per_epoch)
    bar = tqdm(
        total=config.iterations, initial=iteration, desc="seg-train", disable=not (config.progress and env.is_main)
    )
    started, losses = time.perf_counter(), []
    module.train()
    while iteration < config.iterations:
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
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=config.amp):
                loss, loss_main = module(images, targets)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss is {loss.item()} at iteration {iteration}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}")
            last = iteration == config.iterations
            interrupted = (
                not last and config.stop_after is not None and iteration - start_iteration >= config.stop_after
            )
            if interrupted:
                if env.is_main:
                    save_training_checkpoint(out_dir / "last.pth", _state(iteration))
                    _logger.info("stopping at iteration %d (stop_after=%d); resume with resume='auto'", iteration,
                                 config.stop_after)  # fmt: skip
                break
            if iteration % config.eval_interval == 0 or last:
                metrics = evaluate(
                    model, val_set, eval_config, device, class_names,
                    png_dir=out_dir / "predictions" if last else None, num_png=config.save_png if last else 0,
                    colors=colors, progress=config.progress,
                )  # fmt: skip
                history.append(dict(
                    iteration=iteration, mIoU=metrics["mIoU"], mAcc=metrics["mAcc"], aAcc=metrics["aAcc"],
                    loss=float(sum(losses[-20:]) / len(losses[-20:])),
                ))  # fmt: skip
                if env.is_main:
                    _log_metrics(metrics, iteration)
                module.train()
            if env.is_main and (iteration % config.checkpoint_interval == 0 or last):
                save_training_checkpoint(out_dir / "last.pth", _state(iteration))
            if last:
                break
        if interrupted:
            break
        epoch, skip = epoch + 1, 0
    bar.close()
    elapsed = time.perf_counter() - started
    final = metrics
    result = dict(
        history=history, final=final, seconds=elapsed, iterations=config.iterations, config=dataclasses.asdict(config)
    )
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        serialisable = {k: v for k, v in result.items()}
        (out_dir / "metrics.json").write_text(json.dumps(serialisable, indent=1, default=_json_default))
    if env.world_size > 1:
        dist.barrier()
        if env.owned:
            dist.destroy_process_group()
    return result


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
