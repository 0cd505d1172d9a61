"""`replknet convert CHECKPOINT --model M`: official / mmpretrain checkpoints to a timm local-dir folder."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="official (plain, wrapped, module.-prefixed, train or deploy form) or mmpretrain file"
    )
    parser.add_argument("--model", required=True, help="architecture, e.g. replknet_31b")
    parser.add_argument("--output", "-o", help="output folder (default: <checkpoint>_replknet beside the input)")
    parser.add_argument("--reparam", action="store_true", help="store the fused (deploy) form")
    parser.add_argument("--ema", action="store_true", help="take the model_ema weights of a training checkpoint")
    parser.add_argument("--check-size", type=int, help="input resolution of the output check (default: the model's)")
    parser.add_argument("--no-check", action="store_true", help="skip comparing the output with the source")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest relative difference accepted (default: 1e-4)"
    )


def run(args: argparse.Namespace) -> int:
    from replknet.deploy.convert import convert_checkpoint, default_output

    output = args.output or default_output(args.checkpoint, "_reparam" if args.reparam else "_replknet")
    result = convert_checkpoint(
        args.checkpoint,
        output,
        args.model,
        reparam=args.reparam,
        use_ema=args.ema,
        check=not args.no_check,
        check_size=args.check_size,
    )
    form = "fused (deploy)" if result.fused else "training"
    print(f"wrote {result.output}/model.safetensors and config.json ({result.model_name}, {form} form)")
    print(f"load with timm.create_model('local-dir:{result.output}', pretrained=True)")
    if result.max_abs_diff is None:
        return 0
    height, width = result.input_size
    print(
        f"output vs source on a random {height}x{width} batch: max |diff| {result.max_abs_diff:.3e} "
        f"(relative {result.relative_diff:.2e})"
    )
    if result.relative_diff > args.tolerance:
        print(f"FAILED: relative difference above the tolerance {args.tolerance:g}")
        return 1
    return 0
