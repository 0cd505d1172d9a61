"""`replknet bench`: params, MACs and images/s of RepLKNet variants next to timm peers (the paper's method)."""

from __future__ import annotations

import argparse

# Mirrors replknet.deploy.bench.DEFAULT_MODELS (kept literal so that `replknet --help` does not import torch).
DEFAULT_MODELS = ("replknet_31b", "swin_base_patch4_window7_224", "convnext_base", "resnet101", "resnet152")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", nargs="+", default=list(DEFAULT_MODELS), help=f"default: {' '.join(DEFAULT_MODELS)}"
    )
    parser.add_argument(
        "--forms",
        nargs="+",
        default=["train", "fused"],
        choices=("train", "fused", "deep"),
        help="RepLKNet forms: train, fused (official re-param), deep (every BN folded too); default: train fused",
    )
    parser.add_argument(
        "--dtypes", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "fp16"), help="default: fp32 bf16"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="default: 64 (the paper's)")
    parser.add_argument("--img-size", type=int, default=224, help="default: 224")
    parser.add_argument("--warmup", type=int, default=50, help="untimed forwards first (default: 50)")
    parser.add_argument("--iterations", type=int, default=30, help="timed forwards (default: 30)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda if present, else cpu)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format for every model")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--baseline", default="swin_base_patch4_window7_224", help="model the ratios are taken to")
    parser.add_argument("--json", help="write the results as JSON to this file")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from replknet.deploy.bench import benchmark, device_description, format_table

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = device_description(args.device)
    print(
        f"device {args.device} ({device_name}), batch {args.batch_size}, "
        f"{args.img_size}px, {args.warmup} warm-up + {args.iterations} timed forwards, torch {torch.__version__}"
    )

    def progress(result) -> None:
        print(f"  {result.model} {result.form} {result.dtype}: {result.images_per_second:.2f} images/s", flush=True)

    results = benchmark(
        args.models,
        args.forms,
        args.dtypes,
        batch_size=args.batch_size,
        image_size=args.img_size,
        warmup=args.warmup,
        iterations=args.iterations,
        device=args.device,
        channels_last=args.channels_last,
        on_result=progress,
    )
    print(format_table(results, args.baseline))
    if args.json:
        payload = {
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "device_name": device_name,
            "torch": torch.__version__,
            "results": [r.to_dict() for r in results],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
