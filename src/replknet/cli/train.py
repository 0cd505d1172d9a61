"""`replknet train`: train or fine-tune (a named recipe, any option overridden); no arguments = the CPU demo."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from replknet.train.config import PRESETS

    parser.add_argument(
        "--preset",
        default="demo",
        choices=sorted(PRESETS),
        help="recipe (default: demo = replknet_tiny on the built-in shapes, about 5 minutes on 2 CPU cores)",
    )
    parser.add_argument("--model", help="registered model name")
    parser.add_argument("--data", help="'synthetic' or an ImageFolder root with train/ and val/ inside")
    parser.add_argument("--output", help="output directory (checkpoints, metrics.jsonl, summary.json)")
    parser.add_argument("--resume", help="continue from a checkpoint.pt (or the output directory holding it)")
    parser.add_argument("--pretrained", help="start from these weights (fine-tuning; a different head is replaced)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--warmup-epochs", type=float)
    parser.add_argument("--batch-size", type=int, help="per process and forward pass")
    parser.add_argument("--recipe-batch", type=int, help="global batch the lr is given for")
    parser.add_argument("--accum-steps", type=int, help="gradient accumulation (default: reach the recipe batch)")
    parser.add_argument("--lr", type=float, help="learning rate at the recipe batch (scaled to the real batch)")
    parser.add_argument("--min-lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--layer-decay", type=float, help="layer-wise lr decay over the official 14 groups")
    parser.add_argument("--drop-path", type=float)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--num-classes", type=int)
    parser.add_argument("--train-size", type=int, dest="synthetic_train_size", help="synthetic training images")
    parser.add_argument("--val-size", type=int, dest="synthetic_val_size", help="synthetic validation images")
    parser.add_argument("--mixup", type=float)
    parser.add_argument("--cutmix", type=float)
    parser.add_argument("--smoothing", type=float)
    parser.add_argument("--reprob", type=float)
    parser.add_argument("--aa", dest="auto_augment", help="timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1")
    parser.add_argument("--ema-decay", type=float)
    parser.add_argument("--clip-grad", type=float)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--amp", choices=["bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true", default=None)
    parser.add_argument("--grad-checkpointing", action="store_true", default=None)
    parser.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm across processes")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    parser.add_argument("--no-fuse", action="store_false", dest="fuse", default=None, help="skip the fused model")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")


_OPTION_NAMES = (
    "model data output pretrained epochs warmup_epochs batch_size recipe_batch accum_steps lr min_lr weight_decay "
    "layer_decay drop_path image_size num_classes synthetic_train_size synthetic_val_size mixup cutmix smoothing "
    "reprob auto_augment ema_decay clip_grad workers seed amp channels_last grad_checkpointing sync_bn compile fuse"
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
    is_main = init_distributed(args.device).is_main
    try:
        result = train(config, resume=args.resume, progress=not args.no_progress, device=args.device)
    except NonFiniteLossError as error:
        print(f"replknet train: stopped: {error}", file=sys.stderr)
        return 3
    if is_main:
        print()
        print(summary_table(result))
    return 0
