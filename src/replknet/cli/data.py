"""`replknet data synth --out DIR`: write the built-in synthetic dataset as an ImageFolder."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    synth = sub.add_parser("synth", help="write the synthetic shapes (train, val, cue_conflict) as PNG ImageFolders")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--train-size", type=int, default=5000)
    synth.add_argument("--val-size", type=int, default=1000)
    synth.add_argument("--cue-conflict-size", type=int, default=450)


def run(args: argparse.Namespace) -> int:
    from replknet.data.synthetic import write_image_folder

    sizes = {"train": args.train_size, "val": args.val_size, "cue_conflict": args.cue_conflict_size}
    sizes = {split: count for split, count in sizes.items() if count > 0}
    written = write_image_folder(args.out, image_size=args.image_size, seed=args.seed, split_sizes=sizes)
    for split, count in written.items():
        print(f"{split:<13} {count:>6} images  {args.out}/{split}")
    return 0
