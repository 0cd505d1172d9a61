"""The training engine: one ``train(config)`` for the CPU demo and for multi-node ImageNet runs under torchrun.

Built from timm's parts (transforms, Mixup/CutMix, losses, optimizer factory, cosine scheduler, ModelEmaV3).
Per epoch: train (gradient accumulation up to the recipe batch, AMP, a finite-loss check), validate, write one
JSONL record, save the training state atomically. At the end: save the trained model, fuse it
(``replknet.reparameterize``), evaluate the fused model and save it too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from replknet.checkpoint import atomic_write_text
from replknet.outputs import check_output_dir
from replknet.train.config import BUILTIN_DATA, TrainConfig, accumulation_steps, scaled_lr
from replknet.train.distributed import DistributedState, cleanup_distributed, init_distributed
from replknet.train.evaluate import autocast, evaluate, synthetic_shape_bias
from replknet.train.guards import NonFiniteLossError, stop_if_not_finite
from replknet.train.log import METRICS_NAME, MetricsLog
from replknet.train.optim import build_optimizer, build_scheduler
from replknet.train.state import gather_rng_states, load_training_state, restore_rng_states, save_training_state

__all__ = ["NonFiniteLossError", "TrainResult", "train", "is_finished_run", "CHECKPOINT_NAME"]

_logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"  # the latest full training state
MODEL_NAME = "model.safetensors"  # trained weights (training form)
EMA_NAME = "model_ema.safetensors"
FUSED_NAME = "model_fused.safetensors"  # re-parameterised (deploy form)
CONFIG_NAME = "config.json"  # the run folder's model card (replknet.runs): model, preprocessing, classes, settings
SUMMARY_NAME = "summary.json"  # written when the last epoch is done: it marks a finished run
# What a run writes; a fresh run in a folder that holds them (``overwrite``, or an unfinished run started again
# without ``resume``) removes them first, so that nothing of the old run is mistaken for the new one's.
RUN_FILES = (CHECKPOINT_NAME, MODEL_NAME, EMA_NAME, FUSED_NAME, CONFIG_NAME, METRICS_NAME, SUMMARY_NAME)


def is_finished_run(folder: str | Path) -> bool:
    """True when ``folder`` holds a run that completed all its epochs (its ``summary.json``)."""
    return (Path(folder) / SUMMARY_NAME).is_file()


@dataclass
class TrainResult:
    """What a run produced: metrics, timings and file paths."""

    config: TrainConfig
    output_dir: Path
    epochs_completed: int
    num_updates: int
    val: dict[str, float] = field(default_factory=dict)
    val_ema: dict[str, float] | None = None
    val_fused: dict[str, float] | None = None
    fused_max_abs_diff: float | None = None
    shape_bias: dict | None = None
    params: int = 0
    params_fused: int | None = None
    data_seconds: float = 0.0
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    images_per_second: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)  # the trained (unfused) model, in memory

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("config", "output_dir", "model")}
        out["output_dir"] = str(self.output_dir)
        out["config"] = self.config.to_dict()
        return out


# ---------------------------------------------------------------------------------------------- set-up pieces
def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (timm Mixup draws from the global numpy RNG)
    random.seed(seed)


def _build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    import replknet
    from replknet.checkpoint import convert_state_dict, read_checkpoint

    options = {} if config.head_init_scale is None else {"head_init_scale": config.head_init_scale}
    model = replknet.create_model(
        config.model, num_classes=num_classes, drop_path_rate=config.drop_path, **options, **config.model_kwargs
    )
    if config.pretrained:
        from replknet.runs import read_run

        run = read_run(config.pretrained)  # a run folder: its model.safetensors
        source = run.weights if run is not None else config.pretrained
        state_dict = convert_state_dict(read_checkpoint(source), model)
        own = model.state_dict()
        dropped = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
        for key in dropped:  # a head for another number of classes (22K -> 1K fine-tuning)
            del state_dict[key]
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if unexpected:
            raise ValueError(f"{config.pretrained} has keys this {config.model} does not: {unexpected[:8]}")
        _logger.info("loaded %s (re-initialised: %s)", config.pretrained, sorted(set(missing) | set(dropped)))
    return model


@dataclass
class _Data:
    train: Any
    val: Any
    num_classes: int
    train_images: int
    seconds: float
    classes: list[str] = field(default_factory=list)


def evaluation_settings(config: TrainConfig) -> dict[str, Any]:
    """How the run validates (data, split, batch, memory format, AMP): ``replknet eval`` of the run folder uses
    the same, and so prints the top-1 the run recorded."""
    synthetic = config.data in BUILTIN_DATA
    return {
        "data": config.data,
        "split": config.val_split,
        "image_size": config.image_size,
        # Eval batch = 1.5x the training batch, as in the official main.py; the in-memory synthetic data: 2x.
        "batch_size": config.batch_size * 2 if synthetic else int(1.5 * config.batch_size),
        "synthetic_size": config.synthetic_val_size,
        "synthetic_seed": config.synthetic_seed,
        "memory_format": config.memory_format,
        "amp": config.amp,
    }


def _run_config(config: TrainConfig, module: nn.Module, classes: list[str]) -> dict[str, Any]:
    """The run folder's ``config.json`` (``replknet.runs``): the model, its preprocessing, the classes, the run."""
    from replknet.models._registry import family_of
    from replknet.runs import run_config

    cfg = module.pretrained_cfg
    big = config.image_size >= 384
    synthetic = config.data in BUILTIN_DATA
    preprocessing = {
        "input_size": (getattr(module, "in_chans", 3), config.image_size, config.image_size),
        "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        "interpolation": "bicubic",
        # The synthetic images are rendered at the input size (nothing cropped); folders go through the official
        # eval transform (train.data.eval_transform).
        "crop_pct": 1.0 if synthetic or big else 0.875,
        "crop_mode": "center" if synthetic or not big else "squash",
    }
    family = family_of(module)
    model_args = {family.deploy_arg: False} if family is not None and family.deploy_arg else None
    training = {**config.to_dict(), "evaluation": evaluation_settings(config)}
    return run_config(
        module, class_names=classes, preprocessing=preprocessing, model_args=model_args, training=training
    )


def _build_data(config: TrainConfig, model_cfg: dict, dist_state: DistributedState) -> _Data:
    from replknet.train.data import SyntheticBatches, build_image_folder, eval_loader, train_transform

    mean = tuple(model_cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(model_cfg.get("std", (0.229, 0.224, 0.225)))
    start = time.perf_counter()
    if config.data in BUILTIN_DATA:
        train_set, val_set = builtin_datasets(config)
        common = dict(mean=mean, std=std, rank=dist_state.rank, world_size=dist_state.world_size)
        train = SyntheticBatches(
            train_set.images,
            train_set.labels,
            config.batch_size,
            train=True,
            hflip=config.hflip,
            seed=config.seed,
            channels_last=config.channels_last,
            **common,
        )
        val_batch = evaluation_settings(config)["batch_size"]
        val = SyntheticBatches(val_set.images, val_set.labels, val_batch, train=False, **common)
        seconds = time.perf_counter() - start
        return _Data(train, val, len(train_set.classes), len(train_set), seconds, list(train_set.classes))
    from replknet.train.data import eval_transform

    train_set = build_image_folder(
        config.data,
        config.train_split,
        train_transform(config.image_size, mean, std, config.auto_augment, config.reprob, config.hflip),
    )
    val_set = build_image_folder(config.data, config.val_split, eval_transform(config.image_size, mean, std))
    if train_set.classes != val_set.classes:
        raise ValueError(
            f"{config.data}: the {config.train_split} and {config.val_split} splits have different class folders"
        )
    pin = dist_state.device.type == "cuda"
    val_batch = evaluation_settings(config)["batch_size"]
    val = eval_loader(val_set, val_batch, config.workers, dist_state.rank, dist_state.world_size, pin)
    seconds = time.perf_counter() - start
    return _Data(train_set, val, len(train_set.classes), len(train_set), seconds, list(train_set.classes))


def builtin_datasets(config: TrainConfig) -> tuple[Any, Any]:
    """The training and validation sets of built-in data (``config.data`` in ``BUILTIN_DATA``), rendered in memory.

    Pathfinder sets are cached per process (rendering costs ~20 ms an image), so the runs of a study that share
    the data render it once.
    """
    if config.data == "synthetic":
        from replknet.data.synthetic import SyntheticShapes

        if config.data_options:
            raise ValueError(f"the built-in shapes take no data_options, got {sorted(config.data_options)}")
        train_set = SyntheticShapes("train", config.synthetic_train_size, config.image_size, config.synthetic_seed)
        val_set = SyntheticShapes("val", config.synthetic_val_size, config.image_size, config.synthetic_seed)
        return train_set, val_set
    if config.data == "pathfinder":
        from replknet.data.pathfinder import cached_pathfinder, pathfinder_config

        options = dict(config.data_options)
        task = pathfinder_config(options.pop("preset", None), **{"image_size": config.image_size, **options})
        if task.image_size != config.image_size:
            raise ValueError(f"data_options image_size {task.image_size} differs from image_size {config.image_size}")
        train_set = cached_pathfinder("train", config.synthetic_train_size, task, config.synthetic_seed)
        val_set = cached_pathfinder("val", config.synthetic_val_size, task, config.synthetic_seed)
        return train_set, val_set
    raise ValueError(f"{config.data!r} is not built-in data; built-in: {list(BUILTIN_DATA)}")


def _epoch_loader(config: TrainConfig, data: _Data, epoch: int, dist_state: DistributedState):
    from replknet.train.data import SyntheticBatches, train_loader

    if isinstance(data.train, SyntheticBatches):
        data.train.set_epoch(epoch)
        return data.train
    return train_loader(
        data.train,
        config.batch_size,
        config.workers,
        config.seed,
        epoch,
        dist_state.rank,
        dist_state.world_size,
        pin_memory=dist_state.device.type == "cuda",
    )


def _epoch_length(config: TrainConfig, data: _Data, dist_state: DistributedState) -> int:
    """Micro-batches per epoch per process (drop-last)."""
    from replknet.train.data import SyntheticBatches

    if isinstance(data.train, SyntheticBatches):
        return len(data.train)
    return (len(data.train) // dist_state.world_size) // config.batch_size


def _criterion_and_mixup(config: TrainConfig, num_classes: int):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if config.mixup > 0 or config.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=config.mixup,
            cutmix_alpha=config.cutmix,
            prob=1.0,
            switch_prob=0.5,
            mode="batch",
            label_smoothing=config.smoothing,
            num_classes=num_classes,
        )
        return SoftTargetCrossEntropy(), mixup
    if config.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.smoothing), None
    return nn.CrossEntropyLoss(), None


# ---------------------------------------------------------------------------------------------- one epoch
@dataclass
class _Loop:
    """The mutable pieces of a run (grouped so one epoch is one function)."""

    model: nn.Module  # possibly DDP-wrapped
    module: nn.Module  # the bare model
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    ema: Any
    criterion: nn.Module
    mixup: Any
    accum: int
    updates_per_epoch: int
    num_updates: int
    global_batch: int


def _train_one_epoch(
    config: TrainConfig,
    loop: _Loop,
    loader,
    epoch: int,
    dist_state: DistributedState,
    log: MetricsLog,
    progress: bool,
) -> dict[str, float]:
    from tqdm.auto import tqdm

    loop.model.train()
    loop.optimizer.zero_grad(set_to_none=True)
    device = dist_state.device
    micro_batches = loop.updates_per_epoch * loop.accum
    bar = tqdm(
        total=loop.updates_per_epoch,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        unit="step",
        disable=not (progress and dist_state.is_main),
        dynamic_ncols=True,
        leave=True,
    )
    loss_sum, loss_count, images = 0.0, 0, 0
    start = time.perf_counter()
    try:
        for index, (x, y) in enumerate(loader):
            if index >= micro_batches:
                break
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if loop.mixup is not None:
                x, y = loop.mixup(x, y)
            step_now = (index + 1) % loop.accum == 0
            sync = contextlib.nullcontext() if step_now or not dist_state.distributed else loop.model.no_sync()
            with sync:
                with autocast(device, config.amp):
                    loss = loop.criterion(loop.model(x), y)
                where = (
                    f"at epoch {epoch + 1}, update {loop.num_updates + 1} "
                    f"(lr {loop.optimizer.param_groups[0]['lr']:.3g})"
                )
                stop_if_not_finite(loss, device, where)  # on every process, when it happens on any
                scaled = loss / loop.accum
                if loop.scaler is not None:
                    loop.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            loss_sum += loss.item()
            loss_count += 1
            images += x.shape[0]
            if not step_now:
                continue
            if config.clip_grad is not None:
                if loop.scaler is not None:
                    loop.scaler.unscale_(loop.optimizer)
                nn.utils.clip_grad_norm_(loop.module.parameters(), config.clip_grad)
            if loop.scaler is not None:
                loop.scaler.step(loop.optimizer)
                loop.scaler.update()
            else:
                loop.optimizer.step()
            loop.optimizer.zero_grad(set_to_none=True)
            loop.num_updates += 1
            loop.scheduler.step_update(num_updates=loop.num_updates)
            if loop.ema is not None:
                loop.ema.update(loop.module, step=loop.num_updates)
            elapsed = time.perf_counter() - start
            rate = images * dist_state.world_size / max(elapsed, 1e-9)
            lr = max(group["lr"] for group in loop.optimizer.param_groups)
            bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
            bar.update(1)
            if loop.num_updates % config.log_every == 0:
                record = {"kind": "step", "epoch": epoch + 1, "step": loop.num_updates, "loss": loss.item(), "lr": lr}
                record["img_per_s"] = rate
                log.write(record, loop.num_updates)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    return {
        "train_loss": loss_sum / max(loss_count, 1),
        "lr": max(group["lr"] for group in loop.optimizer.param_groups),
        "img_per_s": images * dist_state.world_size / max(elapsed, 1e-9),
        "epoch_seconds": elapsed,
    }


# ---------------------------------------------------------------------------------------------- checkpoints
def _training_state(config: TrainConfig, loop: _Loop, epoch: int, history: list[dict], rng: list[dict]) -> dict:
    return {
        "format": "replknet-train-v1",
        "model": loop.module.state_dict(),
        "ema": loop.ema.module.state_dict() if loop.ema is not None else None,
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else None,
        "epoch": epoch,  # epochs completed
        "step": loop.num_updates,
        "rng": rng,  # every process's random state, in rank order (gather_rng_states)
        "config": config.to_json(),
        "history": json.dumps(history),
    }


_RESUME_MUST_MATCH = (
    "model",
    "model_kwargs",
    "data",
    "data_options",
    "image_size",
    "epochs",
    "batch_size",
    "recipe_batch",
    "seed",
)


def _restore(
    state: dict, config: TrainConfig, loop: _Loop, path: Path, dist_state: DistributedState
) -> tuple[int, list[dict]]:
    saved = TrainConfig.from_dict(json.loads(state["config"]))
    changed = [name for name in _RESUME_MUST_MATCH if getattr(saved, name) != getattr(config, name)]
    if changed:
        details = ", ".join(f"{n}: {getattr(saved, n)!r} -> {getattr(config, n)!r}" for n in changed)
        raise ValueError(f"cannot resume {path}: the run was started with different settings ({details})")
    loop.module.load_state_dict(state["model"])
    if loop.ema is not None:
        if state.get("ema") is None:
            raise ValueError(f"cannot resume {path} with EMA: the checkpoint has no EMA weights")
        loop.ema.module.load_state_dict(state["ema"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    if loop.scaler is not None and state.get("scaler") is not None:
        loop.scaler.load_state_dict(state["scaler"])
    loop.num_updates = int(state["step"])
    restore_rng_states(state["rng"], dist_state.rank, dist_state.world_size)
    loop.scheduler.step_update(num_updates=loop.num_updates)
    return int(state["epoch"]), json.loads(state.get("history", "[]"))


# ---------------------------------------------------------------------------------------------- the run
def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    progress: bool = True,
    device: str | None = None,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train (or resume) a model as ``config`` says; under ``torchrun`` every process calls this.

    Args:
        config: the run's settings (see ``TrainConfig``, ``get_preset``).
        resume: a training checkpoint (``checkpoint.pt``) or an output directory holding one; training continues
            exactly where it stopped (same data order, RNG, optimizer and schedule).
        progress: tqdm progress bars (main process only).
        device: ``"cpu"``/``"cuda"``; overrides ``config.device`` (default: CUDA when available).
        stop_after_epochs: stop after this many epochs in this call, with the schedule still spanning
            ``config.epochs`` (a pre-emptible job; resume later).

    The run folder (``config.output``) is checked before any work: a file in its place, a finished run
    (``summary.json``), or an unfinished one (``checkpoint.pt``) that is not resumed, is refused unless
    ``config.overwrite``; it is created only once the model, the data and the checkpoint to resume are loaded, so
    a refused run leaves nothing behind.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (on any process; every process raises it); the checkpoint of
            the last completed epoch is untouched.
        NotADirectoryError, FileExistsError, PermissionError: ``config.output`` cannot take the run.
    """
    import replknet

    config.validate()
    run_start = time.perf_counter()
    check_output_dir(config.output, overwrite=config.overwrite, finished=is_finished_run, what="run folder")
    interrupted = Path(config.output) / CHECKPOINT_NAME
    if resume is None and not config.overwrite and interrupted.is_file() and not is_finished_run(config.output):
        raise FileExistsError(
            f"run folder {config.output} holds an unfinished run ({interrupted}); continue it with resume "
            f"(--resume {config.output}) or start it over with overwrite"
        )
    dist_state = init_distributed(device if device is not None else config.device)
    try:
        return _run(config, resume, progress, dist_state, stop_after_epochs, run_start, replknet)
    finally:
        if dist_state.owned:
            cleanup_distributed()


def _run(config, resume, progress, dist_state, stop_after_epochs, run_start, replknet) -> TrainResult:
    from timm.utils import ModelEmaV3

    from replknet.runtime import resolve_memory_format

    output_dir = Path(config.output)
    # "auto" becomes what this device runs (config.json and summary.json record it).
    config = config.replace(memory_format=resolve_memory_format(config.memory_format, dist_state.device))
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    _seed_everything(config.seed + dist_state.rank)
    device = dist_state.device

    # The model comes first: the data pipeline uses its mean/std. Its class count is read from the data.
    num_classes = config.num_classes
    if num_classes is None:
        if config.data in BUILTIN_DATA:
            num_classes = {"synthetic": 10, "pathfinder": 2}[config.data]
        else:
            num_classes = len(_class_folders(config))
    module = _build_model(config, num_classes)
    data = _build_data(config, module.pretrained_cfg, dist_state)
    if data.num_classes != num_classes:
        raise ValueError(f"the model has {num_classes} classes but the data has {data.num_classes}")
    if config.grad_checkpointing:
        module.set_grad_checkpointing(True)
    if config.sync_bn and dist_state.distributed:
        if device.type == "cpu":
            raise ValueError("sync_bn needs GPUs: PyTorch's SyncBatchNorm does not run on CPU (gloo) processes")
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module = module.to(device)
    if config.channels_last:
        module = module.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(module, decay=config.ema_decay, device=device) if config.ema_decay else None
    model: nn.Module = module
    if dist_state.distributed:
        device_ids = [dist_state.local_rank] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    if config.compile:
        model = torch.compile(model)

    accum = accumulation_steps(config, dist_state.world_size)
    lr = scaled_lr(config, dist_state.world_size, accum)
    micro_per_epoch = _epoch_length(config, data, dist_state)
    updates_per_epoch = micro_per_epoch // accum
    if updates_per_epoch < 1:
        raise ValueError(
            f"an epoch has {micro_per_epoch} batches per process, fewer than the {accum} accumulation steps needed "
            f"for one update; lower recipe_batch or accum_steps"
        )
    optimizer = build_optimizer(module, config.opt, lr, config.weight_decay, config.layer_decay, config.opt_eps)
    scheduler = build_scheduler(
        optimizer,
        total_updates=config.epochs * updates_per_epoch,
        warmup_updates=int(round(config.warmup_epochs * updates_per_epoch)),
        min_lr=config.min_lr,
    )
    scaler = torch.amp.GradScaler(device.type) if config.amp == "fp16" else None
    criterion, mixup = _criterion_and_mixup(config, num_classes)
    global_batch = config.batch_size * dist_state.world_size * accum
    loop = _Loop(
        model, module, optimizer, scheduler, scaler, ema, criterion, mixup, accum, updates_per_epoch, 0, global_batch
    )
    _logger.info(
        "%s on %s: %d processes x batch %d x accumulation %d = global batch %d, lr %.3g (%.3g at batch %d)",
        config.model,
        config.data,
        dist_state.world_size,
        config.batch_size,
        accum,
        global_batch,
        lr,
        config.lr,
        config.recipe_batch,
    )

    start_epoch, history = 0, []
    checkpoint_path = output_dir / CHECKPOINT_NAME
    if resume is not None:
        resume_path = Path(resume)
        if resume_path.is_dir():
            resume_path = resume_path / CHECKPOINT_NAME
        state = load_training_state(resume_path)
        start_epoch, history = _restore(state, config, loop, resume_path, dist_state)
        _logger.info("resumed %s at epoch %d, update %d", resume_path, start_epoch, loop.num_updates)
    if dist_state.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)  # checked before any work (train)
        if resume is None:
            for name in RUN_FILES:  # a fresh run: nothing of an earlier one stays to be mistaken for it
                (output_dir / name).unlink(missing_ok=True)
        from replknet.runs import write_run_config

        write_run_config(output_dir, _run_config(config, module, data.classes))

    log = MetricsLog(output_dir, dist_state.is_main, resume_step=None if resume is None else loop.num_updates)
    end_epoch = config.epochs if stop_after_epochs is None else min(config.epochs, start_epoch + stop_after_epochs)
    train_seconds, rates, val_metrics, ema_metrics = 0.0, [], {}, None
    try:
        for epoch in range(start_epoch, end_epoch):
            loader = _epoch_loader(config, data, epoch, dist_state)
            try:
                stats = _train_one_epoch(config, loop, loader, epoch, dist_state, log, progress)
            except NonFiniteLossError as error:
                last = f"{checkpoint_path} (epoch {epoch})" if checkpoint_path.exists() else "none was written yet"
                raise NonFiniteLossError(f"{error}; the last good checkpoint is {last}") from None
            train_seconds += stats["epoch_seconds"]
            rates.append(stats["img_per_s"])
            record = {"kind": "epoch", "epoch": epoch + 1, "step": loop.num_updates, **stats}
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == end_epoch:
                val_metrics = evaluate(model, data.val, device, config.amp, config.channels_last)
                record.update({f"val_{k}": v for k, v in val_metrics.items() if k != "images"})
                if ema is not None:
                    ema_metrics = evaluate(ema.module, data.val, device, config.amp, config.channels_last)
                    record.update({f"val_ema_{k}": v for k, v in ema_metrics.items() if k != "images"})
            history.append(record)
            log.write(record, loop.num_updates)
            if dist_state.is_main:
                _logger.info(
                    "epoch %d/%d: loss %.4f, val top-1 %s, %.0f img/s",
                    epoch + 1,
                    config.epochs,
                    stats["train_loss"],
                    f"{val_metrics['top1']:.2f}%" if "val_top1" in record else "-",
                    stats["img_per_s"],
                )
            if (epoch + 1) % config.save_every == 0 or epoch + 1 == end_epoch:
                rng = gather_rng_states()  # on every process: each one's streams go into the checkpoint
                if dist_state.is_main:
                    save_training_state(checkpoint_path, _training_state(config, loop, epoch + 1, history, rng))
    finally:
        log.close()

    result = TrainResult(
        config=config,
        output_dir=output_dir,
        epochs_completed=end_epoch,
        num_updates=loop.num_updates,
        val=val_metrics,
        val_ema=ema_metrics,
        params=replknet.count_params(module),
        data_seconds=data.seconds,
        train_seconds=train_seconds,
        images_per_second=float(np.mean(rates)) if rates else 0.0,
        history=history,
        model=module,
    )
    result.files["checkpoint"] = str(checkpoint_path)
    if end_epoch == config.epochs:
        _finish(config, result, module, ema, data, dist_state)
    result.total_seconds = time.perf_counter() - run_start
    if dist_state.is_main and end_epoch == config.epochs:  # the marker of a finished run, written last
        atomic_write_text(output_dir / SUMMARY_NAME, json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _class_folders(config: TrainConfig) -> list[str]:
    path = Path(config.data) / config.train_split
    if not path.is_dir():
        raise FileNotFoundError(f"no {config.train_split!r} split: {path} is not a directory")
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def _finish(config: TrainConfig, result: TrainResult, module: nn.Module, ema, data: _Data, dist_state) -> None:
    """Save the trained model, fuse it, evaluate the fused model, save it, and (synthetic data) the shape bias."""
    import replknet

    output_dir = result.output_dir
    device = dist_state.device
    metadata = {"model": config.model, "num_classes": str(module.num_classes), "image_size": str(config.image_size)}
    if isinstance(module, nn.SyncBatchNorm) or any(isinstance(m, nn.SyncBatchNorm) for m in module.modules()):
        module = _revert_sync_batchnorm(module)
    if dist_state.is_main:
        result.files["model"] = str(replknet.save_state_dict(module.state_dict(), output_dir / MODEL_NAME, metadata))
        if ema is not None:
            path = replknet.save_state_dict(ema.module.state_dict(), output_dir / EMA_NAME, metadata)
            result.files["model_ema"] = str(path)
        result.files["config"] = str(output_dir / CONFIG_NAME)
    if not config.fuse:
        return
    module.eval()
    fused = replknet.reparameterize(module).eval()
    result.params_fused = replknet.count_params(fused)
    result.val_fused = evaluate(fused, data.val, device, config.amp, config.channels_last)
    # The largest logit difference between the trained and the fused model on one validation batch.
    images, _ = next(iter(data.val))
    with torch.no_grad():
        images = images.to(device)
        result.fused_max_abs_diff = (module(images) - fused(images)).abs().max().item()
    if dist_state.is_main:
        fused_meta = {**metadata, "fused": "true"}
        result.files["model_fused"] = str(
            replknet.save_state_dict(fused.state_dict(), output_dir / FUSED_NAME, fused_meta)
        )
    if config.data == "synthetic" and dist_state.is_main:
        result.shape_bias = synthetic_shape_bias(fused, config.image_size, seed=config.synthetic_seed, device=device)
    if not math.isclose(result.val_fused["top1"], result.val.get("top1", result.val_fused["top1"]), abs_tol=0.5):
        _logger.warning(
            "fused model top-1 %.2f%% differs from the trained model's %.2f%%",
            result.val_fused["top1"],
            result.val.get("top1", float("nan")),
        )


def _revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm -> BatchNorm2d (same keys) so the saved model and its fusion are plain."""
    if isinstance(module, nn.SyncBatchNorm):
        plain = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine)
        plain.load_state_dict(module.state_dict())
        return plain.to(module.weight.device)
    for name, child in module.named_children():
        setattr(module, name, _revert_sync_batchnorm(child))
    return module
