"""Training configuration: one frozen dataclass, and the paper's recipes as named presets.

Every ImageNet preset follows the official RepLKNet training commands (README "Training" and ``main.py``
defaults; see ``docs/training.md``). ``lr`` values are given at the recipe's global batch (``recipe_batch``); the
trainer scales them to the real global batch and accumulates gradients to reach the recipe batch on fewer GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from replknet.config import RunConfig

__all__ = ["TrainConfig", "PRESETS", "BUILTIN_DATA", "get_preset", "list_presets", "scaled_lr", "accumulation_steps"]

# Data names that are rendered in memory instead of read from a folder.
BUILTIN_DATA = ("synthetic", "pathfinder")


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Everything a training run needs. Defaults are the built-in CPU demo (``replknet train`` with no args).

    The bookkeeping (``output``, ``overwrite``, ``seed``, ``device``, ``log_every``, ``eval_every``, ``save_every``)
    and ``replace``/``validate``/``to_dict``/``from_dict`` come from ``replknet.config.RunConfig``.
    """

    kind: ClassVar[str] = "training"

    # --- model
    model: str = "replknet_tiny"  # the smallest registered RepLKNet: kernels 31/29/27/13, fits 2 CPU cores
    num_classes: int | None = None  # None: taken from the data
    drop_path: float = 0.0  # a 5-minute run is too short to need stochastic depth
    pretrained: str | None = None  # a local checkpoint to start from (fine-tuning); its head is dropped if it differs
    head_init_scale: float | None = None  # UniRepLKNet's constructor option (its 22K->1K finetunes: 0.001)
    # constructor options on top of the registered model's (e.g. large_kernel_sizes for a kernel-size study arm)
    model_kwargs: dict = field(default_factory=dict)
    # --- data
    # "synthetic" (the built-in shapes), "pathfinder" (the built-in Pathfinder task; replknet.data.pathfinder),
    # or an ImageFolder root holding train/ and val/
    data: str = "synthetic"
    data_options: dict = field(default_factory=dict)  # built-in data only: e.g. Pathfinder's preset and fields
    train_split: str = "train"
    val_split: str = "val"
    image_size: int = 48  # 48 px shows all 10 shapes clearly and trains ~1.5x faster than 64 px on a CPU
    synthetic_train_size: int = 6000  # rendering costs ~2 ms an image; 6 epochs of 6000 fit the 5-minute budget
    synthetic_val_size: int = 1000
    synthetic_seed: int = 0
    workers: int = 4  # DataLoader workers for ImageFolder data (the synthetic data needs none)
    # --- schedule
    epochs: int = 6
    warmup_epochs: float = 0.5
    batch_size: int = 32  # per process, per forward (small batches: more updates in a short CPU run)
    recipe_batch: int = 32  # the global batch ``lr`` is given for; accumulation reaches it when possible
    accum_steps: int | None = None  # None: ceil(recipe_batch / (batch_size * world)) when lr scaling is off
    scale_lr: bool = True  # lr = lr * real global batch / recipe_batch (when accumulation cannot reach it)
    # --- optimizer
    opt: str = "adamw"
    lr: float = 4e-3  # the tiny model learns the shapes slowly at 2e-3 (docs/training.md)
    min_lr: float = 1e-5
    weight_decay: float = 0.05  # no decay on 1-D parameters (BN, biases), as in the official optimizer
    layer_decay: float | None = None  # the fine-tuning recipes use 0.7 over the official 14 layer groups
    opt_eps: float = 1e-8
    clip_grad: float | None = None
    # --- augmentation / regularisation (timm)
    auto_augment: str | None = None  # the paper: "rand-m9-mstd0.5-inc1"
    reprob: float = 0.0  # random erasing probability (paper 0.25)
    mixup: float = 0.0  # mixup alpha (paper 0.8)
    cutmix: float = 0.0  # cutmix alpha (paper 1.0)
    smoothing: float = 0.1
    hflip: float = 0.5
    ema_decay: float | None = None  # the paper: 0.9999 (timm ModelEmaV3)
    # --- scale
    amp: str | None = None  # "bf16" or "fp16"
    # "auto": channels_last on CPU (1.2-1.3x faster per train step, docs/benchmarks.md), NCHW elsewhere
    memory_format: str = "auto"
    grad_checkpointing: bool = False
    sync_bn: bool = False
    compile: bool = False
    # --- bookkeeping (RunConfig's fields, with this run's defaults and units)
    output: str = "runs/demo"  # summary.json in it marks a finished run, refused unless ``overwrite``
    eval_every: int = 1  # epochs between validations (the last epoch is always validated)
    save_every: int = 1  # epochs between training checkpoints (the last epoch always)
    log_every: int = 10  # updates between JSONL step records
    fuse: bool = True  # re-parameterise at the end, evaluate and save the fused model
    deterministic: bool = False
    preset: str = "demo"
    notes: tuple[str, ...] = field(default=())

    def validate(self) -> TrainConfig:
        """Check value ranges; raises ``ValueError`` naming the bad option."""
        super().validate()
        if self.head_init_scale is not None:
            import inspect

            from replknet.models import find_model_info

            info = find_model_info(self.model)
            if info is None or "head_init_scale" not in inspect.signature(info.family.model_cls.__init__).parameters:
                raise ValueError(f"head_init_scale is not a constructor option of {self.model}")
        if self.data_options and self.data not in BUILTIN_DATA:
            raise ValueError(f"data_options apply to the built-in data {sorted(BUILTIN_DATA)}, not to {self.data!r}")
        positive = ("image_size", "epochs", "batch_size", "recipe_batch", "synthetic_train_size", "synthetic_val_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.accum_steps is not None and self.accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {self.accum_steps}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be 'bf16', 'fp16' or None, got {self.amp!r}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs} for {self.epochs}")
        for name in ("drop_path", "reprob", "smoothing", "hflip"):
            if not 0 <= getattr(self, name) < 1 + (name == "hflip"):
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        from replknet.runtime import MEMORY_FORMATS

        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {self.memory_format!r}")
        return self

    @property
    def channels_last(self) -> bool:
        """The run uses channels_last (``memory_format`` resolved for its device by the trainer)."""
        return self.memory_format == "channels_last"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        if "channels_last" in values:  # written before memory_format
            values.setdefault("memory_format", "channels_last" if values.pop("channels_last") else "contiguous")
        for name in ("model_kwargs", "data_options"):
            if name in values:  # JSON turns tuples into lists; constructors expect the tuples back
                values[name] = {k: tuple(v) if isinstance(v, list) else v for k, v in values[name].items()}
        return super().from_dict(values)


# The recipes of the paper (official README "Training"; spec section 7). Each preset is the official command's
# values; what the official code leaves unstated is marked in ``notes``.
_IN1K_COMMON = dict(
    data="imagenet",  # placeholder path: pass --data /path/to/imagenet (train/ and val/ inside)
    image_size=224,
    opt="adamw",
    opt_eps=1e-8,
    weight_decay=0.05,
    min_lr=1e-6,
    auto_augment="rand-m9-mstd0.5-inc1",
    reprob=0.25,
    mixup=0.8,
    cutmix=1.0,
    smoothing=0.1,
    ema_decay=0.9999,
    workers=10,
    hflip=0.5,
)

PRESETS: dict[str, TrainConfig] = {
    "demo": TrainConfig(),
    # RepLKNet-31B on ImageNet-1K from scratch: 8 GPUs x 64 x update_freq 4 = 2048, lr 4e-3, 300 epochs.
    "in1k_31b": TrainConfig(
        model="replknet_31b",
        num_classes=1000,
        drop_path=0.5,
        epochs=300,
        warmup_epochs=10,
        batch_size=64,
        recipe_batch=2048,
        lr=4e-3,
        output="runs/in1k_31b",
        preset="in1k_31b",
        **_IN1K_COMMON,
    ),
    # ImageNet-22K pre-training (31B/31L): 16 nodes x 8 GPUs x 32 = 4096, lr 4e-3, 90 epochs, 21841 classes.
    "in22k_31b": TrainConfig(
        **{
            **_IN1K_COMMON,
            "data": "imagenet22k",
        },
        model="replknet_31b",
        num_classes=21841,
        drop_path=0.1,
        epochs=90,
        warmup_epochs=5,
        batch_size=32,
        recipe_batch=4096,
        lr=4e-3,
        output="runs/in22k_31b",
        preset="in22k_31b",
    ),
    # 1K 224 -> 384 fine-tuning: 32 GPUs x 32 = 1024, lr 4e-4, 30 epochs, wd 1e-8, no mixup/cutmix, ld 0.7.
    "in1k_384_ft": TrainConfig(
        **{
            **_IN1K_COMMON,
            "image_size": 384,
            "weight_decay": 1e-8,
            "mixup": 0.0,
            "cutmix": 0.0,
        },
        model="replknet_31b",
        num_classes=1000,
        drop_path=0.8,
        epochs=30,
        warmup_epochs=1,
        batch_size=32,
        recipe_batch=1024,
        lr=4e-4,
        layer_decay=0.7,
        output="runs/in1k_384_ft",
        preset="in1k_384_ft",
        notes=("start from the 224 checkpoint with --pretrained PATH",),
    ),
    # 22K -> 1K fine-tuning at 224: 2 nodes x 8 GPUs x 32 = 512, lr 4e-4, 30 epochs, wd 1e-8, ld 0.7.
    "in22k_in1k_ft": TrainConfig(
        **{**_IN1K_COMMON, "weight_decay": 1e-8},
        model="replknet_31b",
        num_classes=1000,
        drop_path=0.2,
        epochs=30,
        warmup_epochs=1,
        batch_size=32,
        recipe_batch=512,
        lr=4e-4,
        layer_decay=0.7,
        output="runs/in22k_in1k_ft",
        preset="in22k_in1k_ft",
        notes=(
            "start from the 22K checkpoint with --pretrained PATH (its 21841-class head is replaced)",
            "NOTE: warm-up and mixup are not stated for this finetune; the 1K 384 finetune's warm-up 1 is used",
        ),
    ),
    # 22K -> 1K fine-tuning at 384 (31B/31L): 4 nodes x 8 GPUs x 16 = 512, lr 4e-4 -> 3e-4, 30 epochs, ld 0.7.
    "in22k_in1k_384_ft": TrainConfig(
        **{**_IN1K_COMMON, "image_size": 384, "weight_decay": 1e-8, "min_lr": 3e-4},
        model="replknet_31b",
        num_classes=1000,
        drop_path=0.3,
        epochs=30,
        warmup_epochs=1,
        batch_size=16,
        recipe_batch=512,
        lr=4e-4,
        layer_decay=0.7,
        output="runs/in22k_in1k_384_ft",
        preset="in22k_in1k_384_ft",
        notes=("start from the 22K checkpoint with --pretrained PATH",),
    ),
}


# UniRepLKNet (Ding et al., CVPR 2024): the official commands (Image/README.md) over main.py's defaults: AdamW
# (eps 1e-8, default betas), per-update cosine to min_lr 1e-6 after a linear warm-up (20 epochs by default), weight
# decay 0.05 off for 1-D parameters and biases, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, label
# smoothing 0.1, no EMA unless a command asks for it, eval crop 224/256 below 384. Global batches are
# nodes x GPUs x batch x update_freq; lr is given at that batch.
_UNI_COMMON = dict(
    data="imagenet",  # placeholder path: pass --data /path/to/imagenet (train/ and val/ inside)
    image_size=224,
    opt="adamw",
    opt_eps=1e-8,
    weight_decay=0.05,
    min_lr=1e-6,
    auto_augment="rand-m9-mstd0.5-inc1",
    reprob=0.25,
    smoothing=0.1,
    ema_decay=None,
    workers=10,
    hflip=0.5,
    num_classes=1000,
)
_UNI_LAYER_DECAY_NOTE = (
    "NOTE: the official main.py asserts that --layer_decay is used with convnext_small/base/large/xlarge only, so "
    "this README command stops there as published; the preset applies the official grouping function it would "
    "use (optim_factory.get_num_layer_for_convnext, 14 groups, lr_scale 0.8 ** (13 - group))"
)


def _unireplknet_presets() -> dict[str, TrainConfig]:
    presets: dict[str, TrainConfig] = {}
    # ImageNet-1K from scratch, 300 epochs at 4096 (4 GPUs x 128 x update_freq 8; S: 8 GPUs x 64 x 8), lr 4e-3:
    # variant -> (drop_path, mixup, cutmix, batch per GPU)
    in1k = {
        "a": (0.0, 0.3, 0.3, 128),
        "f": (0.0, 0.3, 0.3, 128),
        "p": (0.1, 0.3, 0.3, 128),
        "n": (0.1, 0.5, 0.5, 128),
        "t": (0.2, 0.8, 1.0, 128),
        "s": (0.4, 0.8, 1.0, 64),
    }
    for variant, (drop_path, mixup, cutmix, batch) in in1k.items():
        name = f"unireplknet_{variant}_in1k"
        presets[name] = TrainConfig(
            **_UNI_COMMON,
            model=f"unireplknet_{variant}",
            drop_path=drop_path,
            mixup=mixup,
            cutmix=cutmix,
            epochs=300,
            warmup_epochs=20,
            batch_size=batch,
            recipe_batch=4096,
            lr=4e-3,
            output=f"runs/{name}",
            preset=name,
            notes=("NOTE: epochs 300 and warm-up 20 are main.py's defaults (the command does not set them)",),
        )
    # ImageNet-22K pretraining, 90 epochs, warm-up 5, 4096 (S/B: 2 nodes x 8 x 32 x 8; L: 2 x 8 x 64 x 4 at 192 px;
    # XL: 4 x 8 x 32 x 4 at 192 px). variant -> (drop_path, lr, batch per GPU, image size)
    in22k = {
        "s": (0.1, 4e-3, 32, 224),
        "b": (0.1, 4e-3, 32, 224),
        "l": (0.1, 1e-3, 64, 192),
        "xl": (0.2, 1e-3, 32, 192),
    }
    for variant, (drop_path, lr, batch, size) in in22k.items():
        name = f"unireplknet_{variant}_in22k"
        presets[name] = TrainConfig(
            **{**_UNI_COMMON, "data": "imagenet22k", "num_classes": 21841, "image_size": size},
            model=f"unireplknet_{variant}",
            drop_path=drop_path,
            mixup=0.8,
            cutmix=1.0,
            epochs=90,
            warmup_epochs=5,
            batch_size=batch,
            recipe_batch=4096,
            lr=lr,
            output=f"runs/{name}",
            preset=name,
            notes=("NOTE: mixup 0.8 / cutmix 1.0 are main.py's defaults; the command disables evaluation",),
        )
    # 22K -> 1K fine-tuning at 384: 512 (S/B/L: 4 GPUs x 64 x 2; XL: 8 x 32 x 2), lr 5e-5, no warm-up, wd 1e-8,
    # layer decay 0.8, head_init_scale 0.001, no mixup/cutmix. L/XL: 20 epochs, label smoothing 0.3 and EMA.
    # variant -> (drop_path, epochs, smoothing, ema, batch per GPU)
    ft = {
        "s": (0.2, 30, 0.1, None, 64),
        "b": (0.2, 30, 0.1, None, 64),
        "l": (0.3, 20, 0.3, 0.9999, 64),
        "xl": (0.3, 20, 0.3, 0.9999, 32),
    }
    for variant, (drop_path, epochs, smoothing, ema, batch) in ft.items():
        name = f"unireplknet_{variant}_in22k_in1k_384_ft"
        presets[name] = TrainConfig(
            **{**_UNI_COMMON, "image_size": 384, "weight_decay": 1e-8, "smoothing": smoothing, "ema_decay": ema},
            model=f"unireplknet_{variant}",
            drop_path=drop_path,
            mixup=0.0,
            cutmix=0.0,
            epochs=epochs,
            warmup_epochs=0,
            batch_size=batch,
            recipe_batch=512,
            lr=5e-5,
            layer_decay=0.8,
            head_init_scale=0.001,
            output=f"runs/{name}",
            preset=name,
            notes=(
                "start from the 22K checkpoint with --pretrained PATH (its 21841-class head is replaced)",
                _UNI_LAYER_DECAY_NOTE,
            )
            + (("EMA decay 0.9999 is main.py's default (--model_ema true --model_ema_eval true)",) if ema else ()),
        )
    return presets


PRESETS.update(_unireplknet_presets())


def list_presets() -> list[str]:
    """Names accepted by ``get_preset``."""
    return sorted(PRESETS)


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """A named recipe, with ``overrides`` applied (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {list_presets()}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    return PRESETS[name].replace(**changes).validate()


def accumulation_steps(config: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimizer step: enough to reach ``recipe_batch`` (or ``config.accum_steps`` if set)."""
    if config.accum_steps is not None:
        return config.accum_steps
    per_step = config.batch_size * world_size
    return max(1, -(-config.recipe_batch // per_step))  # ceil


def scaled_lr(config: TrainConfig, world_size: int, accum: int) -> float:
    """``lr * real global batch / recipe_batch`` (the linear scaling rule), or ``lr`` when scaling is off."""
    global_batch = config.batch_size * world_size * accum
    if not config.scale_lr:
        return config.lr
    return config.lr * global_batch / config.recipe_batch
