"""`replknet data synth --output DIR`: write the built-in synthetic dataset as an ImageFolder."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    synth = sub.add_parser(
        "synth",
        help="write the synthetic shapes (train, val, cue_conflict) as PNG ImageFolders",
        formatter_class=common.HelpFormatter,
    )
    synth.add_argument("--output", required=True, metavar="DIR", help="output folder (split folders inside)")
    common.add_overwrite(synth, "split folders already in --output")
    synth.add_argument("--image-size", type=common.positive_int, default=64, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="the dataset seed (the trainer's synthetic_seed)")
    synth.add_argument("--train-size", type=common.nonnegative_int, default=5000, help="training images (0: none)")
    synth.add_argument("--val-size", type=common.nonnegative_int, default=1000, help="validation images (0: none)")
    synth.add_argument(
        "--cue-conflict-size", type=common.nonnegative_int, default=450, help="cue-conflict images (0: none)"
    )


def run(args: argparse.Namespace) -> int:
    from replknet.data.synthetic import write_image_folder
    from replknet.outputs import check_output_dir

    sizes = {"train": args.train_size, "val": args.val_size, "cue_conflict": args.cue_conflict_size}
    sizes = {split: count for split, count in sizes.items() if count > 0}
    if not sizes:
        raise ValueError("every split size is 0: nothing to write")
    output = check_output_dir(
        args.output,
        overwrite=args.overwrite,
        finished=lambda folder: any((folder / split).exists() for split in sizes),
        what="--output",
    )
    root = output.create()
    for split, count in sizes.items():  # one split at a time, each reported when written (a few seconds each)
        print(f"rendering {split} ({count} images at {args.image_size}px) ...", end="", flush=True)
        written = write_image_folder(root, image_size=args.image_size, seed=args.seed, split_sizes={split: count})
        print(f" {written[split]} images in {args.output}/{split}")
    return 0
