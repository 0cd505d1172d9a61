"""`replknet data synth --output DIR`: write built-in data (shapes, Pathfinder, long-range segmentation) as folders."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common

TASKS = ("shapes", "pathfinder", "longrange-seg")
# Split sizes when not given: the shapes' demo sizes, the Pathfinder and segmentation sizes of replknet study.
DEFAULT_SIZES = {
    "shapes": {"train": 5000, "val": 1000, "cue_conflict": 450},
    "pathfinder": {"train": 8000, "val": 2000},
    "longrange-seg": {"train": 2048, "val": 256},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    synth = sub.add_parser(
        "synth",
        help="write built-in data: the shapes (train, val, cue_conflict ImageFolders), Pathfinder (train, val "
        "ImageFolders) or the long-range segmentation task (a segmentation folder)",
        formatter_class=common.HelpFormatter,
    )
    synth.add_argument("--output", required=True, metavar="DIR", help="output folder (split folders inside)")
    common.add_overwrite(synth, "split folders already in --output")
    synth.add_argument("--task", default="shapes", choices=TASKS, help="which data")
    synth.add_argument("--preset", help="pathfinder / longrange-seg: 'short' or 'long' (default: long)")
    synth.add_argument(
        "--difficulty", type=int, help="pathfinder: 0 solid (default), 1 dashed, 2 dashed + 1 distractor, 3 + 2"
    )
    synth.add_argument("--image-size", type=common.positive_int, default=64, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="the dataset seed (the trainer's synthetic_seed)")
    synth.add_argument(
        "--train-size", type=common.nonnegative_int, help="training images (0: none; default 5000 / 8000 / 2048)"
    )
    synth.add_argument(
        "--val-size", type=common.nonnegative_int, help="validation images (0: none; default 1000 / 2000 / 256)"
    )
    synth.add_argument(
        "--cue-conflict-size", type=common.nonnegative_int, help="shapes: cue-conflict images (0: none; default 450)"
    )


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    given = {"train": args.train_size, "val": args.val_size, "cue_conflict": args.cue_conflict_size}
    if args.task != "shapes" and args.cue_conflict_size is not None:
        raise ValueError("--cue-conflict-size applies to the shapes only")
    sizes = {split: given[split] if given[split] is not None else n for split, n in DEFAULT_SIZES[args.task].items()}
    sizes = {split: count for split, count in sizes.items() if count > 0}
    if not sizes:
        raise ValueError("every split size is 0: nothing to write")
    return sizes


def run(args: argparse.Namespace) -> int:
    from replknet.outputs import check_output_dir

    if args.task == "shapes" and (args.preset or args.difficulty is not None):
        raise ValueError("--preset and --difficulty apply to pathfinder (and --preset to longrange-seg), not shapes")
    if args.task == "longrange-seg" and args.difficulty is not None:
        raise ValueError("--difficulty applies to pathfinder only")
    sizes = _sizes(args)
    layout = [f"images/{split}" for split in sizes] if args.task == "longrange-seg" else list(sizes)
    output = check_output_dir(
        args.output,
        overwrite=args.overwrite,
        finished=lambda folder: any((folder / path).exists() for path in layout),
        what="--output",
    )
    root = output.create()
    for split, count in sizes.items():  # one split at a time, each reported when written (a few seconds each)
        print(f"rendering {split} ({count} images at {args.image_size}px) ...", end="", flush=True)
        if args.task == "shapes":
            from replknet.data.synthetic import write_image_folder

            written = write_image_folder(root, image_size=args.image_size, seed=args.seed, split_sizes={split: count})
            where = f"{args.output}/{split}"
        elif args.task == "pathfinder":
            from replknet.data.pathfinder import pathfinder_config, write_pathfinder_folder

            config = pathfinder_config(args.preset, args.difficulty, image_size=args.image_size)
            written = write_pathfinder_folder(root, config, args.seed, {split: count})
            where = f"{args.output}/{split}"
        else:
            from replknet.data.longrange_seg import longrange_config, write_segmentation_folder

            config = longrange_config(args.preset, image_size=args.image_size)
            written = write_segmentation_folder(root, config, args.seed, {split: count})
            where = f"{args.output}/images/{split}"
        print(f" {written[split]} images in {where}")
    return 0
