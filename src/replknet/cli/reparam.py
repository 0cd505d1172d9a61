"""`replknet reparam CHECKPOINT --model M [--check]`: fuse a training-form checkpoint and save it."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="training-form checkpoint file (any supported layout) or converted folder")
    parser.add_argument("--model", help="architecture, e.g. replknet_31b (optional for a converted folder)")
    parser.add_argument("--output", "-o", help="output folder (default: <checkpoint>_reparam beside the input)")
    parser.add_argument("--check", action="store_true", help="print max |diff| of fused vs training form")
    parser.add_argument("--check-size", type=int, help="input resolution of the check (default: the model's)")


def run(args: argparse.Namespace) -> int:
    from replknet.deploy.convert import default_output, reparameterize_checkpoint

    output = args.output or default_output(args.checkpoint, "_reparam")
    result = reparameterize_checkpoint(
        args.checkpoint, output, args.model, check=args.check, check_size=args.check_size
    )
    print(f"wrote {result.output}/model.safetensors and config.json ({result.model_name}, fused form)")
    if result.max_abs_diff is not None:
        height, width = result.input_size
        print(
            f"fused vs training form on a random {height}x{width} batch: max |diff| {result.max_abs_diff:.3e} "
            f"(relative {result.relative_diff:.2e})"
        )
    return 0
