"""`replknet train`: train or fine-tune (a named recipe, any option overridden); no arguments = the CPU demo."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from replknet.train.config import PRESETS

    demo = PRESETS["demo"]

    def preset_default(name: str, text: str) -> str:
        # The defaults come from --preset; the demo's are shown (the others: `--preset NAME --print-config`).
        return f"{text} (default: the preset's; demo: {getattr(demo, name)})"

    def option(flag: str, name: str, text: str, **kwargs) -> None:
        parser.add_argument(flag, dest=name, help=preset_default(name, text), **kwargs)

    parser.add_argument(
        "--preset",
        default="demo",
        choices=sorted(PRESETS),
        help="recipe: demo = replknet_tiny on the built-in shapes (a few minutes on 2 CPU cores), or one of the "
        "paper's ImageNet recipes",
    )
    option("--model", "model", "registered model name")
    option("--data", "data", "'synthetic' or an ImageFolder root with train/ and val/ inside")
    option("--output", "output", "the run folder: weights, config.json, checkpoint.pt, metrics, summary")
    common.add_overwrite(parser, "a run (finished, or unfinished and not resumed) in --output")
    parser.add_argument(
        "--resume", metavar="RUN|FILE", help="continue a run: its folder, or its checkpoint.pt (nothing else changes)"
    )
    parser.add_argument(
        "--pretrained", metavar="RUN|FILE", help="start from these weights (fine-tuning; a different head is replaced)"
    )
    option("--epochs", "epochs", "training epochs", type=common.positive_int)
    option("--warmup-epochs", "warmup_epochs", "linear warm-up, in epochs", type=common.nonnegative_float)
    option("--batch-size", "batch_size", "images per process and forward pass", type=common.positive_int)
    option("--recipe-batch", "recipe_batch", "the global batch --lr is given for", type=common.positive_int)
    parser.add_argument(
        "--accum-steps",
        type=common.positive_int,
        help="gradient accumulation steps (default: enough to reach --recipe-batch)",
    )
    option(
        "--lr", "lr", "learning rate at --recipe-batch (scaled to the real global batch)", type=common.positive_float
    )
    option("--min-lr", "min_lr", "final learning rate of the cosine schedule", type=common.nonnegative_float)
    option(
        "--weight-decay", "weight_decay", "AdamW weight decay (none on BN and biases)", type=common.nonnegative_float
    )
    option(
        "--layer-decay", "layer_decay", "layer-wise lr decay over the official 14 groups", type=common.positive_float
    )
    option("--drop-path", "drop_path", "stochastic depth rate", type=common.fraction)
    option(
        "--head-init-scale",
        "head_init_scale",
        "scale of the initial head weights (UniRepLKNet's option; its 22K->1K finetunes use 0.001)",
        type=common.positive_float,
    )
    option("--image-size", "image_size", "training and evaluation resolution", type=common.positive_int)
    parser.add_argument(
        "--num-classes", type=common.positive_int, help="head width (default: the number of classes in the data)"
    )
    option("--train-size", "synthetic_train_size", "synthetic training images", type=common.positive_int)
    option("--val-size", "synthetic_val_size", "synthetic validation images", type=common.positive_int)
    option("--mixup", "mixup", "mixup alpha (0: off)", type=common.nonnegative_float)
    option("--cutmix", "cutmix", "cutmix alpha (0: off)", type=common.nonnegative_float)
    option("--smoothing", "smoothing", "label smoothing", type=common.fraction)
    option("--reprob", "reprob", "random-erasing probability", type=common.fraction)
    option("--aa", "auto_augment", "timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1")
    option("--ema-decay", "ema_decay", "EMA of the weights (timm ModelEmaV3), e.g. 0.9999", type=common.fraction)
    option("--clip-grad", "clip_grad", "gradient-norm clipping", type=common.positive_float)
    option("--workers", "workers", "DataLoader worker processes for ImageFolder data", type=common.nonnegative_int)
    option("--seed", "seed", "seed of weights, data order and augmentation", type=int)
    option("--amp", "amp", "mixed precision", choices=["bf16", "fp16"])
    common.add_memory_format(parser, default=None, what="default: the preset's (demo: auto)")
    parser.add_argument(
        "--grad-checkpointing", action="store_true", default=None, help="recompute blocks in the backward pass"
    )
    parser.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm across GPU processes")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    parser.add_argument("--no-fuse", action="store_false", dest="fuse", default=None, help="skip the fused model")
    common.add_device(parser)
    common.add_threads(parser)
    common.add_progress(parser)
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")


_OPTION_NAMES = (
    "model data output pretrained epochs warmup_epochs batch_size recipe_batch accum_steps lr min_lr weight_decay "
    "layer_decay drop_path head_init_scale image_size num_classes synthetic_train_size synthetic_val_size mixup cutmix smoothing "
    "reprob auto_augment ema_decay clip_grad workers seed amp memory_format grad_checkpointing sync_bn compile fuse "
    "overwrite"
).split()


def _fmt(metrics: dict | None, key: str) -> str:
    return f"{metrics[key]:.2f}" if metrics and key in metrics else "-"


def summary_table(result) -> str:
    """The final summary as aligned text rows."""
    rows = [
        ("model", f"{result.config.model} ({result.params:,} params; fused {result.params_fused or 0:,})"),
        ("data", f"{result.config.data} at {result.config.image_size}px"),
        ("epochs / updates", f"{result.epochs_completed} / {result.num_updates}"),
        ("val top-1 / top-5 (trained)", f"{_fmt(result.val, 'top1')}% / {_fmt(result.val, 'top5')}%"),
    ]
    if result.val_ema:
        rows.append(("val top-1 / top-5 (EMA)", f"{_fmt(result.val_ema, 'top1')}% / {_fmt(result.val_ema, 'top5')}%"))
    if result.val_fused:
        rows.append(
            ("val top-1 / top-5 (fused)", f"{_fmt(result.val_fused, 'top1')}% / {_fmt(result.val_fused, 'top5')}%")
        )
        rows.append(("fused max |logit diff|", f"{result.fused_max_abs_diff:.2e}"))
    if result.shape_bias:
        bias = result.shape_bias
        rows.append(
            (
                "cue-conflict shape bias",
                f"{bias['shape_bias']:.3f} (shape {bias['shape_hits']}, texture {bias['texture_hits']} "
                f"of {bias['num_images']})",
            )
        )
    rows += [
        ("throughput", f"{result.images_per_second:.0f} img/s"),
        (
            "time data / train / total",
            f"{result.data_seconds:.0f} s / {result.train_seconds:.0f} s / {result.total_seconds:.0f} s",
        ),
    ]
    rows += [(f"file: {name}", path) for name, path in result.files.items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run(args: argparse.Namespace) -> int:
    import sys

    from replknet.train import NonFiniteLossError, get_preset, train
    from replknet.train.distributed import init_distributed

    overrides = {name: getattr(args, name) for name in _OPTION_NAMES}
    config = get_preset(args.preset, **overrides)
    if args.print_config:
        print(config.to_json())
        return 0
    device = None if args.device == "auto" else args.device
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    is_main = init_distributed(device).is_main
    try:
        result = train(config, resume=args.resume, progress=not args.no_progress, device=device)
    except NonFiniteLossError as error:
        print(f"replknet train: stopped: {error}", file=sys.stderr)
        return 3
    if is_main:
        print()
        print(summary_table(result))
    return 0
