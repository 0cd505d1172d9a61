"""`replknet reparam --checkpoint RUN|FILE`: fuse a training-form model and save the deploy form, checked."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common
from replknet.cli.convert import check_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_checkpoint(parser, required=True, what="in training form (any supported layout), or a run folder")
    common.add_model(parser, what="needed for official and mmpretrain files")
    parser.add_argument(
        "--output", metavar="DIR", help="output folder (default: <checkpoint>_reparam beside the input)"
    )
    common.add_overwrite(parser, "an output folder that already holds a model")
    parser.add_argument("--no-check", action="store_true", help="skip comparing the fused with the training form")
    common.add_image_size(
        parser, "input resolution of the check, one size or H W (default: the run's, else the model's)"
    )
    common.add_threads(parser)


def run(args: argparse.Namespace) -> int:
    from replknet.deploy.convert import reparameterize_checkpoint

    output = check_output(args, "_reparam")
    common.apply_threads(args)
    print(f"fusing {args.checkpoint} ...", flush=True)
    result = reparameterize_checkpoint(
        args.checkpoint, output, args.model, check=not args.no_check, check_size=args.image_size
    )
    print(f"wrote {result.output}/model.safetensors and config.json ({result.model_name}, fused form)")
    if result.max_abs_diff is not None:
        height, width = result.input_size
        print(
            f"fused vs training form on a random {height}x{width} batch: max |diff| {result.max_abs_diff:.3e} "
            f"(relative {result.relative_diff:.2e})"
        )
    return 0
